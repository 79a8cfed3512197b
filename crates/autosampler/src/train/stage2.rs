//! Stage 2 on cached features (classifier re-training, cRT): the backbone stays frozen, the linear
//! classifier is re-trained from the stage-1 one (or re-initialised) with class-weighted sampling
//! — instance, class-balanced, square-root, progressive's end point, or given (searched) weights —
//! and evaluated on val and test.
use crate::distributed::Alone;
use crate::eval::{metrics, Metrics};
use crate::features::Features;
use crate::linear::{Recipe, Run, Trainer};
use crate::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// `[stage2]` of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct Stage2Config {
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub momentum: f64,
    /// Start from a zero classifier instead of the stage-1 one.
    pub reinit: bool,
    pub seed: u64,
    /// The class weights to sample with (their value at the last epoch for `progressive`);
    /// absent: the searched weights (`search/best_weights.json`).
    pub sampler: Option<crate::sampler::Sampler>,
    /// `features`: re-train on the cached features (fast). `images`: on augmented images through
    /// the frozen backbone (exact, as the decoupling paper's cRT).
    pub path: Stage2Path,
    /// Which of stage 2's classifiers the run's model (`model.safetensors`, `predict`) uses:
    /// `best-on-val` (default), the one with the highest validation top-1 when it beats
    /// `default` by more than the standard error of the paired difference, else `default`; or
    /// one named (the re-trained one, one of the fixed ones, `stage1`).
    pub classifier: Classifier,
    /// The classifier `best-on-val` keeps unless another is better by more than the noise of the
    /// comparison. Unset (auto): class-balanced cRT for a plainly trained stage 1, and stage 1's
    /// own classifier when stage 1 already re-balances (balanced softmax / logit-adjusted or
    /// class-balanced loss, DRW, a re-balancing sampler, BBN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Classifier>,
    /// L2 weight decay of the re-trained classifiers (weight balancing's second stage: 0.1 at
    /// lr 0.01). 0: none.
    #[serde(skip_serializing_if = "is_zero")]
    pub weight_decay: f64,
    /// MaxNorm's t in [0, 1]: each class's weight vector is kept within min + t·(max − min) of
    /// the stage-1 classifier's per-class norms (weight balancing's 0.1). Features path only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_norm: Option<f64>,
    /// `[stage2.label_aware_smoothing]`: MiSLAS's label-aware smoothing in the re-trained
    /// classifiers' cross-entropy (`head`, `tail`, `shape`). The search's proxies follow it; LWS
    /// keeps the plain cross-entropy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_aware_smoothing: Option<crate::loss::LabelAwareSmoothing>,
}

/// One of the classifiers stage 2 scores, as `[stage2] classifier` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Classifier {
    /// Re-trained with the searched weights, or `[stage2] sampler`'s.
    Retrained,
    /// cRT with class-balanced sampling.
    CrtClassBalanced,
    /// cRT with square-root sampling.
    CrtSquareRoot,
    /// Learnable weight scaling.
    Lws,
    /// τ-normalisation, τ chosen on validation.
    TauNormalised,
    /// Post-hoc logit adjustment, τ chosen on validation.
    LogitAdjusted,
    /// Stage 1's own classifier, as trained.
    Stage1,
    /// Whichever of the others has the highest validation top-1 (ties to the lower val ECE, then
    /// the first listed).
    BestOnVal,
}

impl Classifier {
    /// The concrete classifiers, in the order `best-on-val` prefers them on ties of top-1 and ECE.
    pub const CONCRETE: [Classifier; 6] = [
        Classifier::Retrained,
        Classifier::CrtClassBalanced,
        Classifier::CrtSquareRoot,
        Classifier::Lws,
        Classifier::TauNormalised,
        Classifier::LogitAdjusted,
    ];

    /// The re-trained classifier: what a stage2/eval.json written before the key existed holds.
    pub fn retrained() -> Classifier {
        Classifier::Retrained
    }
}

