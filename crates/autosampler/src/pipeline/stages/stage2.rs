//! Stage 2 (`stage2/`): the classifier re-trained with the searched (or a sampler's) class weights,
//! beside class-balanced and square-root cRT, τ-normalisation, logit adjustment and LWS; the
//! report of all of them and the choice among them on validation.
use crate::config::Config;
use crate::data::Part;
use crate::eval::Metrics;
use crate::pipeline::driver::{Cx, Step};
use crate::pipeline::manifest::{Inputs, Work};
use crate::pipeline::{head_features, stage1_model, start_head, text, training_resolved, Stage};
use crate::search::{self, Best};
use crate::train::stage1;
use crate::train::stage2::{self, Classifier, Stage2Config};
use crate::{fsx, invalid, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub(crate) struct Stage2;

/// The config's `[stage2]`, or an error saying the stage needs it.
fn section(cfg: &Config) -> Result<&Stage2Config> {
    cfg.stage2
        .as_ref()
        .ok_or_else(|| invalid!("the config has no [stage2] section"))
}

/// The class weights stage 2 re-trains with: its sampler's, or the search's (with the search).
fn weights(cx: &Cx) -> Result<(Vec<f64>, Option<Best>)> {
    let fc = section(cx.cfg)?;
    let counts = &cx.ds.split.counts.train;
    Ok(match &fc.sampler {
        Some(s) => (s.weights(counts, fc.epochs, fc.epochs)?, None),
        None => {
            if cx.cfg.search.is_none() {
                return Err(invalid!(
                    "[stage2] without a sampler uses the searched weights: add [search], or set stage2.sampler"
                ));
            }
            cx.upstream(Stage::Search)?;
            let best: Best = fsx::read_json(&cx.run.best_weights())?;
            (best.weights.clone(), Some(best))
        }
    })
}

impl Step for Stage2 {
    fn stage(&self) -> Stage {
        Stage::Stage2
    }
    fn wanted(&self, cfg: &Config) -> bool {
        cfg.stage2.is_some()
    }
    /// The features, and the search when it re-trains with the searched weights.
    fn needs(&self, cfg: &Config) -> Vec<Stage> {
        match cfg.stage2.as_ref().and_then(|f| f.sampler.as_ref()) {
            Some(_) => vec![Stage::Features],
            None => vec![Stage::Features, Stage::Search],
        }
    }
    fn inputs(&self, cx: &Cx) -> Result<Inputs> {
        let fc = section(cx.cfg)?;
        let (weights, _) = weights(cx)?;
        let mut inputs = Inputs::new()
            .value("stage2", fc)
            // reports before this key had no held-out scores: their best-on-val is recomputed
            .value(
                "selection",
                &"heldout, post-hoc cross-fitted, default unless beaten by more than 1 SE",
            )
            .value("weights", &weights)
            .upstream(&cx.upstream(Stage::Features)?);
        if fc.path == stage2::Stage2Path::Images {
            let (_, t) = training_resolved(cx.cfg, cx.run)?;
            inputs = inputs
                .value("train", &stage1::started_config(&t))
                .upstream(&cx.upstream(Stage::Stage1)?);
        }
        Ok(inputs)
    }
    fn reused(&self, cx: &Cx) -> Option<String> {
        Some(format!(
            "stage 2   {} (complete, reused)",
            cx.run.stage2_dir().display()
        ))
    }
    fn work(&self, cx: &Cx) -> Result<Work> {
        let fc = section(cx.cfg)?;
        Ok(match (fc.path, &cx.cfg.train) {
            (stage2::Stage2Path::Images, Some(t)) => Work::start(&t.device, t.threads),
            _ => Work::start("cpu", 1),
        })
    }
    fn run(&self, cx: &Cx, _: &Inputs) -> Result<Vec<PathBuf>> {
        let (cfg, run, ds) = (cx.cfg, cx.run, cx.ds);
        let fc = section(cfg)?;
        let counts = &ds.split.counts.train;
        let (weights, searched) = weights(cx)?;
        let model = stage1_model(cfg, run, ds)?;
        let head = start_head(cfg, &model, "stage 2")?;
        let (w0, b0) = (head.weight.shallow_clone(), head.bias.shallow_clone());
        let (train, val, test) = (
            head_features(run, Part::Train, &head)?,
            head_features(run, Part::Val, &head)?,
            head_features(run, Part::Test, &head)?,
        );
        let parts = stage2::Parts {
            train: &train,
            val: &val,
            test: &test,
        };
        tch::set_num_threads(1);
        let (crt, head_w, head_b) = match fc.path {
            stage2::Stage2Path::Features => {
                let f = stage2::finetune(&parts, (&w0, &b0), &weights, counts, fc)?;
                (
                    stage2::Scored {
                        val: f.val,
                        test: f.test,
                    },
                    f.weight.tr().contiguous(),
                    f.bias,
                )
            }
            stage2::Stage2Path::Images => {
                let (_, t) = training_resolved(cfg, run)?;
                let mut m = stage1_model(cfg, run, ds)?;
                tch::set_num_threads(t.threads as i32);
                let scored = stage2::finetune_images(&mut m, ds, &weights, fc, &t)?;
                let v = m.vs.variables();
                (
                    scored,
                    v["fc.weight"].to_device(tch::Device::Cpu),
                    v["fc.bias"].to_device(tch::Device::Cpu),
                )
            }
        };
        tch::set_num_threads(1);
        let (lws_scales, lws) = stage2::learnable_weight_scaling(&parts, (&w0, &b0), counts, fc)?;
        let fixed = |q: f64| -> Result<(stage2::Scored, (tch::Tensor, tch::Tensor))> {
            let w = crate::sampler::power_weights(counts, q);
            let f = stage2::finetune(&parts, (&w0, &b0), &w, counts, fc)?;
            Ok((
                stage2::Scored {
                    val: f.val,
                    test: f.test,
                },
                (f.weight.tr().contiguous(), f.bias),
            ))
        };
        let (crt_class_balanced, cb_head) = fixed(0.0)?;
        let (crt_square_root, sqrt_head) = fixed(0.5)?;
        let mut r = Stage2Report {
            config: fc.clone(),
            weights,
            crt_class_balanced,
            crt_square_root,
            stage1: stage2::Scored::of(&parts, &w0, &b0, counts),
            crt,
            tau_normalised: stage2::tau_normalised(&parts, &w0, counts),
            logit_adjusted: stage2::logit_adjusted(&parts, &w0, &b0, counts),
            lws_scales,
            lws,
            classifier: Classifier::Retrained,
            heldout: None,
            choice: None,
        };
        if let Some(best) = searched.as_ref().filter(|b| b.val_choice > 0) {
            let labels = Vec::<i64>::try_from(&val.y).expect("i64 labels");
            let (search_pos, choice_pos) =
                search::split_validation(&labels, best.config.holdout, best.config.seed);
            if choice_pos.len() != best.val_choice {
                return Err(invalid!(
                    "{}: the search held out {} validation images, its split of this run's {} gives {}: re-run the search",
                    run.best_weights().display(),
                    best.val_choice,
                    labels.len(),
                    choice_pos.len()
                ));
            }
            let heads = stage2::Heads {
                stage1: (&w0, &b0),
                retrained: (&head_w, &head_b),
                crt_class_balanced: (&cb_head.0, &cb_head.1),
                crt_square_root: (&sqrt_head.0, &sqrt_head.1),
                lws_scales: &r.lws_scales,
            };
            r.heldout = Some(stage2::heldout(&parts, &heads, &search_pos, &choice_pos, counts));
        }
        r.classifier = r.resolve(fc.classifier);
        if fc.classifier == Classifier::BestOnVal {
            // The best on validation replaces the default only by more than the noise of the
            // comparison: per-image correctness of both on the same images, paired.
            let default = fc.default.unwrap_or(match &cfg.train {
                Some(t) if t.rebalances() => Classifier::Stage1,
                _ => Classifier::CrtClassBalanced,
            });
            let best = r.classifier;
            let labels = Vec::<i64>::try_from(&val.y).expect("i64 labels");
            let (basis, rows, tau_n, tau_la) = match (&r.heldout, &searched) {
                (Some(h), Some(b)) => {
                    let (_, choice_pos) = search::split_validation(&labels, b.config.holdout, b.config.seed);
                    ("held", choice_pos, h.tau_normalised_tau, h.logit_adjusted_tau)
                }
                _ => (
                    "val",
                    (0..labels.len() as i64).collect(),
                    r.tau_normalised.tau,
                    r.logit_adjusted.tau,
                ),
            };
            let on = stage2::subset(&val, &rows);
            let head_of = |c: Classifier| -> (tch::Tensor, tch::Tensor) {
                match c {
                    Classifier::Retrained | Classifier::BestOnVal => {
                        (head_w.shallow_clone(), head_b.shallow_clone())
                    }
                    Classifier::CrtClassBalanced => (cb_head.0.shallow_clone(), cb_head.1.shallow_clone()),
                    Classifier::CrtSquareRoot => (sqrt_head.0.shallow_clone(), sqrt_head.1.shallow_clone()),
                    Classifier::Lws => stage2::lws_head(&w0, &b0, &r.lws_scales),
                    Classifier::TauNormalised => stage2::tau_normalised_head(&w0, tau_n),
                    Classifier::LogitAdjusted => stage2::logit_adjusted_head(&w0, &b0, counts, tau_la),
                    Classifier::Stage1 => (w0.shallow_clone(), b0.shallow_clone()),
                }
            };
            let correct = |c: Classifier| {
                let (w, b) = head_of(c);
                stage2::correct(&on, &w, &b)
            };
            let choice = stage2::Choice::decide(basis, default, best, &correct(default), &correct(best));
            r.classifier = choice.chosen;
            r.choice = Some(choice);
        }
        let (head_w, head_b) = match r.classifier {
            Classifier::Retrained | Classifier::BestOnVal => (head_w, head_b),
            Classifier::CrtClassBalanced => cb_head,
            Classifier::CrtSquareRoot => sqrt_head,
            Classifier::Lws => stage2::lws_head(&w0, &b0, &r.lws_scales),
            Classifier::TauNormalised => stage2::tau_normalised_head(&w0, r.tau_normalised.tau),
            Classifier::LogitAdjusted => stage2::logit_adjusted_head(&w0, &b0, counts, r.logit_adjusted.tau),
            Classifier::Stage1 => (w0.shallow_clone(), b0.shallow_clone()),
        };
        crate::model::save_tensors(
            &run.stage2_head(),
            &[
                ("fc.weight".into(), head_w.to_device(tch::Device::Cpu)),
                ("fc.bias".into(), head_b.to_device(tch::Device::Cpu)),
            ],
        )?;
        fsx::write_json(&run.stage2_eval(), &r)?;
        Ok(vec![run.stage2_eval(), run.stage2_head()])
    }
    fn show(&self, cx: &Cx) -> Result<()> {
        let r: Stage2Report = fsx::read_json(&cx.run.stage2_eval())?;
        cx.obs.show(&text::stage2_table(&r));
        Ok(())
    }
}

/// `stage2/eval.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage2Report {
    pub config: Stage2Config,
    pub weights: Vec<f64>,
    pub stage1: stage2::Scored,
    pub crt: stage2::Scored,
    /// The fixed samplers' cRT with the same recipe, for comparison.
    pub crt_class_balanced: stage2::Scored,
    pub crt_square_root: stage2::Scored,
    pub tau_normalised: stage2::PostHoc,
    pub logit_adjusted: stage2::PostHoc,
    pub lws_scales: Vec<f64>,
    pub lws: stage2::Scored,
    /// The classifier in `stage2/head.safetensors` and the run's model (`[stage2] classifier`,
    /// `best-on-val` resolved); reports written before the key existed held the re-trained one.
    #[serde(default = "Classifier::retrained")]
    pub classifier: Classifier,
    /// Every classifier on the validation images the search held out (when stage 2 re-trained
    /// with searched weights and the search held some out): what `best-on-val` compares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heldout: Option<stage2::Heldout>,
    /// How `best-on-val` chose against the default, with the standard error of the comparison
    /// (reports written before the rule weighed the noise have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<stage2::Choice>,
}

