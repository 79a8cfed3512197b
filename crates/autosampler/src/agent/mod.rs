//! The fine auto-sampler's patch agent: Glance-and-Focus (Wang et al. 2020, GFNet) on small
//! images, trained with PPO, used to locate each image's most discriminative patch for
//! agent-guided CutMix (the paper's Section 3.3).
//!
//! - A **global encoder** sees the whole image down-sampled to the patch size (the glance); a
//!   **local encoder** of the same architecture, with its own weights, sees `P`×`P` crops (focus
//!   steps). Both are [`Model`]s whose linear heads are GFNet's deep-supervision classifiers.
//! - A **recurrent classifier** (GRU + linear) predicts after every step from the encoders'
//!   pooled features.
//! - A **recurrent actor-critic** (two-layer state encoder → GRU → actor with a sigmoid mean in
//!   [0, 1]², critic) reads the previous step's feature map and places the next patch: its action
//!   is the patch's top-left `(row, col)` as a fraction of `S − P`, drawn from a Gaussian with a
//!   fixed std and clipped to [0, 1].
//!
//! A rollout has `T` steps: the glance, then `T − 1` patches.
pub mod figures;
pub mod guide;
pub mod ppo;
pub mod train;

use crate::model::{Arch, Head, Model, ModelConfig, Stem};
use crate::rundir::AgentDir;
use crate::{invalid, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::nn::{self, Module, RNN};
use tch::{Device, Kind, Tensor};

/// `[agent]` of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct AgentConfig {
    /// Use a trained agent instead of training one: the `agent/` folder of another run (any
    /// dataset; its class set need not match this one's).
    pub from: Option<PathBuf>,
    /// Start both encoders from a trained classifier: a `model.safetensors` written by
    /// `autosampler run` with the agent's `arch` (its backbone, and its linear classifier as the
    /// encoders' deep-supervision heads when it has the dataset's classes). Default: random.
    pub init: Option<PathBuf>,
    /// Architecture of both encoders.
    pub arch: Arch,
    /// The encoders' stem, for the ImageNet ResNets (18/50/…): `small` (3×3, stride 1, no
    /// max-pool) or `imagenet` (7×7 stride 2 and max-pool, GFNet's). Unset: ImageNet's for patches
    /// of 64 px and more (the paper's 96 px), small below (32 px patches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stem: Option<Stem>,
    /// Side of the images the agent sees; the dataset's images are resized to it. Default: the
    /// dataset's size.
    pub image_size: Option<i64>,
    /// Side of a patch (and of the glance). Default: half the image size.
    pub patch_size: Option<i64>,
    /// Steps T: the glance and T − 1 patches.
    pub steps: usize,
    /// Width of both GRUs.
    pub hidden: i64,
    /// The policy's state is the feature map average-pooled to `grid`×`grid`.
    pub state_grid: i64,
    /// Epochs of GFNet's three stages: encoders + classifier with random patches, PPO with the
    /// encoders frozen, classifier fine-tuning with the policy fixed.
    pub epochs: [usize; 3],
    pub batch_size: usize,
    /// SGD (cosine within each stage) for the encoders and the classifier.
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Weight of the encoders' own (deep-supervision) classifiers in the loss.
    pub dsn_ratio: f64,
    /// Adam's learning rate for the policy.
    pub policy_lr: f64,
    /// Discount γ of the rewards.
    pub discount: f64,
    /// PPO's clip ε.
    pub clip: f64,
    /// Std of the Gaussian policy (fixed).
    pub action_std: f64,
    pub entropy_coef: f64,
    pub value_coef: f64,
    /// PPO epochs per batch.
    pub ppo_epochs: usize,
    /// What a focus step earns in PPO: `gain` (GFNet's: the recurrent classifier's confidence in
    /// the label after the step minus before it) or `alone` (the local encoder's confidence in
    /// the label from the patch by itself: what a patch pasted into another image carries).
    pub reward: Reward,
    /// Placements drawn per image in PPO. 1: GFNet's advantage, the normalised return minus the
    /// critic's value. G ≥ 2: each image is rolled out G times and the advantage is the return
    /// minus the mean of the image's G returns (normalised over the batch), so the image's
    /// difficulty, which the critic's pooled state explains poorly, drops out of the advantage.
    pub group: usize,
    /// Training augmentation. Default: pad-crop-flip with padding size/8.
    pub augment: Option<crate::data::augment::Augment>,
    /// The encoder stages (1 and 3) compute each batch in this many equal shares (batch norm
    /// normalises each share alone), whose gradients add up to the batch's; a data-parallel run
    /// of N ranks divides the shares among them and records `micro_batches × N`, as stage 1's
    /// `[train] micro_batches`. PPO (stage 2) takes the whole batch.
    #[serde(skip_serializing_if = "crate::train::stage1::is_one")]
    pub micro_batches: usize,
    pub threads: usize,
    pub device: String,
    pub seed: u64,
    /// "fp32", "bf16" or "auto" (bf16 where the device has it natively; see
    /// [`crate::precision`]): the encoders run in it while the agent trains. A started agent
    /// records "bf16" here, or nothing for fp32 (as every agent before the key existed).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::precision::deserialize_opt"
    )]
    pub precision: Option<crate::precision::Precision>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            from: Default::default(),
            init: Default::default(),
            arch: Arch::Resnet8,
            stem: None,
            image_size: Default::default(),
            patch_size: Default::default(),
            steps: 3,
            hidden: 256,
            state_grid: 2,
            epochs: [4, 2, 1],
            batch_size: 64,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
            dsn_ratio: 1.0,
            policy_lr: 3e-4,
            discount: 0.7,
            clip: 0.2,
            action_std: 0.1,
            entropy_coef: 0.01,
            value_coef: 0.5,
            ppo_epochs: 1,
            reward: Reward::Gain,
            group: 1,
            augment: Default::default(),
            micro_batches: 1,
            threads: 2,
            device: "cpu".into(),
            precision: None,
            seed: Default::default(),
        }
    }
}

