//! Training the patch agent in GFNet's three stages, with a checkpoint after every epoch:
//!
//! 1. encoders + recurrent classifier with uniformly random patches (SGD, cosine);
//! 2. PPO on the policy with the encoders and the classifier frozen: reward
//!    `r_t = p_t(y) − p_{t−1}(y)` (`reward = "gain"`; `"alone"`: the local encoder's `p(y | patch)`),
//!    discounted returns normalised over the batch, clipped surrogate with the advantage `R − V`
//!    (or, with `group = G ≥ 2`, each image rolled out G times and its mean return subtracted),
//!    value loss, entropy bonus (Adam);
//! 3. classifier (and encoders) fine-tuning at a tenth of the learning rate, with the policy fixed
//!    and placing the patches.
//!
//! ```text
//! <run>/agent/
//!   agent.json, agent.safetensors   the finished agent (Agent::open)
//!   last.safetensors                weights + the current stage's optimiser after the last epoch
//!   state.json                      stage, epoch, history (written after last.safetensors)
//!   metrics.jsonl                   one line per epoch (loss, val top-1 after the glance and after
//!                                   T steps, mean reward of each focus step in stage 2)
//! ```
use super::ppo::{self, PpoCoefs};
use super::{Agent, AgentConfig, Located, Placement};
use crate::data::augment::{Augment, Normalize};
use crate::data::loader::{for_each_batch, for_each_batch_shares, LoaderConfig, Shares};
use crate::data::{Dataset, Part, View};
use crate::distributed::{self, Collective};
use crate::optim::{Adam, Sgd};
use crate::precision::Precision;
use crate::rng::chacha;
use crate::rundir::AgentDir;
use crate::sampler::Sampler;
use crate::train::checkpoint;
use crate::train::schedule::{lr_at, Schedule};
use crate::train::stage1::{parse_device, Progress};
use crate::{fsx, invalid, Error, Result};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// One line of `agent/metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentLog {
    /// 1, 2 or 3.
    pub stage: usize,
    /// Epoch within the stage, from 1.
    pub epoch: usize,
    /// SGD's learning rate at the epoch's end (stages 1 and 3); Adam's (the policy's) in stage 2.
    pub lr: f64,
    pub loss: f64,
    /// Validation top-1 after the glance alone, and after all T steps (policy mean).
    pub val_glance: f64,
    pub val_final: f64,
    /// Stage 2: mean reward of each focus step.
    pub reward: Vec<f64>,
    /// Stage 2: the batch mean of the summed rewards, batch by batch (the reward curve).
    #[serde(default)]
    pub reward_trace: Vec<f64>,
    pub seconds: f64,
    pub img_per_s: f64,
}

/// `agent/state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub history: Vec<AgentLog>,
    pub done: bool,
    /// The build, device and threads of the process that trained last.
    #[serde(default)]
    pub provenance: Option<crate::provenance::Provenance>,
}

impl AgentState {
    /// `(stage 0-based, epochs done in it)` where training continues.
    fn position(&self, cfg: &AgentConfig) -> (usize, usize) {
        let done = self.history.len();
        let mut acc = 0;
        for (s, &n) in cfg.epochs.iter().enumerate() {
            if done < acc + n {
                return (s, done - acc);
            }
            acc += n;
        }
        (3, 0)
    }
}

/// Pad-crop-flip with padding side/8, unless configured.
pub fn augment_of(cfg: &AgentConfig, size: u32) -> Augment {
    cfg.augment.clone().unwrap_or(Augment::PadCropFlip {
        pad: (size / 8).max(1),
    })
}

/// `[n][b]` pairs from `f`.
fn draws(n: usize, b: usize, mut f: impl FnMut() -> f32) -> Vec<Vec<[f32; 2]>> {
    (0..n).map(|_| (0..b).map(|_| [f(), f()]).collect()).collect()
}

/// Mean cross-entropy of the classifier after every step plus `dsn_ratio` × that of the
/// encoders' own heads, over T (GFNet's loss).
fn classification_loss(r: &super::Rollout, y: &Tensor, dsn_ratio: f64) -> Tensor {
    let ce = |l: &Tensor| l.cross_entropy_for_logits(y);
    let t = r.logits.len() as f64;
    let a: Tensor = r.logits.iter().map(ce).reduce(|a, b| a + b).expect("T ≥ 1");
    let d: Tensor = r.dsn.iter().map(ce).reduce(|a, b| a + b).expect("T ≥ 1");
    (a + d * dsn_ratio) / t
}

