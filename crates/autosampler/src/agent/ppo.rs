//! PPO for the patch policy (GFNet's `PPO.update`): discounted returns over the focus steps,
//! normalised over the whole batch, the clipped surrogate on a Gaussian policy with fixed std, a
//! value loss and an entropy bonus (the optimiser is `optim::Adam`).
use tch::{Kind, Tensor};

/// Discounted returns `R_t = r_t + γ·R_{t+1}` along the first axis.
///
/// # Shapes
/// - `rewards`: `[S, B]` (S focus steps) → `[S, B]`
pub fn discounted_returns(rewards: &Tensor, gamma: f64) -> Tensor {
    let s = rewards.size()[0];
    let mut out = Vec::with_capacity(s as usize);
    let mut running = rewards.get(s - 1).zeros_like();
    for t in (0..s).rev() {
        running = rewards.get(t) + running * gamma;
        out.push(running.shallow_clone());
    }
    out.reverse();
    Tensor::stack(&out, 0)
}

/// `(x − mean) / (std + 1e-5)` over every element (std unbiased, as `torch.std`).
pub fn normalise(x: &Tensor) -> Tensor {
    let m = x.mean(Kind::Float);
    let s = x.std(true);
    (x - m) / (s + 1e-5)
}

/// Group-relative advantages: the returns of `g` rollouts of each image, laid out image-major
/// within each copy (`[S, g·B]`, column `j·B + i` is copy `j` of image `i`), minus the mean over
/// the image's `g` copies at each step, then divided by their std over every element (+1e-5).
///
/// # Shapes
/// - `returns`: `[S, g·B]` → `[S, g·B]`
pub fn group_advantages(returns: &Tensor, g: i64) -> Tensor {
    let s = returns.size();
    let grouped = returns.view([s[0], g, s[1] / g]);
    let a = (&grouped - grouped.mean_dim(1, true, Kind::Float)).view([s[0], s[1]]);
    let sd = a.std(true);
    a / (sd + 1e-5)
}

/// Log-density of `a` under `N(mean, σ²·I)` in 2 dimensions: `−‖a−μ‖²/(2σ²) − 2·ln σ − ln 2π`.
///
/// # Shapes
/// - `a`, `mean`: `[N, 2]` → `[N]`
pub fn gaussian_log_prob(a: &Tensor, mean: &Tensor, std: f64) -> Tensor {
    let d = (a - mean)
        .pow_tensor_scalar(2)
        .sum_dim_intlist(-1, false, Kind::Float);
    d / (-2.0 * std * std) - 2.0 * std.ln() - (2.0 * std::f64::consts::PI).ln()
}

/// Entropy of a 2-d Gaussian with std σ on both axes: `1 + ln 2π + 2·ln σ`.
pub fn gaussian_entropy(std: f64) -> f64 {
    1.0 + (2.0 * std::f64::consts::PI).ln() + 2.0 * std.ln()
}

/// The PPO coefficients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PpoCoefs {
    pub clip: f64,
    pub value: f64,
    pub entropy: f64,
}