/// `[agent] reward`: what a focus step earns in PPO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Reward {
    /// `p_t(y) − p_{t−1}(y)` of the recurrent classifier (GFNet).
    #[default]
    Gain,
    /// `p(y | patch)` of the local encoder's own classifier.
    Alone,
}

fn is_small(s: &Stem) -> bool {
    *s == Stem::Small
}

/// What fixes an agent's shapes; saved beside its weights (`agent/agent.json`) so another run can
/// rebuild it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub arch: Arch,
    /// The encoders' stem (agents saved before it existed: small).
    #[serde(default, skip_serializing_if = "is_small")]
    pub stem: Stem,
    pub image_size: i64,
    pub patch_size: i64,
    pub steps: usize,
    pub hidden: i64,
    pub state_grid: i64,
    pub num_classes: i64,
    pub action_std: f64,
    pub classes: Vec<String>,
}

impl AgentConfig {
    /// Checks every field's range (NaN included); the error names the key and the value. Run when
    /// the config is loaded.
    pub fn check(&self) -> Result<()> {
        let r = crate::check::Ranges("agent");
        r.at_least("steps", self.steps, 2)?;
        r.at_least("hidden", self.hidden.max(0) as usize, 1)?;
        r.at_least("state_grid", self.state_grid.max(0) as usize, 1)?;
        r.at_least("batch_size", self.batch_size, 2)?;
        r.at_least("ppo_epochs", self.ppo_epochs, 1)?;
        r.at_least("group", self.group, 1)?;
        r.at_least("threads", self.threads, 1)?;
        r.micro_batches(self.micro_batches, self.batch_size)?;
        if self.epochs.iter().sum::<usize>() == 0 && self.from.is_none() {
            return Err(invalid!(
                "[agent] epochs must train at least one epoch, got [0, 0, 0]"
            ));
        }
        if let (Some(stem), true) = (self.stem, self.arch.is_cifar()) {
            return Err(invalid!(
                "[agent] stem = {:?} with arch = {:?}: the CIFAR ResNets have one stem; the key is for resnet18, resnet50 and the other ImageNet ResNets",
                format!("{stem:?}").to_lowercase(),
                format!("{:?}", self.arch).to_lowercase()
            ));
        }
        for (k, v) in [("image_size", self.image_size), ("patch_size", self.patch_size)] {
            if let Some(v) = v {
                r.at_least(k, v.max(0) as usize, 8)?;
            }
        }
        r.positive("lr", self.lr)?;
        r.positive("policy_lr", self.policy_lr)?;
        r.positive("clip", self.clip)?;
        r.positive("action_std", self.action_std)?;
        r.unit_open("momentum", self.momentum)?;
        r.unit("discount", self.discount)?;
        r.non_negative("weight_decay", self.weight_decay)?;
        r.non_negative("dsn_ratio", self.dsn_ratio)?;
        r.non_negative("entropy_coef", self.entropy_coef)?;
        r.non_negative("value_coef", self.value_coef)?;
        r.device("device", &self.device)
    }

    /// The agent's shapes for a dataset of `classes` at `size` px.
    pub fn spec(&self, size: i64, classes: &[String]) -> Result<Spec> {
        let image_size = self.image_size.unwrap_or(size);
        let patch_size = self.patch_size.unwrap_or(image_size / 2);
        if patch_size < 8 || patch_size > image_size || self.steps < 2 {
            return Err(invalid!(
                "agent needs 8 ≤ patch_size ≤ image_size and steps ≥ 2: patch_size {patch_size}, image_size {image_size}, steps {}",
                self.steps
            ));
        }
        if self.action_std <= 0.0 || self.hidden < 1 || self.state_grid < 1 || self.batch_size < 2 {
            return Err(invalid!(
                "agent needs action_std > 0, hidden ≥ 1, state_grid ≥ 1 and batch_size ≥ 2"
            ));
        }
        let cifar = self.arch.is_cifar();
        let stem = match self.stem {
            Some(s) if !cifar => s,
            None if !cifar && patch_size >= 64 => Stem::Imagenet,
            _ => Stem::Small,
        };
        Ok(Spec {
            arch: self.arch,
            stem,
            image_size,
            patch_size,
            steps: self.steps,
            hidden: self.hidden,
            state_grid: self.state_grid,
            num_classes: classes.len() as i64,
            action_std: self.action_std,
            classes: classes.to_vec(),
        })
    }
}

