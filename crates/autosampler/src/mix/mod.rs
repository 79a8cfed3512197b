//! Batch mixing: mixup (Zhang et al.) and random-box CutMix (Yun et al.), applied with probability
//! `prob` per batch. The loss of a mixed batch is λ·L(y) + (1 − λ)·L(y\[perm\]).
pub mod cam;
pub mod guided;

use crate::Result;
use rand::Rng;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

fn one() -> f64 {
    1.0
}

/// `[train.mix]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum MixConfig {
    #[default]
    None,
    /// x = λ·x + (1 − λ)·x\[perm\], λ ~ Beta(α, α).
    Mixup {
        alpha: f64,
        #[serde(default = "one")]
        prob: f64,
    },
    /// A box of area ≈ (1 − λ)·H·W (λ ~ Beta(α, α), centre uniform, clipped) is pasted from
    /// x\[perm\]; λ is then corrected to the kept area. With `fixed_lambda`, the label weight is
    /// that value instead (the paper's Table 2 λ column).
    Cutmix {
        alpha: f64,
        #[serde(default = "one")]
        prob: f64,
        #[serde(default)]
        fixed_lambda: Option<f64>,
    },
    /// Agent-guided CutMix (needs `[agent]`): each image receives its partner's salient patch at
    /// its own least important corner; the patch's label weight is `(S_patch / S_image)^tau`, or
    /// `fixed_lambda`. Patches come from `agent/locations.bin` mapped through the augmentation,
    /// or, with `per_batch`, from the agent run on every augmented batch.
    AgentCutmix {
        #[serde(default = "one")]
        prob: f64,
        #[serde(default = "d_tau")]
        tau: f64,
        #[serde(default)]
        fixed_lambda: Option<f64>,
        #[serde(default)]
        per_batch: bool,
    },
    /// CAM-guided CutMix: as `agent-cutmix`, with the patches taken from the class activation
    /// map of a trained model (`model`: a `model.safetensors` written by `autosampler run`) for
    /// the image's label (or, when the model has other classes, its prediction), located on every
    /// augmented batch: the `patch` px window (default: half the image side) of largest mean
    /// activation (`pick = "peak"`) or centred on the CAM paper's object box (`pick = "box"`).
    CamCutmix {
        model: std::path::PathBuf,
        #[serde(default = "one")]
        prob: f64,
        #[serde(default = "d_tau")]
        tau: f64,
        #[serde(default)]
        fixed_lambda: Option<f64>,
        #[serde(default)]
        patch: Option<i64>,
        #[serde(default)]
        pick: cam::Pick,
    },
}

fn d_tau() -> f64 {
    0.4
}

/// A mixed batch: images, the partner permutation, the weight λ of the original labels.
pub struct Mixed {
    pub images: Tensor,
    pub perm: Tensor,
    pub lambda: f64,
}

/// A CutMix box `(x0, y0, x1, y1)`, half-open, for area ratio `1 − λ` on an `h`×`w` image
/// (CutMix-PyTorch's `rand_bbox`).
pub fn cutmix_box(h: i64, w: i64, lambda: f64, rng: &mut impl Rng) -> (i64, i64, i64, i64) {
    let r = (1.0 - lambda).sqrt();
    let (cw, ch) = ((w as f64 * r) as i64, (h as f64 * r) as i64);
    let cx = rng.random_range(0..w);
    let cy = rng.random_range(0..h);
    (
        (cx - cw / 2).clamp(0, w),
        (cy - ch / 2).clamp(0, h),
        (cx + cw / 2).clamp(0, w),
        (cy + ch / 2).clamp(0, h),
    )
}

