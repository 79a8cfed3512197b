//! Stage 1: train a network on the training split (any sampler, loss, mixing), evaluate on the
//! validation split every epoch, checkpoint every epoch atomically, resume where a killed run
//! stopped, stop on a NaN or exploding loss keeping the last good checkpoint.
//!
//! ```text
//! <run>/stage1/
//!   last.safetensors   model + optimiser state after the last completed epoch
//!   state.json         epochs done, best epoch, metrics history (written after last.safetensors)
//!   best.safetensors   the model of the best validation top-1 so far
//!   model.safetensors  the final model (after the last epoch)
//!   metrics.jsonl      one line per epoch
//!   config.json        the [model] and [train] it was started with (a resume must match)
//! ```
use super::schedule::{lr_at, Schedule};
use crate::data::augment::{Augment, Normalize};
use crate::data::loader::{for_each_batch_shares, Batch, LoaderConfig, Shares};
use crate::data::randaugment::RandAugment;
use crate::data::{Dataset, Part, View};
use crate::distributed::{self, Collective};
use crate::eval::{metrics, Metrics};
use crate::loss::{Drw, Loss, LossConfig};
use crate::mix::guided::{guided_cutmix, Locator};
use crate::mix::{mixed_loss, MixConfig};
pub use crate::model::fast::{channels_last, Fast};
use crate::model::{Model, ModelConfig};
use crate::optim::Sgd;
use crate::precision::{self, Precision};
use crate::rng::chacha;
use crate::rundir::RunDir;
use crate::sampler::Sampler;
use crate::{fsx, invalid, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// How a stage-1 step is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// One batch from `sampler`, one forward, the loss.
    #[default]
    Standard,
    /// BBN's cumulative learning (Zhou et al. 2020), for a `bilateral` model: a batch from
    /// `sampler` (uniform) through the conventional branch and a batch from the reversed sampler
    /// through the re-balancing branch, features mixed `2α : 2(1−α)`, loss
    /// `α·L(y_a) + (1−α)·L(y_b)`, with α = 1 − (epoch / epochs)² ([`bbn_alpha`]).
    Bbn,
}

/// BBN's cumulative-learning weight of the conventional branch at `epoch` (0-based):
/// `1 − (epoch / epochs)²` — 1 at the start, falling parabolically towards 0.
pub fn bbn_alpha(epoch: usize, epochs: usize) -> f64 {
    1.0 - (epoch as f64 / epochs.max(1) as f64).powi(2)
}

/// The most epochs `[train]` accepts.
pub const MAX_EPOCHS: usize = 100_000;

/// `[train]` of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub warmup_epochs: usize,
    pub schedule: Schedule,
    pub loss: LossConfig,
    pub drw: Option<Drw>,
    pub sampler: Sampler,
    /// Sample with replacement (class-aware sampling) instead of filling quotas.
    pub replacement: bool,
    pub mix: MixConfig,
    /// Default: pad-4 crop + flip for images up to 32 px, random-resized-crop above.
    pub augment: Option<Augment>,
    /// RandAugment before the crop and flip (stage 1 only; stage 2 re-trains on plain crops).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub randaugment: Option<RandAugment>,
    /// AutoAugment's learned policy (`"cifar10"`) before the crop and flip, instead of RandAugment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoaugment: Option<crate::data::randaugment::AutoAugment>,
    /// Cutout after the crop and flip (`{ size = 16 }` for CIFAR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutout: Option<crate::data::augment::Cutout>,
    /// `[train.sam]`: sharpness-aware minimisation (SAM, or ASAM with `adaptive`), two forward
    /// and backward passes a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sam: Option<crate::optim::Sam>,
    pub normalize: Normalize,
    /// Each batch is computed in this many equal shares (ghost batches: batch norm normalises each
    /// share alone), whose gradients add up to the batch's. A data-parallel run of N ranks divides
    /// the shares among them, and its started config records `micro_batches × N`: N ranks give
    /// the weights of one process with `micro_batches = N` (up to float summation order).
    #[serde(skip_serializing_if = "is_one")]
    pub micro_batches: usize,
    /// libtorch intra-op threads (and batch-assembly threads).
    pub threads: usize,
    /// "cpu", "cuda" or "cuda:N".
    pub device: String,
    /// Channels-last memory format for images and convolution weights. Default (unset): on, and
    /// a run folder that already holds stage 1 keeps the layout it was started with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels_last: Option<bool>,
    /// The older spelling of `precision`: `true` is "bf16", `false` "fp32". A started config
    /// records the precision it resolved to here (so folders written before `precision` existed
    /// keep their fingerprint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bf16: Option<bool>,
    /// "fp32", "bf16" or "auto" (bf16 where the device computes it natively; see
    /// [`crate::precision`]).
    #[serde(
        skip_serializing_if = "is_auto",
        deserialize_with = "crate::precision::deserialize_opt"
    )]
    pub precision: Option<Precision>,
    pub seed: u64,
    pub method: Method,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 200,
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            nesterov: Default::default(),
            weight_decay: 2e-4,
            warmup_epochs: 5,
            schedule: Schedule::Cosine,
            loss: LossConfig::Ce { label_smoothing: 0.0 },
            drw: Default::default(),
            sampler: Sampler::Instance,
            replacement: Default::default(),
            mix: Default::default(),
            augment: Default::default(),
            randaugment: Default::default(),
            autoaugment: None,
            cutout: None,
            sam: None,
            normalize: Default::default(),
            micro_batches: 1,
            threads: 2,
            device: "cpu".into(),
            channels_last: Default::default(),
            bf16: Default::default(),
            precision: Default::default(),
            seed: Default::default(),
            method: Default::default(),
        }
    }
}