/// How the focus steps place their patches.
pub enum Placement<'a> {
    /// Uniform top-lefts from these numbers (`[T − 1][B][2]`, in [0, 1]): stage 1 and baselines.
    Given(&'a [Vec<[f32; 2]>]),
    /// The policy's Gaussian, with this standard-normal noise (`[T − 1][B][2]`).
    Sample(&'a [Vec<[f32; 2]>]),
    /// The policy's mean (deterministic): locating.
    Mean,
}

/// One rollout of a batch.
pub struct Rollout {
    /// The classifier's logits after each step, `T × [B, C]`.
    pub logits: Vec<Tensor>,
    /// The encoders' own classifiers' logits, `T × [B, C]`.
    pub dsn: Vec<Tensor>,
    /// Each focus step's action (top-left as a fraction of `S − P`, `[row, col]`), `T−1 × [B, 2]`.
    pub actions: Vec<Tensor>,
    /// The policy's input before each focus step (detached), `T−1 × [B, state]`.
    pub states: Vec<Tensor>,
    /// Log-probability of each sampled action under the acting policy, `T−1 × [B]`.
    pub logprobs: Vec<Tensor>,
}

/// The networks.
pub struct Agent {
    pub spec: Spec,
    pub global: Model,
    pub local: Model,
    /// The recurrent classifier (`clf.gru`, `clf.fc`) and the actor-critic (`policy.*`).
    pub heads: nn::VarStore,
    clf_gru: nn::GRU,
    clf_fc: nn::Linear,
    enc1: nn::Linear,
    enc2: nn::Linear,
    pol_gru: nn::GRU,
    actor: nn::Linear,
    critic: nn::Linear,
    /// The encoders run in bf16 autocast (while training, as `[agent] precision` asks).
    pub bf16: bool,
}

impl Agent {
    pub fn new(spec: &Spec, device: Device) -> Result<Agent> {
        let mc = ModelConfig {
            arch: spec.arch,
            head: Head::Linear,
            stem: spec.stem,
            bilateral: false,
            init: None,
        };
        let global = Model::new(&mc, spec.num_classes, device)?;
        let local = Model::new(&mc, spec.num_classes, device)?;
        let d = global.feature_dim();
        let heads = nn::VarStore::new(device);
        let root = heads.root();
        let h = spec.hidden;
        let state = d * spec.state_grid * spec.state_grid;
        let c = &root / "clf";
        let p = &root / "policy";
        Ok(Agent {
            clf_gru: nn::gru(&c / "gru", d, h, Default::default()),
            clf_fc: nn::linear(&c / "fc", h, spec.num_classes, Default::default()),
            enc1: nn::linear(&p / "enc1", state, h, Default::default()),
            enc2: nn::linear(&p / "enc2", h, h, Default::default()),
            pol_gru: nn::gru(&p / "gru", h, h, Default::default()),
            actor: nn::linear(&p / "actor", h, 2, Default::default()),
            critic: nn::linear(&p / "critic", h, 1, Default::default()),
            bf16: false,
            spec: spec.clone(),
            global,
            local,
            heads,
        })
    }

    pub fn device(&self) -> Device {
        self.heads.device()
    }

    /// Named trainable tensors of one group: `"encoders"` (both encoders and their heads),
    /// `"classifier"`, `"policy"`.
    pub fn params(&self, group: &str) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = match group {
            "encoders" => {
                let mut v: Vec<(String, Tensor)> = prefixed("global.", &self.global.vs);
                v.extend(prefixed("local.", &self.local.vs));
                v
            }
            g => self
                .heads
                .variables()
                .into_iter()
                .filter(|(n, _)| {
                    n.starts_with(&format!("{}.", if g == "classifier" { "clf" } else { "policy" }))
                })
                .collect(),
        };
        v.retain(|(_, t)| t.requires_grad());
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The encoders' batch-norm buffers (the tensors without a gradient), named, in name order.
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = prefixed("global.", &self.global.vs);
        v.extend(prefixed("local.", &self.local.vs));
        v.retain(|(_, t)| !t.requires_grad());
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every tensor with its name (`global.*`, `local.*`, `clf.*`, `policy.*`).
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .global
            .state_dict()
            .into_iter()
            .map(|(n, t)| (format!("global.{n}"), t))
            .collect();
        v.extend(
            self.local
                .state_dict()
                .into_iter()
                .map(|(n, t)| (format!("local.{n}"), t)),
        );
        v.extend(self.heads.variables());
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Loads tensors saved by [`Agent::state_dict`] (read from `path`, named in errors).
    pub fn load_map(&mut self, map: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
        for (prefix, model) in [("global.", &mut self.global), ("local.", &mut self.local)] {
            let sub: HashMap<String, Tensor> = map
                .iter()
                .filter_map(|(n, t)| n.strip_prefix(prefix).map(|k| (k.to_string(), t.shallow_clone())))
                .collect();
            model.load_map(&sub, path)?;
        }
        crate::model::load_vars(&self.heads, map, path)
    }

    /// Builds the agent saved in an `agent/` folder (`agent.json` + `agent.safetensors`).
    pub fn open(dir: &Path, device: Device) -> Result<Agent> {
        let spec: Spec = crate::fsx::read_json(&AgentDir::new(dir).spec())?;
        let mut agent = Agent::new(&spec, device)?;
        let path = AgentDir::new(dir).weights();
        let map: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
            .map_err(|e| Error::format(path.display(), format!("cannot read the agent: {e}")))?
            .into_iter()
            .collect();
        agent.load_map(&map, &path)?;
        // in the precision it was trained in (its encoders' bf16 autocast), as its `config.json`
        // records it: another run's agent (`agent.from`), the Python package's, a bench's locate
        // as its own run does
        let config = AgentDir::new(dir).config();
        if config.is_file() {
            let trained: AgentConfig = crate::fsx::read_json(&config)?;
            agent.bf16 = trained.precision == Some(crate::precision::Precision::Bf16);
        }
        Ok(agent)
    }

    /// A fingerprint of the agent saved in `dir`: the SHA-256 of its `agent.json` and
    /// `agent.safetensors` (hex, 16 digits). Locations record it, so another agent's are not reused.
    pub fn fingerprint(dir: &Path) -> Result<String> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let a = AgentDir::new(dir);
        for p in [a.spec(), a.weights()] {
            h.update(std::fs::read(&p).map_err(|e| Error::io(&p, e))?);
        }
        Ok(h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
    }

    /// Copies a trained classifier (a `model.safetensors` written by `autosampler run`) into both
    /// encoders: every backbone tensor, and the linear classifier too when the model's classes
    /// are the agent's (same names, same order). Returns whether the classifier was copied. The
    /// model's architecture and stem must be the encoders'.
    pub fn init_encoders(&mut self, path: &Path) -> Result<bool> {
        let m = crate::model::card::open(path, Device::Cpu)?;
        let want = &self.global.config;
        if m.card.model.arch != want.arch || m.card.model.stem != want.stem || m.card.model.bilateral {
            return Err(invalid!(
                "agent.init = {}: a {:?} ({:?} stem{}) cannot start the agent's {:?} ({:?} stem) encoders",
                path.display(),
                m.card.model.arch,
                m.card.model.stem,
                if m.card.model.bilateral { ", bilateral" } else { "" },
                want.arch,
                want.stem
            ));
        }
        let with_head = m.card.classes == self.spec.classes && m.card.model.head == Head::Linear;
        let src: HashMap<String, Tensor> = m
            .model
            .vs
            .variables()
            .into_iter()
            .filter(|(n, _)| with_head || !n.starts_with("fc."))
            .collect();
        for enc in [&mut self.global, &mut self.local] {
            let mut map: HashMap<String, Tensor> =
                src.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
            if !with_head {
                // the encoder keeps its own classifier
                map.extend(
                    enc.vs
                        .variables()
                        .into_iter()
                        .filter(|(n, _)| n.starts_with("fc.")),
                );
            }
            enc.load_map(&map, path)?;
        }
        Ok(with_head)
    }

    /// Writes `agent.json` and `agent.safetensors` into `dir`, atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::model::save_tensors(&AgentDir::new(dir).weights(), &self.state_dict())?;
        crate::fsx::write_json(&AgentDir::new(dir).spec(), &self.spec)
    }

    /// Images at the agent's size: `[B, 3, S', S']` → `[B, 3, S, S]` (bilinear when they differ).
    pub fn fit(&self, x: &Tensor) -> Tensor {
        let s = self.spec.image_size;
        if x.size()[2] == s && x.size()[3] == s {
            x.shallow_clone()
        } else {
            x.upsample_bilinear2d([s, s], false, None, None)
        }
    }

    /// The glance: the whole image down-sampled to the patch size (bilinear, antialiased).
    pub fn glance(&self, x: &Tensor) -> Tensor {
        let p = self.spec.patch_size;
        x.internal_upsample_bilinear2d_aa([p, p], false, None, None)
    }

    /// Top-left pixel `(row, col)` of the patch for an action in [0, 1]²: `floor(a·(S − P))`.
    pub fn patch_origin(&self, a: [f32; 2]) -> (i64, i64) {
        let room = (self.spec.image_size - self.spec.patch_size) as f32;
        let f = |v: f32| ((v.clamp(0.0, 1.0) * room).floor() as i64).min(room as i64);
        (f(a[0]), f(a[1]))
    }

    /// The patches of a batch for actions `[B, 2]`.
    pub fn crop(&self, x: &Tensor, actions: &Tensor) -> Tensor {
        let p = self.spec.patch_size;
        let a: Vec<f32> = actions
            .to_device(Device::Cpu)
            .reshape([-1])
            .try_into()
            .expect("f32 actions");
        let parts: Vec<Tensor> = (0..x.size()[0])
            .map(|i| {
                let (r, c) = self.patch_origin([a[2 * i as usize], a[2 * i as usize + 1]]);
                x.get(i).narrow(1, r, p).narrow(2, c, p)
            })
            .collect();
        Tensor::stack(&parts, 0)
    }

    /// The policy's input from an encoder's feature map: average-pooled to grid × grid, flattened.
    fn state_of(&self, map: &Tensor) -> Tensor {
        let g = self.spec.state_grid;
        map.adaptive_avg_pool2d([g, g]).flatten(1, -1).detach()
    }

    /// Actor mean and critic value from a state, advancing the policy's GRU.
    fn policy_step(&self, state: &Tensor, h: &nn::GRUState) -> (Tensor, Tensor, nn::GRUState) {
        let z = self.enc2.forward(&self.enc1.forward(state).relu()).relu();
        let h = self.pol_gru.step(&z, h);
        let out = h.value().get(0);
        (
            self.actor.forward(&out).sigmoid(),
            self.critic.forward(&out).squeeze_dim(-1),
            h,
        )
    }

    /// Runs the T steps on `x` (`[B, 3, S, S]`, already at the agent's size). `train_encoders`
    /// puts the encoders in training mode (batch statistics) and keeps their gradients.
    pub fn rollout(&self, x: &Tensor, placement: Placement, train_encoders: bool) -> Rollout {
        let b = x.size()[0];
        let dev = x.device();
        let enc = |m: &Model, input: &Tensor| encode(m, input, train_encoders, self.bf16);
        let (dsn0, f0, mut map) = enc(&self.global, &self.glance(x));
        let mut ch = self.clf_gru.zero_state(b);
        ch = self.clf_gru.step(&f0, &ch);
        let mut r = Rollout {
            logits: vec![self.clf_fc.forward(&ch.value().get(0))],
            dsn: vec![dsn0],
            actions: Vec::new(),
            states: Vec::new(),
            logprobs: Vec::new(),
        };
        let mut ph = self.pol_gru.zero_state(b);
        for t in 0..self.spec.steps - 1 {
            let state = self.state_of(&map);
            let action = match &placement {
                Placement::Given(a) => tensor_of(&a[t], dev),
                Placement::Sample(noise) => tch::no_grad(|| {
                    let (mean, _, h) = self.policy_step(&state, &ph);
                    ph = h;
                    let a = (&mean + tensor_of(&noise[t], dev) * self.spec.action_std).clamp(0.0, 1.0);
                    r.logprobs
                        .push(ppo::gaussian_log_prob(&a, &mean, self.spec.action_std));
                    a
                }),
                Placement::Mean => tch::no_grad(|| {
                    let (mean, _, h) = self.policy_step(&state, &ph);
                    ph = h;
                    mean
                }),
            };
            let patches = self.crop(x, &action);
            let (dsn, f, m) = enc(&self.local, &patches);
            map = m;
            ch = self.clf_gru.step(&f, &ch);
            r.logits.push(self.clf_fc.forward(&ch.value().get(0)));
            r.dsn.push(dsn);
            r.actions.push(action.detach());
            r.states.push(state);
        }
        r
    }

    /// Re-evaluates the current policy on a rollout's states and actions (for the PPO update):
    /// log-probabilities and values, `[T − 1, B]` each.
    pub fn evaluate_policy(&self, states: &[Tensor], actions: &[Tensor]) -> (Tensor, Tensor) {
        let b = states[0].size()[0];
        let mut h = self.pol_gru.zero_state(b);
        let (mut lps, mut vs) = (Vec::new(), Vec::new());
        for (s, a) in states.iter().zip(actions) {
            let (mean, v, nh) = self.policy_step(s, &h);
            h = nh;
            lps.push(ppo::gaussian_log_prob(a, &mean, self.spec.action_std));
            vs.push(v);
        }
        (Tensor::stack(&lps, 0), Tensor::stack(&vs, 0))
    }
}

