//! The pipeline, owned by the library: the stages of a run folder in order, each reused only when
//! its manifest records the fingerprint of the inputs it would read now (see [`manifest`]).
//!
//! data → agent (when `[agent]`) → locations → stage 1 → eval → features → search → stage 2 →
//! export → report. The data stage ([`prepare`]) opens the dataset every later stage reads; each
//! later stage is one file under `stages/`, and one driver reuses, invalidates, works and commits
//! them all in that order, on every rank. The command-line program and the Python package call
//! these functions; they only show progress ([`Observer`]) and print the [`text`] of the typed
//! results.
mod driver;
pub mod manifest;
pub mod report;
mod stages;
pub mod text;

pub use crate::rundir::{RunDir, Stage};
pub use manifest::{Inputs, Manifest};
pub use stages::data::{open_data, prepare};
pub use stages::stage2::{Basis, Stage2Report};

use crate::agent::train::{AgentLog, AgentState};
use crate::config::Config;
use crate::data::{Dataset, Part};
use crate::distributed::{self, Collective};
use crate::model::{Model, ModelConfig};
use crate::search::Best;
use crate::train::stage1::{self, EvalReport, Progress, TrainConfig};
use crate::{features, fsx, invalid, Result};
use std::path::PathBuf;

/// What a front end shows while the pipeline works. Stage 1's and the agent's per-batch progress
/// come through [`Progress`].
pub trait Observer: Progress + Sync {
    /// A status line ("stage 1   runs/x/stage1 (complete, reused)").
    fn note(&self, line: &str);
    /// A counted task starts (decoding images, search trajectories).
    fn task(&self, _what: &'static str, _total: u64) {}
    /// The task moved on by `n`; `info` is a short status (e.g. the rewards so far).
    fn advance(&self, _n: u64, _info: &str) {}
    /// The task is over: clear its bar.
    fn task_done(&self) {}
    /// A stage's results as text ([`text`]), for [`run`] to show as each stage ends.
    fn show(&self, _text: &str) {}
}

/// Shows nothing (tests, library use).
impl Observer for stage1::Silent {
    fn note(&self, _: &str) {}
}

/// What [`run`] produced.
pub struct Outcome {
    pub dataset: Dataset,
    /// `None` when the config has no `[model]`/`[train]` (data stage only).
    pub eval: Option<EvalReport>,
    pub search: Option<Best>,
    pub stage2: Option<Stage2Report>,
    pub report: Option<PathBuf>,
}

/// Every stage the config has, in order, into `run`; complete stages are reused. Each stage's
/// results go to [`Observer::show`] as it ends, the run summary last.
pub fn run(cfg: &Config, run: &RunDir, obs: &dyn Observer) -> Result<Outcome> {
    let out = run_parallel(cfg, run, obs, &distributed::Alone)?;
    Ok(out.expect("a single process is rank 0"))
}

/// [`run`] as one rank of a data-parallel group (`comm`, see [`crate::distributed`]). Rank 0 does
/// every stage, as [`run`] does, and returns the outcome; the others follow it through the
/// stages the ranks share (the agent's training and locations, stage 1, eval, features) and
/// return `None`. `[train]` and `[agent]` `micro_batches` are multiplied by the number of ranks:
/// each batch is divided into that many shares, and that is what a run records (a resume needs
/// the same product).
pub fn run_parallel(
    cfg: &Config,
    run: &RunDir,
    obs: &dyn Observer,
    comm: &dyn Collective,
) -> Result<Option<Outcome>> {
    let mut scaled;
    let cfg = if comm.world() > 1 {
        scaled = cfg.clone();
        if let Some(t) = &mut scaled.train {
            t.micro_batches *= comm.world();
        }
        if let Some(a) = scaled.agent.as_mut().filter(|a| a.from.is_none()) {
            a.micro_batches *= comm.world();
            a.check().map_err(|e| {
                invalid!(
                    "{} ranks, each agent batch cut in micro_batches × ranks = {} shares: {e}",
                    comm.world(),
                    a.micro_batches
                )
            })?;
        }
        if let Some(t) = &scaled.train {
            t.check().map_err(|e| {
                invalid!(
                    "{} ranks, each batch cut in micro_batches × ranks = {} shares: {e}",
                    comm.world(),
                    t.micro_batches
                )
            })?;
        }
        &scaled
    } else {
        cfg
    };
    // the devices exist here: said before the data stage, not after the agent's training
    if let Some(t) = &cfg.train {
        t.device()?;
    }
    if let Some(a) = &cfg.agent {
        stage1::parse_device(&a.device)?;
    }
    if comm.rank() != 0 {
        if cfg.model.is_none() || cfg.train.is_none() {
            return Ok(None);
        }
        // The data stage is rank 0's: the first go-ahead waits for it.
        driver::follow(stages::STEPS, cfg, run, comm)?;
        return Ok(None);
    }
    let ds = prepare(cfg, run, obs)?;
    obs.show(&text::prepared(run, &ds));
    if cfg.model.is_none() || cfg.train.is_none() {
        return Ok(Some(Outcome {
            dataset: ds,
            eval: None,
            search: None,
            stage2: None,
            report: None,
        }));
    }
    let pass = driver::Pass {
        cfg,
        run,
        ds: &ds,
        obs,
        comm,
        fresh: None,
        done: Default::default(),
    };
    for st in stages::STEPS.iter().filter(|s| s.wanted(cfg)) {
        pass.drive(*st)?;
        pass.show(*st)?;
    }
    let report = report::write(run)?;
    obs.show(&text::run_summary(run, &ds));
    Ok(Some(Outcome {
        eval: Some(fsx::read_json(&run.eval())?),
        search: cfg
            .search
            .as_ref()
            .map(|_| fsx::read_json(&run.best_weights()))
            .transpose()?,
        stage2: cfg
            .stage2
            .as_ref()
            .map(|_| fsx::read_json(&run.stage2_eval()))
            .transpose()?,
        report: Some(report),
        dataset: ds,
    }))
}

/// The patch agent of a run: trained into `<run>/agent` (continued from its checkpoint when
/// `resume`, or reused when complete) or opened `from` another run; then its locations and
/// figures. Nothing when the config has no `[agent]`.
pub fn agent(cfg: &Config, run: &RunDir, ds: &Dataset, resume: bool, obs: &dyn Observer) -> Result<()> {
    if cfg.agent.is_none() {
        return Ok(());
    }
    let fresh = (!resume).then_some(Stage::Agent);
    driver::run_to(stages::STEPS, cfg, run, ds, Stage::Locations, fresh, obs)
}

/// Stage 1 into `run`, after the agent when the config has one: reused when its manifest
/// matches; continued from its checkpoint when `resume`; refused when it finished with other
/// inputs (another `[model]`/`[train]`, split or agent).
pub fn stage1(
    cfg: &Config,
    run: &RunDir,
    ds: &Dataset,
    resume: bool,
    obs: &dyn Observer,
) -> Result<Manifest> {
    training_config(cfg)?;
    let fresh = (!resume).then_some(Stage::Stage1);
    driver::run_to(stages::STEPS, cfg, run, ds, Stage::Stage1, fresh, obs)?;
    upstream(run, Stage::Stage1)
}

/// `eval.json` of stage 1 (its last and best-on-val models on val and test), after the stages
/// before it.
pub fn evaluate(cfg: &Config, run: &RunDir, ds: &Dataset, obs: &dyn Observer) -> Result<EvalReport> {
    training_config(cfg)?;
    driver::run_to(stages::STEPS, cfg, run, ds, Stage::Eval, None, obs)?;
    fsx::read_json(&run.eval())
}

/// Frozen-backbone features of every part, written once per stage-1 model, after the stages
/// before them.
pub fn features(cfg: &Config, run: &RunDir, ds: &Dataset, obs: &dyn Observer) -> Result<Manifest> {
    training_config(cfg)?;
    driver::run_to(stages::STEPS, cfg, run, ds, Stage::Features, None, obs)?;
    upstream(run, Stage::Features)
}

/// The coarse auto-sampler's class-weight search, after the stages before it.
pub fn search(cfg: &Config, run: &RunDir, ds: &Dataset, obs: &dyn Observer) -> Result<Best> {
    if cfg.search.is_none() {
        return Err(invalid!("the config has no [search] section"));
    }
    driver::run_to(stages::STEPS, cfg, run, ds, Stage::Search, None, obs)?;
    fsx::read_json(&run.best_weights())
}

/// Stage 2, after the stages before it (the search when it re-trains with searched weights).
pub fn stage2(cfg: &Config, run: &RunDir, ds: &Dataset, obs: &dyn Observer) -> Result<Stage2Report> {
    if cfg.stage2.is_none() {
        return Err(invalid!("the config has no [stage2] section"));
    }
    driver::run_to(stages::STEPS, cfg, run, ds, Stage::Stage2, None, obs)?;
    fsx::read_json(&run.stage2_eval())
}

/// The `[model]` and `[train]` sections, or an error saying the stage needs them.
pub fn training_config(cfg: &Config) -> Result<(&ModelConfig, &TrainConfig)> {
    match (&cfg.model, &cfg.train) {
        (Some(m), Some(t)) => Ok((m, t)),
        _ => Err(invalid!("the config needs [model] and [train] sections to train")),
    }
}

/// [`training_config`] with `[train]`'s precision and memory layout made concrete for the stage 1
/// in `run` ([`TrainConfig::resolved`]).
pub fn training_resolved<'a>(cfg: &'a Config, run: &RunDir) -> Result<(&'a ModelConfig, TrainConfig)> {
    let (m, t) = training_config(cfg)?;
    Ok((m, t.resolved(run)?))
}