impl TrainConfig {
    /// Whether stage 1 already re-balances the classes: a balanced-softmax / logit-adjusted or
    /// class-balanced loss, deferred re-weighting, a sampler other than instance-balanced, or
    /// BBN. Stage 2's `best-on-val` then keeps stage 1's own classifier unless another is better
    /// by more than the noise (a plainly trained stage 1 keeps class-balanced cRT).
    pub fn rebalances(&self) -> bool {
        matches!(
            self.loss,
            crate::loss::LossConfig::LogitAdjusted { .. } | crate::loss::LossConfig::ClassBalanced { .. }
        ) || self.drw.is_some()
            || !matches!(self.sampler, crate::sampler::Sampler::Instance)
            || self.method == Method::Bbn
    }

    pub fn device(&self) -> Result<Device> {
        parse_device(&self.device)
    }
    /// Checks every field's range (NaN included) and the combinations; the error names the key and
    /// the value. Run when the config is loaded; whether the device exists is checked later, when
    /// a stage starts ([`TrainConfig::validate`]).
    pub fn check(&self) -> Result<()> {
        let r = crate::check::Ranges("train");
        r.at_least("epochs", self.epochs, 1)?;
        if self.epochs > MAX_EPOCHS {
            return Err(invalid!(
                "[train] epochs must be at most {MAX_EPOCHS}, got {} (a run that long would not end)",
                self.epochs
            ));
        }
        r.at_least("batch_size", self.batch_size, 1)?;
        r.at_least("threads", self.threads, 1)?;
        r.micro_batches(self.micro_batches, self.batch_size)?;
        if self.micro_batches > 1 && self.method == Method::Bbn {
            return Err(invalid!(
                "[train] micro_batches = {} (or data-parallel ranks) with method = \"bbn\": BBN's paired batches are not divided into shares; use one process and micro_batches = 1",
                self.micro_batches
            ));
        }
        r.positive("lr", self.lr)?;
        r.unit_open("momentum", self.momentum)?;
        r.non_negative("weight_decay", self.weight_decay)?;
        r.device("device", &self.device)?;
        if let Schedule::Step { milestones, factors } = &self.schedule {
            if milestones.len() != factors.len() {
                return Err(invalid!(
                    "[train] schedule: {} milestones but {} factors",
                    milestones.len(),
                    factors.len()
                ));
            }
            for f in factors {
                r.non_negative("schedule.factors", *f)?;
            }
        }
        self.loss.check()?;
        if let Some(d) = &self.drw {
            if d.start_epoch >= self.epochs {
                return Err(invalid!(
                    "[train] drw.start_epoch must be < epochs ({}), got {}",
                    self.epochs,
                    d.start_epoch
                ));
            }
            r.unit_open("drw.beta", d.beta)?;
        }
        self.mix.validate()?;
        if let Some(ra) = &self.randaugment {
            ra.check()?;
            if let MixConfig::AgentCutmix { per_batch: false, .. } = self.mix {
                return Err(invalid!(
                    "[train] randaugment with agent-cutmix reading the agent's saved locations: its shears, shifts and rotations move the object away from the saved patch; set [train.mix] per_batch = true (the agent runs on every augmented batch) or leave randaugment out"
                ));
            }
        }
        if self.autoaugment.is_some() {
            if self.randaugment.is_some() {
                return Err(invalid!(
                    "[train] autoaugment and randaugment are both set: each replaces the other's place before the crop; keep one"
                ));
            }
            if let MixConfig::AgentCutmix { per_batch: false, .. } = self.mix {
                return Err(invalid!(
                    "[train] autoaugment with agent-cutmix reading the agent's saved locations: its shears, shifts and rotations move the object away from the saved patch; set [train.mix] per_batch = true or leave autoaugment out"
                ));
            }
        }
        if let Some(c) = &self.cutout {
            r.at_least("cutout.size", c.size as usize, 1)?;
        }
        if let Some(sam) = &self.sam {
            sam.check()?;
            if self.method == Method::Bbn {
                return Err(invalid!(
                    "[train.sam] with method = \"bbn\": SAM is built into the standard training step only; leave [train.sam] out for BBN"
                ));
            }
        }
        if self.method == Method::Bbn && self.mix != MixConfig::default() {
            return Err(invalid!(
                "[train] method = \"bbn\" mixes its two branches' features itself: leave [train.mix] out"
            ));
        }
        if let (Some(b), Some(p)) = (self.bf16, self.precision) {
            if p != Precision::Auto && b != (p == Precision::Bf16) {
                return Err(invalid!(
                    "[train] bf16 = {b} and precision = \"{}\" disagree: bf16 is the older spelling of precision; keep precision alone",
                    p.name()
                ));
            }
        }
        Ok(())
    }
    /// [`TrainConfig::check`], and the device exists here.
    pub fn validate(&self) -> Result<()> {
        self.check()?;
        self.device()?;
        Ok(())
    }
    /// The precision asked for: `precision`, or the older `bf16` alias; `Auto` when neither.
    pub fn precision(&self) -> Precision {
        match (self.bf16, self.precision) {
            (_, Some(p)) if p != Precision::Auto => p,
            (Some(true), _) => Precision::Bf16,
            (Some(false), _) => Precision::Fp32,
            _ => Precision::Auto,
        }
    }
    /// Whether forward passes run in bf16 autocast (`auto` made concrete for the device).
    pub fn bf16_on(&self) -> bool {
        self.device()
            .map(|d| self.precision().bf16_on(d))
            .unwrap_or(false)
    }
    /// Whether images and convolution weights are channels-last (the default).
    pub fn channels_last(&self) -> bool {
        self.channels_last.unwrap_or(true)
    }
    /// This config with its precision and memory layout made concrete, for a stage 1 in `run`:
    /// what the folder's stage 1 was started with where the config leaves them to the default
    /// (`auto`, unset), else the device's fastest (bf16 where native, channels-last). A stage 1
    /// started in another precision than the one asked for is refused, naming the command that
    /// starts a new run. The result records both in `bf16` and `channels_last`, as every started
    /// config does.
    pub fn resolved(&self, run: &RunDir) -> Result<TrainConfig> {
        let dir = run.stage1().dir;
        let recorded: Option<Started> = {
            let path = run.stage1().config();
            path.is_file().then(|| fsx::read_json(&path)).transpose()?
        };
        let asked = self.precision();
        // a device that is not here (a CUDA config read on a CPU machine, e.g. by `data
        // prepare`) makes `auto` concrete as the CPU would: training refuses the device itself
        let device = self.device().unwrap_or(Device::Cpu);
        let precision = match (&recorded, asked) {
            (Some(r), Precision::Auto) => r.train.precision().on(device),
            (Some(r), p) => {
                let was = r.train.precision().on(device);
                if was != p {
                    return Err(crate::precision::resume_refused(
                        &dir,
                        was,
                        p,
                        "[train] precision",
                    ));
                }
                p
            }
            (None, p) => p.on(device),
        };
        let channels_last = self
            .channels_last
            .or_else(|| recorded.as_ref().map(|r| r.train.channels_last()))
            .unwrap_or(true);
        Ok(TrainConfig {
            precision: None,
            bf16: Some(precision == Precision::Bf16),
            channels_last: Some(channels_last),
            ..self.clone()
        })
    }
    /// The augmentation in force for images of side `size`.
    pub fn augment_for(&self, size: u32) -> Augment {
        self.augment.clone().unwrap_or(if size <= 32 {
            Augment::cifar()
        } else {
            Augment::resized_crop(size)
        })
    }
}

