//! Stage 2 on cached features (classifier re-training, cRT): the backbone stays frozen, the linear
//! classifier is re-trained from the stage-1 one (or re-initialised) with class-weighted sampling
//! — instance, class-balanced, square-root, progressive's end point, or given (searched) weights —
//! and evaluated on val and test.
use crate::eval::{metrics, Metrics};
use crate::features::Features;
use crate::search::{Proxy, SearchConfig};
use crate::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

fn d_epochs() -> usize {
    10
}
fn d_lr() -> f64 {
    0.01
}
fn d_batch() -> usize {
    128
}
fn d_mom() -> f64 {
    0.9
}

/// `[finetune]` of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_mom")]
    pub momentum: f64,
    /// Start from a zero classifier instead of the stage-1 one.
    #[serde(default)]
    pub reinit: bool,
    #[serde(default)]
    pub seed: u64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        crate::config::parse_toml("", "defaults").expect("every field has a default")
    }
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
    cfg: &FinetuneConfig,
) -> Result<Finetuned> {
    let Parts { train, val, test } = *parts;
    if weights.len() != train_counts.len() {
        return Err(invalid!(
            "{} class weights for {} classes",
            weights.len(),
            train_counts.len()
        ));
    }
    let (w0, b0) = if cfg.reinit {
        (w0.zeros_like(), b0.zeros_like())
    } else {
        (w0.shallow_clone(), b0.shallow_clone())
    };
    let sc = SearchConfig {
        proxy_epochs: cfg.epochs,
        proxy_batch: cfg.batch_size,
        proxy_lr: cfg.lr,
        proxy_momentum: cfg.momentum,
        ..Default::default()
    };
    let proxy = Proxy::new(train, val, &w0, &b0, &sc);
    let (w, b) = proxy.train(&[weights.to_vec()], cfg.seed, 0);
    let (w, b) = (w.get(0), b.get(0).view([-1]));
    let wt = w.tr();
    Ok(Finetuned {
        val: evaluate(val, &wt, &b, train_counts),
        test: evaluate(test, &wt, &b, train_counts),
        weight: w,
        bias: b,
    })
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
