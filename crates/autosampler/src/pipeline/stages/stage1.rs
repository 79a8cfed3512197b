//! Stage 1: the network trained on the long-tailed training split (`stage1/`), with every rank of
//! a data-parallel group.
use crate::agent::guide::{self as agent_guide, Guide};
use crate::agent::Agent;
use crate::config::Config;
use crate::data::Dataset;
use crate::mix::MixConfig;
use crate::model::ModelConfig;
use crate::pipeline::driver::{Cx, Fx, Step};
use crate::pipeline::manifest::{self, Inputs, Work};
use crate::pipeline::{network_work, training_config, training_resolved, RunDir, Stage};
use crate::train::stage1::{self, TrainConfig};
use crate::{invalid, Result};
use std::path::PathBuf;

use super::agent::agent_fingerprint;

pub(crate) struct Stage1;

impl Step for Stage1 {
    fn stage(&self) -> Stage {
        Stage::Stage1
    }
    fn wanted(&self, cfg: &Config) -> bool {
        cfg.model.is_some() && cfg.train.is_some()
    }
    fn needs(&self, _: &Config) -> Vec<Stage> {
        vec![Stage::Agent, Stage::Locations]
    }
    fn shared(&self) -> bool {
        true
    }
    /// `[model]`, `[train]` (without the device and the thread count, which do not change the
    /// result), the split, and the agent's locations or the agent itself when the config mixes
    /// with them.
    fn inputs(&self, cx: &Cx) -> Result<Inputs> {
        let (m, t) = training_resolved(cx.cfg, cx.run)?;
        let t = &t;
        let mut inputs = model_identity(m)?
            .value("train", &stage1::started_config(t))
            .upstream(&cx.upstream(Stage::Split)?);
        if let MixConfig::CamCutmix { model, .. } = &t.mix {
            inputs = inputs.value("cam_model", &manifest::file_digest(model)?.sha256);
        }
        if let MixConfig::AgentCutmix { per_batch, .. } = t.mix {
            inputs = if per_batch {
                inputs.value("agent", &agent_fingerprint(cx)?)
            } else {
                inputs.upstream(&cx.upstream(Stage::Locations)?)
            };
        }
        Ok(inputs)
    }
    fn reused(&self, cx: &Cx) -> Option<String> {
        Some(format!(
            "stage 1   {} (complete, reused)",
            cx.run.stage1().dir.display()
        ))
    }
    /// A stage 1 that finished from other inputs (its split or its agent's locations) is not
    /// trained over.
    fn refuse(&self, cx: &Cx, inputs: &Inputs) -> Result<()> {
        if let Some(old) = manifest::read(cx.run, Stage::Stage1) {
            if old.fingerprint != inputs.fingerprint() {
                let dir = cx.run.stage1().dir;
                return Err(invalid!(
                    "{} was trained from other inputs (its split or its agent's locations changed): use another run folder, or delete {}",
                    dir.display(),
                    dir.display()
                ));
            }
        }
        Ok(())
    }
    fn work(&self, cx: &Cx) -> Result<Work> {
        network_work(cx)
    }
    fn run(&self, cx: &Cx, _: &Inputs) -> Result<Vec<PathBuf>> {
        let (model_cfg, train_cfg) = training_config(cx.cfg)?;
        let guide = guide_for(cx.cfg, cx.run, cx.ds, train_cfg)?;
        cx.go_ahead(true)?;
        let with = stage1::With {
            guide: guide.as_deref(),
            comm: cx.comm,
        };
        let resume = cx.resume(Stage::Stage1);
        let (_, state) = stage1::train_with(cx.ds, model_cfg, train_cfg, cx.run, resume, cx.obs, with)?;
        cx.obs.note(&format!(
            "stage 1: {} epochs, best val top-1 {:.2}% at epoch {}",
            state.epochs_done,
            state.best_val_top1,
            state.best_epoch.unwrap_or(0)
        ));
        let paths = cx.run.stage1();
        Ok(vec![paths.model(), paths.best()])
    }
    fn follow(&self, fx: &Fx) -> Result<()> {
        let (model_cfg, train_cfg) = training_config(fx.cfg)?;
        let guide = guide_for(fx.cfg, fx.run, fx.ds, train_cfg)?;
        let with = stage1::With {
            guide: guide.as_deref(),
            comm: fx.comm,
        };
        stage1::train_with(fx.ds, model_cfg, train_cfg, fx.run, true, &stage1::Silent, with)?;
        Ok(())
    }
}

/// `[model]` as stage 1's manifest records it: the network, and the content of its init file
/// (so that a moved file changes nothing; a run without one records what it always has).
fn model_identity(m: &ModelConfig) -> Result<Inputs> {
    let inputs = Inputs::new().value("model", &m.architecture());
    Ok(match &m.init {
        Some(init) => inputs.value("init", &manifest::file_digest(init)?.sha256),
        None => inputs,
    })
}

/// Refuses, before anything is written, a finished stage 1 whose recorded inputs other than the
/// upstream digests (its `[model]` and `[train]`) differ from the config's.
pub(crate) fn check_stage1_inputs(cfg: &Config, run: &RunDir) -> Result<()> {
    let (m, t) = training_resolved(cfg, run)?;
    if let Some(done) = manifest::read(run, Stage::Stage1) {
        let want = model_identity(m)?.value("train", &stage1::started_config(&t));
        if want.0.iter().any(|(k, v)| done.inputs.0.get(k) != Some(v)) {
            return Err(invalid!(
                "{} was trained with another [model] or [train] config: use another run folder, or delete it",
                run.stage1().dir.display()
            ));
        }
    }
    Ok(())
}

/// The locator stage 1 needs for guided CutMix: for `agent-cutmix` the stored locations, or the
/// agent itself on the training device for `per_batch`; for `cam-cutmix` the CAM model.
fn guide_for(
    cfg: &Config,
    run: &RunDir,
    ds: &Dataset,
    t: &TrainConfig,
) -> Result<Option<Box<dyn crate::mix::guided::Locator>>> {
    if let MixConfig::CamCutmix {
        model, patch, pick, ..
    } = &t.mix
    {
        let image = ds.view(crate::data::Part::Train).size as i64;
        let mut cam = crate::mix::cam::Cam::open(
            model,
            patch.unwrap_or(image / 2),
            image,
            Some(&ds.split.classes),
            t.device()?,
        )?;
        cam.pick = *pick;
        if cam.model.card.normalize != t.normalize {
            return Err(invalid!(
                "[train.mix] model = {}: it was trained on images normalised with {:?}, this run normalises with {:?}: its class activation maps would read other inputs",
                model.display(),
                cam.model.card.normalize,
                t.normalize
            ));
        }
        return Ok(Some(Box::new(cam)));
    }
    let MixConfig::AgentCutmix { per_batch, .. } = t.mix else {
        return Ok(None);
    };
    let Some(ac) = &cfg.agent else {
        return Err(invalid!(
            "[train.mix] kind = \"agent-cutmix\" needs the patch agent: add an [agent] section (or agent.from)"
        ));
    };
    Ok(Some(Box::new(if per_batch {
        let from = ac.from.clone().unwrap_or_else(|| run.agent_dir());
        Guide::PerBatch(Box::new(Agent::open(&from, t.device()?)?))
    } else {
        let (size, locs) = agent_guide::read_locations(&run.locations())?;
        Guide::Stored { size, locs }
    })))
}