/// "cpu", "cuda", "cuda:N".
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if !tch::Cuda::is_available() {
                return Err(invalid!(
                    "device \"cuda\" asked for, but libtorch sees no CUDA device here"
                ));
            }
            Ok(Device::Cuda(0))
        }
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) if (n as i64) < tch::Cuda::device_count() => Ok(Device::Cuda(n)),
            _ => Err(invalid!(
                "device \"{s}\" is unrecognized or absent: expected cpu, cuda or cuda:N"
            )),
        },
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_top1: f64,
    pub val_balanced: f64,
    pub seconds: f64,
    pub img_per_s: f64,
}

pub use super::checkpoint::STATE_KEY;

/// `stage1/state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub epochs_done: usize,
    pub best_epoch: Option<usize>,
    pub best_val_top1: f64,
    pub history: Vec<EpochLog>,
    pub done: bool,
    /// The build, device and threads of the process that trained last.
    #[serde(default)]
    pub provenance: Option<crate::provenance::Provenance>,
}

/// `stage1/config.json`: what a stage 1 was started with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Started {
    model: ModelConfig,
    train: TrainConfig,
}

fn started(model_cfg: &ModelConfig, cfg: &TrainConfig) -> Started {
    Started {
        model: model_cfg.architecture(),
        train: started_config(cfg),
    }
}

fn is_auto(p: &Option<Precision>) -> bool {
    matches!(p, None | Some(Precision::Auto))
}

pub(crate) fn is_one(v: &usize) -> bool {
    *v == 1
}

/// `[train]` as far as it decides the result: the device and the thread count blanked, the
/// precision and the memory layout made concrete in `bf16` and `channels_last` (the form of every
/// started config, older ones included; see [`TrainConfig::resolved`]).
pub fn started_config(cfg: &TrainConfig) -> TrainConfig {
    TrainConfig {
        device: String::new(),
        threads: 0,
        bf16: Some(cfg.bf16_on()),
        channels_last: Some(cfg.channels_last()),
        precision: None,
        ..cfg.clone()
    }
}

