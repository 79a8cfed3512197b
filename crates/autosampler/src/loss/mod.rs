//! Losses for long-tailed training, each matching the PyTorch code it names (the reference code
//! and the value it printed sit in the tests, as candle does).
//!
//! # Shapes
//! - logits `[B, C]` f32, targets `[B]` i64 → a scalar.
use crate::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

fn zero() -> f64 {
    0.0
}
fn half() -> f64 {
    0.5
}
fn thirty() -> f64 {
    30.0
}
fn one() -> f64 {
    1.0
}

/// The loss (`[train.loss]`, chosen by `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LossConfig {
    /// Cross-entropy, with optional label smoothing ε.
    Ce {
        #[serde(default = "zero")]
        label_smoothing: f64,
    },
    /// Focal loss (Lin et al.) in LDAM-DRW's form: mean of (1 − p)^γ · CE, p = exp(−CE).
    Focal { gamma: f64 },
    /// Class-balanced loss (Cui et al.): per-class weights (1 − β)/(1 − β^n_c), normalised to sum
    /// C, on softmax cross-entropy (`gamma = 0`) or on the focal loss (`gamma > 0`).
    ClassBalanced {
        beta: f64,
        #[serde(default = "zero")]
        gamma: f64,
    },
    /// LDAM (Cao et al.): the target logit minus m_c ∝ n_c^(−1/4) (largest `max_m`), × `s`.
    Ldam {
        #[serde(default = "half")]
        max_m: f64,
        #[serde(default = "thirty")]
        s: f64,
    },
    /// Balanced softmax / logit adjustment (Ren et al.; Menon et al.): CE on logits + τ·log prior.
    LogitAdjusted {
        #[serde(default = "one")]
        tau: f64,
    },
}

impl LossConfig {
    /// The loss's parameters in range (NaN included); the error names the key and the value.
    pub fn check(&self) -> Result<()> {
        let r = crate::check::Ranges("train.loss");
        match self {
            LossConfig::Ce { label_smoothing } => r.unit_open("label_smoothing", *label_smoothing),
            LossConfig::Focal { gamma } => r.non_negative("gamma", *gamma),
            LossConfig::ClassBalanced { beta, gamma } => {
                r.unit_open("beta", *beta)?;
                r.non_negative("gamma", *gamma)
            }
            LossConfig::Ldam { max_m, s } => {
                r.positive("max_m", *max_m)?;
                r.positive("s", *s)
            }
            LossConfig::LogitAdjusted { tau } => r.non_negative("tau", *tau),
        }
    }
}

/// Label-aware smoothing (MiSLAS, Zhong et al.), a loss for re-training the classifier in stage 2:
/// label smoothing whose ε depends on the target class, ε_c from `tail` for the rarest class to
/// `head` for the most frequent, along `shape` of x_c = (n_c − n_min)/(n_max − n_min) (0 when every
/// class has as many images): concave tail + (head − tail)·sin(πx/2), linear tail + (head − tail)·x,
/// convex head + (head − tail)·sin(3π/2 + πx/2). The loss is mean over the batch of
/// (1 − ε_y)·(−log p_y) + ε_y·mean_j(−log p_j). MiSLAS's CIFAR settings: head 0.3 (CIFAR-10) or 0.4
/// (CIFAR-100), tail 0, concave.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelAwareSmoothing {
    pub head: f64,
    pub tail: f64,
    #[serde(default)]
    pub shape: SmoothingShape,
}

/// How label-aware smoothing's ε goes from the rarest class to the most frequent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmoothingShape {
    #[default]
    Concave,
    Linear,
    Convex,
}

impl LabelAwareSmoothing {
    /// `head` and `tail` in [0, 1) (NaN refused); the error names `section`'s key and the value.
    pub fn check(&self, section: &'static str) -> Result<()> {
        let r = crate::check::Ranges(section);
        r.unit_open("head", self.head)?;
        r.unit_open("tail", self.tail)
    }