/// One encoder on its input: its own classifier's logits, the pooled features and the feature
/// map (`train`: batch statistics and gradients).
fn encode(m: &Model, input: &Tensor, train: bool, bf16: bool) -> (Tensor, Tensor, Tensor) {
    let map = crate::precision::autocast(bf16, input.device(), || m.forward_map(input, train));
    let map = if bf16 { map.to_kind(Kind::Float) } else { map };
    let f = map.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
    (m.forward_head(&f), f, map)
}

fn prefixed(prefix: &str, vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    vs.variables()
        .into_iter()
        .map(|(n, t)| (format!("{prefix}{n}"), t))
        .collect()
}

/// `[B][2]` numbers → `[B, 2]` f32 on `dev`.
pub fn tensor_of(v: &[[f32; 2]], dev: Device) -> Tensor {
    let flat: Vec<f32> = v.iter().flat_map(|a| a.iter().copied()).collect();
    Tensor::from_slice(&flat)
        .reshape([v.len() as i64, 2])
        .to_device(dev)
}

/// Section 3.3.3's choice of the salient step: average the `T × C` confidences over the steps,
/// take the arg-max class, then the focus step (t ≥ 1: the glance has no patch) where that
/// class's confidence peaks. Returns per image the focus-step index (0-based among the `T − 1`
/// patches) and the class.
///
/// # Shapes
/// - `probs`: `[T, B, C]` softmax confidences
pub fn salient_steps(probs: &Tensor) -> Vec<(usize, i64)> {
    let cls = probs.mean_dim(0, false, Kind::Float).argmax(-1, false); // [B]
    let t = probs.size()[0];
    let b = probs.size()[1];
    let idx = cls.view([1, b, 1]).expand([t, b, 1], false);
    let col = probs.gather(2, &idx, false).squeeze_dim(-1); // [T, B]
    let step = col.narrow(0, 1, t - 1).argmax(0, false); // among focus steps
    let cls: Vec<i64> = cls.to_device(Device::Cpu).try_into().expect("i64");
    let step: Vec<i64> = step.to_device(Device::Cpu).try_into().expect("i64");
    step.into_iter().map(|s| s as usize).zip(cls).collect()
}

