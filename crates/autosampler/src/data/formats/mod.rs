//! The scanners of each source format (one file each) and the [`Catalog`] they fill: class names
//! and every pool's items, in canonical order, before anything is decoded.
pub mod cifar;
pub mod folder;
pub mod tiny;

use super::source::{Format, Item, Pool, SourceConfig};
use super::tree::Tree;
use crate::{invalid, Error, Result};

/// A source scanned: class names and the items of each pool, in canonical order (class folders
/// sorted, files sorted inside each: the order of torchvision's `ImageFolder`).
pub struct Catalog {
    pub tree: Tree,
    pub config: SourceConfig,
    pub classes: Vec<String>,
    pub pools: Vec<(Pool, Vec<Item>)>,
    /// The native size of every image, where the format fixes it.
    pub native_size: Option<u32>,
}

impl Catalog {
    /// Scans `config`'s source. Nothing is decoded yet; file existence, labels and list syntax
    /// are checked here.
    pub fn scan(config: &SourceConfig) -> Result<Catalog> {
        if let Some(s) = config.image_size {
            if !(8..=1024).contains(&s) {
                return Err(invalid!("image_size {s} is out of range: expected 8 to 1024"));
            }
        }
        if !config.root.exists() {
            return Err(invalid!(
                "data.source.root = \"{}\": no such file or folder",
                config.root.display()
            ));
        }
        let mut tree = Tree::open(&config.root)?;
        let cat = match config.format {
            Format::Cifar10Bin | Format::Cifar100Bin => {
                cifar::scan(&mut tree, config.format, config.cifar100_label)?
            }
            Format::ImageFolder => folder::scan_image_folder(&mut tree, config)?,
            Format::SplitList => folder::scan_split_lists(&tree, config)?,
            Format::TinyImagenet => tiny::scan(&mut tree)?,
        };
        Ok(Catalog {
            tree,
            config: config.clone(),
            classes: cat.classes,
            pools: cat.pools,
            native_size: cat.native_size,
        })
    }

    /// The items of `pool`, if the source has it.
    pub fn pool(&self, pool: Pool) -> Option<&[Item]> {
        self.pools
            .iter()
            .find(|(p, _)| *p == pool)
            .map(|(_, v)| v.as_slice())
    }

    /// Labels of `pool` (empty when the pool is absent).
    pub fn labels(&self, pool: Pool) -> Vec<u32> {
        self.pool(pool)
            .map(|v| v.iter().map(|i| i.label).collect())
            .unwrap_or_default()
    }
}

/// What a format's scanner returns.
pub(crate) struct Scanned {
    pub classes: Vec<String>,
    pub pools: Vec<(Pool, Vec<Item>)>,
    pub native_size: Option<u32>,
}

/// Image extensions accepted in folders (case-insensitive).
pub(crate) fn is_image_name(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    l.ends_with(".jpg") || l.ends_with(".jpeg") || l.ends_with(".png")
}

/// Builds an error for a text file's line.
pub(crate) fn line_error(file: &str, line: usize, what: impl std::fmt::Display) -> Error {
    Error::format(file, format!("line {line}: {what}"))
}