impl Stage2Report {
    /// A concrete classifier's validation and test metrics.
    pub fn scored(&self, c: Classifier) -> (&Metrics, &Metrics) {
        let s = match c {
            Classifier::Retrained | Classifier::BestOnVal => &self.crt,
            Classifier::Stage1 => &self.stage1,
            Classifier::CrtClassBalanced => &self.crt_class_balanced,
            Classifier::CrtSquareRoot => &self.crt_square_root,
            Classifier::Lws => &self.lws,
            Classifier::TauNormalised => return (&self.tau_normalised.val, &self.tau_normalised.test),
            Classifier::LogitAdjusted => return (&self.logit_adjusted.val, &self.logit_adjusted.test),
        };
        (&s.val, &s.test)
    }

    /// A concrete classifier's name in tables (`logit-adjusted`, `stage 2 (searched weights)`).
    pub fn label(&self, c: Classifier) -> String {
        match c {
            Classifier::Retrained | Classifier::BestOnVal => {
                format!("stage 2 ({})", self.weights_label())
            }
            Classifier::CrtClassBalanced => "cRT class-balanced".into(),
            Classifier::CrtSquareRoot => "cRT square-root".into(),
            Classifier::Lws => "LWS".into(),
            Classifier::TauNormalised => "τ-normalised".into(),
            Classifier::LogitAdjusted => "logit-adjusted".into(),
            Classifier::Stage1 => "stage-1 classifier".into(),
        }
    }