/// Holds the run folder's lock for the rest of the process (taken once per folder); temporaries
/// that killed processes left in it are removed under the lock.
pub fn hold_lock(run: &RunDir) -> Result<()> {
    static LOCKS: std::sync::Mutex<Vec<(PathBuf, fsx::DirLock)>> = std::sync::Mutex::new(Vec::new());
    let mut held = LOCKS.lock().expect("not poisoned");
    if !held.iter().any(|(d, _)| d == run.root()) {
        let lock = fsx::lock_dir(run.root())?;
        held.push((run.root().to_path_buf(), lock));
    }
    Ok(())
}
/// A complete upstream stage's manifest, or an error naming the stage to run first.
fn upstream(run: &RunDir, stage: Stage) -> Result<Manifest> {
    manifest::read(run, stage)
        .filter(|m| manifest::outputs_intact(run, m))
        .ok_or_else(|| {
            invalid!(
                "{}: the {} stage is not complete (its manifest {} is missing, or its files changed): run `autosampler run` on the config",
                run.root().display(),
                stage.name(),
                run.manifest(stage).display()
            )
        })
}

/// The inputs of a stage that reads the stage-1 model: `[model]`, the normalisation, the split and
/// stage 1 (eval, features, export).
fn model_inputs(cx: &driver::Cx) -> Result<Inputs> {
    let (m, t) = training_config(cx.cfg)?;
    Ok(Inputs::new()
        .value("model", m)
        .value("normalize", &t.normalize)
        .upstream(&cx.upstream(Stage::Split)?)
        .upstream(&cx.upstream(Stage::Stage1)?))
}