/// Checks, without writing, that a stage 1 recorded in `run` (if any) was started with these
/// `[model]` and `[train]` (the device and the thread count may differ).
pub fn check_compatible(model_cfg: &ModelConfig, cfg: &TrainConfig, run: &RunDir) -> Result<()> {
    let cfg = &cfg.resolved(run)?;
    let paths = run.stage1();
    let path = paths.config();
    if path.is_file() {
        let before: Started = fsx::read_json(&path)?;
        let now = started(model_cfg, cfg);
        if before != now {
            if before.train.micro_batches != now.train.micro_batches
                && before
                    == started(
                        model_cfg,
                        &TrainConfig {
                            micro_batches: before.train.micro_batches,
                            ..cfg.clone()
                        },
                    )
            {
                return Err(invalid!(
                    "{} was started with its batches in {} shares (ranks × micro_batches of a data-parallel run), this run cuts them in {}: resume with the same product (e.g. --set train.micro_batches={} in one process)",
                    paths.dir.display(),
                    before.train.micro_batches,
                    now.train.micro_batches,
                    before.train.micro_batches
                ));
            }
            let (a, b) = (
                serde_json::to_value(&before).expect("serialisable"),
                serde_json::to_value(&now).expect("serialisable"),
            );
            let mut keys = Vec::new();
            differing(&a, &b, "", &mut keys);
            return Err(invalid!(
                "{} was started with another [model] or [train] config ({}): use another run folder, or delete it",
                paths.dir.display(),
                keys.join("; ")
            ));
        }
    }
    Ok(())
}

/// The keys whose values differ between two recorded configs, as `[train] lr = 0.1 when started,
/// 0.05 now` (tables descended into; a table present on one side only is one key).
fn differing(a: &serde_json::Value, b: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                let null = Value::Null;
                differing(x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), &here, out);
            }
        }
        _ if a == b => {}
        _ => {
            let (section, key) = at.split_once('.').unwrap_or((at, ""));
            let show = |v: &Value| {
                if v.is_null() {
                    "unset".to_string()
                } else {
                    v.to_string()
                }
            };
            out.push(format!(
                "[{section}] {key} = {} when started, {} now",
                show(a),
                show(b)
            ));
        }
    }
}

/// Records the `[model]` and `[train]` a stage 1 starts with in `stage1/config.json`, or, when
/// one is recorded, checks that these are the same (the device and the thread count may differ).
pub fn check_started(model_cfg: &ModelConfig, cfg: &TrainConfig, run: &RunDir) -> Result<()> {
    let cfg = &cfg.resolved(run)?;
    check_compatible(model_cfg, cfg, run)?;
    let path = run.stage1().config();
    if path.is_file() {
        Ok(())
    } else {
        fsx::write_json(&path, &started(model_cfg, cfg))
    }
}

/// Progress reports from [`train`].
pub trait Progress {
    fn epoch_start(&self, epoch: usize, epochs: usize, batches: usize);
    fn batch(&self, loss: f64);
    fn epoch_end(&self, log: &EpochLog);
}

/// A [`Progress`] that says nothing.
pub struct Silent;
impl Progress for Silent {
    fn epoch_start(&self, _: usize, _: usize, _: usize) {}
    fn batch(&self, _: f64) {}
    fn epoch_end(&self, _: &EpochLog) {}
}

fn set_threads(n: usize) {
    tch::set_num_threads(n.max(1) as i32);
}

/// Logits of `model` on every image of `view` (no augmentation), on the CPU; sharded over the
/// ranks of `comm` (every rank gets every row).
pub fn predict(
    model: &Model,
    view: &View,
    normalize: &Normalize,
    threads: usize,
    fast: Fast,
    comm: &dyn Collective,
) -> Result<Tensor> {
    crate::features::map_view(model, view, normalize, threads, model.num_classes, comm, |x| {
        fast.run(x, |x| model.forward(x, false))
    })
}

impl Fast {
    /// What `[train]` asks for (`auto` made concrete for its device).
    pub fn of(cfg: &TrainConfig) -> Fast {
        Fast {
            bf16: cfg.bf16_on(),
            channels_last: cfg.channels_last(),
        }
    }
}

/// Evaluates `model` on a part of `ds`, sharded over the ranks of `comm` (each has the metrics).
pub fn evaluate(
    model: &Model,
    ds: &Dataset,
    part: Part,
    cfg: &TrainConfig,
    comm: &dyn Collective,
) -> Result<Metrics> {
    let view = ds.view(part);
    let logits = predict(model, &view, &cfg.normalize, cfg.threads, Fast::of(cfg), comm)?;
    Ok(metrics(&logits, &view.labels, &ds.split.counts.train))
}

/// Rank 0's batch-norm buffers (every variable without a gradient) into every rank's `model`, in
/// name order (the same on every rank).
fn broadcast_buffers(model: &Model, comm: &dyn Collective) -> Result<()> {
    let buffers = model
        .vs
        .variables()
        .into_iter()
        .filter(|(_, t)| !t.requires_grad());
    distributed::broadcast_named(comm, buffers.collect())
}

/// Batch norm's running statistics (every variable without a gradient) as they are now, to put
/// back after a forward pass that must not move them.
struct BnStats(Vec<(Tensor, Tensor)>);

