//! Frozen-backbone features of every part (`features/`), written once per stage-1 model, each rank
//! its block of the images; the search and stage 2 read them.
use crate::config::Config;
use crate::data::Part;
use crate::pipeline::driver::{Cx, Fx, Step};
use crate::pipeline::manifest::{Inputs, Work};
use crate::pipeline::{model_inputs, stage1_model, training_config, training_resolved, Stage};
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
        let (_, t) = training_config(cx.cfg)?;
        let mut work = Work::start(&t.device, t.threads);
        let resolved = t.resolved(cx.run)?;
        work.provenance = work
            .provenance
            .with_precision(resolved.bf16_on(), resolved.channels_last());
        Ok(work)
    }
    fn run(&self, cx: &Cx, _: &Inputs) -> Result<Vec<PathBuf>> {
        let started = Instant::now();
        let model = stage1_model(cx.cfg, cx.run, cx.ds)?;
        cx.go_ahead(true)?;
        let (_, t) = training_resolved(cx.cfg, cx.run)?;
        let fast = stage1::Fast::of(&t);
        crate::features::extract_all(&model, cx.ds, cx.run, &t.normalize, t.threads, fast, cx.comm)?;
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
        let (_, t) = training_resolved(fx.cfg, fx.run)?;
        let fast = stage1::Fast::of(&t);
        crate::features::extract_all(&model, fx.ds, fx.run, &t.normalize, t.threads, fast, fx.comm)?;
        Ok(())
    }
}
