//! `bench-search-speed`: wall time of the class-weight search (T = 100 trajectories × M = 8
//! samples), with the default search (stage 2's recipe as the proxy — `[stage2]` defaults —,
//! R reward seeds, the re-score) and with the paper's (one proxy epoch, batch 128, one run per
//! sample, best draw), on
//!   (a) CIFAR-10-LT IR 100 ResNet-32 features of a finished run (`--run DIR`; same-shaped random
//!       features, 12,406 × 64 with 10 classes, when no run is given), and
//!   (b) 10,847 × 64 random features with 100 classes (CIFAR-100-LT IR 100's shape),
//! and, with `--run`, the time of one proxy run that re-runs the backbone on images (frozen
//! ResNet-32 forward for every batch of the epoch and for the validation set), as the paper's proxy
//! did, with the ratio to one proxy run on cached features. One JSON line.
//!
//! The proxies run in the search's default precision (auto: bf16 on a CPU with native bf16);
//! `--precision fp32|bf16` sets it.
//!
//!   bench-search-speed [--run runs/bench/c10lt_ir100_e30_s0] [--threads 1] [--images-threads 2] [--precision fp32]
//!
//! `--scale` times the search with the defaults each size gets (`SearchConfig::sized`: per-class
//! or frequency groups, proxy caps) on random ReLU features with real long-tail count profiles,
//! one JSON line per shape, each in its own process (so its peak memory is its own):
//!   (classes, dim, profile) = (10, 64, CIFAR-10-LT IR 100), (100, 64, CIFAR-100-LT IR 100),
//!   (1,000, 512, ImageNet-LT's pareto), (1,000, 2,048, pareto), (8,142, 2,048, pareto 1,000 → 2:
//!   iNaturalist 2018's range); validation 20 per class (3 for the 8,142 classes).
//! `--budget-s S` sets `[search] budget_s`; `--shapes 0,2` picks shapes; `--threads` as the
//! pipeline gives a large head (the `[train]` threads).
//!   bench-search-speed --scale --threads 2 [--shapes 3] [--budget-s 600]
use anyhow::{Context, Result};
use autosampler::data::augment::{Augment, Normalize};
use autosampler::data::loader::{for_each_batch, LoaderConfig};
use autosampler::data::{cache::default_cache_root, Dataset, Part, Split};
use autosampler::features::{self, Features};
use autosampler::model::{Arch, Head, Model, ModelConfig, Stem};
use autosampler::rundir::RunDir;
use autosampler::sampler::{class_members, plan_with_replacement};
use autosampler::search::{self, SearchConfig};
use autosampler::train::stage2::Stage2Config;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

mod common;
use common::{arg, peak_rss_mb};

/// Random features with CIFAR-LT IR 100 labels: n_max 5,000 over 10 classes (12,406 images) or
/// 500 over 100 classes (10,847 images).
fn random_features(n_max: usize, c: i64, per_class_val: i64, seed: i64) -> (Features, Features, Vec<usize>) {
    let counts = autosampler::data::longtail::exp_counts(n_max, c as usize, 100.0);
    let (train, val) = features_for(&counts, 64, per_class_val as usize, seed);
    (train, val, counts)
}

/// Random ReLU features of `dim` dimensions: `counts[k]` training rows of class k, then
/// `per_class_val` validation rows of each class (drawn after `tch::manual_seed(seed)`).
fn features_for(counts: &[usize], dim: i64, per_class_val: usize, seed: i64) -> (Features, Features) {
    tch::manual_seed(seed);
    let labels: Vec<i64> = counts
        .iter()
        .enumerate()
        .flat_map(|(k, &m)| std::iter::repeat_n(k as i64, m))
        .collect();
    let vl: Vec<i64> = (0..counts.len() as i64)
        .flat_map(|k| std::iter::repeat_n(k, per_class_val))
        .collect();
    let part = |y: &[i64]| Features {
        // in place: at iNaturalist's size a copy is 3.4 GB
        x: Tensor::randn([y.len() as i64, dim], (Kind::Float, Device::Cpu)).relu_(),
        y: Tensor::from_slice(y),
    };
    (part(&labels), part(&vl))
}

/// Seconds of the default search and of the paper's on these features.
fn time_search(train: &Features, val: &Features, w0: &Tensor, b0: &Tensor) -> Result<(f64, f64)> {
    let stage2 = Stage2Config::default().recipe();
    let mut secs = Vec::new();
    for mut cfg in [SearchConfig::default(), SearchConfig::paper()] {
        cfg.precision = precision()?;
        let t = Instant::now();
        search::run(train, val, (w0, b0), &stage2, &cfg, |_| {})?;
        secs.push(t.elapsed().as_secs_f64());
    }
    Ok((secs[0], secs[1]))
}

/// `--precision fp32|bf16|auto` of the proxies (default: the search's default, auto).
fn precision() -> Result<Option<autosampler::precision::Precision>> {
    Ok(match arg("--precision") {
        Some(p) => Some(autosampler::precision::Precision::parse("--precision", &p)?),
        None => None,
    })
}