/// A located patch: top-left and side in pixels of the agent's input, plus the agent's class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Located {
    pub row: f32,
    pub col: f32,
    pub side: f32,
    pub class: i64,
}

impl Agent {
    /// Locates the salient patch of every image of `x` (`[B, 3, S', S']`, any size: resized to
    /// the agent's) and returns it in pixels of `x`.
    pub fn locate(&self, x: &Tensor) -> Vec<Located> {
        let s_in = x.size()[2] as f32;
        let scale = s_in / self.spec.image_size as f32;
        let xa = self.fit(x);
        let r = tch::no_grad(|| self.rollout(&xa, Placement::Mean, false));
        let probs = Tensor::stack(
            &r.logits
                .iter()
                .map(|l| l.softmax(-1, Kind::Float))
                .collect::<Vec<_>>(),
            0,
        );
        let picks = salient_steps(&probs);
        let acts: Vec<Vec<f32>> = r
            .actions
            .iter()
            .map(|a| a.to_device(Device::Cpu).reshape([-1]).try_into().expect("f32"))
            .collect();
        picks
            .into_iter()
            .enumerate()
            .map(|(i, (step, class))| {
                let a = &acts[step];
                let (row, col) = self.patch_origin([a[2 * i], a[2 * i + 1]]);
                Located {
                    row: row as f32 * scale,
                    col: col as f32 * scale,
                    side: self.spec.patch_size as f32 * scale,
                    class,
                }
            })
            .collect()
    }
}