/// Where stage 2 reads its training inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage2Path {
    #[default]
    Features,
    Images,
}

/// Stage 2 on images: the backbone frozen (eval mode, no gradients), the classifier of `model`
/// re-trained in place with class-weighted sampling (with replacement) on augmented training
/// images, then scored on val and test. Sampling and augmentation are seeded by `cfg.seed`.
pub fn finetune_images(
    model: &mut crate::model::Model,
    ds: &crate::data::Dataset,
    weights: &[f64],
    cfg: &Stage2Config,
    train: &super::stage1::TrainConfig,
) -> Result<Scored> {
    use crate::data::loader::{for_each_batch, LoaderConfig};
    use crate::data::Part;
    let device = model.vs.device();
    let view = ds.view(Part::Train);
    if weights.len() != view.num_classes {
        return Err(invalid!(
            "{} class weights for {} classes",
            weights.len(),
            view.num_classes
        ));
    }
    let head: Vec<(String, Tensor)> = {
        let mut v: Vec<(String, Tensor)> = model
            .vs
            .variables()
            .into_iter()
            .filter(|(n, _)| n.starts_with("fc."))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    if cfg.reinit {
        tch::no_grad(|| {
            head.iter().for_each(|(_, t)| {
                let _ = t.shallow_clone().zero_();
            })
        });
    }
    let mut opt = crate::optim::Sgd::new(head, cfg.momentum, false, cfg.weight_decay);
    // the frozen backbone in `[train]`'s precision and layout; the classifier trains in fp32
    let fast = super::stage1::Fast::of(train);
    let members = crate::sampler::class_members(&view.labels);
    let eps = cfg
        .label_aware_smoothing
        .map(|las| las.epsilons(&ds.split.counts.train));
    let lc = LoaderConfig {
        randaugment: None,
        autoaugment: None,
        cutout: None,
        batch_size: cfg.batch_size,
        threads: train.threads,
        augment: train.augment_for(view.size),
        normalize: train.normalize,
        drop_last: false,
        seed: cfg.seed,
    };
    for epoch in 0..cfg.epochs {
        let mut rng = crate::rng::chacha(cfg.seed, &[6, epoch as u64]);
        let plan = crate::sampler::plan_with_replacement(&members, weights, view.len(), &mut rng);
        for_each_batch(&view, &plan, &lc, epoch, |b| {
            let x = b.images.to_device(device);
            let f = tch::no_grad(|| fast.run(&x, |x| model.forward_features(x, false)));
            let logits = model.forward_head(&f);
            let y = b.labels.to_device(device);
            let loss = match &eps {
                Some(e) => crate::loss::LabelAwareSmoothing::loss(&logits, &y, e),
                None => logits.cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100, 0.0),
            };
            opt.backward_step(&loss, cfg.lr);
            Ok(())
        })?;
    }
    Ok(Scored {
        val: super::stage1::evaluate(model, ds, Part::Val, train, &Alone)?,
        test: super::stage1::evaluate(model, ds, Part::Test, train, &Alone)?,
    })
}

impl Stage2Config {
    /// The linear trainer's recipe.
    pub fn recipe(&self) -> Recipe {
        Recipe {
            epochs: self.epochs,
            batch: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            reinit: self.reinit,
            weight_decay: self.weight_decay,
            max_norm: self.max_norm,
            smoothing: self.label_aware_smoothing,
        }
    }

