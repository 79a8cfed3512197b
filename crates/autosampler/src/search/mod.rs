//! The coarse auto-sampler: Algorithm 1 of the paper. A Gaussian policy N(μ, σ²I) over C logits;
//! each of M samples W_m becomes class weights softmax(W_m); the proxy task re-trains the linear
//! classifier from the stage-1 one (θ0) for `proxy_epochs` on the cached training features with
//! class-weighted sampling; the reward is validation accuracy; the advantage is the reward minus
//! the mean of the M rewards; μ takes `update_steps` Adam steps on the PPO2 clipped objective.
//! The best W seen over all T trajectories is returned.
//!
//! The M proxy runs of a trajectory are one batched computation (`[M, B, D] × [M, D, C]`), with
//! the gradient of the cross-entropy written out (softmax − one-hot), so a proxy epoch is a few
//! hundred small tensor operations.
pub mod ppo;

use crate::features::Features;
use crate::rng::chacha;
use crate::sampler::{class_members, plan_with_replacement, power_weights};
use crate::{fsx, invalid, Result};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Kind, Tensor};

/// Where μ starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// μ = 0 (uniform weights, i.e. class-balanced).
    Uniform,
    /// μ = log of the instance-balanced weights.
    Instance,
    /// μ = log of the square-root weights.
    SquareRoot,
}

/// The reward of a proxy run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reward {
    /// Validation top-1.
    Top1,
    /// Mean per-class validation accuracy.
    Balanced,
}

fn d_t() -> usize {
    100
}
fn d_m() -> usize {
    8
}
fn d_sigma() -> f64 {
    0.5
}
fn d_clip() -> f64 {
    0.2
}
fn d_lr() -> f64 {
    0.05
}
fn d_steps() -> usize {
    5
}
fn d_one() -> usize {
    1
}
fn d_batch() -> usize {
    128
}
fn d_plr() -> f64 {
    0.01
}
fn d_pmom() -> f64 {
    0.9
}
fn d_init() -> Init {
    Init::Uniform
}
fn d_reward() -> Reward {
    Reward::Top1
}

/// `[search]` of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// T: trajectories (policy updates).
    #[serde(default = "d_t")]
    pub trajectories: usize,
    /// M: samples (proxy runs) per trajectory.
    #[serde(default = "d_m")]
    pub samples: usize,
    #[serde(default = "d_sigma")]
    pub sigma: f64,
    /// ε of the clipped objective.
    #[serde(default = "d_clip")]
    pub clip: f64,
    /// Adam's learning rate on μ.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Adam steps per trajectory.
    #[serde(default = "d_steps")]
    pub update_steps: usize,
    #[serde(default = "d_one")]
    pub proxy_epochs: usize,
    #[serde(default = "d_batch")]
    pub proxy_batch: usize,
    #[serde(default = "d_plr")]
    pub proxy_lr: f64,
    #[serde(default = "d_pmom")]
    pub proxy_momentum: f64,
    #[serde(default = "d_init")]
    pub init: Init,
    #[serde(default = "d_reward")]
    pub reward: Reward,
    #[serde(default)]
    pub seed: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        crate::config::parse_toml("", "defaults").expect("every field has a default")
    }
}

/// The proxy task over cached features.
pub struct Proxy<'a> {
    pub train: &'a Features,
    pub val: &'a Features,
    /// θ0: the stage-1 classifier, `[C, D]` weight and `[C]` bias.
    pub w0: &'a Tensor,
    pub b0: &'a Tensor,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub momentum: f64,
    pub reward: Reward,
    train_labels: Vec<u32>,
    val_labels: Vec<i64>,
    rows: std::sync::OnceLock<Tensor>,
}

impl<'a> Proxy<'a> {
    pub fn new(
        train: &'a Features,
        val: &'a Features,
        w0: &'a Tensor,
        b0: &'a Tensor,
        cfg: &SearchConfig,
    ) -> Self {
        let train_labels: Vec<u32> = Vec::<i64>::try_from(&train.y)
            .expect("i64 labels")
            .into_iter()
            .map(|l| l as u32)
            .collect();
        let val_labels = Vec::<i64>::try_from(&val.y).expect("i64 labels");
        Proxy {
            train,
            val,
            w0,
            b0,
            epochs: cfg.proxy_epochs,
            batch: cfg.proxy_batch,
            lr: cfg.proxy_lr,
            momentum: cfg.proxy_momentum,
            reward: cfg.reward,
            train_labels,
            val_labels,
            rows: std::sync::OnceLock::new(),
        }
    }

