//! The coarse auto-sampler: Algorithm 1 of the paper, with the proxy, the reward and the final
//! choice made to predict stage 2 rather than to win on validation by luck.
//!
//! A Gaussian policy N(μ, σ²I) over C logits; each of M samples W_m becomes class weights
//! softmax(W_m); the proxy task re-trains the linear classifier on the cached training features
//! with class-weighted sampling; the advantage is the reward minus the mean of the M rewards; μ
//! takes `update_steps` Adam steps on the PPO2 clipped objective.
//!
//! What differs from the paper's Algorithm 1, and why (each is a config choice; `paper` mode
//! restores the paper's):
//! - **Proxy = stage 2** (`proxy = "stage2"`): the proxy trains with stage 2's own recipe (epochs,
//!   batch, lr, momentum, initialisation), so a reward is a stage-2 validation score. The paper's
//!   one-epoch proxy (`proxy = "paper"`) ranks weights differently from a 10-epoch stage 2: weights
//!   that win one epoch can wreck ten.
//! - **Reward over R proxy seeds** (`reward_seeds`), batched with the M samples, and balanced
//!   accuracy or log-likelihood as choices besides top-1: one proxy run's score moves with its
//!   sampling noise.
//! - **A choice that does not overfit** (`select = "rescore"`): validation is split per class into
//!   a search half and a choice half (`holdout`). The search sees only its half; the top-K samples,
//!   the policy's mean softmax(μ_T) and the fixed samplers (instance, square-root,
//!   class-balanced) are re-scored on the choice half with fresh proxy seeds, and the best of
//!   those is returned — a searched one only when it beats the best fixed sampler (chosen on all
//!   of validation, which the search never selected them on) by at least
//!   `min_gain_se` standard errors of the paired difference. The best of T × M draws on the search
//!   half is biased upwards by validation noise; the re-score is not, and the fixed samplers compete
//!   on the same terms, so the search returns a sample only when it beats the best fixed sampler
//!   on images it was not chosen on, by more than the noise of the comparison.
pub mod ppo;
pub mod reward;

use crate::features::Features;
use crate::linear::{Heads, Recipe, Run, Trainer};
use crate::rng::chacha;
use crate::sampler::power_weights;
use crate::{invalid, Result};
use rand::seq::SliceRandom;
use rand_distr::{Distribution, StandardNormal};
pub use reward::Score;
use reward::{aggregate, item_scores, paired_se};
use serde::{Deserialize, Serialize};
use tch::Tensor;

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
    /// μ = log of the fixed sampler that scores best on the search half.
    BestFixed,
}

/// The proxy task's training recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyMode {
    /// Stage 2's own recipe (`[stage2]`: epochs, batch, lr, momentum, reinit).
    Stage2,
    /// Algorithm 1's proxy: `proxy_epochs` (1) epochs from θ0 with `proxy_batch`, `proxy_lr`,
    /// `proxy_momentum`.
    Paper,
}

/// How the returned weights are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Select {
    /// The top samples, the policy mean and the fixed samplers re-scored on the held-out half of
    /// validation with fresh proxy seeds; the best re-scored one.
    Rescore,
    /// Algorithm 1's answer: the best single draw of the search.
    BestDraw,
}

/// What the policy's Gaussian is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Param {
    /// One logit per class (Algorithm 1).
    PerClass,
    /// One logit per frequency group: classes sorted by training count, cut into `groups`
    /// groups of equal size; a class's logit is its group's plus the log of the starting
    /// sampler's weight, so the search tilts the sampler between frequency bands.
    Groups,
    /// Per-class up to 100 classes, groups above.
    #[default]
    Auto,
}

/// `[search]` of a config. Every field has a default (`SearchConfig::default()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// T: trajectories (policy updates).
    pub trajectories: usize,
    /// M: samples per trajectory.
    pub samples: usize,
    pub sigma: f64,
    /// ε of the clipped objective.
    pub clip: f64,
    /// Adam's learning rate on μ.
    pub lr: f64,
    /// Adam steps per trajectory.
    pub update_steps: usize,
    pub proxy: ProxyMode,
    /// The paper proxy's recipe (used with `proxy = "paper"` only).
    pub proxy_epochs: usize,
    pub proxy_batch: usize,
    pub proxy_lr: f64,
    pub proxy_momentum: f64,
    pub init: Init,
    pub reward: Score,
    /// R: proxy runs (sampling seeds) per sample, averaged.
    pub reward_seeds: usize,
    pub select: Select,
    /// K: samples re-scored (with `select = "rescore"`).
    pub rescore_top: usize,
    /// Proxy seeds of the re-score.
    pub rescore_seeds: usize,
    /// Fraction of each class's validation images held out of the search for the choice
    /// (`select = "rescore"`); 0 re-scores on the search's own images (fresh seeds only).
    pub holdout: f64,
    /// A searched candidate replaces the best fixed sampler only when its re-scored reward is
    /// higher by at least this many standard errors of the paired difference (0: any gain).
    pub min_gain_se: f64,
    pub seed: u64,
    /// The proxies' products in "bf16", "fp32" or "auto" (bf16 where the CPU computes it
    /// natively; a run folder whose search ran before keeps the precision it ran in). The
    /// proxies run on the CPU.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::precision::deserialize_opt"
    )]
    pub precision: Option<crate::precision::Precision>,
    /// Per-class logits, frequency groups, or `auto` (per-class up to 100 classes).
    #[serde(skip_serializing_if = "is_auto")]
    pub param: Param,
    /// G of `param = "groups"`.
    #[serde(skip_serializing_if = "is_ten")]
    pub groups: usize,
    /// T of a grouped search (its policy has G dimensions, not C: fewer updates find its mean).
    #[serde(skip_serializing_if = "is_thirty")]
    pub group_trajectories: usize,
    /// At most this many training images of each class in a proxy (0: all). Unset: all, unless
    /// the training set is large (images × feature dimension × classes above 10¹⁰), then 20, or
    /// more where 20 would leave a proxy under [`MIN_PROXY_STEPS`] steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_cap: Option<usize>,
    /// At most this many proxy epochs (0: no limit). Unset: no limit, unless the training set is
    /// large, then 3, or more where 3 would leave a proxy under [`MIN_PROXY_STEPS`] steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_max_epochs: Option<usize>,
    /// Seconds the search may take: past them it runs no further trajectory and chooses among
    /// what it has (the re-score included in the time), and `best_weights.json` says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_s: Option<f64>,
}

fn is_auto(p: &Param) -> bool {
    *p == Param::Auto
}
fn is_ten(v: &usize) -> bool {
    *v == 10
}
fn is_thirty(v: &usize) -> bool {
    *v == 30
}

/// The fewest SGD steps the automatic proxy shortcuts leave a proxy. Measured with
/// `bench-search-diagnostics --cap` (Spearman ρ of a shortened proxy's rewards against the full
/// proxy's over 33 class-weight vectors, `bench/results/search_diagnostics_shortcuts.jsonl`): on
/// CIFAR-10-LT 2 steps 0.03, 4 steps 0.29, 6 steps 0.46, 19–20 steps 0.74–0.75, 65–73 steps
/// 0.90–0.93; on the 200-class Tiny-ImageNet long tail 6 steps 0.74, 20 steps 0.98, 65–114 steps
/// 0.97–0.98. How many steps, not how they are cut (fewer images or fewer epochs), decides.
pub const MIN_PROXY_STEPS: usize = 64;