/// `--scale`'s shapes: (classes, dim, counts, validation images per class).
fn scale_shape(i: usize) -> (usize, i64, Vec<usize>, usize) {
    use autosampler::data::longtail::{exp_counts, pareto_counts};
    match i {
        0 => (10, 64, exp_counts(5000, 10, 100.0), 20),
        1 => (100, 64, exp_counts(500, 100, 100.0), 20),
        2 => (1000, 512, pareto_counts(1000, 6.0, 1280, 5), 20),
        3 => (1000, 2048, pareto_counts(1000, 6.0, 1280, 5), 20),
        _ => (8142, 2048, pareto_counts(8142, 6.0, 1000, 2), 3),
    }
}

/// One `--scale` shape in this process: one JSON line.
fn scale_one(i: usize) -> Result<()> {
    let (c, dim, counts, per_val) = scale_shape(i);
    let (train, val) = features_for(&counts, dim, per_val, i as i64);
    let n = train.x.size()[0];
    let w0 = Tensor::randn([c as i64, dim], (Kind::Float, Device::Cpu)) * 0.01;
    let b0 = Tensor::zeros([c as i64], (Kind::Float, Device::Cpu));
    let features_mb = (train.x.numel() + val.x.numel()) as f64 * 4.0 / 1e6;
    let cfg = SearchConfig {
        precision: precision()?,
        budget_s: arg("--budget-s").map(|s| s.parse()).transpose()?,
        ..SearchConfig::default()
    };
    let stage2 = Stage2Config::default().recipe();
    let t = Instant::now();
    let mut estimate = None;
    let (best, log) = search::run(&train, &val, (&w0, &b0), &stage2, &cfg, |e| {
        if let search::Event::Estimate(e) = e {
            eprintln!(
                "{c} classes x {dim}-d x {n}: {} proxy runs of {:.2}s, about {:.0}s",
                e.proxy_runs, e.run_s, e.total_s
            );
            estimate = Some(*e);
        }
    })?;
    let secs = t.elapsed().as_secs_f64();
    let e = estimate.expect("estimated");
    let rss = peak_rss_mb();
    println!(
        "{}",
        serde_json::json!({"bench": "search_scale", "classes": c, "dim": dim, "train_images": n,
            "val_images": val.y.size()[0], "search_s": (secs * 10.0).round() / 10.0,
            "estimate_s": (e.total_s * 10.0).round() / 10.0, "proxy_run_s": (e.run_s * 1000.0).round() / 1000.0,
            "proxy_runs": e.proxy_runs, "trajectories_run": log.len(), "budget_stop": best.budget_stop,
            "peak_rss_mb": rss.round(), "features_mb": features_mb.round(),
            "rss_over_features": (rss / features_mb * 100.0).round() / 100.0,
            "threads": tch::get_num_threads(), "precision": if cfg.bf16() { "bf16" } else { "fp32" },
            "settings": best.settings, "proxy_recipe": best.recipe})
    );
    Ok(())
}