    /// Checks every field's range (NaN included); the error names the key and the value.
    pub fn check(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(invalid!("[stage2] epochs must be ≥ 1, got 0"));
        }
        if self.batch_size == 0 {
            return Err(invalid!("[stage2] batch_size must be ≥ 1, got 0"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(invalid!(
                "[stage2] lr must be a finite number > 0, got {}",
                self.lr
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(invalid!(
                "[stage2] momentum must be in [0, 1), got {}",
                self.momentum
            ));
        }
        let r = crate::check::Ranges("stage2");
        r.non_negative("weight_decay", self.weight_decay)?;
        if let Some(t) = self.max_norm {
            r.unit("max_norm", t)?;
            if self.reinit {
                return Err(invalid!(
                    "[stage2] max_norm = {t} with reinit = true: MaxNorm's radius is measured on the stage-1 classifier's per-class norms, and a zero classifier has none; leave one out"
                ));
            }
            if self.path == Stage2Path::Images {
                return Err(invalid!(
                    "[stage2] max_norm = {t} with path = \"images\": MaxNorm is built into the re-training on features; use path = \"features\""
                ));
            }
        }
        if let Some(las) = &self.label_aware_smoothing {
            las.check("stage2.label_aware_smoothing")?;
        }
        if self.default == Some(Classifier::BestOnVal) {
            return Err(invalid!(
                "[stage2] default = \"best-on-val\": the default is the classifier best-on-val keeps unless another beats it; name one (\"crt-class-balanced\", \"stage1\", …) or leave it unset"
            ));
        }
        Ok(())
    }
}

impl Default for Stage2Config {
    fn default() -> Self {
        Stage2Config {
            epochs: 10,
            lr: 0.04,
            batch_size: 512,
            momentum: 0.9,
            reinit: Default::default(),
            seed: Default::default(),
            sampler: Default::default(),
            path: Default::default(),
            classifier: Classifier::BestOnVal,
            default: None,
            weight_decay: 0.0,
            max_norm: None,
            label_aware_smoothing: None,
        }
    }
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// A re-trained classifier and its metrics.
pub struct Finetuned {
    /// `[D, C]` and `[C]`.
    pub weight: Tensor,
    pub bias: Tensor,
    pub val: Metrics,
    pub test: Metrics,
}

/// Cached features of the three parts.
pub struct Parts<'a> {
    pub train: &'a Features,
    pub val: &'a Features,
    pub test: &'a Features,
}

/// Re-trains the classifier `(w0 [C, D], b0 [C])` on the training features with class weights
/// `weights` and evaluates it on val and test; `train_counts` defines the shot groups.
pub fn finetune(
    parts: &Parts,
    (w0, b0): (&Tensor, &Tensor),
    weights: &[f64],
    train_counts: &[usize],
    cfg: &Stage2Config,
) -> Result<Finetuned> {
    let Parts { train, val, test } = *parts;
    if weights.len() != train_counts.len() {
        return Err(invalid!(
            "{} class weights for {} classes",
            weights.len(),
            train_counts.len()
        ));
    }
    let trainer = Trainer::new(train, w0, b0);
    let heads = trainer.train(&[Run::new(weights, (cfg.seed, 0, 0))], &cfg.recipe());
    let (w, b) = (heads.w.get(0), heads.b.get(0).view([-1]));
    let wt = w.tr();
    Ok(Finetuned {
        val: evaluate(val, &wt, &b, train_counts),
        test: evaluate(test, &wt, &b, train_counts),
        weight: w,
        bias: b,
    })
}

/// Validation and test metrics of a classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub val: Metrics,
    pub test: Metrics,
}

impl Scored {
    /// The classifier `(w [C, D], b [C])` scored on the val and test features.
    pub fn of(parts: &Parts, w: &Tensor, b: &Tensor, train_counts: &[usize]) -> Scored {
        Scored {
            val: evaluate(parts.val, w, b, train_counts),
            test: evaluate(parts.test, w, b, train_counts),
        }
    }
}

/// Every classifier's top-1 on the validation images the search held out from its own fit (its
/// choice half), with the post-hoc τ re-chosen on the half the search fitted: what `best-on-val`
/// compares when stage 2 re-trained with searched weights. On all of validation the searched
/// classifier is optimistic (its weights were fitted on half of those images), and the post-hoc
/// rows a little (τ picked on them); on these images nothing was fitted, except the search's final
/// choice among its few re-scored candidates (a small bias, with other proxy seeds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heldout {
    /// Validation images held out (the search's choice half).
    pub n: usize,
    pub stage1: f64,
    pub retrained: f64,
    pub crt_class_balanced: f64,
    pub crt_square_root: f64,
    pub lws: f64,
    /// τ chosen on the search half.
    pub tau_normalised_tau: f64,
    pub tau_normalised: f64,
    /// τ chosen on the search half.
    pub logit_adjusted_tau: f64,
    pub logit_adjusted: f64,
}

impl Heldout {
    /// A concrete classifier's held-out top-1.
    pub fn top1(&self, c: Classifier) -> f64 {
        match c {
            Classifier::Stage1 => self.stage1,
            Classifier::Retrained | Classifier::BestOnVal => self.retrained,
            Classifier::CrtClassBalanced => self.crt_class_balanced,
            Classifier::CrtSquareRoot => self.crt_square_root,
            Classifier::Lws => self.lws,
            Classifier::TauNormalised => self.tau_normalised,
            Classifier::LogitAdjusted => self.logit_adjusted,
        }
    }
}

/// The rows `positions` of `f`.
pub fn subset(f: &Features, positions: &[i64]) -> Features {
    let idx = Tensor::from_slice(positions);
    Features {
        x: f.x.index_select(0, &idx.to_device(f.x.device())),
        y: f.y.index_select(0, &idx.to_device(f.y.device())),
    }
}

/// The classifiers of a stage 2, as `(w [C, D], b [C])`.
pub struct Heads<'a> {
    pub stage1: (&'a Tensor, &'a Tensor),
    pub retrained: (&'a Tensor, &'a Tensor),
    pub crt_class_balanced: (&'a Tensor, &'a Tensor),
    pub crt_square_root: (&'a Tensor, &'a Tensor),
    pub lws_scales: &'a [f64],
}

