//! The data layer: sources → catalog → packed cache → long-tailed split → views → augmented
//! batches.
//!
//! ```text
//! SourceConfig ─scan→ Catalog ─decode once→ Cache (mmap)      split.json
//!                          └─labels→ split::draw ───────────→ Split ─┐
//!                                                Dataset = Cache + Split → View (train/val/test)
//!                                                          → sampler plan → Loader → tch batches
//! ```
pub mod augment;
pub mod cache;
pub mod decode;
pub mod formats;
pub mod loader;
pub mod longtail;
pub mod randaugment;
pub mod source;
pub mod split;
pub mod tree;

pub use cache::Cache;
pub use longtail::Profile;
pub use source::{Format, Pool, Resize, SourceConfig};
pub use split::{Split, SplitConfig};

use crate::{Error, Result};
use cache::PackedPool;
pub use formats::Catalog;
use serde::{Deserialize, Serialize};
use source::BBox;
use std::path::Path;

/// `[data]` of a config: where the images are and how the split is drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub source: SourceConfig,
    #[serde(default)]
    pub split: SplitConfig,
}

/// A part of a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Train,
    Val,
    Test,
}

/// A split over its cache: everything later stages read images from.
pub struct Dataset {
    pub split: Split,
    pub cache: Cache,
}

/// The images of one part of a split, labelled in the split's class order.
pub struct View<'a> {
    pool: &'a PackedPool,
    indices: &'a [u32],
    /// Split labels, one per image of the view.
    pub labels: Vec<u32>,
    /// Side of the square images.
    pub size: u32,
    pub num_classes: usize,
}

impl View<'_> {
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
    /// Image `i` of the view: size × size × 3 bytes, HWC.
    pub fn image(&self, i: usize) -> &[u8] {
        self.pool.image(self.indices[i] as usize)
    }
    /// The object box of image `i`, where the source has one.
    pub fn bbox(&self, i: usize) -> Option<BBox> {
        let b = self.pool.boxes.as_ref()?[self.indices[i] as usize];
        (!b[0].is_nan()).then_some(b)
    }
    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.num_classes];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }
}

impl Dataset {
    /// Scans the source, builds (or reuses) its packed cache under `cache_root` and draws the
    /// split. `progress` receives the number of images decoded since its last call.
    pub fn prepare(cfg: &DataConfig, cache_root: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<Dataset> {
        cfg.split.longtail.validate()?;
        let catalog = Catalog::scan(&cfg.source)?;
        let cache = Cache::open_or_build(&catalog, cache_root, progress)?;
        let split = draw_split(&cache, cfg)?;
        Ok(Dataset { split, cache })
    }

    /// Rebuilds a dataset from a saved split alone: opens the cache it names, or rebuilds the cache
    /// from the source named in the split, whose checksum must still match.
    pub fn open(split: Split, cache_root: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<Dataset> {
        Dataset::open_from(split, None, cache_root, progress)
    }

    /// [`Dataset::open`], rebuilding a missing or damaged cache from `source` (the same content
    /// at another path) instead of the source the split names.
    pub fn open_from(
        split: Split,
        source: Option<&SourceConfig>,
        cache_root: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Dataset> {
        let dir = cache_root.join(&split.cache_key);
        let opened = dir.join("meta.json").is_file().then(|| Cache::open_checked(&dir));
        let cache = match opened {
            Some(Ok(c)) => c,
            other => {
                // absent or damaged: rebuilt from the source the split names
                if let Some(Err(e)) = other {
                    tracing::warn!("{e}: rebuilding the cache {} from its source", dir.display());
                }
                let catalog = Catalog::scan(source.unwrap_or(&split.source))?;
                Cache::open_or_build(&catalog, cache_root, progress)?
            }
        };
        if cache.meta.checksum != split.checksum {
            return Err(Error::format(
                split.source.root.display(),
                format!(
                    "the source changed since the split was drawn: checksum {} (expected {})",
                    &cache.meta.checksum[..12],
                    &split.checksum[..12]
                ),
            ));
        }
        Ok(Dataset { split, cache })
    }

    /// The images of `part`.
    pub fn view(&self, part: Part) -> View<'_> {
        let (pool, indices) = match part {
            Part::Train => (Pool::Train, &self.split.train),
            Part::Val => (self.split.val_pool, &self.split.val),
            Part::Test => (Pool::Test, &self.split.test),
        };
        let pool = self
            .cache
            .pool(pool)
            .expect("the split's pools exist in its cache");
        let mut remap = vec![u32::MAX; self.cache.meta.classes.len()];
        for (new, &old) in self.split.source_classes.iter().enumerate() {
            remap[old as usize] = new as u32;
        }
        let labels = indices
            .iter()
            .map(|&i| remap[pool.labels[i as usize] as usize])
            .collect();
        View {
            pool,
            indices,
            labels,
            size: self.cache.meta.image_size,
            num_classes: self.split.num_classes(),
        }
    }
}

/// Draws the split of `cfg` over an opened cache.
pub fn draw_split(cache: &Cache, cfg: &DataConfig) -> Result<Split> {
    let empty = Vec::new();
    let labels = |p| cache.pool(p).map(|p| &p.labels);
    let pools = split::PoolLabels {
        num_classes: cache.meta.classes.len(),
        train: labels(Pool::Train).unwrap_or(&empty),
        val: labels(Pool::Val).map(|v| v.as_slice()),
        test: labels(Pool::Test).unwrap_or(&empty),
    };
    let d = split::draw(&pools, &cfg.split)?;
    Ok(Split {
        version: Split::VERSION,
        source: cfg.source.clone(),
        checksum: cache.meta.checksum.clone(),
        cache_key: cache.meta.key.clone(),
        image_size: cache.meta.image_size,
        config: cfg.split.clone(),
        classes: d
            .source_classes
            .iter()
            .map(|&c| cache.meta.classes[c as usize].clone())
            .collect(),
        shot_groups: split::ShotGroups::from_counts(&d.counts.train),
        source_classes: d.source_classes,
        counts: d.counts,
        train: d.train,
        val: d.val,
        val_pool: d.val_pool,
        test: d.test,
    })
}
