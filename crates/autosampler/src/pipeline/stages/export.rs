//! `model.safetensors`: the stage-1 backbone with the chosen classifier — the one of stage 2's that
//! `[stage2] classifier` picked (`stage2/head.safetensors`) when stage 2 ran, else stage 1's — and
//! its card (see [`crate::export`]).
use crate::config::Config;
use crate::pipeline::driver::{Cx, Step};
use crate::pipeline::manifest::{self, Inputs, Work};
use crate::pipeline::{model_inputs, stage1_model, training_config, Stage, Stage2Report};
use crate::train::stage2::Classifier;
use crate::{fsx, Error, Result};
use std::path::PathBuf;

pub(crate) struct Export;

/// Whether the run exports stage 2's classifier: the config has `[stage2]` and stage 2 ran.
fn with_stage2(cx: &Cx) -> bool {
    cx.cfg.stage2.is_some() && manifest::read(cx.run, Stage::Stage2).is_some()
}

impl Step for Export {
    fn stage(&self) -> Stage {
        Stage::Export
    }
    fn wanted(&self, cfg: &Config) -> bool {
        cfg.model.is_some() && cfg.train.is_some()
    }
    fn needs(&self, _: &Config) -> Vec<Stage> {
        vec![Stage::Stage1, Stage::Stage2]
    }
    fn inputs(&self, cx: &Cx) -> Result<Inputs> {
        let inputs = model_inputs(cx)?;
        Ok(if with_stage2(cx) {
            inputs.upstream(&cx.upstream(Stage::Stage2)?)
        } else {
            inputs
        })
    }
    fn work(&self, _: &Cx) -> Result<Work> {
        Ok(Work::start("cpu", 1))
    }
    fn run(&self, cx: &Cx, _: &Inputs) -> Result<Vec<PathBuf>> {
        let (m, t) = training_config(cx.cfg)?;
        let run = cx.run;
        let with_stage2 = with_stage2(cx);
        let model = stage1_model(cx.cfg, run, cx.ds)?;
        let (head, classifier) = if with_stage2 {
            let h: std::collections::HashMap<String, tch::Tensor> =
                tch::Tensor::read_safetensors(run.stage2_head())
                    .map_err(|e| Error::format(run.stage2_head().display(), format!("cannot read: {e}")))?
                    .into_iter()
                    .collect();
            let s2: Stage2Report = fsx::read_json(&run.stage2_eval())?;
            let picked = match (&s2.choice, s2.config.classifier) {
                (Some(c), Classifier::BestOnVal) if c.chosen == c.best && c.gain > 0.0 => {
                    " (the best of stage 2's classifiers on validation, by more than its standard error)"
                }
                (Some(_), Classifier::BestOnVal) => {
                    " (the default: no classifier beat it on validation by more than the standard error)"
                }
                (None, Classifier::BestOnVal) => " (the best of stage 2's classifiers on validation)",
                _ => "",
            };
            let how = format!("stage 2: {}{picked}", s2.describe(s2.classifier));
            (
                Some((h["fc.weight"].shallow_clone(), h["fc.bias"].shallow_clone())),
                how,
            )
        } else {
            (None, "stage 1".to_string())
        };
        let mut exported = m.architecture();
        if head.is_some() {
            // stage 2's classifier is a linear layer (on normalised features for a cosine model)
            exported.head = m.head.retrained();
        }
        let card = crate::export::ModelCard {
            format: crate::export::FORMAT.to_string(),
            model: exported,
            classes: cx.ds.split.classes.clone(),
            input_size: cx.ds.split.image_size,
            resize: cx.ds.split.source.resize,
            normalize: t.normalize,
            classifier,
            run: run.name(),
        };
        crate::export::write(&run.model(), &model, head.as_ref().map(|(w, b)| (w, b)), &card)?;
        Ok(vec![run.model()])
    }
}
