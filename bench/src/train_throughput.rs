//! `bench-train-throughput`: training and inference images/s of ResNet-32 on random data, the
//! same measurement as `torch_reference.py bench` (batch 128, SGD 0.9 / wd 2e-4, 3 warm-up steps,
//! `--steps` timed steps; inference on batches of 256), plus peak RSS. One JSON line.
//!
//! With no flags it runs what a user gets: the library's defaults (`[train] precision = "auto"`,
//! channels-last). `--precision fp32|bf16|auto` and `--channels-last true|false` override them
//! (`--bf16` and a bare `--channels-last` are the older spellings of `bf16` and `true`).
//!
//! `--arch resnet18|resnet50 --image-size 224 --classes 1000` times an ImageNet network at its
//! size (the ImageNet stem from 128 px; `--infer-batch`, default 256, sets inference's batch);
//! `bench/train_throughput_224.py` runs it beside torchvision's.
//!
//!   bench-train-throughput [--threads 2] [--steps 20] [--batch 128] [--device cpu|cuda]
//!                          [--precision auto] [--channels-last true]
//!                          [--arch resnet32] [--image-size 32] [--classes 10] [--infer-batch 256]
use anyhow::Result;
use autosampler::model::{Arch, Head, Model, ModelConfig, Stem};
use autosampler::optim::Sgd;
use autosampler::precision::{autocast, Precision};
use autosampler::train::stage1::{channels_last, parse_device};
use std::time::Instant;
use tch::{Kind, Reduction, Tensor};

mod common;
use common::{arg, peak_rss_mb};

fn main() -> Result<()> {
    autosampler::runtime::tune_allocator();
    let threads: i32 = arg("--threads").map(|s| s.parse()).transpose()?.unwrap_or(2);
    let steps: usize = arg("--steps").map(|s| s.parse()).transpose()?.unwrap_or(20);
    let batch: i64 = arg("--batch").map(|s| s.parse()).transpose()?.unwrap_or(128);
    let device = parse_device(&arg("--device").unwrap_or_else(|| "cpu".into()))?;
    let defaults = autosampler::train::stage1::TrainConfig::default();
    let precision = match arg("--precision") {
        Some(p) => Precision::parse("--precision", &p)?,
        None if std::env::args().any(|a| a == "--bf16") => Precision::Bf16,
        None => defaults.precision(),
    };
    let cl = match arg("--channels-last").as_deref() {
        Some("true") => true,
        Some("false") => false,
        Some(other) if !other.starts_with("--") => {
            anyhow::bail!("--channels-last takes true or false, got {other:?}")
        }
        _ if std::env::args().any(|a| a == "--channels-last") => true,
        _ => defaults.channels_last(),
    };
    let bf16 = precision.bf16_on(device);
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    let size: i64 = arg("--image-size").map(|s| s.parse()).transpose()?.unwrap_or(32);
    let classes: i64 = arg("--classes").map(|s| s.parse()).transpose()?.unwrap_or(10);
    let infer_batch: i64 = arg("--infer-batch")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(256);
    let arch_name = arg("--arch").unwrap_or_else(|| "resnet32".into());
    let arch: Arch = serde_json::from_value(serde_json::Value::String(arch_name.clone()))
        .map_err(|_| anyhow::anyhow!("--arch {arch_name:?}: not an architecture of [model] arch"))?;
    let cfg = ModelConfig {
        arch,
        head: Head::Linear,
        stem: if size >= 128 { Stem::Imagenet } else { Stem::Small },
        bilateral: false,
        init: None,
    };
    let model = Model::new(&cfg, classes, device)?;
    if cl {
        tch::no_grad(|| {
            for (_, mut v) in model.vs.variables() {
                if v.dim() == 4 {
                    v.set_data(&channels_last(&v));
                }
            }
        });
    }
    let params: Vec<(String, Tensor)> = model
        .vs
        .trainable_variables()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (i.to_string(), t))
        .collect();
    let mut opt = Sgd::new(params, 0.9, false, 2e-4);
    let prep = |x: Tensor| if cl { channels_last(&x) } else { x };
    let x = prep(Tensor::randn([batch, 3, size, size], (Kind::Float, device)));
    let y = Tensor::randint(classes, [batch], (Kind::Int64, device));
    let sync = || {
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
    };
    let prof = std::env::var("PROF").is_ok();
    let (mut tf, mut tb, mut to) = (0f64, 0f64, 0f64);
    let mut step = || {
        let t0 = Instant::now();
        let logits = if bf16 {
            autocast(true, device, || model.forward(&x, true)).to_kind(Kind::Float)
        } else {
            model.forward(&x, true)
        };
        let l = logits.cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0);
        let t1 = Instant::now();
        let t2 = Instant::now();
        opt.backward_step(&l, 0.1);
        if prof {
            tf += (t1 - t0).as_secs_f64();
            tb += (t2 - t1).as_secs_f64();
            to += t2.elapsed().as_secs_f64(); // backward and update together
        }
    };
    for _ in 0..3 {
        step();
    }
    sync();
    let t = Instant::now();
    for _ in 0..steps {
        step();
    }
    sync();
    let train_ips = (steps as i64 * batch) as f64 / t.elapsed().as_secs_f64();
    if prof {
        eprintln!("forward {tf:.3}s, backward + update {to:.3}s ({tb:.3}s between)");
    }
    let xi = prep(Tensor::randn([infer_batch, 3, size, size], (Kind::Float, device)));
    let infer_ips = tch::no_grad(|| {
        let fwd = || {
            if bf16 {
                autocast(true, device, || model.forward(&xi, false))
            } else {
                model.forward(&xi, false)
            }
        };
        let _ = fwd();
        sync();
        let t = Instant::now();
        for _ in 0..steps {
            let _ = fwd();
        }
        sync();
        (steps as i64 * infer_batch) as f64 / t.elapsed().as_secs_f64()
    });
    println!(
        "{}",
        serde_json::json!({
            "bench": "train_throughput",
            "impl": "autosampler",
            "arch": arch_name,
            "image_size": size,
            "classes": classes,
            "device": format!("{device:?}"),
            "threads": threads,
            "batch": batch,
            "channels_last": cl,
            "bf16": bf16,
            "precision": if bf16 { "bf16" } else { "fp32" },
            "precision_asked": precision.name(),
            "train_img_per_s": (train_ips * 10.0).round() / 10.0,
            "infer_img_per_s": (infer_ips * 10.0).round() / 10.0,
            "peak_rss_mb": peak_rss_mb().round(),
        })
    );
    Ok(())
}