impl BnStats {
    fn save(model: &Model) -> BnStats {
        let vars = model.vs.variables().into_values().filter(|t| !t.requires_grad());
        BnStats(tch::no_grad(|| vars.map(|v| (v.copy(), v)).collect()))
    }
    fn restore(self) {
        tch::no_grad(|| {
            for (saved, mut v) in self.0 {
                v.copy_(&saved);
            }
        });
    }
}

/// Trains stage 1 into `<run>/stage1`, resuming from its checkpoint when `resume` is set and one
/// exists. Returns the trained model (last epoch) and the final state.
pub fn train(
    ds: &Dataset,
    model_cfg: &ModelConfig,
    cfg: &TrainConfig,
    run: &RunDir,
    resume: bool,
    progress: &dyn Progress,
) -> Result<(Model, State)> {
    train_guided(ds, model_cfg, cfg, run, resume, progress, None)
}

/// [`train`] with a locator of salient patches (the patch agent's guide), which
/// `mix = { kind = "agent-cutmix" }` needs.
pub fn train_guided(
    ds: &Dataset,
    model_cfg: &ModelConfig,
    cfg: &TrainConfig,
    run: &RunDir,
    resume: bool,
    progress: &dyn Progress,
    guide: Option<&dyn Locator>,
) -> Result<(Model, State)> {
    let with = With {
        guide,
        comm: &distributed::Alone,
    };
    train_with(ds, model_cfg, cfg, run, resume, progress, with)
}

/// The logits and the (mixed) loss of one batch, or one share of it: the mixing draws from
/// `chacha(seed, key)`.
#[allow(clippy::too_many_arguments)]
fn forward_loss(
    model: &Model,
    loss: &Loss,
    cfg: &TrainConfig,
    guide: Option<&dyn Locator>,
    b: &Batch,
    x: &Tensor,
    y: &Tensor,
    epoch: usize,
    key: &[u64],
    bf16: bool,
) -> Result<(Tensor, Tensor)> {
    let mut mrng = chacha(cfg.seed, key);
    let mixed = match (cfg.mix.guided(), guide) {
        (Some((prob, tau, fixed_lambda)), Some(g)) => {
            guided_cutmix(g, prob, tau, fixed_lambda, b, x, &mut mrng)?
        }
        _ => cfg.mix.apply(x, &mut mrng),
    };
    let input = mixed.as_ref().map(|m| &m.images).unwrap_or(x);
    let logits = precision::autocast(bf16, x.device(), || {
        let f = model.forward_features(input, true);
        model.observe_features(&f);
        model.forward_head(&f)
    })
    .to_kind(Kind::Float);
    let l = match &mixed {
        Some(m) => mixed_loss(|t| loss.forward(&logits, t, epoch), y, m),
        None => loss.forward(&logits, y, epoch),
    };
    Ok((logits, l))
}

/// What stage 1 trains with besides its config: the guide of guided CutMix, and the process
/// group of a data-parallel run ([`distributed::Alone`] for one process).
#[derive(Clone, Copy)]
pub struct With<'a> {
    pub guide: Option<&'a dyn Locator>,
    pub comm: &'a dyn Collective,
}