/// Top-1 (%) after the glance and after all steps, policy mean, on `view`; sharded over the ranks
/// of `comm` (each runs its block of the images; every rank gets the totals).
pub fn evaluate(
    agent: &Agent,
    view: &View,
    normalize: &Normalize,
    threads: usize,
    comm: &dyn Collective,
) -> Result<(f64, f64)> {
    let (mut g, mut f, mut n) = (0i64, 0i64, 0i64);
    let lc = LoaderConfig::evaluation(normalize, threads);
    let plan: Vec<usize> = distributed::block(view.len(), comm.rank(), comm.world()).collect();
    tch::no_grad(|| {
        for_each_batch(view, &plan, &lc, 0, |b| {
            let x = agent.fit(&b.images.to_device(agent.device()));
            let y = b.labels.to_device(agent.device());
            let r = agent.rollout(&x, Placement::Mean, false);
            let hits = |l: &Tensor| {
                l.argmax(-1, false)
                    .eq_tensor(&y)
                    .sum(Kind::Int64)
                    .int64_value(&[])
            };
            g += hits(&r.logits[0]);
            f += hits(r.logits.last().expect("T ≥ 1"));
            n += y.size()[0];
            Ok(())
        })
    })?;
    let t = distributed::sum_f64(comm, &[g as f64, f as f64, n as f64])?;
    let pct = |k: f64| 100.0 * k / t[2].max(1.0);
    Ok((pct(t[0]), pct(t[1])))
}

/// The salient patch of every image of `view` (no augmentation), in view order, in pixels of
/// the stored images; sharded over the ranks of `comm` (each locates its block of the images;
/// every rank gets them all).
pub fn locate_view(
    agent: &Agent,
    view: &View,
    normalize: &Normalize,
    threads: usize,
    comm: &dyn Collective,
) -> Result<Vec<Located>> {
    let mut mine = Vec::new();
    let plan: Vec<usize> = distributed::block(view.len(), comm.rank(), comm.world()).collect();
    for_each_batch(
        view,
        &plan,
        &LoaderConfig::evaluation(normalize, threads),
        0,
        |b| {
            mine.extend(agent.locate(&b.images.to_device(agent.device())));
            Ok(())
        },
    )?;
    if comm.world() == 1 {
        return Ok(mine);
    }
    // rows of (row, col, side, class): f32 holds every class index below 2^24 exactly
    let flat: Vec<f32> = mine
        .iter()
        .flat_map(|l| [l.row, l.col, l.side, l.class as f32])
        .collect();
    let rows = Tensor::from_slice(&flat).reshape([mine.len() as i64, 4]);
    let all = distributed::gather_rows(comm, &rows, view.len())?;
    let all = Vec::<f32>::try_from(all.reshape([-1]))?;
    Ok(all
        .chunks_exact(4)
        .map(|r| Located {
            row: r[0],
            col: r[1],
            side: r[2],
            class: r[3] as i64,
        })
        .collect())
}

/// `[agent]` as far as it decides the result: the device and the thread count blanked, the
/// precision made concrete (`Some(Bf16)`, or `None` for fp32, the form of every started agent).
pub fn started_config(cfg: &AgentConfig) -> AgentConfig {
    let bf16 = parse_device(&cfg.device)
        .map(|d| cfg.precision.unwrap_or_default().bf16_on(d))
        .unwrap_or(false);
    AgentConfig {
        device: String::new(),
        threads: 0,
        precision: bf16.then_some(Precision::Bf16),
        ..cfg.clone()
    }
}