/// The work of a stage that runs the network (stage 1, the features): on `[train]`'s device and
/// threads, in the precision and layout the run resolved to (its provenance).
fn network_work(cx: &driver::Cx) -> Result<manifest::Work> {
    let (_, t) = training_config(cx.cfg)?;
    let mut work = manifest::Work::start(&t.device, t.threads);
    let resolved = t.resolved(cx.run)?;
    work.provenance = work
        .provenance
        .with_precision(resolved.bf16_on(), resolved.channels_last());
    Ok(work)
}

/// The stage-1 model (final weights) of a run.
pub fn stage1_model(cfg: &Config, run: &RunDir, ds: &Dataset) -> Result<Model> {
    let (m, t) = training_resolved(cfg, run)?;
    let mut model = Model::new(m, ds.split.num_classes() as i64, t.device()?)?;
    stage1::Fast::of(&t).prepare(&model);
    model.load(&run.stage1().model())?;
    Ok(model)
}

/// The stage-1 classifier as a linear layer ([`crate::model::LinearForm`]), which the search and
/// stage 2 start from: a cosine head (LDAM-DRW's) becomes `s · normalize(W)ᵀ` on normalised
/// features, `s` the logit scale of its LDAM loss (1 with another loss). TDE's causal head has no
/// such form and is refused (configs with it and `[search]` or `[stage2]` are refused before any
/// work; this is the last guard).
fn start_head(cfg: &Config, model: &Model, who: &str) -> Result<crate::model::LinearForm> {
    let scale = match cfg.train.as_ref().map(|t| &t.loss) {
        Some(crate::loss::LossConfig::Ldam { s, .. }) => *s,
        _ => 1.0,
    };
    model.linear_form(scale).ok_or_else(|| {
        invalid!(
            "{who} re-trains a linear classifier on the stage-1 features: the stage-1 model's head ({:?}) has no linear form",
            model.config.head
        )
    })
}

/// A part's stage-1 features as `head` takes them (l2-normalised for a cosine model's).
fn head_features(run: &RunDir, part: Part, head: &crate::model::LinearForm) -> Result<features::Features> {
    let f = features::load(run, part)?;
    Ok(features::Features {
        x: head.features(f.x),
        y: f.y,
    })
}

/// The coarse auto-sampler: the class-weight search on the stage-1 features, with its plots and
/// Whether a run folder finished every stage of this very config (what `sweep` skips): the
/// folder's config.toml is `cfg`'s, and the outputs of the stages whose results a table reads are
/// intact. A folder run with another config is not finished for this one (`run` then reuses the
/// stages whose inputs still match).
pub fn finished(cfg: &Config, run: &RunDir) -> bool {
    std::fs::read_to_string(run.config_toml()).ok() == Some(cfg.to_run_toml())
        && driver::results_complete(stages::STEPS, cfg, run)
}

/// Reads a run's eval.json, if any (for summaries and tables).
pub fn read_eval(run: &RunDir) -> Option<EvalReport> {
    fsx::read_json(&run.eval()).ok()
}

/// Reads a run's stage2/eval.json, if any.
pub fn read_stage2(run: &RunDir) -> Option<Stage2Report> {
    fsx::read_json(&run.stage2_eval()).ok()
}

/// Reads a run's search/best_weights.json, if any.
pub fn read_best(run: &RunDir) -> Option<Best> {
    fsx::read_json(&run.best_weights()).ok()
}

/// The last line of the agent's metrics, if any.
pub fn read_agent_last(run: &RunDir) -> Option<AgentLog> {
    std::fs::read_to_string(run.agent_metrics())
        .ok()?
        .lines()
        .filter_map(|l| serde_json::from_str::<AgentLog>(l).ok())
        .next_back()
}

/// A run folder's agent state, if any.
pub fn read_agent_state(run: &RunDir) -> Option<AgentState> {
    fsx::read_json(&run.agent_state()).ok()
}