    /// Trains M classifiers from θ0, candidate m sampling classes by `weights[m]`; returns
    /// the trained `[M, D, C]` weights and `[M, 1, C]` biases.
    ///
    /// SGD with momentum in the form v ← μv + lr·g, w ← w − v (equal to PyTorch's for a constant
    /// lr). To keep a step to a handful of tensor operations, each training row is stored as
    /// `[x, 1, one-hot(y)]` (the 1 carries the bias), the rows of a whole trajectory are gathered
    /// at once, and a step only narrows into them.
    pub fn train(&self, weights: &[Vec<f64>], seed: u64, stream: u64) -> (Tensor, Tensor) {
        let m = weights.len() as i64;
        let (c, d) = (self.w0.size()[0], self.w0.size()[1]);
        let members = class_members(&self.train_labels);
        let n = self.train_labels.len();
        let mut idx: Vec<i64> = Vec::with_capacity(weights.len() * n * self.epochs);
        for (k, w) in weights.iter().enumerate() {
            let mut rng = chacha(seed, &[4, stream, k as u64]);
            for _ in 0..self.epochs {
                idx.extend(
                    plan_with_replacement(&members, w, n, &mut rng)
                        .into_iter()
                        .map(|i| i as i64),
                );
            }
        }
        let total = (n * self.epochs) as i64;
        tch::no_grad(|| {
            let rows = self
                .rows()
                .index_select(0, &Tensor::from_slice(&idx))
                .view([m, total, d + 1 + c]);
            // [M, D+1, C]: θ0's weight with its bias as the last row
            let mut w = Tensor::cat(&[self.w0.tr(), self.b0.view([1, c])], 0)
                .unsqueeze(0)
                .repeat([m, 1, 1]);
            let mut v = w.zeros_like();
            for start in (0..total).step_by(self.batch) {
                let bsz = (self.batch as i64).min(total - start);
                let r = rows.narrow(1, start, bsz);
                let x = r.narrow(2, 0, d + 1);
                let p = x.bmm(&w).softmax(-1, Kind::Float);
                let g = (p - r.narrow(2, d + 1, c)) * (self.lr / bsz as f64); // lr · dCE/dlogits
                let _ = v.g_mul_scalar_(self.momentum).g_add_(&x.transpose(1, 2).bmm(&g));
                w -= &v;
            }
            (w.narrow(1, 0, d), w.narrow(1, d, 1))
        })
    }

    /// `[N, D + 1 + C]`: each training feature, a 1, and its one-hot label.
    fn rows(&self) -> &Tensor {
        self.rows.get_or_init(|| {
            let (c, n) = (self.w0.size()[0], self.train.x.size()[0]);
            let eye = Tensor::eye(c, (Kind::Float, self.train.x.device()));
            let ones = Tensor::ones([n, 1], (Kind::Float, self.train.x.device()));
            Tensor::cat(
                &[
                    self.train.x.to_kind(Kind::Float),
                    ones,
                    eye.index_select(0, &self.train.y),
                ],
                1,
            )
        })
    }

    /// The validation reward of each classifier (fraction in [0, 1]).
    pub fn rewards(&self, w: &Tensor, b: &Tensor) -> Vec<f64> {
        let pred = tch::no_grad(|| (self.val.x.unsqueeze(0).matmul(w) + b).argmax(-1, false));
        let pred: Vec<i64> = Vec::try_from(pred.flatten(0, -1)).expect("i64");
        let nv = self.val_labels.len();
        let c = self.w0.size()[0] as usize;
        pred.chunks(nv)
            .map(|p| match self.reward {
                Reward::Top1 => {
                    p.iter().zip(&self.val_labels).filter(|(a, b)| a == b).count() as f64 / nv as f64
                }
                Reward::Balanced => {
                    let (mut hit, mut tot) = (vec![0usize; c], vec![0usize; c]);
                    for (a, &y) in p.iter().zip(&self.val_labels) {
                        tot[y as usize] += 1;
                        hit[y as usize] += usize::from(*a == y);
                    }
                    let present: Vec<f64> = (0..c)
                        .filter(|&k| tot[k] > 0)
                        .map(|k| hit[k] as f64 / tot[k] as f64)
                        .collect();
                    present.iter().sum::<f64>() / present.len().max(1) as f64
                }
            })
            .collect()
    }