impl MixConfig {
    /// `(prob, tau, fixed_lambda)` of a guided CutMix (agent or CAM), `None` for other mixings.
    pub fn guided(&self) -> Option<(f64, f64, Option<f64>)> {
        match self {
            MixConfig::AgentCutmix {
                prob,
                tau,
                fixed_lambda,
                ..
            }
            | MixConfig::CamCutmix {
                prob,
                tau,
                fixed_lambda,
                ..
            } => Some((*prob, *tau, *fixed_lambda)),
            _ => None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let (alpha, prob, fixed) = match (self, self.guided()) {
            (_, Some((prob, tau, fixed_lambda))) => (tau, prob, fixed_lambda),
            (MixConfig::Mixup { alpha, prob }, _) => (*alpha, *prob, None),
            (
                MixConfig::Cutmix {
                    alpha,
                    prob,
                    fixed_lambda,
                },
                _,
            ) => (*alpha, *prob, *fixed_lambda),
            _ => return Ok(()), // MixConfig::None
        };
        let r = crate::check::Ranges("train.mix");
        if let MixConfig::CamCutmix { patch: Some(p), .. } = self {
            r.positive("patch", *p as f64)?;
        }
        let key = if self.is_guided() { "tau" } else { "alpha" };
        r.positive(key, alpha)?;
        r.unit("prob", prob)?;
        if let Some(l) = fixed {
            r.unit("fixed_lambda", l)?;
        }
        Ok(())
    }

    /// Whether the mix pastes located patches (agent or CAM), which stage 1 applies through a
    /// [`guided::Locator`].
    pub fn is_guided(&self) -> bool {
        self.guided().is_some()
    }

    /// Mixes `images` (`[B, 3, H, W]`) or returns `None` (no mixing for this batch; always for
    /// guided CutMix, which stage 1 applies through a [`guided::Locator`]).
    pub fn apply(&self, images: &Tensor, rng: &mut impl Rng) -> Option<Mixed> {
        let (alpha, prob) = match self {
            MixConfig::None | MixConfig::AgentCutmix { .. } | MixConfig::CamCutmix { .. } => return None,
            MixConfig::Mixup { alpha, prob } | MixConfig::Cutmix { alpha, prob, .. } => (*alpha, *prob),
        };
        if rng.random::<f64>() >= prob {
            return None;
        }
        let b = images.size()[0];
        let lambda: f64 = Beta::new(alpha, alpha).expect("alpha > 0").sample(rng);
        let mut order: Vec<i64> = (0..b).collect();
        use rand::seq::SliceRandom;
        order.shuffle(rng);
        let perm = Tensor::from_slice(&order).to_device(images.device());
        let partner = images.index_select(0, &perm);
        match self {
            MixConfig::Mixup { .. } => Some(Mixed {
                images: images * lambda + partner * (1.0 - lambda),
                perm,
                lambda,
            }),
            MixConfig::Cutmix { fixed_lambda, .. } => {
                let (h, w) = (images.size()[2], images.size()[3]);
                let (x0, y0, x1, y1) = cutmix_box(h, w, lambda, rng);
                let out = images.copy();
                if x1 > x0 && y1 > y0 {
                    out.narrow(2, y0, y1 - y0)
                        .narrow(3, x0, x1 - x0)
                        .copy_(&partner.narrow(2, y0, y1 - y0).narrow(3, x0, x1 - x0));
                }
                let area = 1.0 - ((x1 - x0) * (y1 - y0)) as f64 / (h * w) as f64;
                Some(Mixed {
                    images: out,
                    perm,
                    lambda: fixed_lambda.unwrap_or(area),
                })
            }
            _ => None,
        }
    }
}

/// λ·L(y) + (1 − λ)·L(y\[perm\]) for any loss `l`.
pub fn mixed_loss(l: impl Fn(&Tensor) -> Tensor, targets: &Tensor, m: &Mixed) -> Tensor {
    l(targets) * m.lambda + l(&targets.index_select(0, &m.perm)) * (1.0 - m.lambda)
}

/// Fraction of pixels that differ between two batches (for tests and sanity checks).
pub fn changed_fraction(a: &Tensor, b: &Tensor) -> f64 {
    a.ne_tensor(b)
        .any_dim(1, false)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn cutmix_lambda_is_the_kept_area() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let x = Tensor::arange(4 * 3 * 16 * 16, (Kind::Float, tch::Device::Cpu)).view([4, 3, 16, 16]);
        let cfg = MixConfig::Cutmix {
            alpha: 1.0,
            prob: 1.0,
            fixed_lambda: None,
        };
        for _ in 0..20 {
            let m = cfg.apply(&x, &mut rng).unwrap();
            // pixels taken from the partner: positions where the mixed image differs, for images
            // whose partner is another image
            let perm = Vec::<i64>::try_from(&m.perm).unwrap();
            for (i, &p) in perm.iter().enumerate() {
                if p as usize != i {
                    let frac = changed_fraction(
                        &m.images.get(i as i64).unsqueeze(0),
                        &x.get(i as i64).unsqueeze(0),
                    );
                    assert!((1.0 - frac - m.lambda).abs() < 1e-9, "{frac} {}", m.lambda);
                }
            }
        }
        let fixed = MixConfig::Cutmix {
            alpha: 1.0,
            prob: 1.0,
            fixed_lambda: Some(0.3),
        };
        assert_eq!(fixed.apply(&x, &mut rng).unwrap().lambda, 0.3);
        let never = MixConfig::Mixup {
            alpha: 1.0,
            prob: 0.0,
        };
        assert!(never.apply(&x, &mut rng).is_none());
    }

    #[test]
    fn mixup_is_a_convex_combination() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let x = Tensor::randn([5, 3, 4, 4], (Kind::Float, tch::Device::Cpu));
        let m = MixConfig::Mixup {
            alpha: 0.4,
            prob: 1.0,
        }
        .apply(&x, &mut rng)
        .unwrap();
        let want = &x * m.lambda + x.index_select(0, &m.perm) * (1.0 - m.lambda);
        assert!(m.images.allclose(&want, 1e-6, 1e-6, false));
        // the mixed loss of a loss that is linear in the target index
        let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4]).to_kind(Kind::Float);
        let l = mixed_loss(|t| t.sum(Kind::Float), &y, &m).double_value(&[]);
        assert!((l - 10.0).abs() < 1e-9);
    }
}