/// [`Heldout`]: the classifiers scored on the validation rows `choice`, the post-hoc ones with τ
/// chosen on the rows `search`.
pub fn heldout(
    parts: &Parts,
    heads: &Heads,
    search: &[i64],
    choice: &[i64],
    train_counts: &[usize],
) -> Heldout {
    let (fit, held) = (subset(parts.val, search), subset(parts.val, choice));
    let top1 = |(w, b): (&Tensor, &Tensor)| evaluate(&held, w, b, train_counts).top1;
    let (w0, b0) = heads.stage1;
    let (lw, lb) = lws_head(w0, b0, heads.lws_scales);
    // the post-hoc τ chosen on the fitted half, scored on the held-out one
    let halves = Parts {
        train: parts.train,
        val: &fit,
        test: &held,
    };
    let tau = tau_normalised(&halves, w0, train_counts);
    let la = logit_adjusted(&halves, w0, b0, train_counts);
    Heldout {
        n: choice.len(),
        stage1: top1(heads.stage1),
        retrained: top1(heads.retrained),
        crt_class_balanced: top1(heads.crt_class_balanced),
        crt_square_root: top1(heads.crt_square_root),
        lws: top1((&lw, &lb)),
        tau_normalised_tau: tau.tau,
        tau_normalised: tau.test.top1,
        logit_adjusted_tau: la.tau,
        logit_adjusted: la.test.top1,
    }
}

/// A post-hoc correction of the stage-1 classifier with its τ chosen on validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostHoc {
    pub tau: f64,
    pub val: Metrics,
    pub test: Metrics,
    /// Validation top-1 cross-fitted over two halves of validation (per class, `split_validation`
    /// with seed 0): τ chosen on each half scores the other. `val.top1` is the score of the τ
    /// chosen on those very images, the best of 21, so optimistic; this is what `best-on-val`
    /// compares when a report has no held-out scores. Absent when a half would be empty (one
    /// validation image per class) and in reports written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_crossfit: Option<f64>,
}