    /// Rewards of class-weight candidates: train and evaluate.
    pub fn evaluate(&self, weights: &[Vec<f64>], seed: u64, stream: u64) -> Vec<f64> {
        let (w, b) = self.train(weights, seed, stream);
        self.rewards(&w, &b)
    }
}

/// One line of `trajectories.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub t: usize,
    pub rewards: Vec<f64>,
    pub mean_reward: f64,
    pub best_reward: f64,
    pub mu: Vec<f64>,
}

/// `best_weights.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub weights: Vec<f64>,
    pub logits: Vec<f64>,
    pub reward: f64,
    pub trajectory: usize,
    pub config: SearchConfig,
}

/// μ0 for the class counts.
pub fn initial_mu(init: Init, counts: &[usize]) -> Vec<f64> {
    match init {
        Init::Uniform => vec![0.0; counts.len()],
        Init::Instance => power_weights(counts, 1.0).iter().map(|w| w.ln()).collect(),
        Init::SquareRoot => power_weights(counts, 0.5).iter().map(|w| w.ln()).collect(),
    }
}

/// Algorithm 1 with any reward function (`reward(candidates, t)` → one reward per candidate).
/// `on_step` sees every trajectory. Returns the best sample and the log.
pub fn search_with(
    cfg: &SearchConfig,
    mu0: Vec<f64>,
    mut reward: impl FnMut(&[Vec<f64>], usize) -> Vec<f64>,
    mut on_step: impl FnMut(&Step),
) -> Result<(Best, Vec<Step>)> {
    if cfg.trajectories == 0 || cfg.samples < 2 || cfg.sigma <= 0.0 || cfg.clip <= 0.0 || cfg.lr <= 0.0 {
        return Err(invalid!(
            "search needs trajectories ≥ 1, samples ≥ 2, sigma > 0, clip > 0 and lr > 0"
        ));
    }
    let c = mu0.len();
    let mut mu = mu0;
    let mut adam = ppo::Adam::new(c, cfg.lr);
    let mut best: Option<Best> = None;
    let mut log = Vec::new();
    for t in 0..cfg.trajectories {
        let mut rng = chacha(cfg.seed, &[3, t as u64]);
        let samples: Vec<Vec<f64>> = (0..cfg.samples)
            .map(|_| {
                mu.iter()
                    .map(|u| {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        u + cfg.sigma * z
                    })
                    .collect::<Vec<f64>>()
            })
            .collect();
        let weights: Vec<Vec<f64>> = samples.iter().map(|s| ppo::softmax(s)).collect();
        let r = reward(&weights, t);
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        for (k, &v) in r.iter().enumerate() {
            if best.as_ref().is_none_or(|b| v > b.reward) {
                best = Some(Best {
                    weights: weights[k].clone(),
                    logits: samples[k].clone(),
                    reward: v,
                    trajectory: t,
                    config: cfg.clone(),
                });
            }
        }
        let adv: Vec<f64> = r.iter().map(|v| v - mean).collect();
        let mu_t = mu.clone();
        for _ in 0..cfg.update_steps {
            let (_, g) = ppo::clipped_objective(&mu, &mu_t, &samples, &adv, cfg.sigma, cfg.clip);
            adam.ascend(&mut mu, &g);
        }
        let step = Step {
            t,
            rewards: r,
            mean_reward: mean,
            best_reward: best.as_ref().map_or(mean, |b| b.reward),
            mu: mu.clone(),
        };
        on_step(&step);
        log.push(step);
    }
    Ok((best.expect("at least one trajectory"), log))
}