/// [`train_guided`] as one rank of a data-parallel group (`with.comm`): this rank computes its
/// shares of every batch (`cfg.micro_batches` shares in all, divided among the ranks), the flat
/// gradient is summed over ranks, and rank 0 alone evaluates and writes (see [`crate::distributed`]).
pub fn train_with(
    ds: &Dataset,
    model_cfg: &ModelConfig,
    cfg: &TrainConfig,
    run: &RunDir,
    resume: bool,
    progress: &dyn Progress,
    with: With,
) -> Result<(Model, State)> {
    let (guide, comm) = (with.guide, with.comm);
    let (rank, world) = (comm.rank(), comm.world());
    cfg.validate()?;
    let cfg = &cfg.resolved(run)?;
    if !cfg.micro_batches.is_multiple_of(world) {
        return Err(invalid!(
            "[train] micro_batches = {} is not divided among {world} ranks (a data-parallel run records micro_batches × ranks)",
            cfg.micro_batches
        ));
    }
    if matches!(cfg.mix, MixConfig::AgentCutmix { .. }) && guide.is_none() {
        return Err(invalid!(
            "mix kind \"agent-cutmix\" needs the patch agent: add an [agent] section (or agent.from)"
        ));
    }
    if matches!(cfg.mix, MixConfig::CamCutmix { .. }) && guide.is_none() {
        return Err(invalid!(
            "mix kind \"cam-cutmix\" needs its model opened as the locator (mix::cam::Cam)"
        ));
    }
    if cfg.method == Method::Bbn && !model_cfg.bilateral {
        return Err(invalid!(
            "method = \"bbn\" trains two branches: set bilateral = true in [model]"
        ));
    }
    let device = cfg.device()?;
    // made concrete once, not on every step
    let bf16 = cfg.bf16_on();
    set_threads(cfg.threads);
    let paths = run.stage1();
    std::fs::create_dir_all(&paths.dir).map_err(|e| Error::io(&paths.dir, e))?;
    tch::manual_seed(cfg.seed as i64);
    let c = ds.split.num_classes() as i64;
    let mut model = Model::new(model_cfg, c, device)?;
    if let Some(init) = &model_cfg.init {
        // a resumed run's checkpoint replaces these below
        let said = model.load_init(init)?;
        if rank == 0 {
            tracing::warn!("[model] init: {said}");
        }
    }
    Fast {
        bf16: false,
        channels_last: cfg.channels_last(),
    }
    .prepare(&model);
    let params: Vec<(String, Tensor)> = {
        let mut v: Vec<(String, Tensor)> = model
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let mut opt = Sgd::new(params, cfg.momentum, cfg.nesterov, cfg.weight_decay);
    if rank == 0 {
        check_started(model_cfg, cfg, run)?;
    } else {
        check_compatible(model_cfg, cfg, run)?; // rank 0 records it: the others write nothing
    }
    let mut state = State::default();
    if paths.state().is_file() || paths.last().is_file() {
        if !resume {
            return Err(invalid!(
                "{} holds a started stage 1: pass --resume to continue it, or delete the folder",
                paths.dir.display()
            ));
        }
        if paths.last().is_file() {
            // The checkpoint is the commit point: it carries the state it was written with, so
            // weights and epoch count can never disagree (a kill between the checkpoint and
            // state.json used to resume epoch N+1's weights as epoch N).
            let (tensors, embedded) = super::checkpoint::read::<State>(&paths.last())?;
            state = match embedded {
                Some(s) => s,
                None => fsx::read_json(&paths.state())?,
            };
            if state.epochs_done > 0 {
                model.load_map(&tensors, &paths.last())?;
                opt.load_state(&tensors);
            }
        } else {
            state = fsx::read_json(&paths.state())?;
        }
    }
    if world > 1 {
        // Rank 0's checkpoint is the run's: every rank starts from its epoch, weights, momentum
        // and batch-norm buffers.
        state.epochs_done = distributed::broadcast_usize(comm, state.epochs_done)?;
        opt.broadcast(comm)?;
        broadcast_buffers(&model, comm)?;
    }
    state.provenance = Some(
        crate::provenance::Provenance::here(&cfg.device, cfg.threads)
            .with_precision(cfg.bf16_on(), cfg.channels_last()),
    );
    let train_view = ds.view(Part::Train);
    let counts = ds.split.counts.train.clone();
    let loss = Loss::new(&cfg.loss, cfg.drw.as_ref(), &counts)?;
    let augment = cfg.augment_for(train_view.size);
    let lc = LoaderConfig {
        randaugment: cfg.randaugment,
        autoaugment: cfg.autoaugment,
        cutout: cfg.cutout,
        batch_size: cfg.batch_size,
        threads: cfg.threads,
        augment,
        normalize: cfg.normalize,
        drop_last: false,
        seed: cfg.seed,
    };
    let epoch_len = cfg.sampler.epoch_len(&counts);
    if let Some(c) = cfg.cutout.filter(|c| c.size > train_view.size) {
        return Err(invalid!(
            "[train] cutout.size = {} is larger than the {} px images: at most {}",
            c.size,
            train_view.size,
            train_view.size
        ));
    }
    if rank == 0 && cfg.warmup_epochs > cfg.epochs {
        tracing::warn!(
            "[train] warmup_epochs = {} is more than epochs = {}: the learning rate never reaches lr = {}",
            cfg.warmup_epochs,
            cfg.epochs,
            cfg.lr
        );
    }
    if rank == 0 && cfg.batch_size > epoch_len {
        tracing::warn!(
            "[train] batch_size = {} is more than the {epoch_len} images of an epoch: each epoch is one step of a smaller batch",
            cfg.batch_size
        );
    }
    let steps_per_epoch = epoch_len.div_ceil(cfg.batch_size);
    for epoch in state.epochs_done..cfg.epochs {
        let t0 = Instant::now();
        let mut rng = chacha(cfg.seed, &[1, epoch as u64]);
        let mut plan = cfg
            .sampler
            .plan(&train_view.labels, epoch, cfg.epochs, cfg.replacement, &mut rng)?;
        let bbn = cfg.method == Method::Bbn;
        let alpha = bbn_alpha(epoch, cfg.epochs);
        let mut lc = lc.clone();
        if bbn {
            // Each loader batch is B uniform images then B from the reversed sampler.
            let reversed = Sampler::Reversed.plan(&train_view.labels, epoch, cfg.epochs, true, &mut rng)?;
            plan = pair_plans(&plan, &reversed[..plan.len().min(reversed.len())], cfg.batch_size);
            lc.batch_size = 2 * cfg.batch_size;
        }
        progress.epoch_start(epoch, cfg.epochs, plan.len().div_ceil(lc.batch_size));
        let (mut sum_loss, mut correct, mut seen, mut batch_i) = (0f64, 0f64, 0usize, 0usize);
        let mut lr = cfg.lr;
        let per = cfg.micro_batches / world;
        let mine = if bbn {
            Shares::ALL
        } else {
            Shares {
                from: rank * per,
                to: (rank + 1) * per,
                of: cfg.micro_batches,
            }
        };
        for_each_batch_shares(&train_view, &plan, &lc, epoch, mine, |b| {
            lr = lr_at(
                cfg.lr,
                cfg.warmup_epochs,
                &cfg.schedule,
                epoch * steps_per_epoch + batch_i,
                steps_per_epoch,
                cfg.epochs,
            );
            let mut x = b.images.to_device(device);
            if cfg.channels_last() {
                x = channels_last(&x);
            }
            let y = b.labels.to_device(device);
            let at = |share: Option<usize>| {
                format!(
                    "epoch {}, batch {}{} (the checkpoint holds {} epochs)",
                    epoch + 1,
                    batch_i + 1,
                    share.map(|s| format!(", share {s}")).unwrap_or_default(),
                    state.epochs_done
                )
            };
            if bbn {
                let half = y.size()[0] / 2;
                let (xa, xb) = (x.narrow(0, 0, half), x.narrow(0, half, half));
                let (ya, yb) = (y.narrow(0, 0, half), y.narrow(0, half, half));
                let logits = precision::autocast(bf16, device, || model.forward_bbn(&xa, &xb, alpha, true))?
                    .to_kind(Kind::Float);
                let l = loss.forward(&logits, &ya, epoch) * alpha
                    + loss.forward(&logits, &yb, epoch) * (1.0 - alpha);
                let lv = l.double_value(&[]);
                super::checkpoint::check_loss(lv, "the loss", &at(None), &paths.dir)?;
                opt.backward_step(&l, lr);
                let pred = logits.argmax(-1, false);
                for (t, w) in [(&ya, alpha), (&yb, 1.0 - alpha)] {
                    correct += w * pred.eq_tensor(t).sum(Kind::Int64).int64_value(&[]) as f64;
                }
                sum_loss += lv * half as f64;
                seen += half as usize;
                batch_i += 1;
                progress.batch(lv);
                return Ok(());
            }
            // Shares: this rank's images are shares `mine` of the whole batch of `b.whole`; each
            // share's mean loss is weighted by its part of the batch, so the gradients summed
            // over shares and ranks are the gradient of the whole batch's mean loss. One share
            // (one process, micro_batches = 1) is the whole batch, its loss and mixing key as
            // they always were.
            let whole = cfg.micro_batches == 1;
            let offset = mine.images(b.whole).start;
            let mut last = 0.0;
            // One pass over this rank's shares: their summed gradient (at SAM's ascended weights
            // when `ascent`, where nothing is counted).
            let mut pass = |ascent: bool| -> Result<Option<Tensor>> {
                let mut g: Option<Tensor> = None;
                for s in mine.from..mine.to {
                    let r = Shares::range(b.whole, s, cfg.micro_batches);
                    if r.is_empty() {
                        continue;
                    }
                    let (lo, len) = ((r.start - offset) as i64, r.len() as i64);
                    let part = (!whole).then(|| Batch {
                        images: b.images.narrow(0, lo, len),
                        labels: b.labels.narrow(0, lo, len),
                        index: b.index[r.start - offset..r.end - offset].to_vec(),
                        windows: b.windows[r.start - offset..r.end - offset].to_vec(),
                        whole: b.whole,
                    });
                    let (xs, ys) = if whole {
                        (x.shallow_clone(), y.shallow_clone())
                    } else {
                        (x.narrow(0, lo, len), y.narrow(0, lo, len))
                    };
                    let key: &[u64] = if whole {
                        &[2, epoch as u64, batch_i as u64]
                    } else {
                        &[2, epoch as u64, batch_i as u64, s as u64]
                    };
                    let batch = part.as_ref().unwrap_or(&b);
                    let (logits, l) =
                        forward_loss(&model, &loss, cfg, guide, batch, &xs, &ys, epoch, key, bf16)?;
                    let lv = l.double_value(&[]);
                    let what = if ascent {
                        "the loss at SAM's ascended weights"
                    } else {
                        "the loss"
                    };
                    super::checkpoint::check_loss(lv, what, &at((!whole).then_some(s)), &paths.dir)?;
                    opt.add_share_gradient(&mut g, &l, r.len(), b.whole);
                    if !ascent {
                        sum_loss += lv * r.len() as f64;
                        correct += logits
                            .argmax(-1, false)
                            .eq_tensor(&ys)
                            .sum(Kind::Int64)
                            .int64_value(&[]) as f64;
                        seen += r.len();
                        last = lv;
                    }
                }
                Ok(g)
            };
            let g = pass(false)?;
            match &cfg.sam {
                None => {
                    opt.step_summed(g, comm, lr)?;
                }
                Some(sam) => {
                    // the gradient at w + e, on the same images and mixes; batch norm's running
                    // statistics as the first pass left them (the reference implementation's
                    // momentum-0 second pass)
                    let e = opt.ascend(&opt.summed(g, comm)?, sam);
                    let kept = BnStats::save(&model);
                    let g = pass(true)?;
                    kept.restore();
                    let g = opt.summed(g, comm)?;
                    opt.descend(&e, g, lr);
                }
            }
            batch_i += 1;
            progress.batch(last);
            Ok(())
        })?;
        if world > 1 {
            let t = distributed::sum_f64(comm, &[sum_loss, correct, seen as f64])?;
            (sum_loss, correct, seen) = (t[0], t[1], t[2] as usize);
        }
        let train_s = t0.elapsed().as_secs_f64();
        if world > 1 {
            // rank 0's model is the one evaluated (and saved): its batch-norm statistics
            broadcast_buffers(&model, comm)?;
        }
        let val = evaluate(&model, ds, Part::Val, cfg, comm)?;
        if rank != 0 {
            state.epochs_done = epoch + 1;
            continue;
        }
        let log = EpochLog {
            epoch: epoch + 1,
            lr,
            train_loss: sum_loss / seen.max(1) as f64,
            train_acc: 100.0 * correct / seen.max(1) as f64,
            val_top1: val.top1,
            val_balanced: val.balanced,
            seconds: t0.elapsed().as_secs_f64(),
            img_per_s: seen as f64 / train_s,
        };
        // One commit point per epoch: `last.safetensors` holds the weights, the optimiser and
        // the state together (one atomic rename). `best.safetensors` is written before it: a kill
        // in between redoes the epoch, which rewrites the same best bytes (training is
        // deterministic); `state.json` and `metrics.jsonl` after it are readable copies.
        if state.best_epoch.is_none() || val.top1 > state.best_val_top1 {
            state.best_epoch = Some(epoch + 1);
            state.best_val_top1 = val.top1;
            model.save(&paths.best())?;
        }
        state.epochs_done = epoch + 1;
        state.history.push(log.clone());
        let mut tensors = model.state_dict();
        tensors.extend(opt.state());
        super::checkpoint::commit(
            &paths.last(),
            tensors,
            &state,
            &paths.state(),
            &paths.metrics(),
            &state.history,
        )?;
        progress.epoch_end(&log);
    }
    if rank == 0 && (!state.done || !paths.model().is_file()) {
        model.save(&paths.model())?;
        state.done = true;
        fsx::write_json(&paths.state(), &state)?;
    }
    Ok((model, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbn_cumulative_learning_schedule() {
        // BBN: l = 1 − ((epoch − 1) / max_epoch)², epochs counted from 1.
        assert_eq!(bbn_alpha(0, 200), 1.0);
        assert_eq!(bbn_alpha(100, 200), 0.75);
        assert!((bbn_alpha(199, 200) - (1.0 - 0.995f64 * 0.995)).abs() < 1e-12);
        assert!((bbn_alpha(3, 10) - 0.91).abs() < 1e-12);
        let a: Vec<f64> = (0..30).map(|e| bbn_alpha(e, 30)).collect();
        assert!(a.windows(2).all(|w| w[1] < w[0]), "strictly decreasing");
        assert!(a[29] > 0.0);
    }

    #[test]
    fn paired_plans_split_into_halves() {
        let a: Vec<usize> = (0..5).collect();
        let b: Vec<usize> = (10..15).collect();
        assert_eq!(pair_plans(&a, &b, 2), [0, 1, 10, 11, 2, 3, 12, 13, 4, 14]);
    }
}

/// Interleaves two equally long plans into batches of `batch` positions from `a` followed by the
/// same number from `b` (the last pair shorter), for a loader with batch size `2·batch`.
pub fn pair_plans(a: &[usize], b: &[usize], batch: usize) -> Vec<usize> {
    let n = a.len().min(b.len());
    let mut out = Vec::with_capacity(2 * n);
    for start in (0..n).step_by(batch.max(1)) {
        let end = (start + batch).min(n);
        out.extend_from_slice(&a[start..end]);
        out.extend_from_slice(&b[start..end]);
    }
    out
}

/// `eval.json`: the last and the best-on-validation models on val and test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub last: ModelEval,
    pub best: ModelEval,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEval {
    pub epoch: usize,
    pub val: Metrics,
    pub test: Metrics,
}

/// Evaluates the final and the best-on-val models of a finished stage 1 (the pipeline writes
/// them to `eval.json`), sharded over the ranks of `comm` (every rank reads both models).
pub fn evaluate_run(
    ds: &Dataset,
    model_cfg: &ModelConfig,
    cfg: &TrainConfig,
    run: &RunDir,
    comm: &dyn Collective,
) -> Result<EvalReport> {
    let cfg = &cfg.resolved(run)?;
    let paths = run.stage1();
    let state: State = fsx::read_json(&paths.state())?;
    if !state.done {
        return Err(invalid!(
            "stage 1 in {} is not finished: run `autosampler train --resume` first",
            paths.dir.display()
        ));
    }
    set_threads(cfg.threads);
    let mut model = Model::new(model_cfg, ds.split.num_classes() as i64, cfg.device()?)?;
    Fast::of(cfg).prepare(&model);
    let mut one = |path: &Path, epoch: usize| -> Result<ModelEval> {
        model.load(path)?;
        Ok(ModelEval {
            epoch,
            val: evaluate(&model, ds, Part::Val, cfg, comm)?,
            test: evaluate(&model, ds, Part::Test, cfg, comm)?,
        })
    };
    let last = one(&paths.model(), state.epochs_done)?;
    let best = one(&paths.best(), state.best_epoch.unwrap_or(state.epochs_done))?;
    Ok(EvalReport { last, best })
}