    /// A concrete classifier described with its parameters (`logit-adjusted stage-1 classifier,
    /// τ = 1.8 on val`), for the model card and summaries.
    pub fn describe(&self, c: Classifier) -> String {
        match c {
            Classifier::Retrained | Classifier::BestOnVal => match &self.config.sampler {
                Some(s) => format!("cRT with the {s:?} sampler's weights"),
                None => "cRT with the searched weights".to_string(),
            },
            Classifier::CrtClassBalanced => "cRT with class-balanced sampling".into(),
            Classifier::CrtSquareRoot => "cRT with square-root sampling".into(),
            Classifier::Lws => "learnable weight scaling of the stage-1 classifier".into(),
            Classifier::TauNormalised => format!(
                "τ-normalised stage-1 classifier, τ = {:.1} on val",
                self.tau_normalised.tau
            ),
            Classifier::LogitAdjusted => format!(
                "logit-adjusted stage-1 classifier, τ = {:.1} on val",
                self.logit_adjusted.tau
            ),
            Classifier::Stage1 => "the stage-1 classifier as trained".into(),
        }
    }

    /// The validation top-1 that `best-on-val` compares a concrete classifier by: on the images
    /// the search held out ([`stage2::Heldout`]) when the report has them; else on all of
    /// validation — the post-hoc ones cross-fitted ([`stage2::PostHoc::val_crossfit`]) where the
    /// report has that — except the classifier re-trained with searched weights, which is then
    /// left out (its weights were fitted on validation: its val top-1 is optimistic, by 1.5 points
    /// over logit adjustment's on the agent CutMix run, whose test top-1 was 2.2 points higher).
    pub fn selection_top1(&self, c: Classifier) -> Option<f64> {
        match self.heldout {
            Some(_) => self.top1_on(Basis::Held, c),
            None => self
                .top1_on(Basis::Crossfit, c)
                .or(self.top1_on(Basis::AllVal, c)),
        }
    }

