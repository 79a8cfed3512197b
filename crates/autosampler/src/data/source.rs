//! Sources: what a dataset is on disk (format, root, image size policy) and the catalog of its
//! items (label, where the pixels are, object box) before anything is decoded.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The on-disk formats autosampler reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `root/<train_dir>/<class>/*.{jpg,jpeg,png}` and `root/<test_dir>/<class>/…`, any image size.
    ImageFolder,
    /// CIFAR-10 binary: `data_batch_{1..5}.bin`, `test_batch.bin` (1 label byte + 3,072 pixel bytes).
    Cifar10Bin,
    /// CIFAR-100 binary: `train.bin`, `test.bin` (coarse label byte, fine label byte, 3,072 bytes).
    Cifar100Bin,
    /// Tiny-ImageNet-200: `wnids.txt`, `train/<wnid>/images/*.JPEG` with `<wnid>_boxes.txt`, and
    /// `val/images/*.JPEG` with `val/val_annotations.txt` (the labelled val set is the test set).
    TinyImagenet,
    /// Split lists in the classifier-balancing format: one `relative/path label` per line.
    SplitList,
}

/// How images of another size are brought to `image_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resize {
    /// Every image must already be `image_size`; another size is an error naming the file.
    #[default]
    Exact,
    /// Resize to `image_size` × `image_size`, ignoring the aspect ratio (bilinear).
    Stretch,
    /// Resize the shorter side to `image_size`, then take the centre square (bilinear).
    CenterCrop,
}

/// Which CIFAR-100 label is the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cifar100Label {
    #[default]
    Fine,
    Coarse,
}

fn default_train_dir() -> String {
    "train".into()
}
fn default_test_dir() -> String {
    "test".into()
}

/// Where a dataset is and how to read it (`[data.source]` in a config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub format: Format,
    /// A folder, or a `.tar` / `.tar.gz` archive (read without unpacking). An archive or folder
    /// that holds a single folder is entered automatically (`cifar10-jpeg.tar.gz` → `cifar10/`).
    pub root: PathBuf,
    /// Side of the square images in the cache; default: the format's native size (32 for CIFAR,
    /// 64 for Tiny-ImageNet, the first image's size for folders and lists).
    #[serde(default)]
    pub image_size: Option<u32>,
    #[serde(default)]
    pub resize: Resize,
    /// Image-folder: the training and test sub-folders.
    #[serde(default = "default_train_dir")]
    pub train_dir: String,
    #[serde(default = "default_test_dir")]
    pub test_dir: String,
    /// Split-list: the lists (relative to the config's folder, or absolute); paths inside are
    /// relative to `root`. With `val_list`, that list is the validation set (no hold-out).
    #[serde(default)]
    pub train_list: Option<PathBuf>,
    #[serde(default)]
    pub test_list: Option<PathBuf>,
    #[serde(default)]
    pub val_list: Option<PathBuf>,
    /// Split-list: a file of class names, one per line, in label order.
    #[serde(default)]
    pub class_names: Option<PathBuf>,
    #[serde(default)]
    pub cifar100_label: Cifar100Label,
}

impl SourceConfig {
    /// A config with every option at its default.
    pub fn new(format: Format, root: impl Into<PathBuf>) -> Self {
        SourceConfig {
            format,
            root: root.into(),
            image_size: None,
            resize: Resize::Exact,
            train_dir: default_train_dir(),
            test_dir: default_test_dir(),
            train_list: None,
            test_list: None,
            val_list: None,
            class_names: None,
            cifar100_label: Cifar100Label::Fine,
        }
    }

    /// Makes relative paths absolute against `base` (the folder of the config file).
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.root);
        for p in [
            &mut self.train_list,
            &mut self.test_list,
            &mut self.val_list,
            &mut self.class_names,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
    }
}

/// Where one item's pixels are.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// An encoded image file, relative to the tree's root.
    File(String),
    /// A CIFAR binary record: 3,072 planar bytes (R, G, B planes of 32×32) at `offset` in `file`.
    Record { file: String, offset: usize },
}

/// An object box `[x0, y0, x1, y1]` in pixels of the image as stored (inclusive corners, as in
/// Tiny-ImageNet's annotation files).
pub type BBox = [f32; 4];

/// One image of a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub label: u32,
    pub origin: Origin,
    pub bbox: Option<BBox>,
}

/// The pools of a source, in a fixed order that split indices refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    Train,
    /// Only when the source brings its own validation set (a split list's `val_list`).
    Val,
    Test,
}

impl Pool {
    pub fn name(self) -> &'static str {
        match self {
            Pool::Train => "train",
            Pool::Val => "val",
            Pool::Test => "test",
        }
    }
}

/// Two source configs name the same data: equal once their paths are made canonical (the same
/// archive reached through different relative paths is the same source).
pub fn same_source(a: &SourceConfig, b: &SourceConfig) -> bool {
    canonical_source(a) == canonical_source(b)
}

/// The source config with its paths made canonical where they exist.
pub fn canonical_source(s: &SourceConfig) -> SourceConfig {
    let mut s = s.clone();
    for p in [
        Some(&mut s.root),
        s.train_list.as_mut(),
        s.test_list.as_mut(),
        s.val_list.as_mut(),
        s.class_names.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if let Ok(c) = std::fs::canonicalize(&*p) {
            *p = c;
        }
    }
    s
}