/// Draws (images, with repeats) of one proxy: its epochs, at most `max_epochs`, over each class's
/// images, at most `cap` of them.
fn proxy_draws(counts: &[usize], recipe: &Recipe, cap: Option<usize>, max_epochs: Option<usize>) -> usize {
    let kept: usize = counts.iter().map(|&n| cap.map_or(n, |k| n.min(k))).sum();
    max_epochs.map_or(recipe.epochs, |m| recipe.epochs.min(m)) * kept
}

/// A training set's size as the search's defaults see it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    pub classes: usize,
    pub dim: usize,
    pub images: usize,
}

impl Shape {
    /// Images × feature dimension × classes above 10¹⁰ (ImageNet-LT's ResNet-50 features are
    /// 2.4·10¹¹; CIFAR-10-LT's ResNet-32 ones 8·10⁶): a proxy over all of it is costly.
    pub fn large(&self) -> bool {
        self.images as f64 * self.dim as f64 * self.classes as f64 > 1e10
    }
}

/// The settings a search runs with once `auto` and the unset shortcuts are made concrete for its
/// training set (recorded in `best_weights.json`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sized {
    pub shape: Shape,
    /// G, or `None` for per-class logits.
    pub groups: Option<usize>,
    pub trajectories: usize,
    pub proxy_cap: Option<usize>,
    pub proxy_max_epochs: Option<usize>,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            trajectories: 100,
            samples: 8,
            sigma: 0.5,
            clip: 0.2,
            lr: 0.05,
            update_steps: 5,
            proxy: ProxyMode::Stage2,
            proxy_epochs: 1,
            proxy_batch: 128,
            proxy_lr: 0.01,
            proxy_momentum: 0.9,
            init: Init::BestFixed,
            reward: Score::Balanced,
            reward_seeds: 1,
            select: Select::Rescore,
            rescore_top: 8,
            rescore_seeds: 8,
            holdout: 0.5,
            min_gain_se: 1.0,
            seed: 0,
            precision: None,
            param: Param::Auto,
            groups: 10,
            group_trajectories: 30,
            proxy_cap: None,
            proxy_max_epochs: None,
            budget_s: None,
        }
    }
}

impl SearchConfig {
    /// The paper's Algorithm 1: one-epoch proxy from θ0, one proxy run per sample, validation
    /// top-1, μ from uniform weights, the best single draw.
    pub fn paper() -> SearchConfig {
        SearchConfig {
            proxy: ProxyMode::Paper,
            init: Init::Uniform,
            reward: Score::Top1,
            reward_seeds: 1,
            select: Select::BestDraw,
            holdout: 0.0,
            ..SearchConfig::default()
        }
    }

    /// Checks every field's range (NaN included); the error names the key and the value.
    pub fn check(&self) -> Result<()> {
        let pos = |k: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(invalid!("[search] {k} must be a finite number > 0, got {v}"))
            }
        };
        let atleast = |k: &str, v: usize, min: usize| {
            if v >= min {
                Ok(())
            } else {
                Err(invalid!("[search] {k} must be ≥ {min}, got {v}"))
            }
        };
        atleast("trajectories", self.trajectories, 1)?;
        atleast("samples", self.samples, 2)?;
        atleast("update_steps", self.update_steps, 1)?;
        atleast("proxy_epochs", self.proxy_epochs, 1)?;
        atleast("proxy_batch", self.proxy_batch, 1)?;
        atleast("reward_seeds", self.reward_seeds, 1)?;
        atleast("rescore_top", self.rescore_top, 1)?;
        atleast("rescore_seeds", self.rescore_seeds, 1)?;
        pos("sigma", self.sigma)?;
        pos("clip", self.clip)?;
        pos("lr", self.lr)?;
        pos("proxy_lr", self.proxy_lr)?;
        if !(0.0..1.0).contains(&self.proxy_momentum) {
            return Err(invalid!(
                "[search] proxy_momentum must be in [0, 1), got {}",
                self.proxy_momentum
            ));
        }
        if !(self.min_gain_se >= 0.0 && self.min_gain_se.is_finite()) {
            return Err(invalid!(
                "[search] min_gain_se must be a finite number ≥ 0, got {}",
                self.min_gain_se
            ));
        }
        if !(0.0..1.0).contains(&self.holdout) {
            return Err(invalid!(
                "[search] holdout must be in [0, 1), got {}",
                self.holdout
            ));
        }
        atleast("groups", self.groups, 2)?;
        atleast("group_trajectories", self.group_trajectories, 1)?;
        if let Some(b) = self.budget_s {
            pos("budget_s", b)?;
        }
        Ok(())
    }

    /// The settings for a training set of `shape` with `counts` images per class, its proxy
    /// re-training by `stage2` (or the paper's recipe): `param = "auto"` is per-class up to 100
    /// classes and groups above; a large set ([`Shape::large`]) caps each class at 20 proxy images
    /// and the proxy at 3 epochs unless the config says otherwise, but never below
    /// [`MIN_PROXY_STEPS`] SGD steps a proxy: the cap is raised (then the epoch limit) until the
    /// proxy keeps them. A few classes of wide features (20 classes × 2,048-d × 250k images) would
    /// otherwise train each proxy on 400 images in 3 steps.
    pub fn sized(&self, shape: Shape, counts: &[usize], stage2: &Recipe) -> Sized {
        let grouped = match self.param {
            Param::PerClass => false,
            Param::Groups => true,
            Param::Auto => shape.classes > 100,
        };
        let groups = grouped.then_some(self.groups.min(shape.classes));
        let large = shape.large();
        let or_auto = |v: Option<usize>, auto: usize| match v {
            Some(0) => None,
            Some(k) => Some(k),
            None => large.then_some(auto),
        };
        let (mut cap, mut max_epochs) = (or_auto(self.proxy_cap, 20), or_auto(self.proxy_max_epochs, 3));
        let base = self.base_recipe(stage2);
        let draws =
            |cap: Option<usize>, max_epochs: Option<usize>| proxy_draws(counts, &base, cap, max_epochs);
        let need = MIN_PROXY_STEPS * base.batch.max(1);
        if self.proxy_cap.is_none() && cap.is_some() && draws(cap, max_epochs) < need {
            // the smallest cap that keeps the steps, or none
            let top = counts.iter().copied().max().unwrap_or(0);
            cap = (cap.unwrap_or(0)..top).find(|&k| draws(Some(k), max_epochs) >= need);
        }
        if self.proxy_max_epochs.is_none() && max_epochs.is_some() && draws(cap, max_epochs) < need {
            max_epochs = (max_epochs.unwrap_or(0)..base.epochs).find(|&e| draws(cap, Some(e)) >= need);
        }
        Sized {
            shape,
            groups,
            trajectories: if grouped {
                self.group_trajectories
            } else {
                self.trajectories
            },
            proxy_cap: cap,
            proxy_max_epochs: max_epochs,
        }
    }

    /// What to say when the config's own shortcuts leave a proxy under [`MIN_PROXY_STEPS`] steps
    /// (fewer than it would have without them); `None` when they do not.
    pub fn short_proxy(&self, sized: &Sized, counts: &[usize], stage2: &Recipe) -> Option<String> {
        let steps = self.proxy_steps(sized, counts, stage2);
        let whole = Sized {
            proxy_cap: None,
            proxy_max_epochs: None,
            ..*sized
        };
        let set = |v: Option<usize>| v.map_or("unset".to_string(), |k| k.to_string());
        (steps < MIN_PROXY_STEPS && steps < self.proxy_steps(&whole, counts, stage2)).then(|| {
            format!(
                "[search] proxy_cap = {}, proxy_max_epochs = {} leave each proxy {steps} SGD steps: under {MIN_PROXY_STEPS} its rewards rank class weights unlike the whole proxy's; leave both unset to let the search size its proxy",
                set(self.proxy_cap),
                set(self.proxy_max_epochs)
            )
        })
    }

    /// SGD steps of one proxy under `sized`'s shortcuts, for a training set of `counts`.
    pub fn proxy_steps(&self, sized: &Sized, counts: &[usize], stage2: &Recipe) -> usize {
        let base = self.base_recipe(stage2);
        proxy_draws(counts, &base, sized.proxy_cap, sized.proxy_max_epochs).div_ceil(base.batch.max(1))
    }

    /// Whether the proxies compute in bf16 (`auto` made concrete for the CPU).
    pub fn bf16(&self) -> bool {
        self.precision.unwrap_or_default().bf16_on(tch::Device::Cpu)
    }

    /// The proxy's recipe: stage 2's, or the paper's one-epoch proxy from θ0.
    pub fn recipe(&self, stage2: &Recipe) -> Recipe {
        self.base_recipe(stage2)
    }

    /// [`SearchConfig::recipe`] with the sized epoch limit.
    pub fn sized_recipe(&self, stage2: &Recipe, sized: &Sized) -> Recipe {
        let r = self.base_recipe(stage2);
        Recipe {
            epochs: sized.proxy_max_epochs.map_or(r.epochs, |m| r.epochs.min(m)),
            ..r
        }
    }

    fn base_recipe(&self, stage2: &Recipe) -> Recipe {
        match self.proxy {
            ProxyMode::Stage2 => *stage2,
            ProxyMode::Paper => Recipe {
                weight_decay: 0.0,
                max_norm: None,
                smoothing: None,
                epochs: self.proxy_epochs,
                batch: self.proxy_batch,
                lr: self.proxy_lr,
                momentum: self.proxy_momentum,
                reinit: false,
            },
        }
    }
}

