//! Frozen-backbone features of every part (`features/`), written once per stage-1 model, each rank
//! its block of the images; the search and stage 2 read them.
use crate::config::Config;
use crate::data::Dataset;
use crate::data::Part;
use crate::distributed::Collective;
use crate::model::Model;
use crate::pipeline::driver::{Cx, Fx, Step};
use crate::pipeline::manifest::{Inputs, Work};
use crate::pipeline::{model_inputs, network_work, stage1_model, training_resolved, RunDir, Stage};
use crate::train::stage1;
use crate::Result;
use std::path::PathBuf;
use std::time::Instant;

pub(crate) struct Features;

impl Step for Features {
    fn stage(&self) -> Stage {
        Stage::Features
    }
    /// When the config searches or re-trains a classifier.
    fn wanted(&self, cfg: &Config) -> bool {
        cfg.search.is_some() || cfg.stage2.is_some()
    }
    fn needs(&self, _: &Config) -> Vec<Stage> {
        vec![Stage::Stage1]
    }
    fn shared(&self) -> bool {
        true
    }
    fn inputs(&self, cx: &Cx) -> Result<Inputs> {
        model_inputs(cx)
    }
    fn work(&self, cx: &Cx) -> Result<Work> {
        network_work(cx)
    }
    fn run(&self, cx: &Cx, _: &Inputs) -> Result<Vec<PathBuf>> {
        let started = Instant::now();
        let model = stage1_model(cx.cfg, cx.run, cx.ds)?;
        cx.go_ahead(true)?;
        extract(&model, cx.cfg, cx.run, cx.ds, cx.comm)?;
        cx.obs.note(&format!(
            "features  {} ({:.1}s)",
            cx.run.features_dir().display(),
            started.elapsed().as_secs_f64()
        ));
        Ok([Part::Train, Part::Val, Part::Test]
            .into_iter()
            .map(|p| cx.run.features(p))
            .collect())
    }
    fn follow(&self, fx: &Fx) -> Result<()> {
        let model = stage1_model(fx.cfg, fx.run, fx.ds)?;
        extract(&model, fx.cfg, fx.run, fx.ds, fx.comm)
    }
}

/// This rank's block of every part's features, in `[train]`'s precision and layout.
fn extract(model: &Model, cfg: &Config, run: &RunDir, ds: &Dataset, comm: &dyn Collective) -> Result<()> {
    let (_, t) = training_resolved(cfg, run)?;
    let fast = stage1::Fast::of(&t);
    crate::features::extract_all(model, ds, run, &t.normalize, t.threads, fast, comm)
}
