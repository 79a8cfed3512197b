//! Long-tailed profiles: how many training images each class keeps.
use crate::{invalid, Result};
use serde::{Deserialize, Serialize};

/// A long-tailed profile (`[data.longtail]` in a config, chosen by `kind`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Profile {
    /// Keep every training image (the source is used as it is).
    #[default]
    None,
    /// Exponential (Cao et al., LDAM-DRW): class i of C keeps `floor(n_max · IR^(−i/(C−1)))`.
    Exp {
        imbalance_ratio: f64,
        /// Default: the smallest class's count after the validation hold-out.
        #[serde(default)]
        n_max: Option<usize>,
    },
    /// Step (Cao et al.): the first `floor(C·(1−minority_fraction))` classes keep `n_max`, the
    /// rest `floor(n_max / IR)`.
    Step {
        imbalance_ratio: f64,
        #[serde(default = "half")]
        minority_fraction: f64,
        #[serde(default)]
        n_max: Option<usize>,
    },
    /// An explicit count for every class, in class order.
    Counts { counts: Vec<usize> },
    /// The paper's "ImageNet-LLT" style: `num_classes` classes drawn (seeded) from the source,
    /// their counts falling exponentially from `max` to `min`.
    Llt {
        num_classes: usize,
        min: usize,
        max: usize,
    },
    /// ImageNet-LT's shape (Liu et al. 2019: class sizes from a Pareto distribution with α = 6,
    /// 1,280 to 5 images): class i of C keeps the Pareto(α) quantile of upper-tail probability
    /// (i + ½)/C, mapped linearly onto `max` … `min` and rounded. With the defaults on 1,000
    /// classes: 104,850 images, 350 classes above 100 and 158 below 20 (ImageNet-LT: 115,846,
    /// 385 and 136).
    Pareto {
        #[serde(default = "six")]
        alpha: f64,
        #[serde(default = "imagenet_lt_max")]
        max: usize,
        #[serde(default = "imagenet_lt_min")]
        min: usize,
    },
}

fn six() -> f64 {
    6.0
}
fn imagenet_lt_max() -> usize {
    1280
}
fn imagenet_lt_min() -> usize {
    5
}

/// The `pareto` profile's counts (see [`Profile::Pareto`]).
pub fn pareto_counts(num_classes: usize, alpha: f64, max: usize, min: usize) -> Vec<usize> {
    let c = num_classes as f64;
    let x = |i: usize| ((i as f64 + 0.5) / c).powf(-1.0 / alpha);
    let (hi, lo) = (x(0), x(num_classes - 1));
    (0..num_classes)
        .map(|i| {
            if num_classes == 1 {
                max
            } else {
                (min as f64 + (x(i) - lo) / (hi - lo) * (max - min) as f64).round() as usize
            }
        })
        .collect()
}

fn half() -> f64 {
    0.5
}

/// `floor(n_max · (1/IR)^(i/(C−1)))` for i in 0..C, computed exactly as LDAM-DRW's
/// `img_max * (imb_factor ** (cls_idx / (cls_num - 1.0)))` so the counts agree to the image.
pub fn exp_counts(n_max: usize, num_classes: usize, imbalance_ratio: f64) -> Vec<usize> {
    if num_classes == 1 {
        return vec![n_max];
    }
    (0..num_classes)
        .map(|i| {
            (n_max as f64 * (1.0 / imbalance_ratio).powf(i as f64 / (num_classes as f64 - 1.0))) as usize
        })
        .collect()
}

/// Step profile counts.
pub fn step_counts(
    n_max: usize,
    num_classes: usize,
    imbalance_ratio: f64,
    minority_fraction: f64,
) -> Vec<usize> {
    let majority = (num_classes as f64 * (1.0 - minority_fraction)).floor() as usize;
    (0..num_classes)
        .map(|i| {
            if i < majority {
                n_max
            } else {
                (n_max as f64 / imbalance_ratio) as usize
            }
        })
        .collect()
}

fn check_ir(ir: f64) -> Result<()> {
    if !(ir >= 1.0 && ir.is_finite()) {
        return Err(invalid!("imbalance_ratio {ir} is invalid: expected a number ≥ 1"));
    }
    Ok(())
}

impl Profile {
    /// Checks the parameters that do not depend on the data.
    pub fn validate(&self) -> Result<()> {
        match self {
            Profile::None => Ok(()),
            Profile::Exp { imbalance_ratio, .. } => check_ir(*imbalance_ratio),
            Profile::Step {
                imbalance_ratio,
                minority_fraction,
                ..
            } => {
                check_ir(*imbalance_ratio)?;
                if !(0.0..=1.0).contains(minority_fraction) {
                    return Err(invalid!(
                        "minority_fraction {minority_fraction} is invalid: expected 0 to 1"
                    ));
                }
                Ok(())
            }
            Profile::Counts { counts } if counts.is_empty() => {
                Err(invalid!("counts is empty: expected one count per class"))
            }
            Profile::Counts { .. } => Ok(()),
            Profile::Pareto { alpha, min, max } => {
                if !(*alpha > 0.0 && alpha.is_finite()) || *min == 0 || min > max {
                    return Err(invalid!(
                        "pareto profile needs alpha > 0 and 1 ≤ min ≤ max, got alpha {alpha}, min {min}, max {max}"
                    ));
                }
                Ok(())
            }
            Profile::Llt {
                num_classes,
                min,
                max,
            } => {
                if *num_classes == 0 || *min == 0 || min > max {
                    return Err(invalid!(
                        "llt profile needs num_classes ≥ 1 and 1 ≤ min ≤ max, got num_classes {num_classes}, min {min}, max {max}"
                    ));
                }
                Ok(())
            }
        }
    }