/// GFNet's PPO loss: `mean(−min(ρ·A, clip(ρ, 1−ε, 1+ε)·A)) + c_v·mean((V − R)²) − c_e·mean(H)`
/// with `ρ = exp(log π − log π_old)`; the advantage `A` is GFNet's `R − V` (V detached) when
/// `adv` is `None`, else the given one (e.g. [`group_advantages`]).
///
/// # Shapes
/// - `logp`, `logp_old`, `values`, `returns`, `adv`, `entropy`: the same shape, e.g. `[S, B]` → `[]`
pub fn ppo_loss(
    logp: &Tensor,
    logp_old: &Tensor,
    values: &Tensor,
    returns: &Tensor,
    adv: Option<&Tensor>,
    entropy: &Tensor,
    c: PpoCoefs,
) -> Tensor {
    let ratio = (logp - logp_old.detach()).exp();
    let adv = match adv {
        Some(a) => a.detach(),
        None => returns - values.detach(),
    };
    let s1 = &ratio * &adv;
    let s2 = ratio.clamp(1.0 - c.clip, 1.0 + c.clip) * &adv;
    let policy = -s1.minimum(&s2).mean(Kind::Float);
    let value = (values - returns).pow_tensor_scalar(2).mean(Kind::Float);
    policy + value * c.value - entropy.mean(Kind::Float) * c.entropy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).reshape(shape)
    }
    fn val(x: &Tensor) -> f64 {
        x.double_value(&[])
    }

    #[test]
    fn returns_are_discounted_backwards() {
        // rewards of 2 steps × 2 images; γ = 0.5: R_1 = r_1, R_0 = r_0 + 0.5·r_1
        let r = t(&[1.0, 0.0, 2.0, 4.0], &[2, 2]);
        let got: Vec<f32> = discounted_returns(&r, 0.5).reshape([-1]).try_into().unwrap();
        assert_eq!(got, [2.0, 2.0, 2.0, 4.0]);
    }

    #[test]
    fn normalised_returns() {
        // [1, 2, 3, 6]: mean 3, unbiased std sqrt((4+1+0+9)/3) = sqrt(14/3)
        let got: Vec<f32> = normalise(&t(&[1., 2., 3., 6.], &[2, 2]))
            .reshape([-1])
            .try_into()
            .unwrap();
        let s = (14.0f32 / 3.0).sqrt() + 1e-5;
        for (g, e) in got.iter().zip([-2.0 / s, -1.0 / s, 0.0, 3.0 / s]) {
            assert!((g - e).abs() < 1e-6);
        }
    }

    /// Two copies of two images, one step: image 0's returns 1 and 3 (mean 2), image 1's 5 and
    /// 5 → deviations [−1, 0, 1, 0], unbiased std sqrt(2/3).
    #[test]
    fn group_advantages_drop_the_image_mean() {
        let r = t(&[1.0, 5.0, 3.0, 5.0], &[1, 4]);
        let got: Vec<f32> = group_advantages(&r, 2).reshape([-1]).try_into().unwrap();
        let sd = (2.0f32 / 3.0).sqrt() + 1e-5;
        for (g, e) in got.iter().zip([-1.0 / sd, 0.0, 1.0 / sd, 0.0]) {
            assert!((g - e).abs() < 1e-6, "{got:?}");
        }
        // a given advantage replaces R − V in the loss: with A = 0 only value and entropy remain
        let z = t(&[0.0, 0.0], &[2]);
        let h = Tensor::full([2], gaussian_entropy(0.1), (Kind::Float, tch::Device::Cpu));
        let c = PpoCoefs {
            clip: 0.2,
            value: 0.5,
            entropy: 0.01,
        };
        let l = ppo_loss(&z, &z, &z, &t(&[1.0, -1.0], &[2]), Some(&z), &h, c);
        assert!((val(&l) - (0.5 + 0.017_672_932)).abs() < 1e-5, "{}", val(&l));
    }

    #[test]
    fn log_prob_and_entropy_match_the_formula() {
        // a = (0.5, 0.2), μ = (0.4, 0.4), σ = 0.1: −(0.01 + 0.04)/0.02 − 2 ln 0.1 − ln 2π
        let lp = gaussian_log_prob(&t(&[0.5, 0.2], &[1, 2]), &t(&[0.4, 0.4], &[1, 2]), 0.1);
        let e = -2.5 - 2.0 * 0.1f64.ln() - (2.0 * std::f64::consts::PI).ln();
        assert!((val(&lp.get(0)) - e).abs() < 1e-5);
        // torch.distributions.MultivariateNormal(zeros(2), scale_tril=diag([.1, .1])).entropy()
        // -> -1.7672932
        assert!((gaussian_entropy(0.1) - -1.7672932).abs() < 1e-6);
    }

    /// Two samples, ε = 0.2, c_v = 0.5, c_e = 0.01. Sample 1: ρ = e^{0.5} = 1.6487, A = 1 − 0.5
    /// = 0.5 → min(0.8244, 1.2·0.5 = 0.6) = 0.6. Sample 2: ρ = e^{−0.5} = 0.6065, A = −1 − 0 = −1
    /// → min(−0.6065, 0.8·−1 = −0.8) = −0.8. Policy term −(0.6 − 0.8)/2 = 0.1. Value term
    /// 0.5·((0.5−1)² + (0−(−1))²)/2 = 0.3125. Entropy term −0.01·(−1.7673) = 0.017673.
    #[test]
    fn ppo_loss_by_hand() {
        let logp = t(&[0.5, -0.5], &[2]);
        let old = t(&[0.0, 0.0], &[2]);
        let values = t(&[0.5, 0.0], &[2]);
        let returns = t(&[1.0, -1.0], &[2]);
        let h = Tensor::full([2], gaussian_entropy(0.1), (Kind::Float, tch::Device::Cpu));
        let c = PpoCoefs {
            clip: 0.2,
            value: 0.5,
            entropy: 0.01,
        };
        let l = ppo_loss(&logp, &old, &values, &returns, None, &h, c);
        assert!(
            (val(&l) - (0.1 + 0.3125 + 0.017_672_932)).abs() < 1e-5,
            "{}",
            val(&l)
        );
        // The gradient of the policy term: sample 1 is clipped (ρ = 1.65 > 1.2 with A > 0: none);
        // sample 2 at log π = −0.1 has ρ = 0.905 inside the range: −ρ·A/N = ρ/2 (A = −1, N = 2).
        let logp = t(&[0.5, -0.1], &[2]).set_requires_grad(true);
        let l = ppo_loss(&logp, &old, &values, &returns, None, &h, c);
        let g = Tensor::run_backward(&[l], &[&logp], false, false);
        let g: Vec<f32> = g[0].shallow_clone().try_into().unwrap();
        let rho2 = (-0.1f32).exp();
        assert!(g[0].abs() < 1e-7, "{g:?}");
        assert!((g[1] - rho2 / 2.0).abs() < 1e-6, "{g:?}");
    }
}