/// `cfg` with its precision made concrete for an agent trained in `dir`: the one the folder's
/// agent was started with where the config says `auto` (or nothing), else bf16 where the device
/// has it natively. An agent started in another precision than the one asked for is refused.
pub fn resolved(cfg: &AgentConfig, dir: &Path) -> Result<AgentConfig> {
    let device = parse_device(&cfg.device)?;
    let path = AgentDir::new(dir).config();
    let recorded: Option<AgentConfig> = path.is_file().then(|| fsx::read_json(&path)).transpose()?;
    let was = recorded.map(|r| r.precision.unwrap_or(Precision::Fp32));
    let asked = cfg.precision.unwrap_or_default();
    let precision = match (was, asked) {
        (Some(w), Precision::Auto) => w,
        (Some(w), p) if w != p => {
            return Err(crate::precision::resume_refused(dir, w, p, "[agent] precision"))
        }
        (_, p) => p.on(device),
    };
    Ok(AgentConfig {
        precision: Some(precision),
        ..cfg.clone()
    })
}

/// Trains an agent on the training view of `ds` into `dir` (resuming when `resume` and a
/// checkpoint exists) and returns it.
pub fn train(
    ds: &Dataset,
    cfg: &AgentConfig,
    dir: &Path,
    resume: bool,
    progress: &dyn Progress,
    on_epoch: &dyn Fn(&AgentLog),
) -> Result<Agent> {
    train_with(ds, cfg, dir, resume, progress, on_epoch, &distributed::Alone)
}

/// Whether the finished agent's files (`agent.json`, `agent.safetensors`) are both in `dir`: when
/// either is missing, a finished training writes both again from its last checkpoint.
fn saved_agent(dir: &Path) -> bool {
    let a = AgentDir::new(dir);
    a.weights().is_file() && a.spec().is_file()
}