/// Learnable weight scaling (Kang et al.): the stage-1 classifier stays fixed and one scale per
/// class, s_c (logit_c = s_c·(w_c·x + b_c)), is learned with class-balanced sampling, `cfg.epochs`
/// epochs of SGD (`cfg.lr`, `cfg.momentum`, `cfg.batch_size`). Returns the scales and the scored
/// classifier.
pub fn learnable_weight_scaling(
    parts: &Parts,
    (w0, b0): (&Tensor, &Tensor),
    train_counts: &[usize],
    cfg: &Stage2Config,
) -> Result<(Vec<f64>, Scored)> {
    let c = w0.size()[0];
    let logits = tch::no_grad(|| parts.train.x.to_kind(Kind::Float).mm(&w0.tr()) + b0);
    let y = &parts.train.y;
    let labels: Vec<u32> = Vec::<i64>::try_from(y)
        .expect("i64 labels")
        .into_iter()
        .map(|l| l as u32)
        .collect();
    let members = crate::sampler::class_members(&labels);
    let cb = vec![1.0 / c as f64; c as usize];
    let s = Tensor::ones([c], (Kind::Float, w0.device())).set_requires_grad(true);
    let mut v = Tensor::zeros([c], (Kind::Float, w0.device()));
    for epoch in 0..cfg.epochs {
        let mut rng = crate::rng::chacha(cfg.seed, &[5, epoch as u64]);
        let plan = crate::sampler::plan_with_replacement(&members, &cb, labels.len(), &mut rng);
        for chunk in plan.chunks(cfg.batch_size.max(1)) {
            let idx = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
            let z = logits.index_select(0, &idx) * &s;
            let loss = z.cross_entropy_loss::<Tensor>(
                &y.index_select(0, &idx),
                None,
                tch::Reduction::Mean,
                -100,
                0.0,
            );
            let g = Tensor::run_backward(&[&loss], &[&s], false, false).remove(0);
            tch::no_grad(|| {
                v = &v * cfg.momentum + g * cfg.lr;
                let _ = s.detach().g_sub_(&v);
            });
        }
    }
    let scales: Vec<f64> = Vec::<f32>::try_from(&s.detach())
        .expect("f32")
        .into_iter()
        .map(f64::from)
        .collect();
    let (w, b) = lws_head(w0, b0, &scales);
    let scored = Scored::of(parts, &w, &b, train_counts);
    if scales.iter().any(|x| !x.is_finite()) {
        return Err(invalid!(
            "learnable weight scaling diverged (lr {}): scales {scales:?}",
            cfg.lr
        ));
    }
    Ok((scales, scored))
}

/// The τ grid searched on validation: 0, 0.1, …, 2.
pub fn tau_grid() -> Vec<f64> {
    (0..=20).map(|i| i as f64 / 10.0).collect()
}

/// τ-normalisation (Kang et al.): each class's weight vector divided by its norm to the power τ,
/// bias dropped; τ maximising validation top-1 (the smallest on ties).
pub fn tau_normalised(parts: &Parts, w0: &Tensor, train_counts: &[usize]) -> PostHoc {
    best_on_val(parts, train_counts, |tau| tau_normalised_head(w0, tau))
}

/// The τ-normalised classifier `(w0 / ‖w0_c‖^τ, 0)`.
pub fn tau_normalised_head(w0: &Tensor, tau: f64) -> (Tensor, Tensor) {
    let norms = w0.norm_scalaropt_dim(2, [1], true);
    let zero = Tensor::zeros([w0.size()[0]], (Kind::Float, w0.device()));
    (w0 / norms.pow_tensor_scalar(tau), zero)
}

/// Post-hoc logit adjustment (Menon et al.): logits − τ·log prior, τ chosen on validation.
pub fn logit_adjusted(parts: &Parts, w0: &Tensor, b0: &Tensor, train_counts: &[usize]) -> PostHoc {
    best_on_val(parts, train_counts, |tau| {
        logit_adjusted_head(w0, b0, train_counts, tau)
    })
}

