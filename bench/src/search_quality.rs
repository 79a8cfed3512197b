//! `bench-search-quality`: on the stage-1 features of a finished run (CIFAR-10-LT IR 100,
//! ResNet-32, the 30-epoch protocol), stage 2 re-trains the classifier from the stage-1 one on the
//! cached features with instance, class-balanced, square-root and searched weights (3 search
//! seeds), and with the best of a random search given the same number of proxy evaluations
//! (T × M samples of N(μ0, σ²I), μ never updated), and, for comparison, with the searched
//! policy's mean softmax(μ_T) instead of the best sample. Val and test top-1 and many/medium/few.
//! One JSON line.
//!
//!   bench-search-quality --run runs/bench/c10lt_ir100_e30_s0 [--epochs 10] [--lr 0.01]
use anyhow::{Context, Result};
use autosampler::data::{Part, Split};
use autosampler::eval::Metrics;
use autosampler::features;
use autosampler::sampler::power_weights;
use autosampler::search::{self, Proxy, SearchConfig};
use autosampler::train::stage2::{self, FinetuneConfig, Parts};
use std::path::PathBuf;
use tch::Tensor;

mod common;
use common::arg;

fn row(val: &Metrics, test: &Metrics) -> serde_json::Value {
    let r = |x: f64| (x * 100.0).round() / 100.0;
    serde_json::json!({
        "val_top1": r(val.top1), "test_top1": r(test.top1),
        "test_many": test.many.map(r), "test_medium": test.medium.map(r), "test_few": test.few.map(r),
    })
}

fn main() -> Result<()> {
    autosampler::runtime::tune_allocator();
    tch::set_num_threads(1);
    let run = PathBuf::from(arg("--run").context("--run DIR (a finished run with features)")?);
    let mut ft = FinetuneConfig::default();
    if let Some(e) = arg("--epochs") {
        ft.epochs = e.parse()?;
    }
    if let Some(l) = arg("--lr") {
        ft.lr = l.parse()?;
    }
    let train = features::load(&run, Part::Train)?;
    let val = features::load(&run, Part::Val)?;
    let test = features::load(&run, Part::Test)?;
    let parts = Parts {
        train: &train,
        val: &val,
        test: &test,
    };
    let st: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(run.join("stage1/model.safetensors"))?
            .into_iter()
            .collect();
    let (w0, b0) = (&st["fc.weight"], &st["fc.bias"]);
    let counts = Split::load(&run.join("split.json"))?.counts.train;
    let mut out = serde_json::json!({
        "bench": "search_quality", "run": run.display().to_string(),
        "stage2": {"epochs": ft.epochs, "lr": ft.lr, "batch": ft.batch_size, "momentum": ft.momentum, "from": "stage-1 classifier"},
        "search": {"trajectories": 100, "samples": 8, "proxy_epochs": 1},
    });
    out["stage1"] = row(
        &stage2::evaluate(&val, w0, b0, &counts),
        &stage2::evaluate(&test, w0, b0, &counts),
    );
    for (name, w) in [
        ("crt_instance", power_weights(&counts, 1.0)),
        ("crt_class_balanced", power_weights(&counts, 0.0)),
        ("crt_square_root", power_weights(&counts, 0.5)),
    ] {
        let f = stage2::finetune(&parts, (w0, b0), &w, &counts, &ft)?;
        out[name] = row(&f.val, &f.test);
    }
    let mut searched = Vec::new();
    let mut random = Vec::new();
    let mut policy_mean = Vec::new();
    for seed in 0..3u64 {
        for (kind, lr) in [("searched", 0.05), ("random", 1e-300)] {
            let cfg = SearchConfig {
                seed,
                lr,
                ..Default::default()
            };
            let proxy = Proxy::new(&train, &val, w0, b0, &cfg);
            let dir = tempfile::tempdir()?;
            let best = search::search(&proxy, &counts, &cfg, dir.path(), |_| {})?;
            let f = stage2::finetune(&parts, (w0, b0), &best.weights, &counts, &ft)?;
            let mut r = row(&f.val, &f.test);
            r["seed"] = seed.into();
            r["proxy_val_reward"] = ((best.reward * 10000.0).round() / 100.0).into();
            r["weights"] = best
                .weights
                .iter()
                .map(|w| (w * 10000.0).round() / 10000.0)
                .collect::<Vec<_>>()
                .into();
            if kind == "searched" {
                // Not Algorithm 1's answer, for comparison: the policy's own mean, softmax(μ_T).
                let last = std::fs::read_to_string(dir.path().join("trajectories.jsonl"))?;
                let step: search::Step = serde_json::from_str(last.lines().last().context("empty log")?)?;
                let w = search::ppo::softmax(&step.mu);
                let f = stage2::finetune(&parts, (w0, b0), &w, &counts, &ft)?;
                let mut m = row(&f.val, &f.test);
                m["seed"] = seed.into();
                policy_mean.push(m);
                searched.push(r)
            } else {
                random.push(r)
            }
        }
    }
    let mean = |v: &[serde_json::Value], k: &str| {
        (v.iter().map(|r| r[k].as_f64().unwrap()).sum::<f64>() / v.len() as f64 * 100.0).round() / 100.0
    };
    out["searched_mean_test_top1"] = mean(&searched, "test_top1").into();
    out["searched_mean_val_top1"] = mean(&searched, "val_top1").into();
    out["random_mean_test_top1"] = mean(&random, "test_top1").into();
    out["goal_searched_ge_class_balanced_on_test"] =
        (mean(&searched, "test_top1") >= out["crt_class_balanced"]["test_top1"].as_f64().unwrap()).into();
    out["policy_mean_mean_test_top1"] = mean(&policy_mean, "test_top1").into();
    out["policy_mean"] = policy_mean.into();
    out["searched"] = searched.into();
    out["random_search"] = random.into();
    println!("{out}");
    Ok(())
}
