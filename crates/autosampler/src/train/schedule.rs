//! Learning-rate schedules, per step: linear warm-up (`lr·(step+1)/warm`, as the reference), then
//! cosine to zero over the remaining steps, or piecewise-constant multipliers from given epochs
//! (the LDAM recipe: ×0.01 from epoch 160, ×0.0001 from 180).
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Schedule {
    Cosine,
    /// From epoch `milestones[i]` (0-based) on, lr = base × `factors[i]`.
    Step {
        milestones: Vec<usize>,
        factors: Vec<f64>,
    },
    Constant,
}

/// The learning rate at global step `step` (0-based).
pub fn lr_at(
    base: f64,
    warmup_epochs: usize,
    s: &Schedule,
    step: usize,
    steps_per_epoch: usize,
    epochs: usize,
) -> f64 {
    let total = steps_per_epoch * epochs;
    let warm = steps_per_epoch * warmup_epochs.min(epochs);
    if step < warm {
        return base * (step + 1) as f64 / warm as f64;
    }
    match s {
        Schedule::Constant => base,
        Schedule::Cosine => {
            let t = (step - warm) as f64 / (total.saturating_sub(warm)).max(1) as f64;
            0.5 * base * (1.0 + (std::f64::consts::PI * t).cos())
        }
        Schedule::Step { milestones, factors } => {
            let epoch = step / steps_per_epoch.max(1);
            let mut f = 1.0;
            for (m, x) in milestones.iter().zip(factors) {
                if epoch >= *m {
                    f = *x;
                }
            }
            base * f
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_schedule() {
        // torch_reference.py lr_at with lr 0.1, 10 steps/epoch, 30 epochs, 5 warm-up epochs
        let lr = |s| lr_at(0.1, 5, &Schedule::Cosine, s, 10, 30);
        assert!((lr(0) - 0.1 / 50.0).abs() < 1e-15);
        assert!((lr(49) - 0.1).abs() < 1e-15);
        assert!((lr(50) - 0.1).abs() < 1e-15);
        assert!((lr(175) - 0.05).abs() < 1e-12); // halfway through the cosine
        assert!(lr(299) < 1e-5);
    }

    #[test]
    fn ldam_step_recipe() {
        let s = Schedule::Step {
            milestones: vec![160, 180],
            factors: vec![0.01, 0.0001],
        };
        let lr = |e: usize| lr_at(0.1, 5, &s, e * 10, 10, 200);
        assert_eq!(lr(100), 0.1);
        assert!((lr(160) - 0.001).abs() < 1e-15);
        assert!((lr(199) - 0.00001).abs() < 1e-15);
    }
}