/// The logit-adjusted classifier `(w0, b0 − τ·log(n_c / N))`.
pub fn logit_adjusted_head(w0: &Tensor, b0: &Tensor, train_counts: &[usize], tau: f64) -> (Tensor, Tensor) {
    let n: usize = train_counts.iter().sum();
    let log_prior: Vec<f32> = train_counts
        .iter()
        .map(|&c| (c as f64 / n as f64).ln() as f32)
        .collect();
    let lp = Tensor::from_slice(&log_prior).to_device(b0.device());
    (w0.shallow_clone(), b0 - lp * tau)
}

/// The classifier of learnable weight scaling with scales `s`: `(s_c·w0_c, s_c·b0_c)`.
pub fn lws_head(w0: &Tensor, b0: &Tensor, scales: &[f64]) -> (Tensor, Tensor) {
    let s = Tensor::from_slice(&scales.iter().map(|&x| x as f32).collect::<Vec<_>>()).to_device(w0.device());
    (w0 * s.unsqueeze(1), b0 * s)
}

fn best_on_val(parts: &Parts, counts: &[usize], classifier: impl Fn(f64) -> (Tensor, Tensor)) -> PostHoc {
    let labels = Vec::<i64>::try_from(&parts.val.y).expect("i64 labels");
    let (a, b) = crate::search::split_validation(&labels, 0.5, 0);
    let halves = (!a.is_empty() && !b.is_empty()).then(|| (subset(parts.val, &a), subset(parts.val, &b)));
    // images right on each half, per τ of the grid
    let right = |f: &Features, w: &Tensor, bias: &Tensor, n: usize| {
        (evaluate(f, w, bias, counts).top1 * n as f64 / 100.0).round() as usize
    };
    let mut per_tau: Vec<(usize, usize)> = Vec::new();
    let mut best: Option<PostHoc> = None;
    for tau in tau_grid() {
        let (w, bias) = classifier(tau);
        if let Some((fa, fb)) = &halves {
            per_tau.push((right(fa, &w, &bias, a.len()), right(fb, &w, &bias, b.len())));
        }
        let val = evaluate(parts.val, &w, &bias, counts);
        if best.as_ref().is_none_or(|p| val.top1 > p.val.top1) {
            best = Some(PostHoc {
                tau,
                test: evaluate(parts.test, &w, &bias, counts),
                val,
                val_crossfit: None,
            });
        }
    }
    let mut best = best.expect("a non-empty grid");
    if !per_tau.is_empty() {
        // the first (smallest) τ with the most right on a half, scored on the other half
        let argmax = |k: fn(&(usize, usize)) -> usize| {
            (0..per_tau.len()).fold(0, |m, i| if k(&per_tau[i]) > k(&per_tau[m]) { i } else { m })
        };
        let (ta, tb) = (argmax(|p| p.0), argmax(|p| p.1));
        let right = per_tau[ta].1 + per_tau[tb].0;
        best.val_crossfit = Some(100.0 * right as f64 / (a.len() + b.len()) as f64);
    }
    best
}

/// How `best-on-val` chose: the best classifier on the selection images against the default,
/// the gain and the standard error of the paired difference (percentage points), and what it
/// kept. A gain within one standard error is a coin toss: the default is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The validation images compared on: "held" (the search's held-out half) or "val" (all).
    pub basis: String,
    pub n: usize,
    pub default: Classifier,
    /// The highest top-1 on the selection images (ties to the lower val ECE).
    pub best: Classifier,
    /// best − default, top-1 points on the selection images.
    pub gain: f64,
    /// Standard error of that paired difference.
    pub se: f64,
    pub chosen: Classifier,
}

