//! The policy update of Algorithm 1 on plain numbers: a Gaussian policy N(μ, σ²I) over C logits,
//! the PPO2 clipped objective and its gradient in μ (the optimiser is `optim::Adam`).
//!
//! log p(W; μ) = −‖W − μ‖²/(2σ²) + const, so the ratio ρ = p(W; μ)/p(W; μ_t) is
//! exp((‖W − μ_t‖² − ‖W − μ‖²)/(2σ²)) and ∇_μ ρ = ρ·(W − μ)/σ².

/// ρ = p(W; μ, σ²I) / p(W; μ_t, σ²I).
pub fn ratio(w: &[f64], mu: &[f64], mu_t: &[f64], sigma: f64) -> f64 {
    let d = |a: &[f64]| w.iter().zip(a).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    ((d(mu_t) - d(mu)) / (2.0 * sigma * sigma)).exp()
}

/// The PPO2 objective (1/M) Σ_m min(ρ_m A_m, clip(ρ_m, 1 − ε, 1 + ε) A_m) and its gradient in μ.
///
/// The min picks the unclipped term, whose gradient is A·ρ·(W − μ)/σ², except where clipping
/// binds: ρ > 1 + ε with A > 0, or ρ < 1 − ε with A < 0; there the term is constant in μ.
pub fn clipped_objective(
    mu: &[f64],
    mu_t: &[f64],
    samples: &[Vec<f64>],
    advantages: &[f64],
    sigma: f64,
    eps: f64,
) -> (f64, Vec<f64>) {
    let m = samples.len() as f64;
    let mut value = 0.0;
    let mut grad = vec![0.0; mu.len()];
    for (w, &a) in samples.iter().zip(advantages) {
        let rho = ratio(w, mu, mu_t, sigma);
        let clipped = rho.clamp(1.0 - eps, 1.0 + eps);
        value += (rho * a).min(clipped * a) / m;
        let binds = (a > 0.0 && rho > 1.0 + eps) || (a < 0.0 && rho < 1.0 - eps);
        if !binds {
            for (g, (x, u)) in grad.iter_mut().zip(w.iter().zip(mu)) {
                *g += a * rho * (x - u) / (sigma * sigma) / m;
            }
        }
    }
    (value, grad)
}

/// softmax(x).
pub fn softmax(x: &[f64]) -> Vec<f64> {
    let mx = x.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - mx).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_grad(mu: &[f64], mu_t: &[f64], s: &[Vec<f64>], a: &[f64], sigma: f64, eps: f64) -> Vec<f64> {
        (0..mu.len())
            .map(|i| {
                let h = 1e-6;
                let (mut p, mut q) = (mu.to_vec(), mu.to_vec());
                p[i] += h;
                q[i] -= h;
                (clipped_objective(&p, mu_t, s, a, sigma, eps).0
                    - clipped_objective(&q, mu_t, s, a, sigma, eps).0)
                    / (2.0 * h)
            })
            .collect()
    }

    #[test]
    fn gradient_matches_finite_differences_inside_and_outside_the_clip() {
        let mu_t = [0.1, -0.2, 0.3];
        let s = vec![
            vec![0.5, -0.1, 0.2],
            vec![-0.3, 0.4, 0.1],
            vec![0.2, 0.2, -0.5],
            vec![0.0, -0.6, 0.9],
        ];
        let a = [0.3, -0.2, 0.1, -0.2];
        // μ = μ_t (ρ = 1 everywhere), a small move (inside the clip) and a large one (clip binds)
        for shift in [0.0, 0.05, 0.6] {
            let mu: Vec<f64> = mu_t
                .iter()
                .enumerate()
                .map(|(i, x)| x + shift * (i as f64 - 1.0))
                .collect();
            let (_, g) = clipped_objective(&mu, &mu_t, &s, &a, 0.5, 0.2);
            let fd = fd_grad(&mu, &mu_t, &s, &a, 0.5, 0.2);
            for (x, y) in g.iter().zip(&fd) {
                assert!((x - y).abs() < 1e-5, "shift {shift}: {g:?} vs {fd:?}");
            }
        }
    }

    #[test]
    fn objective_by_hand() {
        // one sample, C = 1, σ = 1: ρ = exp(((w − μ_t)² − (w − μ)²)/2)
        // w = 1, μ_t = 0, μ = 0.5: ρ = exp((1 − 0.25)/2) = e^0.375 = 1.45499…; with A = 2, ε = 0.2 the
        // clip binds: min(2.90998, 1.2·2) = 2.4, gradient 0
        let (v, g) = clipped_objective(&[0.5], &[0.0], &[vec![1.0]], &[2.0], 1.0, 0.2);
        assert!((v - 2.4).abs() < 1e-12 && g[0] == 0.0);
        // with A = −2 the unclipped term is the min: −2ρ, gradient −2ρ(w − μ) = −ρ
        let (v, g) = clipped_objective(&[0.5], &[0.0], &[vec![1.0]], &[-2.0], 1.0, 0.2);
        let rho = 0.375f64.exp();
        assert!((v + 2.0 * rho).abs() < 1e-12 && (g[0] + rho).abs() < 1e-12);
    }
}