/// The proxy task: classifiers trained on the cached training features by a recipe and scored on
/// (part of) validation.
pub struct Proxy<'a> {
    pub trainer: Trainer<'a>,
    pub recipe: Recipe,
    pub reward: Score,
    val_x: Tensor,
    val_y: Vec<i64>,
    classes: usize,
}

impl<'a> Proxy<'a> {
    /// The proxy scored on the validation items at `positions` (all of them: `None`).
    pub fn new(
        train: &'a Features,
        val: &Features,
        positions: Option<&[i64]>,
        (w0, b0): (&'a Tensor, &'a Tensor),
        recipe: Recipe,
        reward: Score,
        bf16: bool,
    ) -> Result<Self> {
        let (x, y) = match positions {
            None => (val.x.shallow_clone(), val.y.shallow_clone()),
            Some(p) => {
                let i = Tensor::from_slice(p);
                (val.x.index_select(0, &i), val.y.index_select(0, &i))
            }
        };
        let val_y = Vec::<i64>::try_from(&y).expect("i64 labels");
        if val_y.is_empty() {
            return Err(invalid!(
                "the search scores on validation images, and there are none: set data.split.val_per_class ≥ 1"
            ));
        }
        Ok(Proxy {
            trainer: Trainer::new(train, w0, b0).in_bf16(bf16),
            recipe,
            reward,
            val_x: x,
            val_y,
            classes: w0.size()[0] as usize,
        })
    }

    /// The same proxy with at most `cap` training images of each class ([`Trainer::capped`]).
    pub fn capped(mut self, cap: Option<usize>, seed: u64) -> Self {
        self.trainer = self.trainer.capped(cap, seed);
        self
    }

    /// Trains one classifier per run.
    pub fn train(&self, runs: &[Run]) -> Heads {
        self.trainer.train(runs, &self.recipe)
    }

    /// The reward of per-item scores on this proxy's validation items.
    pub fn aggregate(&self, items: &[f64]) -> f64 {
        aggregate(self.reward, items, &self.val_y, self.classes)
    }

    /// The standard error of the difference of two candidates' rewards (paired over items).
    pub fn paired_se(&self, a: &[f64], b: &[f64]) -> f64 {
        paired_se(self.reward, a, b, &self.val_y, self.classes)
    }

    /// Each class-weight candidate's per-item validation scores, averaged over `seeds` proxy runs;
    /// run r of every candidate samples with the key `(seed, stream, r)`: the candidates share
    /// their random numbers (common random numbers), so their scores differ by their weights.
    pub fn item_scores(&self, weights: &[Vec<f64>], seeds: usize, seed: u64, stream: u64) -> Vec<Vec<f64>> {
        let runs: Vec<Run> = weights
            .iter()
            .flat_map(|w| (0..seeds).map(move |r| Run::new(w, (seed, stream, r as u64))))
            .collect();
        // Bounded memory at any size: runs trained in groups whose weights and momentum fit in
        // 256 MiB, validation scored in slices whose logits fit in 128 MiB (one group and one
        // slice at CIFAR's size: the same computation as without them).
        let (c, d) = (self.classes as i64, self.val_x.size()[1]);
        let per_run = ((d + 1) * c * 4 * 2).max(1);
        let group = ((256 << 20) / per_run).max(1) as usize;
        let mut per_run_scores: Vec<Vec<f64>> = Vec::with_capacity(runs.len());
        for chunk in runs.chunks(group) {
            let heads: Heads = self.train(chunk);
            let n = self.val_y.len() as i64;
            let slice = ((128 << 20) / (chunk.len() as i64 * c.max(d) * 4)).clamp(1, n.max(1));
            let mut scores = vec![Vec::with_capacity(n as usize); chunk.len()];
            for s in (0..n).step_by(slice as usize) {
                let len = slice.min(n - s);
                let logits = heads.logits(&self.val_x.narrow(0, s, len));
                let part = item_scores(self.reward, &logits, &self.val_y[s as usize..(s + len) as usize]);
                for (all, p) in scores.iter_mut().zip(part) {
                    all.extend(p);
                }
            }
            per_run_scores.extend(scores);
        }
        per_run_scores
            .chunks(seeds)
            .map(|runs| {
                (0..self.val_y.len())
                    .map(|i| runs.iter().map(|r| r[i]).sum::<f64>() / seeds as f64)
                    .collect()
            })
            .collect()
    }

    /// The mean reward of each class-weight candidate over `seeds` proxy runs (see `item_scores`).
    pub fn evaluate(&self, weights: &[Vec<f64>], seeds: usize, seed: u64, stream: u64) -> Vec<f64> {
        self.item_scores(weights, seeds, seed, stream)
            .iter()
            .map(|v| self.aggregate(v))
            .collect()
    }
}

/// Splits validation positions per class: `holdout` of each class's images (rounded; one at
/// least, and one kept for the search, when a class has two or more) to the choice part, the rest
/// to the search part. Drawn with `chacha(seed, [7])`. Returns (search, choice), each sorted.
pub fn split_validation(labels: &[i64], holdout: f64, seed: u64) -> (Vec<i64>, Vec<i64>) {
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut by_class = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i as i64);
    }
    let mut rng = chacha(seed, &[7]);
    let (mut search, mut choice) = (Vec::new(), Vec::new());
    for mut m in by_class {
        m.shuffle(&mut rng);
        let k = if holdout <= 0.0 || m.len() < 2 {
            0
        } else {
            ((m.len() as f64 * holdout).round() as usize).clamp(1, m.len() - 1)
        };
        choice.extend_from_slice(&m[..k]);
        search.extend_from_slice(&m[k..]);
    }
    search.sort_unstable();
    choice.sort_unstable();
    (search, choice)
}