    /// ε of each class for a training set of `counts`.
    pub fn epsilons(&self, counts: &[usize]) -> Vec<f64> {
        let (lo, hi) = (
            counts.iter().copied().min().unwrap_or(0) as f64,
            counts.iter().copied().max().unwrap_or(0) as f64,
        );
        let (h, t) = (self.head, self.tail);
        counts
            .iter()
            .map(|&n| {
                let x = if hi > lo { (n as f64 - lo) / (hi - lo) } else { 0.0 };
                let half_pi = std::f64::consts::FRAC_PI_2;
                match self.shape {
                    SmoothingShape::Concave => t + (h - t) * (x * half_pi).sin(),
                    SmoothingShape::Linear => t + (h - t) * x,
                    SmoothingShape::Convex => h + (h - t) * (3.0 * half_pi + x * half_pi).sin(),
                }
            })
            .collect()
    }

    /// The loss of `logits` (`[B, C]`) against `targets` (`[B]`) with per-class `epsilons`.
    pub fn loss(logits: &Tensor, targets: &Tensor, epsilons: &[f64]) -> Tensor {
        let eps = tensor(epsilons, logits).index_select(0, targets);
        let logp = logits.log_softmax(-1, Kind::Float);
        let nll = -logp.gather(1, &targets.unsqueeze(1), false).squeeze_dim(1);
        let smooth = -logp.mean_dim(-1, false, Kind::Float);
        ((-&eps + 1.0) * nll + eps * smooth).mean(Kind::Float)
    }
}

/// Deferred re-weighting (LDAM-DRW): from `start_epoch` (0-based) on, the loss is weighted by the
/// class-balanced weights of `beta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drw {
    pub start_epoch: usize,
    #[serde(default = "default_drw_beta")]
    pub beta: f64,
}

fn default_drw_beta() -> f64 {
    0.9999
}

/// Cui et al.'s class-balanced weights: (1 − β)/(1 − β^n_c), scaled to sum to C.
pub fn class_balanced_weights(counts: &[usize], beta: f64) -> Vec<f64> {
    let w: Vec<f64> = counts
        .iter()
        .map(|&n| (1.0 - beta) / (1.0 - beta.powf(n as f64)))
        .collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|x| x / s * counts.len() as f64).collect()
}

/// LDAM margins: 1/n_c^(1/4), scaled so the largest is `max_m`.
pub fn ldam_margins(counts: &[usize], max_m: f64) -> Vec<f64> {
    let m: Vec<f64> = counts.iter().map(|&n| 1.0 / (n as f64).sqrt().sqrt()).collect();
    let top = m.iter().cloned().fold(f64::MIN, f64::max);
    m.iter().map(|x| x * max_m / top).collect()
}

/// A loss bound to the class counts of a training set.
pub struct Loss {
    cfg: LossConfig,
    drw: Option<Drw>,
    counts: Vec<usize>,
}

fn tensor(v: &[f64], like: &Tensor) -> Tensor {
    Tensor::from_slice(v)
        .to_kind(Kind::Float)
        .to_device(like.device())
}

impl Loss {
    pub fn new(cfg: &LossConfig, drw: Option<&Drw>, counts: &[usize]) -> Result<Loss> {
        if counts.is_empty() || counts.contains(&0) {
            return Err(invalid!(
                "losses need every class to have training images, counts: {counts:?}"
            ));
        }
        cfg.check()?;
        Ok(Loss {
            cfg: cfg.clone(),
            drw: drw.cloned(),
            counts: counts.to_vec(),
        })
    }

    /// The per-class weights in force at `epoch`, if any.
    pub fn weights(&self, epoch: usize) -> Option<Vec<f64>> {
        if let LossConfig::ClassBalanced { beta, .. } = self.cfg {
            return Some(class_balanced_weights(&self.counts, beta));
        }
        match &self.drw {
            Some(d) if epoch >= d.start_epoch => Some(class_balanced_weights(&self.counts, d.beta)),
            _ => None,
        }
    }

    /// The loss of `logits` against `targets` at `epoch`.
    pub fn forward(&self, logits: &Tensor, targets: &Tensor, epoch: usize) -> Tensor {
        let w = self.weights(epoch).map(|w| tensor(&w, logits));
        let ce = |x: &Tensor, eps: f64| x.cross_entropy_loss(targets, w.as_ref(), Reduction::Mean, -100, eps);
        match &self.cfg {
            LossConfig::Ce { label_smoothing } => ce(logits, *label_smoothing),
            LossConfig::Focal { gamma } => focal(logits, targets, *gamma, w.as_ref()),
            LossConfig::ClassBalanced { gamma, .. } if *gamma > 0.0 => {
                focal(logits, targets, *gamma, w.as_ref())
            }
            LossConfig::ClassBalanced { .. } => ce(logits, 0.0),
            LossConfig::Ldam { max_m, s } => {
                let m = tensor(&ldam_margins(&self.counts, *max_m), logits);
                let one_hot = logits.zeros_like().scatter_value(1, &targets.unsqueeze(1), 1.0);
                let adjusted = logits - one_hot * m.index_select(0, targets).unsqueeze(1);
                ce(&(adjusted * *s), 0.0)
            }
            LossConfig::LogitAdjusted { tau } => {
                let n: f64 = self.counts.iter().sum::<usize>() as f64;
                let log_prior: Vec<f64> = self.counts.iter().map(|&c| (c as f64 / n).ln() * tau).collect();
                ce(&(logits + tensor(&log_prior, logits)), 0.0)
            }
        }
    }
}