    /// A concrete classifier's validation top-1 on one [`Basis`], where the report has it (held-out
    /// scores, cross-fitted τ) and the basis admits it (the classifier re-trained with searched
    /// weights is left out of both all-of-val bases).
    pub fn top1_on(&self, basis: Basis, c: Classifier) -> Option<f64> {
        let searched =
            matches!(c, Classifier::Retrained | Classifier::BestOnVal) && self.config.sampler.is_none();
        let post_hoc = match c {
            Classifier::TauNormalised => Some(&self.tau_normalised),
            Classifier::LogitAdjusted => Some(&self.logit_adjusted),
            _ => None,
        };
        match basis {
            Basis::Held => self.heldout.as_ref().map(|h| h.top1(c)),
            Basis::Crossfit if searched => None,
            Basis::Crossfit => match post_hoc {
                Some(p) => p.val_crossfit,
                None => Some(self.scored(c).0.top1),
            },
            Basis::AllVal => Some(self.scored(c).0.top1).filter(|_| !searched),
        }
    }

    /// `[stage2] classifier` resolved: itself, or for `best-on-val` the concrete classifier with
    /// the highest [`Self::selection_top1`]; ties go to the lower val ECE (as `table --best`'s),
    /// then to the first of [`Classifier::CONCRETE`].
    pub fn resolve(&self, wanted: Classifier) -> Classifier {
        if wanted != Classifier::BestOnVal {
            return wanted;
        }
        let mut best: Option<(Classifier, f64, f64)> = None;
        for c in Classifier::CONCRETE {
            if let Some(v) = self.selection_top1(c) {
                let ece = self.scored(c).0.ece;
                if best.is_none_or(|(_, b, e)| v > b || (v == b && ece < e)) {
                    best = Some((c, v, ece));
                }
            }
        }
        best.map_or(Classifier::CrtClassBalanced, |(c, _, _)| c)
    }