/// One line of `trajectories.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub t: usize,
    pub rewards: Vec<f64>,
    pub mean_reward: f64,
    pub best_reward: f64,
    pub mu: Vec<f64>,
    /// The M sampled logits W_m.
    #[serde(default)]
    pub samples: Vec<Vec<f64>>,
}

/// A class-weight vector and its scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// `instance`, `square-root`, `class-balanced`, `policy mean`, or `sample t=… m=…`.
    pub source: String,
    pub weights: Vec<f64>,
    /// Mean reward over the reward seeds on the search part of validation.
    pub search_reward: f64,
    /// Mean reward over the re-score seeds on the choice part (`select = "rescore"`).
    pub rescored: Option<f64>,
}

/// `best_weights.json`: the chosen weights and how they were chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub weights: Vec<f64>,
    /// log of the weights (W up to a constant).
    pub logits: Vec<f64>,
    /// The reward that chose them: re-scored on the choice part (`rescore`), or the search reward
    /// (`best-draw`).
    pub reward: f64,
    pub source: String,
    /// The trajectory of the chosen sample (none for a fixed sampler or the policy mean).
    pub trajectory: Option<usize>,
    /// The fixed samplers, scored the same way.
    pub fixed: Vec<Candidate>,
    /// Every candidate of the final choice.
    pub candidates: Vec<Candidate>,
    /// The best re-scored sample's gain over the best fixed sampler, and the standard error of
    /// that gain (`select = "rescore"`); the sample is chosen only when gain ≥ min_gain_se · se.
    pub gain_over_fixed: Option<f64>,
    pub gain_se: Option<f64>,
    /// The fixed sampler with the highest re-scored reward, its gain over class-balanced and the
    /// standard error of that gain: it replaces class-balanced as the reference only when the
    /// gain exceeds the standard error (`select = "rescore"`; absent in searches before the rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_best: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_gain: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_gain_se: Option<f64>,
    /// Validation images in the search part and in the choice part.
    pub val_search: usize,
    pub val_choice: usize,
    pub recipe: Recipe,
    pub config: SearchConfig,
    /// The settings the training set's size gave `config` (absent in searches before them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Sized>,
    /// The cost expected before the first trajectory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
    /// Set when `budget_s` stopped the trajectories early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_stop: Option<BudgetStop>,
}

/// μ0 for the class counts (`BestFixed` needs the fixed samplers' rewards: see `search`).
pub fn initial_mu(init: Init, counts: &[usize]) -> Vec<f64> {
    let log = |q: f64| power_weights(counts, q).iter().map(|w| w.ln()).collect();
    match init {
        Init::Uniform | Init::BestFixed => vec![0.0; counts.len()],
        Init::Instance => log(1.0),
        Init::SquareRoot => log(0.5),
    }
}

/// The fixed samplers every search compares with: (name, power q of w_c ∝ n_c^q).
pub const FIXED: [(&str, f64); 3] = [("instance", 1.0), ("square-root", 0.5), ("class-balanced", 0.0)];

/// The fixed sampler a search keeps unless another is better by more than the noise: class-balanced
/// (cRT's), the position in [`FIXED`].
pub const FIXED_DEFAULT: usize = 2;

/// Algorithm 1 with any reward function (`reward(candidates, t)` → one reward per candidate).
/// `on_step` sees every trajectory. Returns the log (the best single draw is its arg-max).
pub fn search_with(
    cfg: &SearchConfig,
    mu0: Vec<f64>,
    reward: impl FnMut(&[Vec<f64>], usize) -> Vec<f64>,
    on_step: impl FnMut(&Step),
) -> Result<Vec<Step>> {
    search_mapped(cfg, cfg.trajectories, mu0, ppo::softmax, reward, on_step, |_| {
        false
    })
}

/// Algorithm 1 over any parametrisation: `to_weights` maps a draw of the policy (and its mean) to
/// class weights; up to `trajectories` trajectories, none from the first t for which `stop(t)`
/// (asked before each) is true.
pub fn search_mapped(
    cfg: &SearchConfig,
    trajectories: usize,
    mu0: Vec<f64>,
    to_weights: impl Fn(&[f64]) -> Vec<f64>,
    mut reward: impl FnMut(&[Vec<f64>], usize) -> Vec<f64>,
    mut on_step: impl FnMut(&Step),
    mut stop: impl FnMut(usize) -> bool,
) -> Result<Vec<Step>> {
    cfg.check()?;
    let mut mu = mu0;
    let param = Tensor::from_slice(&mu);
    let mut adam = crate::optim::Adam::new(vec![("mu".into(), param.shallow_clone())], cfg.lr);
    let mut best = f64::NEG_INFINITY;
    let mut log = Vec::new();
    for t in 0..trajectories {
        if stop(t) {
            break;
        }
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
        let weights: Vec<Vec<f64>> = samples.iter().map(|s| to_weights(s)).collect();
        let r = reward(&weights, t);
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        best = r.iter().copied().fold(best, f64::max);
        let adv: Vec<f64> = r.iter().map(|v| v - mean).collect();
        let mu_t = mu.clone();
        for _ in 0..cfg.update_steps {
            let (_, g) = ppo::clipped_objective(&mu, &mu_t, &samples, &adv, cfg.sigma, cfg.clip);
            adam.step(&[-Tensor::from_slice(&g)]);
            mu = Vec::<f64>::try_from(&param)?;
        }
        let step = Step {
            t,
            rewards: r,
            mean_reward: mean,
            best_reward: best,
            mu: mu.clone(),
            samples,
        };
        on_step(&step);
        log.push(step);
    }
    Ok(log)
}

/// Each class's frequency group: classes sorted by training count (the larger first, then by
/// index), cut into `g` groups of equal size (group 0 the most frequent).
pub fn frequency_groups(counts: &[usize], g: usize) -> Vec<usize> {
    let c = counts.len();
    let mut order: Vec<usize> = (0..c).collect();
    order.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
    let mut group = vec![0; c];
    for (rank, &class) in order.iter().enumerate() {
        group[class] = rank * g / c.max(1);
    }
    group
}

/// What the search expects to cost, from its first proxy runs (the fixed samplers').
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Proxy runs of the whole search (candidates × seeds, the re-score's included).
    pub proxy_runs: usize,
    /// Seconds of one proxy run, measured.
    pub run_s: f64,
    /// Seconds of the whole search.
    pub total_s: f64,
    pub settings: Sized,
}