/// LDAM-DRW's `FocalLoss`: p = exp(−CE_i) of the (weighted) per-sample CE, mean((1 − p)^γ · CE_i).
fn focal(logits: &Tensor, targets: &Tensor, gamma: f64, w: Option<&Tensor>) -> Tensor {
    let ce = logits.cross_entropy_loss(targets, w, Reduction::None, -100, 0.0);
    let p = (-&ce).exp();
    ((-p + 1.0).pow_tensor_scalar(gamma) * ce).mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    // import torch, torch.nn.functional as F, numpy as np
    // x = torch.tensor([[1.0, 2.0, 0.5], [0.3, -1.2, 2.2], [0.0, 0.1, -0.3], [1.5, 1.5, 0.2]])
    // y = torch.tensor([1, 2, 0, 2]); n = np.array([100, 20, 5])
    fn inputs() -> (Tensor, Tensor) {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 0.5, 0.3, -1.2, 2.2, 0.0, 0.1, -0.3, 1.5, 1.5, 0.2])
            .view([4, 3]);
        (x, Tensor::from_slice(&[1i64, 2, 0, 2]))
    }
    const N: [usize; 3] = [100, 20, 5];

    fn value(cfg: LossConfig, drw: Option<Drw>, epoch: usize) -> f64 {
        let (x, y) = inputs();
        Loss::new(&cfg, drw.as_ref(), &N)
            .unwrap()
            .forward(&x, &y, epoch)
            .double_value(&[])
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-5, "{a} vs PyTorch {b}");
    }

    // MiSLAS's LabelAwareSmoothing(n, smooth_head, smooth_tail, shape)(x, y) (methods.py), its
    // .smooth and the loss:
    //   concave 0.3/0.0 -> [0.3, 0.07364564388990402, 0.0], 0.9701374173164368
    //   linear  0.3/0.0 -> [0.3, 0.04736842215061188, 0.0], 0.964663028717041
    //   convex  0.3/0.0 -> [0.3, 0.009179919958114624, 0.0], 0.9567070603370667
    //   concave 0.4/0.1 -> [0.4, 0.17364564538002014, 0.1], 1.0151374340057373
    #[test]
    fn label_aware_smoothing_matches_mislas() {
        use SmoothingShape::*;
        let (x, y) = inputs();
        for (shape, head, tail, middle, want) in [
            (Concave, 0.3, 0.0, 0.07364564388990402, 0.9701374173164368),
            (Linear, 0.3, 0.0, 0.04736842215061188, 0.964663028717041),
            (Convex, 0.3, 0.0, 0.009179919958114624, 0.9567070603370667),
            (Concave, 0.4, 0.1, 0.17364564538002014, 1.0151374340057373),
        ] {
            let las = LabelAwareSmoothing { head, tail, shape };
            let eps = las.epsilons(&N);
            assert!(
                (eps[0] - head).abs() < 1e-12 && (eps[2] - tail).abs() < 1e-12,
                "{eps:?}"
            );
            close(eps[1], middle);
            close(LabelAwareSmoothing::loss(&x, &y, &eps).double_value(&[]), want);
        }
        // with ε = 0 everywhere it is the cross-entropy
        let zero = LabelAwareSmoothing::loss(&x, &y, &[0.0; 3]).double_value(&[]);
        close(zero, 0.949794590473175);
        // equal counts: x = 0, every class the tail's ε (MiSLAS divides by zero there)
        let las = LabelAwareSmoothing {
            head: 0.3,
            tail: 0.1,
            shape: Convex,
        };
        assert!(las.epsilons(&[7, 7]).iter().all(|e| (e - 0.1).abs() < 1e-12));
        let bad = LabelAwareSmoothing { head: 1.0, ..las };
        let e = bad.check("stage2.label_aware_smoothing").unwrap_err().to_string();
        assert!(
            e.contains("[stage2.label_aware_smoothing] head must be in [0, 1), got 1"),
            "{e}"
        );
    }

    #[test]
    fn cross_entropy_and_label_smoothing() {
        // F.cross_entropy(x, y) -> 0.949794590473175
        close(
            value(LossConfig::Ce { label_smoothing: 0.0 }, None, 0),
            0.949794590473175,
        );
        // F.cross_entropy(x, y, label_smoothing=0.1) -> 0.9947946071624756
        close(
            value(LossConfig::Ce { label_smoothing: 0.1 }, None, 0),
            0.9947946071624756,
        );
    }

    #[test]
    fn focal() {
        // def focal(x, y, g, w=None):
        //     v = F.cross_entropy(x, y, reduction='none', weight=w); p = torch.exp(-v)
        //     return ((1 - p) ** g * v).mean()
        // focal(x, y, 2.0) -> 0.5377082824707031
        close(
            value(LossConfig::Focal { gamma: 2.0 }, None, 0),
            0.5377082824707031,
        );
    }

    #[test]
    fn class_balanced() {
        // beta = 0.99; eff = 1.0 - np.power(beta, n); w = (1.0 - beta) / eff; w = w / w.sum() * 3
        // -> [0.17224503935269897, 0.5996811898533396, 2.228073770793961]
        let w = class_balanced_weights(&N, 0.99);
        for (a, b) in w
            .iter()
            .zip([0.17224503935269897, 0.5996811898533396, 2.228073770793961])
        {
            close(*a, b);
        }
        // F.cross_entropy(x, y, weight=wt) -> 1.0631948709487915
        close(
            value(
                LossConfig::ClassBalanced {
                    beta: 0.99,
                    gamma: 0.0,
                },
                None,
                0,
            ),
            1.0631948709487915,
        );
        // focal(x, y, 1.0, wt) -> 1.2244700193405151
        close(
            value(
                LossConfig::ClassBalanced {
                    beta: 0.99,
                    gamma: 1.0,
                },
                None,
                0,
            ),
            1.2244700193405151,
        );
    }

    #[test]
    fn ldam_and_drw() {
        // m = 1.0 / np.sqrt(np.sqrt(n)); m = m * (0.5 / m.max()); mt = torch.tensor(m, dtype=torch.float)
        // idx = torch.zeros_like(x, dtype=torch.bool); idx.scatter_(1, y.view(-1, 1), True)
        // out = torch.where(idx, x - mt[y].view(-1, 1), x)
        // F.cross_entropy(30 * out, y) -> 16.196563720703125
        let ldam = LossConfig::Ldam { max_m: 0.5, s: 30.0 };
        close(value(ldam.clone(), None, 0), 16.196563720703125);
        // DRW with beta 0.99 from epoch 2: F.cross_entropy(30 * out, y, weight=wt) -> 23.641374588012695
        let drw = Drw {
            start_epoch: 2,
            beta: 0.99,
        };
        close(value(ldam.clone(), Some(drw.clone()), 1), 16.196563720703125);
        close(value(ldam, Some(drw), 2), 23.641374588012695);
    }

    #[test]
    fn logit_adjusted() {
        // prior = torch.tensor(n / n.sum(), dtype=torch.float)
        // F.cross_entropy(x + torch.log(prior), y) -> 1.7997523546218872
        close(
            value(LossConfig::LogitAdjusted { tau: 1.0 }, None, 0),
            1.7997523546218872,
        );
        // F.cross_entropy(x + 2.0 * torch.log(prior), y) -> 3.4541525840759277
        close(
            value(LossConfig::LogitAdjusted { tau: 2.0 }, None, 0),
            3.4541525840759277,
        );
    }

    #[test]
    fn bad_parameters() {
        assert!(Loss::new(&LossConfig::Ce { label_smoothing: 1.0 }, None, &N).is_err());
        assert!(Loss::new(
            &LossConfig::ClassBalanced {
                beta: 1.0,
                gamma: 0.0
            },
            None,
            &N
        )
        .is_err());
        assert!(Loss::new(&LossConfig::Focal { gamma: -1.0 }, None, &N).is_err());
    }
}