    /// Per-class counts for classes whose available images (after the hold-out) are `available`.
    pub fn counts(&self, available: &[usize]) -> Result<Vec<usize>> {
        self.validate()?;
        let c = available.len();
        let smallest = available.iter().copied().min().unwrap_or(0);
        let counts = match self {
            Profile::None => available.to_vec(),
            Profile::Exp {
                imbalance_ratio,
                n_max,
            } => exp_counts(n_max.unwrap_or(smallest), c, *imbalance_ratio),
            Profile::Step {
                imbalance_ratio,
                minority_fraction,
                n_max,
            } => step_counts(n_max.unwrap_or(smallest), c, *imbalance_ratio, *minority_fraction),
            Profile::Counts { counts } => {
                if counts.len() != c {
                    return Err(invalid!(
                        "counts has {} entries: expected one per class ({c})",
                        counts.len()
                    ));
                }
                counts.clone()
            }
            Profile::Llt { min, max, .. } => exp_counts(*max, c, *max as f64 / *min as f64),
            Profile::Pareto { alpha, max, min } => pareto_counts(c, *alpha, *max, *min),
        };
        for (i, (&n, &a)) in counts.iter().zip(available).enumerate() {
            if n > a {
                return Err(invalid!(
                    "class {i} needs {n} training images but has only {a} after the validation hold-out"
                ));
            }
            if n == 0 {
                return Err(invalid!(
                    "class {i} would keep no training image: lower the imbalance ratio or raise n_max"
                ));
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // LDAM-DRW (kaidic/LDAM-DRW, imbalance_cifar.py, get_img_num_per_cls with img_max = 5000):
    //   [int(5000 * 0.01 ** (i / 9.0)) for i in range(10)]
    //   -> [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]   sum 12406
    #[test]
    fn cifar10_lt_counts_match_ldam_drw() {
        assert_eq!(
            exp_counts(5000, 10, 100.0),
            [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
        );
        let total = |ir| exp_counts(5000, 10, ir).iter().sum::<usize>();
        assert_eq!(total(100.0), 12_406);
        assert_eq!(total(50.0), 13_996);
        assert_eq!(total(10.0), 20_431);
    }

    #[test]
    fn cifar100_lt_counts_match_ldam_drw() {
        let total = |ir| exp_counts(500, 100, ir).iter().sum::<usize>();
        assert_eq!(total(100.0), 10_847);
        assert_eq!(total(50.0), 12_608);
        let c = exp_counts(500, 100, 100.0);
        assert_eq!((c[0], c[99]), (500, 5));
    }

    #[test]
    fn reference_counts_with_hold_out() {
        // torch_reference.py: lt_counts(4980, 10, 100) after holding out 20 per class
        assert_eq!(
            exp_counts(4980, 10, 100.0),
            [4980, 2985, 1789, 1072, 643, 385, 231, 138, 83, 49]
        );
    }

    #[test]
    fn step_profile() {
        // LDAM-DRW step: the first C // 2 classes keep img_max, the rest int(img_max * imb_factor)
        assert_eq!(step_counts(500, 5, 10.0, 0.5), [500, 500, 50, 50, 50]);
        assert_eq!(step_counts(500, 4, 10.0, 0.5), [500, 500, 50, 50]);
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = Profile::Exp {
            imbalance_ratio: 0.5,
            n_max: None,
        }
        .counts(&[10, 10])
        .unwrap_err();
        assert!(e.to_string().contains("imbalance_ratio 0.5"), "{e}");
        let e = Profile::Counts { counts: vec![5, 20] }
            .counts(&[10, 10])
            .unwrap_err();
        assert!(e.to_string().contains("class 1 needs 20"), "{e}");
        let e = Profile::Counts { counts: vec![5] }.counts(&[10, 10]).unwrap_err();
        assert!(e.to_string().contains("one per class"), "{e}");
    }

    /// ImageNet-LT's shape on 1,000 classes. Computed with
    /// `[round(5 + ((i+.5)/1000)**(-1/6) - lo) / (hi - lo) * 1275) ...]` in Python (numpy gives
    /// the same): 1280, 983, 862 … 5; sum 104,850; 350 classes above 100, 158 below 20.
    #[test]
    fn pareto_is_imagenet_lts_shape() {
        let n = pareto_counts(1000, 6.0, 1280, 5);
        assert_eq!((&n[..3], &n[997..]), (&[1280, 983, 862][..], &[5, 5, 5][..]));
        assert_eq!(n.iter().sum::<usize>(), 104_850);
        assert_eq!(n.iter().filter(|&&v| v > 100).count(), 350);
        assert_eq!(n.iter().filter(|&&v| v < 20).count(), 158);
        assert!(n.windows(2).all(|w| w[0] >= w[1]));
        let profile: Profile = toml::from_str("kind = \"pareto\"").unwrap();
        assert_eq!(profile.counts(&[1300; 1000]).unwrap(), n);
        let e = Profile::Pareto {
            alpha: 0.0,
            max: 10,
            min: 5,
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("alpha 0"), "{e}");
    }

    #[test]
    fn llt_spans_min_to_max() {
        let c = Profile::Llt {
            num_classes: 4,
            min: 50,
            max: 400,
        }
        .counts(&[500; 4])
        .unwrap();
        assert_eq!(c, [400, 200, 100, 50]);
    }
}
