//! The long-tailed split: a balanced validation hold-out of k images per class drawn *before* the
//! long-tailed subset, the subset itself, and the untouched test set. Saved as `split.json`, from
//! which a run can be rebuilt alone (it names the source, its checksum and every index).
use super::longtail::Profile;
use super::source::{Pool, SourceConfig};
use crate::rng::NumpyRandomState;
use crate::{fsx, invalid, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How to draw the split (`[data]` in a config, beside `source`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitConfig {
    pub longtail: Profile,
    /// Images per class held out for validation before the long-tailed subset is drawn (ignored
    /// when the source brings its own validation list).
    pub val_per_class: usize,
    pub seed: u32,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            longtail: Profile::None,
            val_per_class: 20,
            seed: 0,
        }
    }
}

/// Shot groups by training count: many > 100, medium 20–100, few < 20 (class indices).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShotGroups {
    pub many: Vec<usize>,
    pub medium: Vec<usize>,
    pub few: Vec<usize>,
}

/// The group of a class with `n` training images: "many", "medium" or "few".
pub fn shot_group(n: usize) -> &'static str {
    if n > 100 {
        "many"
    } else if n >= 20 {
        "medium"
    } else {
        "few"
    }
}

impl ShotGroups {
    pub fn from_counts(train_counts: &[usize]) -> Self {
        let mut g = ShotGroups::default();
        for (c, &n) in train_counts.iter().enumerate() {
            match shot_group(n) {
                "many" => g.many.push(c),
                "medium" => g.medium.push(c),
                _ => g.few.push(c),
            }
        }
        g
    }
}

/// Per-class image counts of each part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// `split.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    pub version: u32,
    pub source: SourceConfig,
    /// Content checksum of the source (see `cache::content_checksum`).
    pub checksum: String,
    /// Key of the packed cache built from the source.
    pub cache_key: String,
    pub image_size: u32,
    pub config: SplitConfig,
    /// Class names, in the split's label order.
    pub classes: Vec<String>,
    /// For each class of the split, its label in the source (differs only for `llt`).
    pub source_classes: Vec<u32>,
    pub counts: Counts,
    pub shot_groups: ShotGroups,
    /// Indices into the source's train pool.
    pub train: Vec<u32>,
    /// Indices into `val_pool` (the train pool for a hold-out).
    pub val: Vec<u32>,
    pub val_pool: Pool,
    /// Indices into the source's test pool.
    pub test: Vec<u32>,
}

/// The labels of the source pools a split is drawn from.
pub struct PoolLabels<'a> {
    pub num_classes: usize,
    pub train: &'a [u32],
    /// A validation pool of the source's own, if it has one.
    pub val: Option<&'a [u32]>,
    pub test: &'a [u32],
}

/// The indices and labels of a drawn split (everything in [`Split`] but the source description).
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    pub source_classes: Vec<u32>,
    pub counts: Counts,
    pub train: Vec<u32>,
    pub val: Vec<u32>,
    pub val_pool: Pool,
    pub test: Vec<u32>,
}

fn per_class(labels: &[u32], classes: &[u32]) -> Vec<Vec<u32>> {
    let mut pos = vec![usize::MAX; classes.iter().map(|&c| c as usize + 1).max().unwrap_or(0)];
    for (i, &c) in classes.iter().enumerate() {
        pos[c as usize] = i;
    }
    let mut out = vec![Vec::new(); classes.len()];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(&p) = pos.get(l as usize) {
            if p != usize::MAX {
                out[p].push(i as u32);
            }
        }
    }
    out
}