impl Agent {
    /// The patch origins of a `grid` × `grid` scan: top-lefts `(row, col)` in pixels of the
    /// agent's input, evenly spaced from 0 to `S − P` (row-major).
    pub fn scan_origins(&self, grid: usize) -> Vec<(i64, i64)> {
        let room = (self.spec.image_size - self.spec.patch_size) as f64;
        let at = |i: usize| {
            if grid < 2 {
                (room / 2.0).floor() as i64
            } else {
                (room * i as f64 / (grid - 1) as f64).round() as i64
            }
        };
        (0..grid * grid).map(|k| (at(k / grid), at(k % grid))).collect()
    }

    /// The confidences for a patch at each origin of [`Agent::scan_origins`]: the recurrent
    /// classifier's after the glance and that patch (what the first focus step's reward would
    /// be for every placement), and the local encoder's own classifier's on the patch alone.
    /// A diagnostic of the reward landscape (does the best placement by the reward lie on the
    /// object?), not a policy.
    ///
    /// # Shapes
    /// - `x`: `[B, 3, S, S]` at the agent's size → two `[K, B, C]` softmaxes (K = grid²)
    pub fn scan(&self, x: &Tensor, grid: usize) -> (Tensor, Tensor) {
        let p = self.spec.patch_size;
        tch::no_grad(|| {
            let (_, f0, _) = encode(&self.global, &self.glance(x), false, self.bf16);
            let ch = self.clf_gru.step(&f0, &self.clf_gru.zero_state(x.size()[0]));
            let (after_glance, alone): (Vec<Tensor>, Vec<Tensor>) = self
                .scan_origins(grid)
                .into_iter()
                .map(|(r, c)| {
                    let (dsn, f, _) =
                        encode(&self.local, &x.narrow(2, r, p).narrow(3, c, p), false, self.bf16);
                    let h = self.clf_gru.step(&f, &ch);
                    (
                        self.clf_fc.forward(&h.value().get(0)).softmax(-1, Kind::Float),
                        dsn.softmax(-1, Kind::Float),
                    )
                })
                .unzip();
            (Tensor::stack(&after_glance, 0), Tensor::stack(&alone, 0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salient_step_follows_the_mean_class() {
        // T = 3, B = 1, C = 2. Mean over steps: class 0 = (.9 + .2 + .6)/3 = .567 > class 1.
        // Class 0's confidence over the focus steps (t = 1, 2): .2, .6 → step 2 (index 1), even
        // though the glance (.9) is higher.
        let p = Tensor::from_slice(&[0.9f32, 0.1, 0.2, 0.8, 0.6, 0.4]).reshape([3, 1, 2]);
        assert_eq!(salient_steps(&p), [(1, 0)]);
        // Two images: the second's mean class is 1, peaking at t = 1 (index 0).
        let p = Tensor::from_slice(&[0.9f32, 0.1, 0.1, 0.9, 0.2, 0.8, 0.2, 0.8, 0.6, 0.4, 0.4, 0.6])
            .reshape([3, 2, 2]);
        assert_eq!(salient_steps(&p), [(1, 0), (0, 1)]);
    }

    /// The encoders' stem: ImageNet's for the ImageNet ResNets from 64 px patches (the paper's
    /// 224 px images, 96 px patches), small below; the config's own stem for those ResNets; the
    /// key refused for a CIFAR ResNet. A small-stem agent's agent.json has no `stem` (agents
    /// saved before the key read as small).
    #[test]
    fn the_encoders_stem_follows_the_patch_size() {
        let classes: Vec<String> = (0..4).map(|i| i.to_string()).collect();
        let at = |arch, stem, image: i64, patch: i64| {
            AgentConfig {
                arch,
                stem,
                image_size: Some(image),
                patch_size: Some(patch),
                ..Default::default()
            }
            .spec(image, &classes)
            .unwrap()
            .stem
        };
        assert_eq!(at(Arch::Resnet18, None, 224, 96), Stem::Imagenet);
        assert_eq!(at(Arch::Resnet50, None, 128, 64), Stem::Imagenet);
        assert_eq!(at(Arch::Resnet18, None, 64, 32), Stem::Small);
        assert_eq!(at(Arch::Resnet18, Some(Stem::Small), 224, 96), Stem::Small);
        assert_eq!(at(Arch::Resnet8, None, 224, 96), Stem::Small);
        let e = AgentConfig {
            stem: Some(Stem::Imagenet),
            ..Default::default()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("[agent] stem = \"imagenet\" with arch = \"resnet8\""),
            "{e}"
        );
        let json = serde_json::to_string(&tiny_spec()).unwrap();
        assert!(!json.contains("stem"), "{json}");
        let big = Spec {
            arch: Arch::Resnet18,
            stem: Stem::Imagenet,
            ..tiny_spec()
        };
        let back: Spec = serde_json::from_str(&serde_json::to_string(&big).unwrap()).unwrap();
        assert_eq!(back, big);
        // an ImageNet-stem ResNet-18 agent at 224 px with 96 px patches acts
        let mut spec = big;
        spec.image_size = 224;
        spec.patch_size = 96;
        let agent = Agent::new(&spec, Device::Cpu).unwrap();
        let x = Tensor::rand([2, 3, 224, 224], (Kind::Float, Device::Cpu));
        let r = tch::no_grad(|| agent.rollout(&x, Placement::Mean, false));
        assert_eq!(r.logits.len(), 3);
        assert_eq!(r.logits[2].size(), [2, spec.num_classes]);
    }

    fn tiny_spec() -> Spec {
        Spec {
            arch: Arch::Resnet8,
            stem: Stem::Small,
            image_size: 32,
            patch_size: 16,
            steps: 3,
            hidden: 8,
            state_grid: 2,
            num_classes: 3,
            action_std: 0.1,
            classes: vec!["a".into(), "b".into(), "c".into()],
        }
    }

    /// A trained classifier (here: a seeded random one, exported with its card) starts both
    /// encoders: the backbone always, the classifier only when the classes match; another
    /// architecture is refused.
    #[test]
    fn encoders_start_from_an_exported_classifier() {
        let dir = tempfile::tempdir().unwrap();
        let export = |arch: Arch, classes: &[&str], name: &str| {
            tch::manual_seed(7);
            let mc = ModelConfig {
                arch,
                head: Head::Linear,
                stem: Stem::Small,
                bilateral: false,
                init: None,
            };
            let m = Model::new(&mc, classes.len() as i64, Device::Cpu).unwrap();
            let card = crate::export::ModelCard {
                format: crate::export::FORMAT.into(),
                model: mc,
                classes: classes.iter().map(|c| c.to_string()).collect(),
                input_size: 32,
                resize: Default::default(),
                normalize: Default::default(),
                classifier: "stage 1".into(),
                run: "test".into(),
            };
            let path = dir.path().join(name);
            crate::export::write(&path, &m, None, &card).unwrap();
            (m, path)
        };
        let same = |a: &Model, b: &Model, prefix: &str| {
            let bv: HashMap<String, Tensor> = b.vs.variables().into_iter().collect();
            a.vs.variables()
                .iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .all(|(n, t)| t.equal(&bv[n]))
        };
        let (m, path) = export(Arch::Resnet8, &["a", "b", "c"], "same.safetensors");
        let mut agent = Agent::new(&tiny_spec(), Device::Cpu).unwrap();
        assert!(!same(&agent.global, &m, "") && !same(&agent.local, &m, ""));
        assert!(
            agent.init_encoders(&path).unwrap(),
            "same classes: the classifier is copied"
        );
        assert!(same(&agent.global, &m, "") && same(&agent.local, &m, ""));
        // other classes: the backbone only
        let (m, path) = export(Arch::Resnet8, &["x", "y"], "other.safetensors");
        let mut agent = Agent::new(&tiny_spec(), Device::Cpu).unwrap();
        assert!(!agent.init_encoders(&path).unwrap());
        assert!(same(&agent.global, &m, "layer") && same(&agent.local, &m, "bn1"));
        assert!(agent.global.vs.variables()["fc.weight"].size() == [3, 64]);
        // another architecture is refused, naming both
        let (_, path) = export(Arch::Resnet20, &["a", "b", "c"], "r20.safetensors");
        let e = Agent::new(&tiny_spec(), Device::Cpu)
            .unwrap()
            .init_encoders(&path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Resnet20") && e.contains("Resnet8"), "{e}");
    }

    /// The scan's origins span the room evenly, and its confidences are the rollout's after
    /// the first focus step at the same placement.
    #[test]
    fn scan_matches_a_rollout_at_each_origin() {
        let agent = Agent::new(&tiny_spec(), Device::Cpu).unwrap();
        assert_eq!(
            agent.scan_origins(3),
            [
                (0, 0),
                (0, 8),
                (0, 16),
                (8, 0),
                (8, 8),
                (8, 16),
                (16, 0),
                (16, 8),
                (16, 16)
            ]
        );
        assert_eq!(agent.scan_origins(1), [(8, 8)]);
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let (probs, alone) = agent.scan(&x, 3);
        assert_eq!(probs.size(), [9, 2, 3]);
        assert_eq!(alone.size(), [9, 2, 3]);
        for (k, (r, c)) in agent.scan_origins(3).into_iter().enumerate() {
            let a = [r as f32 / 16.0, c as f32 / 16.0];
            let given = vec![vec![a; 2]; 2];
            let roll = tch::no_grad(|| agent.rollout(&x, Placement::Given(&given), false));
            let want = roll.logits[1].softmax(-1, Kind::Float);
            assert!(
                probs.get(k as i64).allclose(&want, 1e-5, 1e-6, false),
                "origin {k}"
            );
            let want = roll.dsn[1].softmax(-1, Kind::Float);
            assert!(
                alone.get(k as i64).allclose(&want, 1e-5, 1e-6, false),
                "origin {k}"
            );
        }
    }

    #[test]
    fn patches_are_cut_where_the_action_says() {
        let agent = Agent::new(&tiny_spec(), Device::Cpu).unwrap();
        assert_eq!(agent.patch_origin([0.0, 1.0]), (0, 16));
        assert_eq!(agent.patch_origin([0.5, 0.26]), (8, 4));
        let x = Tensor::arange(2 * 3 * 32 * 32, (Kind::Float, Device::Cpu)).reshape([2, 3, 32, 32]);
        let a = tensor_of(&[[0.5, 0.26], [1.0, 0.0]], Device::Cpu);
        let p = agent.crop(&x, &a);
        assert_eq!(p.size(), [2, 3, 16, 16]);
        // image 0, channel 0, patch pixel (0, 0) = source (8, 4); image 1 → source (16, 0)
        assert_eq!(p.double_value(&[0, 0, 0, 0]), (8 * 32 + 4) as f64);
        assert_eq!(p.double_value(&[1, 0, 0, 0]), (3 * 32 * 32 + 16 * 32) as f64);
    }

    #[test]
    fn rollout_shapes_and_save_load() {
        let spec = tiny_spec();
        let agent = Agent::new(&spec, Device::Cpu).unwrap();
        let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let noise = vec![vec![[0.0f32, 0.0]; 4]; 2];
        let r = tch::no_grad(|| agent.rollout(&x, Placement::Sample(&noise), false));
        assert_eq!(r.logits.len(), 3);
        assert_eq!(r.actions.len(), 2);
        assert_eq!(r.logprobs[0].size(), [4]);
        assert_eq!(r.states[0].size(), [4, 64 * 4]);
        // zero noise: the action is the mean, so the log-density is its maximum
        let top = ppo::gaussian_log_prob(
            &Tensor::zeros([1, 2], (Kind::Float, Device::Cpu)),
            &Tensor::zeros([1, 2], (Kind::Float, Device::Cpu)),
            0.1,
        );
        assert!(r.logprobs[0].allclose(&top.expand([4], false), 1e-5, 1e-5, false));
        let (lp, v) = agent.evaluate_policy(&r.states, &r.actions);
        assert_eq!(lp.size(), [2, 4]);
        assert_eq!(v.size(), [2, 4]);
        assert!(
            lp.get(0).allclose(&r.logprobs[0], 1e-5, 1e-5, false),
            "re-evaluation = acting"
        );
        let dir = std::env::temp_dir().join(format!("agent_save_{}", std::process::id()));
        agent.save(&dir).unwrap();
        let back = Agent::open(&dir, Device::Cpu).unwrap();
        assert!(!back.bf16, "no training record: fp32");
        let l1 = tch::no_grad(|| agent.rollout(&x, Placement::Mean, false).logits[2].copy());
        let l2 = tch::no_grad(|| back.rollout(&x, Placement::Mean, false).logits[2].copy());
        assert!(l1.allclose(&l2, 1e-6, 1e-6, false));
        // Defect "an agent re-opened elsewhere locates in another precision": trained in bf16 (its
        // config.json says so), it is re-opened in bf16 and acts as the agent that trained
        let record = |p: crate::precision::Precision| {
            let cfg = AgentConfig {
                precision: Some(p),
                ..Default::default()
            };
            crate::fsx::write_json(&AgentDir::new(&dir).config(), &cfg).unwrap();
        };
        record(crate::precision::Precision::Bf16);
        let back = Agent::open(&dir, Device::Cpu).unwrap();
        assert!(back.bf16);
        let mut trained = Agent::open(&dir, Device::Cpu).unwrap();
        trained.bf16 = true;
        let l1 = tch::no_grad(|| trained.rollout(&x, Placement::Mean, false).logits[2].copy());
        let l2 = tch::no_grad(|| back.rollout(&x, Placement::Mean, false).logits[2].copy());
        assert!(l1.equal(&l2));
        record(crate::precision::Precision::Fp32);
        assert!(!Agent::open(&dir, Device::Cpu).unwrap().bf16);
        let located = agent.locate(&x);
        assert_eq!(located.len(), 4);
        assert!(located
            .iter()
            .all(|l| l.row >= 0.0 && l.row <= 16.0 && l.side == 16.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
