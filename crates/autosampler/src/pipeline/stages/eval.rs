//! `eval.json`: stage 1's last and best-on-validation models on val and test, with every rank.
use crate::config::Config;
use crate::pipeline::driver::{Cx, Fx, Step};
use crate::pipeline::manifest::{Inputs, Work};
use crate::pipeline::{model_inputs, text, training_config, Stage};
use crate::train::stage1::{self, EvalReport};
use crate::{fsx, Result};
use std::path::PathBuf;

pub(crate) struct Eval;

impl Step for Eval {
    fn stage(&self) -> Stage {
        Stage::Eval
    }
    fn wanted(&self, cfg: &Config) -> bool {
        cfg.model.is_some() && cfg.train.is_some()
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
        Ok(Work::start(&t.device, t.threads))
    }
    fn run(&self, cx: &Cx, _: &Inputs) -> Result<Vec<PathBuf>> {
        let (m, t) = training_config(cx.cfg)?;
        cx.go_ahead(true)?;
        let report = stage1::evaluate_run(cx.ds, m, t, cx.run, cx.comm)?;
        fsx::write_json(&cx.run.eval(), &report)?;
        Ok(vec![cx.run.eval()])
    }
    fn follow(&self, fx: &Fx) -> Result<()> {
        let (m, t) = training_config(fx.cfg)?;
        stage1::evaluate_run(fx.ds, m, t, fx.run, fx.comm)?;
        Ok(())
    }
    fn show(&self, cx: &Cx) -> Result<()> {
        let r: EvalReport = fsx::read_json(&cx.run.eval())?;
        cx.obs.show(&text::eval_table(&r));
        Ok(())
    }
}