/// What `run` reports as it goes.
pub enum Event<'a> {
    /// Before any proxy runs: the config's own shortcuts leave a proxy too few steps
    /// ([`SearchConfig::short_proxy`]).
    ShortProxy(&'a str),
    /// Before the first trajectory.
    Estimate(&'a Estimate),
    /// After every trajectory.
    Step(&'a Step),
}

/// A search cut short by `budget_s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BudgetStop {
    pub budget_s: f64,
    /// Trajectories run, of the planned.
    pub trajectories: usize,
    pub planned: usize,
}

/// The best single draw of a log: (trajectory, sample, reward); the first on ties.
pub fn best_draw(log: &[Step]) -> (usize, usize, f64) {
    let mut best = (0, 0, f64::NEG_INFINITY);
    for s in log {
        for (m, &r) in s.rewards.iter().enumerate() {
            if r > best.2 {
                best = (s.t, m, r);
            }
        }
    }
    best
}

/// The top `k` draws of a log by reward (distinct weights; the earlier on ties).
fn top_draws(log: &[Step], k: usize) -> Vec<(usize, usize, f64)> {
    let mut all: Vec<(usize, usize, f64)> = log
        .iter()
        .flat_map(|s| s.rewards.iter().enumerate().map(move |(m, &r)| (s.t, m, r)))
        .collect();
    all.sort_by(|a, b| b.2.total_cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    all.truncate(k);
    all
}

/// The whole search on cached features: the fixed samplers scored, Algorithm 1 on the search part
/// of validation, the final choice (re-score or best draw). Returns the chosen weights and the log
/// (the pipeline writes them to `best_weights.json` and `trajectories.jsonl`).
pub fn run(
    train: &Features,
    val: &Features,
    head: (&Tensor, &Tensor),
    stage2: &Recipe,
    cfg: &SearchConfig,
    mut on_event: impl FnMut(Event),
) -> Result<(Best, Vec<Step>)> {
    cfg.check()?;
    let started = std::time::Instant::now();
    let shape = Shape {
        classes: head.0.size()[0] as usize,
        dim: head.0.size()[1] as usize,
        images: train.x.size()[0] as usize,
    };
    let train_labels = Vec::<i64>::try_from(&train.y).expect("i64 labels");
    let mut class_counts = vec![0usize; shape.classes];
    for &l in &train_labels {
        class_counts[l as usize] += 1;
    }
    let sized = cfg.sized(shape, &class_counts, stage2);
    if let Some(w) = cfg.short_proxy(&sized, &class_counts, stage2) {
        on_event(Event::ShortProxy(&w));
    }
    let val_labels = Vec::<i64>::try_from(&val.y).expect("i64 labels");
    let holdout = if cfg.select == Select::Rescore {
        cfg.holdout
    } else {
        0.0
    };
    let (search_pos, choice_pos) = split_validation(&val_labels, holdout, cfg.seed);
    let recipe = cfg.sized_recipe(stage2, &sized);
    let new_proxy = |positions: Option<&[i64]>| -> Result<Proxy> {
        Ok(
            Proxy::new(train, val, positions, head, recipe, cfg.reward, cfg.bf16())?
                .capped(sized.proxy_cap, cfg.seed),
        )
    };
    let proxy = new_proxy(Some(&search_pos))?;
    let counts = proxy.trainer.counts();
    let seeds = cfg.reward_seeds;
    // The fixed samplers on the search part, with the samples' own seeds' scheme.
    let fixed_w: Vec<Vec<f64>> = FIXED.iter().map(|(_, q)| power_weights(&counts, *q)).collect();
    let choice_runs = if cfg.select == Select::Rescore {
        seeds
            + (FIXED.len() + 1 + cfg.rescore_top) * cfg.rescore_seeds
            + if choice_pos.is_empty() {
                0
            } else {
                FIXED.len() * cfg.rescore_seeds
            }
    } else {
        0
    };
    let proxy_runs = FIXED.len() * seeds + sized.trajectories * cfg.samples * seeds + choice_runs;
    let elapsed = || started.elapsed().as_secs_f64();
    let fits = |runs: usize, run_s: f64| cfg.budget_s.is_none_or(|b| elapsed() + runs as f64 * run_s <= b);
    let mut estimate: Option<Estimate> = None;
    let mut say = |run_s: f64| {
        let e = Estimate {
            proxy_runs,
            run_s,
            total_s: run_s * proxy_runs as f64,
            settings: sized,
        };
        on_event(Event::Estimate(&e));
        e
    };
    // The fixed samplers on the search part, with the samples' own seeds' scheme: batched; on a
    // large set one at a time, class-balanced first, so that the estimate comes after one proxy
    // and the budget can stop between them.
    let mut fixed_r: Vec<Option<f64>> = vec![None; FIXED.len()];
    if shape.large() {
        for i in [FIXED_DEFAULT, 0, 1] {
            if let Some(e) = &estimate {
                if !fits(seeds, e.run_s) {
                    break;
                }
            }
            fixed_r[i] =
                Some(proxy.evaluate(std::slice::from_ref(&fixed_w[i]), seeds, cfg.seed, u64::MAX)[0]);
            if estimate.is_none() {
                estimate = Some(say(elapsed() / seeds as f64));
            }
        }
    } else {
        let r = proxy.evaluate(&fixed_w, seeds, cfg.seed, u64::MAX);
        fixed_r = r.into_iter().map(Some).collect();
        estimate = Some(say(elapsed() / (FIXED.len() * seeds) as f64));
    }
    let estimate = estimate.expect("one proxy ran");
    let run_s = estimate.run_s;
    let fixed: Vec<Candidate> = FIXED
        .iter()
        .zip(fixed_w.iter().zip(&fixed_r))
        .map(|((name, _), (w, r))| Candidate {
            source: name.to_string(),
            weights: w.clone(),
            search_reward: r.unwrap_or(f64::NEG_INFINITY),
            rescored: None,
        })
        .collect();
    // Past the budget before a trajectory: the default fixed sampler (class-balanced), said so.
    let evaluated: Vec<Candidate> = fixed
        .iter()
        .zip(&fixed_r)
        .filter(|(_, r)| r.is_some())
        .map(|(c, _)| c.clone())
        .collect();
    let f = fixed[FIXED_DEFAULT].clone();
    let (val_search, val_choice) = (search_pos.len(), choice_pos.len());
    let budget_default = move |trajectories: usize| Best {
        weights: f.weights.clone(),
        logits: f.weights.iter().map(|w| w.ln()).collect(),
        reward: f.search_reward,
        source: f.source.clone(),
        trajectory: None,
        fixed: evaluated.clone(),
        candidates: evaluated,
        gain_over_fixed: None,
        gain_se: None,
        fixed_best: None,
        fixed_gain: None,
        fixed_gain_se: None,
        val_search,
        val_choice,
        recipe,
        config: cfg.clone(),
        settings: Some(sized),
        estimate: Some(estimate),
        budget_stop: Some(BudgetStop {
            budget_s: cfg.budget_s.unwrap_or_default(),
            trajectories,
            planned: sized.trajectories,
        }),
    };
    if fixed_r.iter().any(Option::is_none) {
        return Ok((budget_default(0), Vec::new()));
    }
    let fixed_r: Vec<f64> = fixed_r.into_iter().flatten().collect();
    let mut fixed = fixed;
    let start: Vec<f64> = match cfg.init {
        Init::BestFixed => {
            let i = (0..fixed.len()).fold(0, |b, i| if fixed_r[i] > fixed_r[b] { i } else { b });
            fixed[i].weights.iter().map(|w| w.ln()).collect()
        }
        other => initial_mu(other, &counts),
    };
    // Per-class: μ0 = the starting logits. Groups: μ0 = 0 over G offsets, a class's logit its
    // starting one plus its group's offset.
    let groups = sized.groups.map(|g| (g, frequency_groups(&counts, g)));
    let mu0 = match &groups {
        None => start.clone(),
        Some((g, _)) => vec![0.0; *g],
    };
    let to_weights = |s: &[f64]| -> Vec<f64> {
        match &groups {
            None => ppo::softmax(s),
            Some((_, of)) => {
                ppo::softmax(&start.iter().zip(of).map(|(b, &g)| b + s[g]).collect::<Vec<f64>>())
            }
        }
    };
    let search_started = elapsed();
    let per_run_choice = choice_runs as f64;
    let stop = |t: usize| {
        let Some(budget) = cfg.budget_s else {
            return false;
        };
        let now = elapsed();
        // one trajectory's time: measured, or before the first from the fixed samplers' runs
        let per_run = if t == 0 {
            run_s
        } else {
            (now - search_started) / (t * cfg.samples * seeds) as f64
        };
        now + per_run * ((cfg.samples * seeds) as f64 + per_run_choice) > budget
    };
    let log = search_mapped(
        cfg,
        sized.trajectories,
        mu0,
        to_weights,
        |w, t| proxy.evaluate(w, seeds, cfg.seed, t as u64),
        |s| on_event(Event::Step(s)),
        stop,
    )?;
    if log.is_empty() {
        return Ok((budget_default(0), log));
    }
    let budget_stop = (log.len() < sized.trajectories).then(|| BudgetStop {
        budget_s: cfg.budget_s.unwrap_or_default(),
        trajectories: log.len(),
        planned: sized.trajectories,
    });
    let sample = |t: usize, m: usize, r: f64| Candidate {
        source: format!("sample t={} m={}", t + 1, m + 1),
        weights: to_weights(&log[t].samples[m]),
        search_reward: r,
        rescored: None,
    };
    let finish = |c: &Candidate,
                  reward: f64,
                  trajectory: Option<usize>,
                  fixed: Vec<Candidate>,
                  candidates,
                  gain: Option<(f64, f64)>| Best {
        weights: c.weights.clone(),
        logits: c.weights.iter().map(|w| w.ln()).collect(),
        reward,
        source: c.source.clone(),
        trajectory,
        fixed,
        candidates,
        gain_over_fixed: gain.map(|g| g.0),
        gain_se: gain.map(|g| g.1),
        fixed_best: None,
        fixed_gain: None,
        fixed_gain_se: None,
        val_search: search_pos.len(),
        val_choice: choice_pos.len(),
        recipe,
        config: cfg.clone(),
        settings: Some(sized),
        estimate: Some(estimate),
        budget_stop,
    };
    if cfg.select == Select::BestDraw {
        let (t, m, r) = best_draw(&log);
        let c = sample(t, m, r);
        return Ok((finish(&c, r, Some(t), fixed, vec![c.clone()], None), log));
    }
    // Re-score: the fixed samplers first (so a tie keeps the simpler choice), the policy mean,
    // the top samples; on the choice part (or, with no hold-out, the search part) with fresh seeds.
    let mean_w = to_weights(&log.last().expect("T ≥ 1").mu);
    let mean_r = proxy.evaluate(std::slice::from_ref(&mean_w), seeds, cfg.seed, u64::MAX - 2)[0];
    let chooser = if choice_pos.is_empty() {
        proxy
    } else {
        new_proxy(Some(&choice_pos))?
    };
    let mut cands: Vec<Candidate> = fixed.clone();
    cands.push(Candidate {
        source: "policy mean".into(),
        weights: mean_w,
        search_reward: mean_r,
        rescored: None,
    });
    let top = top_draws(&log, cfg.rescore_top);
    cands.extend(top.iter().map(|&(t, m, r)| sample(t, m, r)));
    let ws: Vec<Vec<f64>> = cands.iter().map(|c| c.weights.clone()).collect();
    let items = chooser.item_scores(&ws, cfg.rescore_seeds, cfg.seed, u64::MAX - 1);
    let rescored: Vec<f64> = items.iter().map(|v| chooser.aggregate(v)).collect();
    for (c, r) in cands.iter_mut().zip(&rescored) {
        c.rescored = Some(*r);
    }
    for (f, r) in fixed.iter_mut().zip(&rescored) {
        f.rescored = Some(*r);
    }
    let argmax = |range: std::ops::Range<usize>| {
        range
            .clone()
            .fold(range.start, |b, i| if rescored[i] > rescored[b] { i } else { b })
    };
    // The reference fixed sampler is chosen on *all* validation images (fresh seeds): the search
    // never selected the fixed samplers, so both halves are unbiased for them, and twice the
    // images separate them better. The samples compete with it on the held-out half only.
    // Among the fixed samplers, class-balanced (cRT's) is kept unless another beats it by more
    // than the standard error of the paired difference: with few validation images per class
    // their differences are mostly noise (one chose square-root on three seeds of three, 2.7
    // points below class-balanced on test).
    let fixed_pick = |p: &Proxy, items: &[Vec<f64>]| {
        let r: Vec<f64> = items.iter().map(|v| p.aggregate(v)).collect();
        let best = (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b });
        let d = FIXED_DEFAULT;
        let gain = r[best] - r[d];
        let se = p.paired_se(&items[best], &items[d]);
        let f = if best != d && reward::beyond_se(gain, se) {
            best
        } else {
            d
        };
        (f, (FIXED[best].0.to_string(), gain, se))
    };
    let (f, fixed_gain) = if choice_pos.is_empty() {
        fixed_pick(&chooser, &items[..FIXED.len()])
    } else {
        let all = new_proxy(None)?;
        let it = all.item_scores(&ws[..FIXED.len()], cfg.rescore_seeds, cfg.seed, u64::MAX - 3);
        fixed_pick(&all, &it)
    };
    let s = argmax(FIXED.len()..cands.len());
    // A searched candidate must beat the best fixed sampler by more than the noise of the
    // comparison: `min_gain_se` standard errors of the paired difference on the choice images.
    let gain = rescored[s] - rescored[f];
    let se = chooser.paired_se(&items[s], &items[f]);
    let i = if gain > 0.0 && gain >= cfg.min_gain_se * se {
        s
    } else {
        f
    };
    let trajectory = (i > FIXED.len()).then(|| top[i - FIXED.len() - 1].0);
    let mut best = finish(
        &cands[i].clone(),
        rescored[i],
        trajectory,
        fixed,
        cands,
        Some((gain, se)),
    );
    best.fixed_best = Some(fixed_gain.0);
    best.fixed_gain = Some(fixed_gain.1);
    best.fixed_gain_se = Some(fixed_gain.2);
    Ok((best, log))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::stage2::Stage2Config;
    use tch::{Device, Kind};

    #[test]
    fn search_moves_mu_toward_a_known_best() {
        // reward = −‖w − target‖²: the best weight vector is `target`
        let target = [0.6, 0.3, 0.1];
        let cfg = SearchConfig {
            trajectories: 150,
            samples: 8,
            sigma: 0.3,
            lr: 0.05,
            ..SearchConfig::paper()
        };
        let reward = |ws: &[Vec<f64>], _t: usize| -> Vec<f64> {
            ws.iter()
                .map(|w| -w.iter().zip(&target).map(|(a, b)| (a - b).powi(2)).sum::<f64>())
                .collect()
        };
        let log = search_with(&cfg, vec![0.0; 3], reward, |_| {}).unwrap();
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
        let (_, _, best) = best_draw(&log);
        assert!(best > -0.01, "{best}");
        // the mean reward of the M samples rises
        let mean = |s: &[Step]| s.iter().map(|s| s.mean_reward).sum::<f64>() / s.len() as f64;
        assert!(mean(&log[140..]) > mean(&log[..10]));
        // deterministic for a seed
        let again = search_with(&cfg, vec![0.0; 3], reward, |_| {}).unwrap();
        assert_eq!(again, log);
    }

    #[test]
    fn validation_split_per_class() {
        // class 0: 4 images, class 1: 1 image, class 2: 3 images; half held out
        let labels = [0i64, 0, 1, 2, 0, 2, 0, 2];
        let (search, choice) = split_validation(&labels, 0.5, 3);
        let count = |p: &[i64], c: i64| p.iter().filter(|&&i| labels[i as usize] == c).count();
        // 4 → 2 + 2; 1 → 1 + 0 (a lone image stays with the search); 3 → round(1.5) = 2 held out
        assert_eq!((count(&search, 0), count(&choice, 0)), (2, 2));
        assert_eq!((count(&search, 1), count(&choice, 1)), (1, 0));
        assert_eq!((count(&search, 2), count(&choice, 2)), (1, 2));
        let mut all = [search.clone(), choice.clone()].concat();
        all.sort_unstable();
        assert_eq!(all, (0..8).collect::<Vec<i64>>());
        // no hold-out: everything searches
        assert_eq!(split_validation(&labels, 0.0, 3), ((0..8).collect(), vec![]));
        // the same seed, the same split
        assert_eq!(split_validation(&labels, 0.5, 3), (search, choice));
    }

    #[test]
    fn config_checks_name_the_key_and_value() {
        for (toml, want) in [
            ("sigma = nan", "sigma must be a finite number > 0, got NaN"),
            ("lr = -1.0", "lr must be a finite number > 0, got -1"),
            ("clip = 0.0", "clip must be a finite number > 0, got 0"),
            ("proxy_batch = 0", "proxy_batch must be ≥ 1, got 0"),
            ("samples = 1", "samples must be ≥ 2, got 1"),
            ("holdout = 1.0", "holdout must be in [0, 1), got 1"),
            (
                "min_gain_se = -1.0",
                "min_gain_se must be a finite number ≥ 0, got -1",
            ),
        ] {
            let cfg: SearchConfig = crate::config::parse_toml(toml, "t.toml").unwrap();
            let e = cfg.check().unwrap_err().to_string();
            assert!(e.contains(want), "{toml}: {e}");
        }
        SearchConfig::default().check().unwrap();
        SearchConfig::paper().check().unwrap();
    }

    /// Three Gaussian classes in 4-d, 200/40/8 training images, a balanced validation set.
    fn blobs() -> (Features, Features, Tensor, Tensor) {
        let mut rng = chacha(11, &[]);
        let mut make = |counts: &[usize]| {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            for (c, &n) in counts.iter().enumerate() {
                for _ in 0..n {
                    for d in 0..4 {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        x.push((z + if d == c { 1.5 } else { 0.0 }) as f32);
                    }
                    y.push(c as i64);
                }
            }
            Features {
                x: Tensor::from_slice(&x).view([y.len() as i64, 4]),
                y: Tensor::from_slice(&y),
            }
        };
        let train = make(&[200, 40, 8]);
        let val = make(&[30, 30, 30]);
        let w0 = Tensor::zeros([3, 4], (Kind::Float, Device::Cpu));
        let b0 = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        (train, val, w0, b0)
    }

    #[test]
    fn frequency_groups_and_sizes() {
        // counts 5, 50, 20, 20, 1 → order 1, 2, 3, 0, 4 → 2 groups of 5 ranks: 0 0 0 1 1 (rank·2/5)
        assert_eq!(frequency_groups(&[5, 50, 20, 20, 1], 2), [1, 0, 0, 0, 1]);
        assert_eq!(frequency_groups(&[3, 2, 1], 3), [0, 1, 2]);
        let d = SearchConfig::default();
        let stage2 = Stage2Config::default().recipe();
        let sized = |cfg: &SearchConfig, classes: usize, dim: usize, per_class: usize| {
            let shape = Shape {
                classes,
                dim,
                images: classes * per_class,
            };
            cfg.sized(shape, &vec![per_class; classes], &stage2)
        };
        let four = |s: Sized| (s.groups, s.trajectories, s.proxy_cap, s.proxy_max_epochs);
        // CIFAR-10-LT's ResNet-32 features: per-class, whole proxies, T = 100 (as ever)
        assert_eq!(four(sized(&d, 10, 64, 1_240)), (None, 100, None, None));
        // 200 classes of 64-d features, 10k images: groups, not large
        assert_eq!(four(sized(&d, 200, 64, 50)), (Some(10), 30, None, None));
        // ImageNet-LT's ResNet-50 features: 2.4·10¹¹ > 10¹⁰; 20 images of each of 1,000 classes
        // over 3 epochs are 60,000 draws, 118 steps of stage 2's batch 512
        let s = sized(&d, 1000, 2048, 115);
        assert_eq!(four(s), (Some(10), 30, Some(20), Some(3)));
        assert_eq!(d.proxy_steps(&s, &[115; 1000], &stage2), 118);
        // ImageNet-LT's and iNaturalist's long tails (the scale bench's profiles) keep 20 and 3
        for (classes, top, bottom) in [(1000, 1280, 5), (8142, 1000, 2)] {
            let counts = crate::data::longtail::pareto_counts(classes, 6.0, top, bottom);
            let shape = Shape {
                classes,
                dim: 2048,
                images: counts.iter().sum(),
            };
            let s = d.sized(shape, &counts, &stage2);
            assert_eq!(
                (s.proxy_cap, s.proxy_max_epochs),
                (Some(20), Some(3)),
                "{classes} classes"
            );
            assert!(d.proxy_steps(&s, &counts, &stage2) >= MIN_PROXY_STEPS);
        }
        // 20 classes of 12,500 images, 2,048-d: large, but 20 a class would be 3 steps; the cap
        // rises to the smallest that keeps 64 steps: 3 · 20 · 547 = 32,820 ≥ 64 · 512 = 32,768
        let few = sized(&d, 20, 2048, 12_500);
        assert_eq!((few.proxy_cap, few.proxy_max_epochs), (Some(547), Some(3)));
        assert_eq!(d.proxy_steps(&few, &[12_500; 20], &stage2), 65);
        // 500 classes of 20 images, 2,048-d: no cap keeps 64 steps in 3 epochs (30,000 draws);
        // the epoch limit rises to 4
        let narrow = sized(&d, 500, 2048, 20);
        assert_eq!((narrow.proxy_cap, narrow.proxy_max_epochs), (None, Some(4)));
        // the config's own values win, even under the floor; 0 lifts a shortcut
        let own = SearchConfig {
            param: Param::PerClass,
            proxy_cap: Some(0),
            proxy_max_epochs: Some(5),
            ..d.clone()
        };
        assert_eq!(four(sized(&own, 1000, 2048, 115)), (None, 100, None, Some(5)));
        let tight = SearchConfig {
            proxy_cap: Some(20),
            ..d.clone()
        };
        // (the automatic epoch limit lifts, to no avail: 10 epochs of 400 images are 8 steps)
        let t = sized(&tight, 20, 2048, 12_500);
        assert_eq!((t.proxy_cap, t.proxy_max_epochs), (Some(20), None));
        assert_eq!(
            tight.short_proxy(&t, &[12_500; 20], &stage2).unwrap(),
            "[search] proxy_cap = 20, proxy_max_epochs = unset leave each proxy 8 SGD steps: under 64 its rewards rank class weights unlike the whole proxy's; leave both unset to let the search size its proxy"
        );
        // a small set: the cap turns 20 steps into 4, said; nothing to say of the automatic
        // sizes, nor of a cap that cuts nothing from a set too small for 64 steps whole
        let small = sized(&tight, 10, 64, 100);
        assert!(tight
            .short_proxy(&small, &[100; 10], &stage2)
            .unwrap()
            .contains(" 4 SGD steps"));
        assert_eq!(d.short_proxy(&few, &[12_500; 20], &stage2), None);
        let tiny = sized(&tight, 10, 64, 15);
        assert_eq!(tight.short_proxy(&tiny, &[15; 10], &stage2), None);
        let r = SearchConfig::default().sized_recipe(&stage2, &s);
        assert_eq!(r.epochs, 3, "stage 2's 10 epochs, at most 3");
    }

    /// A grouped search moves one offset per frequency group: every candidate's weights are the
    /// starting sampler's times a factor shared by the classes of a group.
    #[test]
    fn grouped_weights_are_the_start_tilted_per_group() {
        let (train, val, w0, b0) = blobs();
        let stage2 = blobs_recipe();
        let cfg = SearchConfig {
            param: Param::Groups,
            groups: 2,
            group_trajectories: 4,
            samples: 4,
            rescore_top: 3,
            rescore_seeds: 2,
            init: Init::SquareRoot,
            ..Default::default()
        };
        let (best, log) = run(&train, &val, (&w0, &b0), &stage2, &cfg, |_| {}).unwrap();
        assert_eq!(log.len(), 4);
        assert!(log
            .iter()
            .all(|s| s.mu.len() == 2 && s.samples.iter().all(|m| m.len() == 2)));
        assert_eq!(best.settings.unwrap().groups, Some(2));
        // counts 200, 40, 8: groups [0, 0, 1] (rank·2/3); start √n
        let sqrt = [200f64.sqrt(), 40f64.sqrt(), 8f64.sqrt()];
        for c in best.candidates.iter().filter(|c| c.source.starts_with("sample")) {
            let f: Vec<f64> = c.weights.iter().zip(&sqrt).map(|(w, s)| w / s).collect();
            assert!((f[0] - f[1]).abs() < 1e-9 * f[0], "{:?}", c.weights);
            assert!((f[1] - f[2]).abs() > 1e-6, "the tail group moves on its own");
        }
    }

    /// `budget_s`: an estimate before the first trajectory; past the budget no trajectory starts,
    /// and the default fixed sampler (class-balanced) is returned, said in `budget_stop`.
    #[test]
    fn a_budget_stops_the_trajectories_and_the_choice_is_still_made() {
        let (train, val, w0, b0) = blobs();
        let stage2 = blobs_recipe();
        let cfg = SearchConfig {
            trajectories: 50,
            samples: 4,
            rescore_top: 3,
            rescore_seeds: 2,
            budget_s: Some(1e-6),
            ..Default::default()
        };
        let mut estimate = None;
        let mut steps = 0;
        let (best, log) = run(&train, &val, (&w0, &b0), &stage2, &cfg, |e| match e {
            Event::ShortProxy(w) => panic!("no shortcut is set here: {w}"),
            Event::Estimate(e) => estimate = Some(*e),
            Event::Step(_) => steps += 1,
        })
        .unwrap();
        let e = estimate.expect("said before the trajectories");
        // 3 fixed + 50 × 4 samples + mean + (3 + 1 + 3) × 2 re-scored + 3 × 2 fixed on all
        assert_eq!(e.proxy_runs, 3 + 200 + 1 + 14 + 6);
        assert!(e.run_s > 0.0 && (e.total_s - e.run_s * 224.0).abs() < 1e-9);
        assert_eq!((log.len(), steps), (0, 0));
        let stop = best.budget_stop.unwrap();
        assert_eq!((stop.trajectories, stop.planned), (0, 50));
        assert_eq!(best.source, "class-balanced");
        assert_eq!(best.weights, vec![1.0 / 3.0; 3]);
        assert_eq!(
            best.candidates.len(),
            3,
            "the fixed samplers scored before the budget ran out"
        );
        let without = SearchConfig {
            budget_s: None,
            trajectories: 2,
            ..cfg.clone()
        };
        assert!(run(&train, &val, (&w0, &b0), &stage2, &without, |_| {})
            .unwrap()
            .0
            .budget_stop
            .is_none());
        for bad in [0.0, -5.0, f64::NAN] {
            let e = SearchConfig {
                budget_s: Some(bad),
                ..cfg.clone()
            }
            .check()
            .unwrap_err()
            .to_string();
            assert!(e.contains("[search] budget_s must be a finite number > 0"), "{e}");
        }
    }

    /// Stage 2's recipe on `blobs`.
    fn blobs_recipe() -> Recipe {
        Recipe {
            epochs: 2,
            batch: 32,
            lr: 0.05,
            momentum: 0.9,
            reinit: false,
            weight_decay: 0.0,
            max_norm: None,
            smoothing: None,
        }
    }

    #[test]
    fn rescore_chooses_among_fixed_samplers_and_samples_on_the_held_out_half() {
        let (train, val, w0, b0) = blobs();
        let stage2 = blobs_recipe();
        let cfg = SearchConfig {
            trajectories: 5,
            samples: 4,
            rescore_top: 3,
            rescore_seeds: 2,
            ..Default::default()
        };
        let (best, log) = run(&train, &val, (&w0, &b0), &stage2, &cfg, |_| {}).unwrap();
        assert_eq!(log.len(), 5);
        assert_eq!((best.val_search, best.val_choice), (45, 45));
        // candidates: 3 fixed samplers, the policy mean, the top 3 samples
        assert_eq!(best.candidates.len(), 7);
        let names: Vec<&str> = best.candidates.iter().map(|c| c.source.as_str()).collect();
        assert_eq!(
            &names[..4],
            ["instance", "square-root", "class-balanced", "policy mean"]
        );
        // the choice is a searched sample only with a gain ≥ 1 SE over the reference fixed
        // sampler (chosen on all of validation), else that fixed sampler
        let best_sample = best.candidates[3..]
            .iter()
            .map(|c| c.rescored.unwrap())
            .fold(f64::MIN, f64::max);
        let (gain, se) = (best.gain_over_fixed.unwrap(), best.gain_se.unwrap());
        let reference = best_sample - gain;
        assert!(best
            .fixed
            .iter()
            .any(|f| (f.rescored.unwrap() - reference).abs() < 1e-12));
        if gain > 0.0 && gain >= se {
            assert_eq!(best.reward, best_sample);
        } else {
            assert!((best.reward - reference).abs() < 1e-12);
            assert!(FIXED.iter().any(|(n, _)| *n == best.source));
        }
        // with min_gain_se = 0 any positive gain wins
        let any = SearchConfig {
            min_gain_se: 0.0,
            ..cfg.clone()
        };
        let (best0, _) = run(&train, &val, (&w0, &b0), &stage2, &any, |_| {}).unwrap();
        if best0.gain_over_fixed.unwrap() > 0.0 {
            assert_eq!(best0.reward, best_sample);
        }
        // the fixed samplers' re-scores are those recorded with them
        for (f, c) in best.fixed.iter().zip(&best.candidates) {
            assert_eq!(f, c);
        }
        // the search reward of a sample is the one in the log
        let s = &best.candidates[4];
        let (t, m, r) = top_draws(&log, 1)[0];
        assert_eq!(s.source, format!("sample t={} m={}", t + 1, m + 1));
        assert_eq!(s.search_reward, r);
        // best-draw (the paper's choice) returns the best single draw
        let bd = SearchConfig {
            select: Select::BestDraw,
            ..cfg
        };
        let (b2, log2) = run(&train, &val, (&w0, &b0), &stage2, &bd, |_| {}).unwrap();
        assert_eq!(b2.reward, best_draw(&log2).2);
        assert_eq!((b2.val_search, b2.val_choice), (90, 0));
    }

    #[test]
    fn no_validation_images_is_an_error_not_a_panic() {
        let (train, _, w0, b0) = blobs();
        let empty = Features {
            x: Tensor::zeros([0, 4], (Kind::Float, Device::Cpu)),
            y: Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
        };
        let stage2 = SearchConfig::paper().recipe(&Recipe {
            epochs: 1,
            batch: 8,
            lr: 0.1,
            momentum: 0.0,
            reinit: false,
            weight_decay: 0.0,
            max_norm: None,
            smoothing: None,
        });
        let e = run(
            &train,
            &empty,
            (&w0, &b0),
            &stage2,
            &SearchConfig::default(),
            |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("val_per_class"), "{e}");
    }
}