/// [`train`] as one rank of a data-parallel group (see [`crate::distributed`]). The encoder
/// stages (1 and 3) are data-parallel as stage 1 of the pipeline is: this rank computes its shares
/// of every batch (`cfg.micro_batches` in all, divided among the ranks) and the flat gradient is
/// summed over ranks. PPO (stage 2) is rank 0's alone, on whole batches (it is a small policy on
/// frozen encoders); its policy is broadcast after every epoch. Validation is sharded on rank 0's
/// batch-norm buffers. Rank 0 alone writes; every rank resumes from the checkpoint rank 0 wrote
/// (the run folder is shared).
pub fn train_with(
    ds: &Dataset,
    cfg: &AgentConfig,
    dir: &Path,
    resume: bool,
    progress: &dyn Progress,
    on_epoch: &dyn Fn(&AgentLog),
    comm: &dyn Collective,
) -> Result<Agent> {
    let (rank, world) = (comm.rank(), comm.world());
    if !cfg.micro_batches.is_multiple_of(world) {
        return Err(invalid!(
            "[agent] micro_batches = {} is not divided among {world} ranks (a data-parallel run records micro_batches × ranks)",
            cfg.micro_batches
        ));
    }
    let device: Device = parse_device(&cfg.device)?;
    let cfg = &resolved(cfg, dir)?;
    tch::set_num_threads(cfg.threads.max(1) as i32);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let view = ds.view(Part::Train);
    let val = ds.view(Part::Val);
    let spec = cfg.spec(view.size as i64, &ds.split.classes)?;
    // The config this agent was started with: a resume must match (device and threads may not).
    let started = started_config(cfg);
    let started_path = AgentDir::new(dir).config();
    if started_path.is_file() {
        let before: AgentConfig = fsx::read_json(&started_path)?;
        let shares_only = AgentConfig {
            micro_batches: started.micro_batches,
            ..before.clone()
        } == started;
        if before != started && shares_only {
            return Err(invalid!(
                "{} was started with its batches in {} shares (ranks × micro_batches of a data-parallel run), this run cuts them in {}: resume with the same product (e.g. --set agent.micro_batches={} in one process)",
                dir.display(),
                before.micro_batches,
                started.micro_batches,
                before.micro_batches
            ));
        }
        if before != started {
            return Err(invalid!(
                "{} was started with another [agent] config: use another run folder, or delete it",
                dir.display()
            ));
        }
    } else if rank == 0 {
        fsx::write_json(&started_path, &started)?;
    }
    tch::manual_seed(cfg.seed as i64);
    let mut agent = Agent::new(&spec, device)?;
    agent.bf16 = cfg.precision == Some(Precision::Bf16);
    if let Some(init) = &cfg.init {
        // a fresh agent starts here; a resumed one loads its checkpoint over it below
        agent.init_encoders(init)?;
    }
    let state_path = AgentDir::new(dir).state();
    let last = AgentDir::new(dir).last();
    let mut state = AgentState::default();
    let mut saved: HashMap<String, Tensor> = HashMap::new();
    if state_path.is_file() {
        if !resume {
            return Err(invalid!(
                "{} holds a started agent: pass --resume to continue it, or delete the folder",
                dir.display()
            ));
        }
        state = fsx::read_json(&state_path)?;
        if last.is_file() {
            // The checkpoint is the commit point: it carries the state it was written with, so
            // weights and epoch count never disagree (a kill between the checkpoint and
            // state.json used to train an epoch twice).
            let (tensors, embedded) = checkpoint::read::<AgentState>(&last)?;
            saved = tensors;
            if let Some(e) = embedded {
                let done = state.done;
                state = e;
                state.done = done && saved_agent(dir);
            }
        }
        if !state.history.is_empty() {
            agent.load_map(&saved, &last)?;
        }
    }
    if world > 1 {
        // every rank starts from rank 0's weights and buffers (each rank read the same checkpoint;
        // a fresh agent's initialisation is seeded, but need not be bitwise the same on every
        // device)
        distributed::broadcast_named(comm, agent.state_dict())?;
    }
    state.provenance =
        Some(crate::provenance::Provenance::here(&cfg.device, cfg.threads).with_precision(agent.bf16, false));
    let normalize = Normalize::default();
    let lc = LoaderConfig {
        randaugment: None,
        autoaugment: None,
        cutout: None,
        batch_size: cfg.batch_size,
        threads: cfg.threads,
        augment: augment_of(cfg, view.size),
        normalize,
        drop_last: true,
        seed: cfg.seed,
    };
    let steps_per_epoch = view.len() / cfg.batch_size;
    if steps_per_epoch == 0 {
        return Err(invalid!(
            "the training view has {} images, fewer than one agent batch ({})",
            view.len(),
            cfg.batch_size
        ));
    }
    let coefs = PpoCoefs {
        clip: cfg.clip,
        value: cfg.value_coef,
        entropy: cfg.entropy_coef,
    };
    let total: usize = cfg.epochs.iter().sum();
    let (mut stage, mut epoch) = state.position(cfg);
    while stage < 3 {
        let epochs = cfg.epochs[stage];
        // The stage's optimiser, restored when resuming inside the stage.
        let mut sgd = None;
        let mut adam = None;
        if stage == 1 {
            let mut a = Adam::new(agent.params("policy"), cfg.policy_lr);
            if epoch > 0 {
                a.load_state(&saved);
            }
            adam = Some(a);
        } else {
            let mut p = agent.params("encoders");
            p.extend(agent.params("classifier"));
            let mut s = Sgd::new(p, cfg.momentum, false, cfg.weight_decay);
            if epoch > 0 {
                s.load_state(&saved);
            }
            sgd = Some(s);
        }
        let base_lr = if stage == 2 { cfg.lr * 0.1 } else { cfg.lr };
        while epoch < epochs {
            let t0 = Instant::now();
            let global_epoch = state.history.len();
            let mut rng = chacha(cfg.seed, &[20, stage as u64, epoch as u64]);
            let plan = Sampler::Instance.plan(&view.labels, 0, 1, false, &mut rng)?;
            progress.epoch_start(global_epoch, total, steps_per_epoch);
            let (mut sum_loss, mut seen, mut batch_i) = (0f64, 0usize, 0usize);
            let mut rewards = vec![0f64; spec.steps - 1];
            let mut trace = Vec::new();
            let mut lr = base_lr;
            let per = cfg.micro_batches / world;
            let mine = Shares {
                from: rank * per,
                to: (rank + 1) * per,
                of: cfg.micro_batches,
            };
            // PPO is rank 0's, on whole batches: the other ranks wait for its policy below
            let shares = if stage == 1 { Shares::ALL } else { mine };
            let plan: &[usize] = if stage == 1 && rank != 0 { &[] } else { &plan };
            for_each_batch_shares(&view, plan, &lc, global_epoch, shares, |b| {
                lr = lr_at(
                    base_lr,
                    0,
                    &Schedule::Cosine,
                    epoch * steps_per_epoch + batch_i,
                    steps_per_epoch,
                    epochs,
                );
                let x = agent.fit(&b.images.to_device(device));
                let y = b.labels.to_device(device);
                let mut brng = chacha(cfg.seed, &[21, stage as u64, epoch as u64, batch_i as u64]);
                let at = |share: Option<usize>| {
                    format!(
                        "stage {}, epoch {}, batch {}{}",
                        stage + 1,
                        epoch + 1,
                        batch_i + 1,
                        share.map(|s| format!(", share {s}")).unwrap_or_default()
                    )
                };
                let loss = if stage == 1 {
                    let n = y.size()[0] as usize;
                    // G copies of the batch (copy j of image i at j·n + i)
                    let g = cfg.group.max(1);
                    let (x, y) = if g > 1 {
                        (x.repeat([g as i64, 1, 1, 1]), y.repeat([g as i64]))
                    } else {
                        (x, y)
                    };
                    let z = draws(spec.steps - 1, n * g, || brng.sample::<f32, _>(StandardNormal));
                    let r = tch::no_grad(|| agent.rollout(&x, Placement::Sample(&z), false));
                    let label_conf = |l: &Tensor| {
                        l.softmax(-1, Kind::Float)
                            .gather(1, &y.unsqueeze(1), false)
                            .squeeze_dim(1)
                    };
                    let steps: Vec<Tensor> = match cfg.reward {
                        super::Reward::Gain => {
                            let conf: Vec<Tensor> = r.logits.iter().map(label_conf).collect();
                            (1..conf.len()).map(|t| &conf[t] - &conf[t - 1]).collect()
                        }
                        super::Reward::Alone => r.dsn[1..].iter().map(label_conf).collect(),
                    };
                    let rw = Tensor::stack(&steps, 0);
                    for (t, acc) in rewards.iter_mut().enumerate() {
                        *acc += rw.get(t as i64).sum(Kind::Float).double_value(&[]) / g as f64;
                    }
                    trace.push(
                        rw.sum_dim_intlist(0, false, Kind::Float)
                            .mean(Kind::Float)
                            .double_value(&[]),
                    );
                    let raw = ppo::discounted_returns(&rw, cfg.discount);
                    let returns = ppo::normalise(&raw);
                    let adv = (g > 1).then(|| ppo::group_advantages(&raw, g as i64));
                    let old = Tensor::stack(&r.logprobs, 0);
                    let entropy = returns.full_like(ppo::gaussian_entropy(cfg.action_std));
                    let mut lv = 0.0;
                    for _ in 0..cfg.ppo_epochs.max(1) {
                        let (lp, v) = agent.evaluate_policy(&r.states, &r.actions);
                        let l = ppo::ppo_loss(&lp, &old, &v, &returns, adv.as_ref(), &entropy, coefs);
                        adam.as_mut().expect("stage 2 has Adam").backward_step(&l);
                        lv = l.double_value(&[]);
                    }
                    checkpoint::check_loss(lv, "the agent's loss", &at(None), dir)?;
                    sum_loss += lv * n as f64;
                    seen += n;
                    lv
                } else {
                    // Encoders and classifier (SGD), on this rank's shares of the batch: the
                    // placements are drawn for the whole batch, each share takes its images',
                    // and each share's loss is weighted by its part of the batch.
                    let whole = cfg.micro_batches == 1;
                    let u = if stage == 0 {
                        draws(spec.steps - 1, b.whole, || brng.random::<f32>())
                    } else {
                        draws(spec.steps - 1, b.whole, || brng.sample::<f32, _>(StandardNormal))
                    };
                    let offset = mine.images(b.whole).start;
                    let sgd = sgd.as_mut().expect("stages 1 and 3 have SGD");
                    let mut grad: Option<Tensor> = None;
                    let mut last = 0.0;
                    for s in mine.from..mine.to {
                        let r = Shares::range(b.whole, s, cfg.micro_batches);
                        if r.is_empty() {
                            continue;
                        }
                        let (lo, len) = ((r.start - offset) as i64, r.len() as i64);
                        let (xs, ys) = if whole {
                            (x.shallow_clone(), y.shallow_clone())
                        } else {
                            (x.narrow(0, lo, len), y.narrow(0, lo, len))
                        };
                        let us: Vec<Vec<[f32; 2]>> = u.iter().map(|v| v[r.clone()].to_vec()).collect();
                        let placement = if stage == 0 {
                            Placement::Given(&us)
                        } else {
                            Placement::Sample(&us)
                        };
                        let roll = agent.rollout(&xs, placement, true);
                        let l = classification_loss(&roll, &ys, cfg.dsn_ratio);
                        let lv = l.double_value(&[]);
                        checkpoint::check_loss(lv, "the agent's loss", &at((!whole).then_some(s)), dir)?;
                        sgd.add_share_gradient(&mut grad, &l, r.len(), b.whole);
                        sum_loss += lv * r.len() as f64;
                        seen += r.len();
                        last = lv;
                    }
                    sgd.step_summed(grad, comm, lr)?;
                    last
                };
                batch_i += 1;
                progress.batch(loss);
                Ok(())
            })?;
            if world > 1 {
                if stage == 1 {
                    distributed::broadcast_named(comm, agent.params("policy"))?;
                } else {
                    let t = distributed::sum_f64(comm, &[sum_loss, seen as f64])?;
                    (sum_loss, seen) = (t[0], t[1] as usize);
                    // rank 0's batch-norm statistics are the agent's (validated and saved)
                    distributed::broadcast_named(comm, agent.buffers())?;
                }
            }
            let train_s = t0.elapsed().as_secs_f64();
            let (val_glance, val_final) = evaluate(&agent, &val, &normalize, cfg.threads, comm)?;
            if rank != 0 {
                // the other ranks write nothing, but count the epochs as rank 0 does (the
                // loader keys each epoch's augmentation by that count)
                state.history.push(AgentLog {
                    stage: stage + 1,
                    epoch: epoch + 1,
                    lr,
                    loss: 0.0,
                    val_glance,
                    val_final,
                    reward: Vec::new(),
                    reward_trace: Vec::new(),
                    seconds: 0.0,
                    img_per_s: 0.0,
                });
                epoch += 1;
                continue;
            }
            let log = AgentLog {
                stage: stage + 1,
                epoch: epoch + 1,
                lr: if stage == 1 { cfg.policy_lr } else { lr },
                loss: sum_loss / seen.max(1) as f64,
                val_glance,
                val_final,
                reward: if stage == 1 {
                    rewards.iter().map(|r| r / seen.max(1) as f64).collect()
                } else {
                    Vec::new()
                },
                reward_trace: trace,
                seconds: t0.elapsed().as_secs_f64(),
                img_per_s: seen as f64 / train_s,
            };
            let mut tensors = agent.state_dict();
            if let Some(s) = &sgd {
                tensors.extend(s.state());
            }
            if let Some(a) = &adam {
                tensors.extend(a.state());
            }
            state.history.push(log.clone());
            // one atomic rename commits the epoch: weights, optimiser and state together
            checkpoint::commit(
                &last,
                tensors,
                &state,
                &state_path,
                &AgentDir::new(dir).metrics(),
                &state.history,
            )?;
            saved.clear();
            on_epoch(&log);
            epoch += 1;
        }
        stage += 1;
        epoch = 0;
    }
    if rank == 0 && (!state.done || !saved_agent(dir)) {
        agent.save(dir)?;
        state.done = true;
        fsx::write_json(&state_path, &state)?;
    }
    Ok(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_position_counts_epochs_across_stages() {
        let cfg = AgentConfig {
            epochs: [2, 1, 1],
            ..Default::default()
        };
        let log = |stage| AgentLog {
            stage,
            epoch: 1,
            lr: 0.0,
            loss: 0.0,
            val_glance: 0.0,
            val_final: 0.0,
            reward: vec![],
            reward_trace: vec![],
            seconds: 0.0,
            img_per_s: 0.0,
        };
        let mut s = AgentState::default();
        assert_eq!(s.position(&cfg), (0, 0));
        s.history.push(log(1));
        assert_eq!(s.position(&cfg), (0, 1));
        s.history.push(log(1));
        assert_eq!(s.position(&cfg), (1, 0));
        s.history.push(log(2));
        assert_eq!(s.position(&cfg), (2, 0));
        s.history.push(log(3));
        assert_eq!(s.position(&cfg), (3, 0));
    }
}