    /// What the summary and the report say about the choice: which classifier was kept, the
    /// best one's gain over the default and its standard error, and whether that is more than the
    /// noise. `None` for a classifier named in the config or a report without a [`stage2::Choice`].
    pub fn confidence(&self) -> Option<String> {
        let c = self.choice.as_ref()?;
        let on = match c.basis.as_str() {
            "held" => format!("{} validation images the search held out", c.n),
            _ => format!("{} validation images", c.n),
        };
        Some(if c.best == c.default || c.gain <= 0.0 {
            format!(
                "the default, {}: no classifier scores higher on the {on}",
                self.label(c.default)
            )
        } else if c.chosen == c.best {
            format!(
                "{} over the default {}: {:+.2} ± {:.2} points (paired SE) on the {on}, more than its standard error",
                self.label(c.best),
                self.label(c.default),
                c.gain,
                c.se
            )
        } else {
            format!(
                "the default {} kept: the best on the {on}, {}, is {:+.2} ± {:.2} points (paired SE), within the noise",
                self.label(c.default),
                self.label(c.best),
                c.gain,
                c.se
            )
        })
    }

    /// Which weights its own stage 2 (`crt`) re-trained with: `[stage2] sampler`'s, or the
    /// searched ones.
    pub fn weights_label(&self) -> &'static str {
        if self.config.sampler.is_some() {
            "sampler weights"
        } else {
            "searched weights"
        }
    }
}