/// Draws the split. Classes are visited in order; each one's training indices (in pool order)
/// are shuffled by one `np.random.RandomState(seed)`, the first k go to validation and the next
/// n_c to training — the procedure of LDAM-DRW and of `torch_reference.py`, so the same seed gives
/// the same images.
pub fn draw(pools: &PoolLabels, cfg: &SplitConfig) -> Result<Drawn> {
    cfg.longtail.validate()?;
    let classes: Vec<u32> = match &cfg.longtail {
        Profile::Llt { num_classes, .. } => {
            if *num_classes > pools.num_classes {
                return Err(invalid!(
                    "llt profile asks for {num_classes} classes but the source has {}",
                    pools.num_classes
                ));
            }
            use rand::seq::index::sample;
            let mut rng = crate::rng::chacha(cfg.seed as u64, &[0x0117]);
            let mut v: Vec<u32> = sample(&mut rng, pools.num_classes, *num_classes)
                .into_iter()
                .map(|c| c as u32)
                .collect();
            v.sort_unstable();
            v
        }
        _ => (0..pools.num_classes as u32).collect(),
    };
    if classes.len() < 2 {
        // one class is no recognition task: every model scores 100 %, and an imbalance ratio
        // cannot be drawn
        return Err(invalid!(
            "the data has {} class{}: long-tailed recognition needs at least 2 (an image-folder root holds one folder per class)",
            classes.len(),
            if classes.len() == 1 { "" } else { "es" }
        ));
    }
    let by_class = per_class(pools.train, &classes);
    let hold_out = if pools.val.is_some() { 0 } else { cfg.val_per_class };
    for (c, idx) in by_class.iter().enumerate() {
        if idx.len() <= hold_out {
            return Err(invalid!(
                "val_per_class {hold_out} is too large: class {} has only {} training images (expected more than k)",
                classes[c],
                idx.len()
            ));
        }
    }
    let available: Vec<usize> = by_class.iter().map(|v| v.len() - hold_out).collect();
    let counts = cfg.longtail.counts(&available)?;
    let mut rng = NumpyRandomState::new(cfg.seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    let mut val_counts = Vec::new();
    for (mut idx, &n) in by_class.into_iter().zip(&counts) {
        rng.shuffle(&mut idx);
        val.extend_from_slice(&idx[..hold_out]);
        train.extend_from_slice(&idx[hold_out..hold_out + n]);
        val_counts.push(hold_out);
    }
    let val_pool = match pools.val {
        Some(v) => {
            let by = per_class(v, &classes);
            val_counts = by.iter().map(Vec::len).collect();
            val = by.concat();
            Pool::Val
        }
        None => Pool::Train,
    };
    let test_by = per_class(pools.test, &classes);
    Ok(Drawn {
        counts: Counts {
            train: counts,
            val: val_counts,
            test: test_by.iter().map(Vec::len).collect(),
        },
        source_classes: classes,
        train,
        val,
        val_pool,
        test: test_by.concat(),
    })
}

impl Split {
    pub const VERSION: u32 = 1;

    /// Reads `split.json`.
    pub fn load(path: &Path) -> Result<Split> {
        let s: Split = fsx::read_json(path)?;
        if s.version != Self::VERSION {
            return Err(crate::Error::format(
                path.display(),
                format!("split format version {} (expected {})", s.version, Self::VERSION),
            ));
        }
        Ok(s)
    }

    /// Writes `split.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        fsx::write_json(path, self)
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(per_class: &[usize]) -> Vec<u32> {
        per_class
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(c as u32, n))
            .collect()
    }

    #[test]
    fn cifar10_lt_without_hold_out_has_ldam_sizes() {
        let train = labels(&[5000; 10]);
        let test = labels(&[1000; 10]);
        for (ir, total) in [(100.0, 12_406), (50.0, 13_996), (10.0, 20_431)] {
            let cfg = SplitConfig {
                longtail: Profile::Exp {
                    imbalance_ratio: ir,
                    n_max: None,
                },
                val_per_class: 0,
                seed: 0,
            };
            let p = PoolLabels {
                num_classes: 10,
                train: &train,
                val: None,
                test: &test,
            };
            let d = draw(&p, &cfg).unwrap();
            assert_eq!(d.train.len(), total);
            assert_eq!(d.test.len(), 10_000);
            assert!(d.val.is_empty());
        }
    }

    #[test]
    fn one_class_is_refused() {
        let train = labels(&[30]);
        let test = labels(&[5]);
        let cfg = SplitConfig {
            longtail: Profile::Exp {
                imbalance_ratio: 10.0,
                n_max: None,
            },
            val_per_class: 2,
            seed: 0,
        };
        let p = PoolLabels {
            num_classes: 1,
            train: &train,
            val: None,
            test: &test,
        };
        let e = draw(&p, &cfg).err().unwrap().to_string();
        assert!(
            e.contains("the data has 1 class: long-tailed recognition needs at least 2"),
            "{e}"
        );
    }

    #[test]
    fn hold_out_is_balanced_disjoint_and_matches_numpy() {
        let train = labels(&[30, 30, 30]);
        let test = labels(&[5, 5, 5]);
        let cfg = SplitConfig {
            longtail: Profile::Exp {
                imbalance_ratio: 4.0,
                n_max: None,
            },
            val_per_class: 3,
            seed: 0,
        };
        let d = draw(
            &PoolLabels {
                num_classes: 3,
                train: &train,
                val: None,
                test: &test,
            },
            &cfg,
        )
        .unwrap();
        assert_eq!(d.counts.train, [27, 13, 6]);
        assert_eq!(d.counts.val, [3, 3, 3]);
        let mut all: Vec<u32> = d.train.iter().chain(&d.val).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 27 + 13 + 6 + 9, "train and val overlap");
        // import numpy as np
        // rs = np.random.RandomState(0); a = np.arange(30); rs.shuffle(a); print(a[:3], a[3:6])
        // -> [ 2 28 13] [10 26 24]
        assert_eq!(&d.val[..3], [2, 28, 13]);
        assert_eq!(&d.train[..3], [10, 26, 24]);
    }

    #[test]
    fn k_too_large_is_an_error() {
        let train = labels(&[10, 4]);
        let cfg = SplitConfig {
            val_per_class: 4,
            ..Default::default()
        };
        let e = draw(
            &PoolLabels {
                num_classes: 2,
                train: &train,
                val: None,
                test: &[],
            },
            &cfg,
        )
        .unwrap_err();
        assert!(e.to_string().contains("val_per_class 4 is too large"), "{e}");
    }

    #[test]
    fn shot_group_bounds() {
        let g = ShotGroups::from_counts(&[101, 100, 20, 19]);
        assert_eq!((g.many, g.medium, g.few), (vec![0], vec![1, 2], vec![3]));
    }

    #[test]
    fn llt_draws_a_seeded_class_subset() {
        let train = labels(&[50; 8]);
        let cfg = SplitConfig {
            longtail: Profile::Llt {
                num_classes: 3,
                min: 10,
                max: 40,
            },
            val_per_class: 5,
            seed: 3,
        };
        let p = PoolLabels {
            num_classes: 8,
            train: &train,
            val: None,
            test: &labels(&[2; 8]),
        };
        let a = draw(&p, &cfg).unwrap();
        assert_eq!(a, draw(&p, &cfg).unwrap());
        assert_eq!(a.source_classes.len(), 3);
        assert_eq!(a.counts.train, [40, 20, 10]);
        assert_eq!(a.test.len(), 6);
    }
}