fn main() -> Result<()> {
    autosampler::runtime::tune_allocator();
    if let Some(i) = arg("--scale-one") {
        tch::set_num_threads(arg("--threads").map(|s| s.parse()).transpose()?.unwrap_or(2));
        return scale_one(i.parse()?);
    }
    if std::env::args().any(|a| a == "--scale") {
        let shapes: Vec<usize> = match arg("--shapes") {
            Some(s) => s.split(',').map(|v| v.parse()).collect::<Result<_, _>>()?,
            None => (0..5).collect(),
        };
        let pass: Vec<String> = ["--threads", "--budget-s", "--precision"]
            .iter()
            .filter_map(|k| arg(k).map(|v| [k.to_string(), v]))
            .flatten()
            .collect();
        for i in shapes {
            let o = std::process::Command::new(std::env::current_exe()?)
                .args(["--scale-one", &i.to_string()])
                .args(&pass)
                .stderr(std::process::Stdio::inherit())
                .output()?;
            anyhow::ensure!(o.status.success(), "shape {i} failed");
            print!("{}", String::from_utf8_lossy(&o.stdout));
        }
        return Ok(());
    }
    // One intra-op thread: what `autosampler search` uses (the proxy's tensors are tiny). The
    // images proxy below uses `--images-threads` (default 2).
    let threads: i32 = arg("--threads").map(|s| s.parse()).transpose()?.unwrap_or(1);
    let images_threads: i32 = arg("--images-threads")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2);
    tch::set_num_threads(threads);
    let run = arg("--run").map(PathBuf::from);
    let d = SearchConfig::default();
    let f = Stage2Config::default();
    let bf16 = SearchConfig {
        precision: precision()?,
        ..d.clone()
    }
    .bf16();
    let mut out = serde_json::json!({"bench": "search_speed", "threads": threads, "trajectories": d.trajectories, "samples": d.samples,
        "precision": if bf16 { "bf16" } else { "fp32" },
        "default": {"proxy": "stage2", "epochs": f.epochs, "batch": f.batch_size, "reward_seeds": d.reward_seeds, "rescore_top": d.rescore_top, "rescore_seeds": d.rescore_seeds},
        "paper": {"proxy_epochs": 1, "batch": 128, "reward_seeds": 1}});

    // (a)
    let (train, val, counts, w0, b0, real) = match &run {
        Some(r) => {
            let train = features::load(&RunDir::new(r), Part::Train)
                .context("run `autosampler features` on the run first")?;
            let val = features::load(&RunDir::new(r), Part::Val)?;
            let st: std::collections::HashMap<String, Tensor> =
                Tensor::read_safetensors(RunDir::new(r).stage1().model())?
                    .into_iter()
                    .collect();
            let split = Split::load(&RunDir::new(r).split())?;
            (
                train,
                val,
                split.counts.train.clone(),
                st["fc.weight"].shallow_clone(),
                st["fc.bias"].shallow_clone(),
                true,
            )
        }
        None => {
            let (t, v, c) = random_features(5000, 10, 20, 0);
            let w0 = Tensor::randn([10, 64], (Kind::Float, Device::Cpu)) * 0.1;
            (
                t,
                v,
                c,
                w0,
                Tensor::zeros([10], (Kind::Float, Device::Cpu)),
                false,
            )
        }
    };
    let (a_s, a_paper) = time_search(&train, &val, &w0, &b0)?;
    out["a_features"] = format!(
        "{} x {} ({} classes, {})",
        train.x.size()[0],
        train.x.size()[1],
        counts.len(),
        if real { "real ResNet-32 features" } else { "random" }
    )
    .into();
    out["a_search_s"] = ((a_s * 100.0).round() / 100.0).into();
    out["a_paper_search_s"] = ((a_paper * 100.0).round() / 100.0).into();

    // (b)
    let (t100, v100, _) = random_features(500, 100, 20, 1);
    let w100 = Tensor::randn([100, 64], (Kind::Float, Device::Cpu)) * 0.1;
    let (b_s, b_paper) = time_search(
        &t100,
        &v100,
        &w100,
        &Tensor::zeros([100], (Kind::Float, Device::Cpu)),
    )?;
    out["b_features"] = format!("{} x 64 (100 classes, random)", t100.x.size()[0]).into();
    out["b_search_s"] = ((b_s * 100.0).round() / 100.0).into();
    out["b_paper_search_s"] = ((b_paper * 100.0).round() / 100.0).into();

    // one proxy run on images: frozen backbone forward for each batch + the validation set
    if let Some(r) = &run {
        tch::set_num_threads(images_threads);
        let split = Split::load(&RunDir::new(r).split())?;
        let ds = Dataset::open(split, &default_cache_root(), &|_| {})?;
        let mut model = Model::new(
            &ModelConfig {
                arch: Arch::Resnet32,
                head: Head::Linear,
                stem: Stem::Small,
                bilateral: false,
                init: None,
            },
            10,
            Device::Cpu,
        )?;
        model.load(&RunDir::new(r).stage1().model())?;
        let view = ds.view(Part::Train);
        let members = class_members(&view.labels);
        let mut rng = autosampler::rng::chacha(0, &[]);
        let plan = plan_with_replacement(&members, &[0.1; 10], view.len(), &mut rng);
        let lc = LoaderConfig {
            randaugment: None,
            autoaugment: None,
            cutout: None,
            batch_size: 128,
            threads: images_threads as usize,
            augment: Augment::cifar(),
            normalize: Normalize::CIFAR10,
            drop_last: false,
            seed: 0,
        };
        let t = Instant::now();
        let w = w0.tr().set_requires_grad(false);
        let mut w = w.copy();
        tch::no_grad(|| {
            for_each_batch(&view, &plan, &lc, 0, |b| {
                let f = model.forward_features(&b.images, false);
                let p = f.mm(&w).softmax(-1, Kind::Float);
                let g = (p - Tensor::eye(10, (Kind::Float, Device::Cpu)).index_select(0, &b.labels)) / 128.0;
                w -= f.tr().mm(&g) * 0.01;
                Ok(())
            })
        })?;
        let fv = features::extract(
            &model,
            &ds.view(Part::Val),
            &Normalize::CIFAR10,
            images_threads as usize,
            autosampler::train::stage1::Fast::PLAIN,
            &autosampler::distributed::Alone,
        )?;
        let _ = fv.x.mm(&w).argmax(-1, false);
        let img_s = t.elapsed().as_secs_f64();
        let per_feature_proxy = a_paper / 800.0;
        out["proxy_on_images_s"] = ((img_s * 100.0).round() / 100.0).into();
        out["proxy_on_features_s"] = ((per_feature_proxy * 10000.0).round() / 10000.0).into();
        out["images_over_features_ratio"] = (img_s / per_feature_proxy).round().into();
    }
    println!("{out}");
    Ok(())
}
