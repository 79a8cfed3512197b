//! The coarse auto-sampler (`search/`): the class-weight search on the stage-1 features, with its
//! plots and `best_weights.csv`.
use crate::config::Config;
use crate::data::Part;
use crate::pipeline::driver::{Cx, Step};
use crate::pipeline::manifest::{self, Inputs, Work};
use crate::pipeline::{head_features, stage1_model, start_head, text, training_config, RunDir, Stage};
use crate::precision::Precision;
use crate::report::plot;
use crate::search::{self, Best, SearchConfig};
use crate::{fsx, invalid, Result};
use std::path::PathBuf;
use std::time::Instant;

pub(crate) struct Search;

/// The config's `[search]`, or an error saying the stage needs it.
fn section(cfg: &Config) -> Result<&SearchConfig> {
    cfg.search
        .as_ref()
        .ok_or_else(|| invalid!("the config has no [search] section"))
}

impl Step for Search {
    fn stage(&self) -> Stage {
        Stage::Search
    }
    fn wanted(&self, cfg: &Config) -> bool {
        cfg.search.is_some()
    }
    fn needs(&self, _: &Config) -> Vec<Stage> {
        vec![Stage::Features]
    }
    /// `[search]`, the proxy's recipe, the choice rule among the fixed samplers, the features, and
    /// the precision and sized settings where they differ from the first searches' (so that those
    /// keep their fingerprints).
    fn inputs(&self, cx: &Cx) -> Result<Inputs> {
        let sc = section(cx.cfg)?;
        let stage2 = cx.cfg.stage2.clone().unwrap_or_default().recipe();
        let mut inputs = Inputs::new()
            .value("search", sc)
            .value("recipe", &sc.recipe(&stage2))
            // searches before this rule took the fixed sampler best on val, however small its lead
            .value("fixed_choice", &"class-balanced unless beaten by 1 SE")
            .upstream(&cx.upstream(Stage::Features)?);
        if search_bf16(sc, cx.run) {
            // only then: a search in fp32 keeps the fingerprint it had before precision existed
            inputs = inputs.value("search_precision", &"bf16");
        }
        // The settings the training set's size gives: recorded only where they differ from the
        // one search there was before them (per-class logits, whole proxies), so that such
        // searches keep their fingerprints.
        let sized = sc.sized(shape(cx)?, &cx.ds.split.counts.train, &stage2);
        if sized.groups.is_some() || sized.proxy_cap.is_some() || sized.proxy_max_epochs.is_some() {
            inputs = inputs.value("search_settings", &sized);
        }
        Ok(inputs)
    }
    fn reused(&self, cx: &Cx) -> Option<String> {
        Some(format!(
            "search    {} (complete, reused)",
            cx.run.search_dir().display()
        ))
    }
    fn work(&self, _: &Cx) -> Result<Work> {
        Ok(Work::start("cpu", 1))
    }
    fn run(&self, cx: &Cx, inputs: &Inputs) -> Result<Vec<PathBuf>> {
        let started = Instant::now();
        let run = cx.run;
        let (_, train_cfg) = training_config(cx.cfg)?;
        let stage2 = cx.cfg.stage2.clone().unwrap_or_default().recipe();
        // the precision its inputs record (decided before the last manifest was removed)
        let bf16 = inputs.0.contains_key("search_precision");
        let sc = &SearchConfig {
            precision: Some(if bf16 { Precision::Bf16 } else { Precision::Fp32 }),
            ..section(cx.cfg)?.clone()
        };
        let model = stage1_model(cx.cfg, run, cx.ds)?;
        let head = start_head(cx.cfg, &model, "the search")?;
        let (w0, b0) = (&head.weight, &head.bias);
        let train = head_features(run, Part::Train, &head)?;
        let val = head_features(run, Part::Val, &head)?;
        // The proxy's tensors are small at CIFAR's size: one intra-op thread beats several (which
        // spin and, on a busy machine, stall: 93 s instead of 5 s for the same search here). From
        // 2¹⁶ weights (CIFAR-10's head on ResNet-32 features has 640, ImageNet-LT's on ResNet-50
        // features 2,048,000) its products are worth the threads.
        let threads = if w0.numel() >= 1 << 16 {
            train_cfg.threads.max(1)
        } else {
            1
        };
        tch::set_num_threads(threads as i32);
        let result = search::run(&train, &val, (w0, b0), &stage2, sc, |e| match e {
            // shortcuts the config sets itself are kept, even too short: said before it starts
            search::Event::ShortProxy(w) => cx.obs.note(&format!("warning   {w}")),
            search::Event::Estimate(e) => {
                cx.obs.note(&text::search_estimate(e, sc.budget_s));
                cx.obs.task("search", e.settings.trajectories as u64);
            }
            search::Event::Step(s) => cx.obs.advance(
                1,
                &format!(
                    "mean {:.2}% best {:.2}%",
                    s.mean_reward * 100.0,
                    s.best_reward * 100.0
                ),
            ),
        });
        cx.obs.task_done();
        let (best, log) = result?;
        let lines: String = log
            .iter()
            .map(|s| serde_json::to_string(s).expect("serialisable") + "\n")
            .collect();
        fsx::write_atomic(&run.trajectories(), lines.as_bytes())?;
        fsx::write_json(&run.best_weights(), &best)?;
        cx.obs.note(&format!(
            "search    {} trajectories × {} samples × {} proxy seeds in {:.1}s{}",
            log.len(),
            sc.samples,
            sc.reward_seeds,
            started.elapsed().as_secs_f64(),
            match &best.budget_stop {
                Some(b) => format!(
                    " (budget_s = {}: stopped after {} of {} trajectories, the choice among what it had)",
                    b.budget_s, b.trajectories, b.planned
                ),
                None => String::new(),
            }
        ));
        plot::reward_curve(
            &run.search_reward_curve(),
            &log.iter().map(|s| s.mean_reward).collect::<Vec<_>>(),
            &log.iter().map(|s| s.best_reward).collect::<Vec<_>>(),
            &best
                .fixed
                .iter()
                .map(|f| (f.source.clone(), f.search_reward))
                .collect::<Vec<_>>(),
        )?;
        let counts = &cx.ds.split.counts.train;
        use crate::sampler::power_weights;
        plot::weight_bars(
            &run.search_weights_png(),
            "searched class weights against the standard ones",
            &cx.ds.split.classes,
            &[
                ("searched", best.weights.clone()),
                ("instance (class frequency)", power_weights(counts, 1.0)),
                ("square-root", power_weights(counts, 0.5)),
                ("class-balanced", power_weights(counts, 0.0)),
            ],
        )?;
        fsx::write_atomic(
            &run.best_weights_csv(),
            text::weights_csv(&cx.ds.split.classes, counts, &best.weights).as_bytes(),
        )?;
        Ok(vec![
            run.best_weights(),
            run.trajectories(),
            run.best_weights_csv(),
            run.search_reward_curve(),
            run.search_weights_png(),
        ])
    }
    fn show(&self, cx: &Cx) -> Result<()> {
        let best: Best = fsx::read_json(&cx.run.best_weights())?;
        cx.obs.show(&text::search_table(
            &best,
            section(cx.cfg)?,
            &cx.ds.split.classes,
            cx.run,
        ));
        Ok(())
    }
}

/// The training set's shape as the search's sized settings read it.
fn shape(cx: &Cx) -> Result<search::Shape> {
    let (m, _) = training_config(cx.cfg)?;
    Ok(search::Shape {
        classes: cx.ds.split.num_classes(),
        dim: crate::model::resnet::Body::dim_of(m) as usize,
        images: cx.ds.split.counts.train.iter().sum(),
    })
}

/// Whether the search's proxies run in bf16: as `[search] precision` says; for `auto` (or nothing),
/// as the folder's last search ran (fp32 where its manifest records no precision), else bf16
/// where the CPU computes it natively.
fn search_bf16(sc: &SearchConfig, run: &RunDir) -> bool {
    match sc.precision {
        Some(Precision::Fp32) => false,
        Some(Precision::Bf16) => true,
        _ => match manifest::read(run, Stage::Search) {
            Some(m) => m.inputs.0.contains_key("search_precision"),
            None => crate::precision::native_bf16(tch::Device::Cpu),
        },
    }
}