/// The search on a proxy; writes `trajectories.jsonl` and `best_weights.json` into `out`.
pub fn search(
    proxy: &Proxy,
    counts: &[usize],
    cfg: &SearchConfig,
    out: &Path,
    on_step: impl FnMut(&Step),
) -> Result<Best> {
    let (best, log) = search_with(
        cfg,
        initial_mu(cfg.init, counts),
        |w, t| proxy.evaluate(w, cfg.seed, t as u64),
        on_step,
    )?;
    let lines: String = log
        .iter()
        .map(|s| serde_json::to_string(s).expect("serialisable") + "\n")
        .collect();
    fsx::write_atomic(&out.join("trajectories.jsonl"), lines.as_bytes())?;
    fsx::write_json(&out.join("best_weights.json"), &best)?;
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn search_moves_mu_toward_a_known_best() {
        // reward = −‖w − target‖²: the best weight vector is `target`
        let target = [0.6, 0.3, 0.1];
        let cfg = SearchConfig {
            trajectories: 150,
            samples: 8,
            sigma: 0.3,
            lr: 0.05,
            ..Default::default()
        };
        let reward = |ws: &[Vec<f64>], _t: usize| -> Vec<f64> {
            ws.iter()
                .map(|w| -w.iter().zip(&target).map(|(a, b)| (a - b).powi(2)).sum::<f64>())
                .collect()
        };
        let (best, log) = search_with(&cfg, vec![0.0; 3], reward, |_| {}).unwrap();
        let dist = |mu: &[f64]| {
            ppo::softmax(mu)
                .iter()
                .zip(&target)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
        };
        let start = dist(&[0.0; 3]);
        let end = dist(&log.last().unwrap().mu);
        assert!(
            end < start / 10.0,
            "softmax(μ) did not approach the target: {start} → {end}"
        );
        assert!(best.reward > -0.01, "{best:?}");
        // deterministic for a seed
        let (again, _) = search_with(&cfg, vec![0.0; 3], reward, |_| {}).unwrap();
        assert_eq!(again, best);
    }

    #[test]
    fn proxy_matches_a_direct_computation() {
        // 2 classes, 1-d features, one candidate, one full-batch step from θ0 = 0:
        // logits 0 → p = ½; dL/dw = mean_i x_i (p − y_i), dL/db = mean_i (p − y_i).
        let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5]).view([4, 1]);
        let y = Tensor::from_slice(&[0i64, 1, 0, 1]);
        let feats = Features {
            x: x.shallow_clone(),
            y: y.shallow_clone(),
        };
        let w0 = Tensor::zeros([2, 1], (Kind::Float, Device::Cpu));
        let b0 = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let cfg = SearchConfig {
            proxy_batch: 4,
            proxy_lr: 0.5,
            proxy_momentum: 0.0,
            ..Default::default()
        };
        let proxy = Proxy::new(&feats, &feats, &w0, &b0, &cfg);
        // with replacement the epoch is a multiset of the 4 indices: recompute with the same plan
        let members = class_members(&[0, 1, 0, 1]);
        let w = vec![0.5, 0.5];
        let mut rng = chacha(0, &[4, 7, 0]);
        let plan = plan_with_replacement(&members, &w, 4, &mut rng);
        let (tw, tb) = proxy.train(&[w], 0, 7);
        let xs = [1.0f64, -2.0, 3.0, 0.5];
        let ys = [0usize, 1, 0, 1];
        for class in 0..2 {
            let (mut gw, mut gb) = (0.0, 0.0);
            for &i in &plan {
                let e = 0.5 - f64::from(u8::from(ys[i] == class));
                gw += xs[i] * e / 4.0;
                gb += e / 4.0;
            }
            assert!((tw.double_value(&[0, 0, class as i64]) + 0.5 * gw).abs() < 1e-6);
            assert!((tb.double_value(&[0, 0, class as i64]) + 0.5 * gb).abs() < 1e-6);
        }
        // rewards: the trained classifier scored on the same 4 points
        let r = proxy.rewards(&tw, &tb);
        let pred: Vec<usize> = xs
            .iter()
            .map(|&v| {
                let s = |k: i64| tw.double_value(&[0, 0, k]) * v + tb.double_value(&[0, 0, k]);
                usize::from(s(1) > s(0))
            })
            .collect();
        let acc = pred.iter().zip(&ys).filter(|(a, b)| a == b).count() as f64 / 4.0;
        assert!((r[0] - acc).abs() < 1e-12);
    }
}