/// The validation images, and how the post-hoc τ was picked, on which classifiers are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The images the run's search held out (post-hoc τ re-chosen on the other half).
    Held,
    /// All of val, the post-hoc τ cross-fitted (chosen on each half, scored on the other).
    Crossfit,
    /// All of val, the post-hoc τ picked on it (a little optimistic).
    AllVal,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(name: &str) -> Stage2Report {
        let path = format!(
            "{}/../../bench/results/{name}_stage2.json",
            env!("CARGO_MANIFEST_DIR")
        );
        fsx::read_json(std::path::Path::new(&path)).unwrap()
    }

    /// `[stage2] classifier = "best-on-val"` on the committed stage 2 of the full-length
    /// CIFAR-10-LT IR 100 run (written before the key existed: it reads as the re-trained one):
    /// logit adjustment has the highest val top-1 (75.0); a tie goes to the lower val ECE (as
    /// `table --best`'s; before, to the first of `Classifier::CONCRETE`), then to that order. That
    /// report has no held-out scores, so the classifier re-trained with the searched weights is
    /// left out.
    #[test]
    fn best_on_val_picks_the_highest_val_top1_ties_by_val_ece() {
        let mut r = committed("table1_c10lt_ir100_e200_cpu_s0");
        assert_eq!(r.classifier, Classifier::Retrained);
        assert_eq!(r.resolve(Classifier::BestOnVal), Classifier::LogitAdjusted);
        assert_eq!(r.resolve(Classifier::Lws), Classifier::Lws);
        assert_eq!(r.scored(Classifier::LogitAdjusted).1.top1, 75.07);
        // τ-normalised has 70.5 on val, as the re-trained one, which does not compete
        r.logit_adjusted.val.top1 = 70.5;
        assert_eq!(r.crt.val.top1, 70.5);
        assert_eq!(r.selection_top1(Classifier::Retrained), None);
        assert_eq!(r.resolve(Classifier::BestOnVal), Classifier::TauNormalised);
        // with a sampler's weights (nothing fitted on val) the re-trained one competes; it ties
        // τ-normalised at 70.5, whose val ECE is lower (0.142 against 0.203)
        r.config.sampler = Some(crate::sampler::Sampler::ClassBalanced);
        assert_eq!((r.crt.val.ece * 1e3).round(), 203.0);
        assert_eq!((r.tau_normalised.val.ece * 1e3).round(), 142.0);
        assert_eq!(r.resolve(Classifier::BestOnVal), Classifier::TauNormalised);
        r.crt.val.ece = 0.1;
        assert_eq!(r.resolve(Classifier::BestOnVal), Classifier::Retrained);
        // equal ECE too: the first of CONCRETE
        r.crt.val.ece = r.tau_normalised.val.ece;
        assert_eq!(r.resolve(Classifier::BestOnVal), Classifier::Retrained);
        r.crt.val.top1 = 70.0;
        assert_eq!(r.resolve(Classifier::BestOnVal), Classifier::TauNormalised);
        // a post-hoc row is compared by its cross-fitted val top-1 where the report has it: τ
        // picked on all of val would score 80 here, τ picked on each half scores the other 60
        r.logit_adjusted.val.top1 = 80.0;
        assert_eq!(r.resolve(Classifier::BestOnVal), Classifier::LogitAdjusted);
        r.logit_adjusted.val_crossfit = Some(60.0);
        assert_eq!(r.selection_top1(Classifier::LogitAdjusted), Some(60.0));
        assert_eq!(r.resolve(Classifier::BestOnVal), Classifier::TauNormalised);
        assert_eq!(
            r.describe(Classifier::TauNormalised),
            "τ-normalised stage-1 classifier, τ = 1.3 on val"
        );
    }

    /// Defect "selection bias": on the agent CutMix run the searched classifier had val top-1
    /// 79.0 (its weights fitted on half of those 200 images) against logit adjustment's 77.5, and
    /// best-on-val picked it: test 74.29, where logit adjustment gave 76.51. Without held-out
    /// scores it no longer competes; with them, whichever is best on the held-out images wins.
    #[test]
    fn best_on_val_does_not_pick_the_searched_classifier_on_the_images_it_was_fitted_on() {
        let mut r = committed("cutmix_long_c10lt_ir100_e200_agent_p0.5_cpu");
        assert_eq!((r.crt.val.top1, r.logit_adjusted.val.top1), (79.0, 77.5));
        assert!(r.config.sampler.is_none() && r.heldout.is_none());
        assert_eq!(r.resolve(Classifier::BestOnVal), Classifier::LogitAdjusted);
        assert_eq!(r.scored(r.resolve(Classifier::BestOnVal)).1.top1, 76.51);
        let mut h = stage2::Heldout {
            n: 100,
            stage1: 66.0,
            retrained: 74.0,
            crt_class_balanced: 72.0,
            crt_square_root: 69.0,
            lws: 70.0,
            tau_normalised_tau: 1.0,
            tau_normalised: 73.0,
            logit_adjusted_tau: 1.0,
            logit_adjusted: 76.0,
        };
        r.heldout = Some(h.clone());
        assert_eq!(r.selection_top1(Classifier::Retrained), Some(74.0));
        assert_eq!(r.resolve(Classifier::BestOnVal), Classifier::LogitAdjusted);
        h.retrained = 76.5;
        r.heldout = Some(h);
        assert_eq!(r.resolve(Classifier::BestOnVal), Classifier::Retrained);
        // reports without the key read as before; a report with it round-trips
        let back: Stage2Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