impl Choice {
    /// Compares `best` with `default` on the per-image correctness (1 or 0) of each on the same
    /// images: `best` is chosen only when its gain exceeds one standard error of the paired
    /// difference.
    pub fn decide(basis: &str, default: Classifier, best: Classifier, d: &[f64], b: &[f64]) -> Choice {
        let n = d.len();
        let diff: Vec<f64> = b.iter().zip(d).map(|(x, y)| x - y).collect();
        let mean = diff.iter().sum::<f64>() / n.max(1) as f64;
        let var = if n > 1 {
            diff.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let (gain, se) = (100.0 * mean, 100.0 * (var / n.max(1) as f64).sqrt());
        let chosen = if best != default && gain > 0.0 && crate::search::reward::beyond_se(gain, se) {
            best
        } else {
            default
        };
        Choice {
            basis: basis.to_string(),
            n,
            default,
            best,
            gain,
            se,
            chosen,
        }
    }
}

/// Per-image correctness (1 right, 0 wrong) of a classifier `(w [C, D], b [C])` on features.
pub fn correct(f: &Features, w: &Tensor, b: &Tensor) -> Vec<f64> {
    let pred = tch::no_grad(|| (f.x.to_kind(Kind::Float).mm(&w.tr()) + b).argmax(1, false));
    let right = pred.eq_tensor(&f.y).to_kind(Kind::Double);
    Vec::<f64>::try_from(&right).expect("f64 values")
}

/// Metrics of a classifier `(w [C, D], b [C])` on features, without re-training.
pub fn evaluate(f: &Features, w: &Tensor, b: &Tensor, train_counts: &[usize]) -> Metrics {
    let logits = tch::no_grad(|| f.x.to_kind(Kind::Float).mm(&w.tr()) + b);
    let labels: Vec<u32> = Vec::<i64>::try_from(&f.y)
        .expect("i64 labels")
        .into_iter()
        .map(|l| l as u32)
        .collect();
    metrics(&logits, &labels, train_counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn feats(x: &[f32], y: &[i64]) -> Features {
        Features {
            x: Tensor::from_slice(x).view([y.len() as i64, 2]),
            y: Tensor::from_slice(y),
        }
    }

    /// Defect "choices made on validation that cannot tell the candidates apart": the best on
    /// validation replaces the default only when its gain exceeds the standard error of the
    /// paired difference, sqrt(var(d) / n) with var's n − 1 divisor.
    #[test]
    fn the_best_on_val_replaces_the_default_only_beyond_its_paired_standard_error() {
        let (cb, la) = (Classifier::CrtClassBalanced, Classifier::LogitAdjusted);
        // differences [0, 1, 0, 0]: mean 0.25, var (3 · 0.25² + 0.75²) / 3 = 0.25, SE √(0.25/4)
        let c = Choice::decide("held", cb, la, &[1.0, 0.0, 1.0, 0.0], &[1.0, 1.0, 1.0, 0.0]);
        assert_eq!((c.gain, c.se, c.n), (25.0, 25.0, 4));
        assert_eq!(
            c.chosen, cb,
            "a gain of exactly one SE is not more than the noise"
        );
        // differences [1, 1, 0, 0]: mean 0.5, var 1/3, SE √(1/12) = 0.288675…
        let c = Choice::decide("held", cb, la, &[0.0, 0.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 1.0]);
        assert_eq!(c.gain, 50.0);
        assert!((c.se - 100.0 * (1.0f64 / 12.0).sqrt()).abs() < 1e-12, "{}", c.se);
        assert_eq!(c.chosen, la);
        // the best right and the default wrong on 6 of 100 images, the other way on 3: gain 3.00,
        // SE 100·√(8.91 / 99 / 100) = 3.00 in real numbers, a hair under in floating point: not
        // more than one SE (a 200-epoch run's choice fell on exactly this edge)
        let d: Vec<f64> = (0..100).map(|i| f64::from((6..9).contains(&i))).collect();
        let b: Vec<f64> = (0..100).map(|i| f64::from(i < 6)).collect();
        let c = Choice::decide("held", cb, la, &d, &b);
        assert_eq!(c.gain, 3.0);
        assert!((c.se - 3.0).abs() < 1e-9, "{}", c.se);
        assert_eq!(c.chosen, cb);
        // the best is the default: kept whatever the numbers
        let c = Choice::decide("val", cb, cb, &[0.0, 1.0], &[0.0, 1.0]);
        assert_eq!((c.gain, c.se, c.chosen), (0.0, 0.0, cb));
    }

    #[test]
    fn post_hoc_corrections_by_hand() {
        // two classes, class 1 rare; features on the diagonal; the stage-1 classifier favours class 0
        let f = feats(&[1.0, 0.0, 0.0, 1.0, 0.6, 0.4, 0.4, 0.6], &[0, 1, 0, 1]);
        let w0 = Tensor::from_slice(&[3.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let b0 = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let parts = Parts {
            train: &f,
            val: &f,
            test: &f,
        };
        let counts = [90, 10];
        // without a correction the point (0.4, 0.6) scores 1.2 for class 0 and 0.6 for class 1
        assert_eq!(evaluate(&f, &w0, &b0, &counts).top1, 75.0);
        // τ = 1 divides row 0 by 3: every point is then classified right; τ = 0 is the plain model
        let t = tau_normalised(&parts, &w0, &counts);
        assert_eq!(t.val.top1, 100.0);
        assert!(t.tau > 0.0);
        // logit adjustment: class 1 gains τ·(ln 0.9 − ln 0.1) = 2.197τ; (0.4, 0.6) flips for τ > 0.273
        let la = logit_adjusted(&parts, &w0, &b0, &counts);
        assert_eq!(la.val.top1, 100.0);
        assert!(
            (la.tau - 0.3).abs() < 1e-12,
            "smallest τ on the grid that fixes it: {}",
            la.tau
        );
    }

    /// The held-out scores: each classifier on the choice rows only, the post-hoc τ chosen on the
    /// search rows. There the two diagonal points are right at τ = 0 (the smallest τ on ties), so
    /// logit adjustment keeps τ = 0 and misses (0.4, 0.6) on the held-out rows: 50, where τ chosen
    /// on all four rows (0.3) scores 100.
    #[test]
    fn heldout_scores_choice_rows_with_tau_chosen_on_search_rows() {
        let f = feats(&[1.0, 0.0, 0.0, 1.0, 0.6, 0.4, 0.4, 0.6], &[0, 1, 0, 1]);
        let w0 = Tensor::from_slice(&[3.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let b0 = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let eye = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let flip = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 0.0]).view([2, 2]);
        let parts = Parts {
            train: &f,
            val: &f,
            test: &f,
        };
        let counts = [90, 10];
        let heads = Heads {
            stage1: (&w0, &b0),
            retrained: (&eye, &b0),
            crt_class_balanced: (&flip, &b0),
            crt_square_root: (&w0, &b0),
            lws_scales: &[1.0, 3.0],
        };
        let h = heldout(&parts, &heads, &[0, 1], &[2, 3], &counts);
        assert_eq!(
            h,
            Heldout {
                n: 2,
                stage1: 50.0,
                retrained: 100.0,
                crt_class_balanced: 0.0,
                crt_square_root: 50.0,
                lws: 100.0,
                tau_normalised_tau: 0.0,
                tau_normalised: 50.0,
                logit_adjusted_tau: 0.0,
                logit_adjusted: 50.0,
            }
        );
        let la = logit_adjusted(&parts, &w0, &b0, &counts);
        assert_eq!(la.val.top1, 100.0);
        // cross-fitted over the two halves (one image of each class in each): the half holding
        // (0.4, 0.6) picks τ = 0.3 and gets the other half right (2 of 2); the other half picks
        // τ = 0 and misses (0.4, 0.6) (1 of 2): 3 of 4, where τ picked on all four scores 100
        assert_eq!(la.val_crossfit, Some(75.0));
        assert_eq!(h.top1(Classifier::Lws), 100.0);
        assert_eq!(h.top1(Classifier::LogitAdjusted), 50.0);
    }
}
