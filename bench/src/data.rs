//! `bench-data`: the data layer's speed, one JSON line.
//!
//! - loader: CIFAR-10-LT (IR 100, val 20/class) training batches of 128 from the packed cache,
//!   pad-4 crop + flip + normalisation, `--threads` workers (default 2), instance-balanced plan,
//!   `--epochs` epochs; images/s.
//! - loader with RandAugment: the same, with `randaugment = { ops = 2, magnitude = 9 }` applied to
//!   each image before the crop (the RandAugment recipe's stage-1 loader); images/s.
//! - cache open: time to open the CIFAR-10 cache (meta, labels, mmap), median of 5.
//! - cold decode: Tiny-ImageNet-200 (110,000 JPEGs) decoded into a fresh cache; images/s, with the
//!   archive read (gunzip into memory) timed apart.
//!
//! - `--large DIR` (an image folder of large JPEGs: `bench/loader_224.py` makes one and runs the
//!   comparison): only the 224 px loader — the folder packed at 224 px (shorter side, centre crop;
//!   the build timed apart), then random-resized-crop 224 + flip + ImageNet normalisation in
//!   batches of `--batch` (64) with `--threads` workers, `--epochs` epochs; images/s.
//!
//!   cargo run --release -p autosampler-bench --bin bench-data -- [--cifar PATH] [--tiny PATH] [--large DIR]
use anyhow::{Context, Result};
use autosampler::data::augment::{Augment, Normalize};
use autosampler::data::cache::Cache;
use autosampler::data::loader::{for_each_batch, LoaderConfig};
use autosampler::data::randaugment::RandAugment;
use autosampler::data::Catalog;
use autosampler::data::{DataConfig, Dataset, Format, Part, Profile, SourceConfig, SplitConfig};
use autosampler::sampler::Sampler;
use std::path::PathBuf;
use std::time::Instant;

mod common;
use common::arg;

fn main() -> Result<()> {
    autosampler::runtime::tune_allocator();
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let cifar = arg("--cifar")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared.join("cifar10-jpeg.tar.gz"));
    let tiny = arg("--tiny")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared.join("tiny-imagenet-200.tar.gz"));
    let threads: usize = arg("--threads").map(|s| s.parse()).transpose()?.unwrap_or(2);
    let epochs: usize = arg("--epochs").map(|s| s.parse()).transpose()?.unwrap_or(5);
    let skip_tiny = std::env::args().any(|a| a == "--no-tiny");
    let scratch = tempfile::tempdir()?;
    tch::set_num_threads(1);
    if let Some(dir) = arg("--large") {
        return large(&PathBuf::from(dir), scratch.path(), threads, epochs);
    }

    // CIFAR-10-LT from a fresh cache
    let cfg = DataConfig {
        source: SourceConfig::new(Format::ImageFolder, &cifar),
        split: SplitConfig {
            longtail: Profile::Exp {
                imbalance_ratio: 100.0,
                n_max: None,
            },
            val_per_class: 20,
            seed: 0,
        },
    };
    let t = Instant::now();
    let ds = Dataset::prepare(&cfg, scratch.path(), &|_| {})
        .with_context(|| format!("preparing {}", cifar.display()))?;
    let cifar_build_s = t.elapsed().as_secs_f64();
    let mut opens = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let c = Cache::open(&ds.cache.dir)?;
        opens.push(t.elapsed().as_secs_f64());
        drop(c);
    }
    opens.sort_by(f64::total_cmp);

    let view = ds.view(Part::Train);
    let load = |randaugment: Option<RandAugment>| {
        let lc = LoaderConfig {
            randaugment,
            autoaugment: None,
            cutout: None,
            batch_size: 128,
            threads,
            augment: Augment::cifar(),
            normalize: Normalize::CIFAR10,
            drop_last: false,
            seed: 0,
        };
        time_loader(&view, &lc, epochs)
    };
    let (images, loader_s, checksum) = load(None)?;
    let (ra_images, ra_s, _) = load(Some(RandAugment::default()))?;

    let mut out = serde_json::json!({
        "bench": "data",
        "threads": threads,
        "batch": 128,
        "loader_images": images,
        "loader_img_per_s": (images as f64 / loader_s).round(),
        "loader_randaugment_img_per_s": (ra_images as f64 / ra_s).round(),
        "cifar10_cache_build_s": (cifar_build_s * 100.0).round() / 100.0,
        "cifar10_cache_open_s": opens[2],
        "checksum": checksum,
    });
    if !skip_tiny {
        let t = Instant::now();
        let cat = Catalog::scan(&SourceConfig::new(Format::TinyImagenet, &tiny))
            .with_context(|| format!("scanning {}", tiny.display()))?;
        let scan_s = t.elapsed().as_secs_f64();
        let n: usize = cat.pools.iter().map(|(_, v)| v.len()).sum();
        let t = Instant::now();
        Cache::open_or_build(&cat, &scratch.path().join("tiny"), &|_| {})?;
        let decode_s = t.elapsed().as_secs_f64();
        out["tiny_images"] = n.into();
        out["tiny_archive_read_s"] = ((scan_s * 100.0).round() / 100.0).into();
        out["tiny_cold_decode_s"] = ((decode_s * 100.0).round() / 100.0).into();
        out["tiny_cold_decode_img_per_s"] = (n as f64 / decode_s).round().into();
    }
    println!("{out}");
    Ok(())
}

/// Images, seconds and a checksum of `epochs` epochs of training batches (instance-balanced plans).
fn time_loader(
    view: &autosampler::data::View,
    lc: &LoaderConfig,
    epochs: usize,
) -> Result<(usize, f64, f64)> {
    let (mut images, mut checksum) = (0usize, 0f64);
    let t = Instant::now();
    for epoch in 0..epochs {
        let mut rng = autosampler::rng::chacha(0, &[epoch as u64]);
        let plan = Sampler::Instance.plan(&view.labels, epoch, epochs, false, &mut rng)?;
        for_each_batch(view, &plan, lc, epoch, |b| {
            images += b.index.len();
            checksum += b.images.double_value(&[0, 0, 0, 0]);
            Ok(())
        })?;
    }
    Ok((images, t.elapsed().as_secs_f64(), checksum))
}

/// `--large`: the 224 px loader on an image folder of large JPEGs.
fn large(dir: &std::path::Path, scratch: &std::path::Path, threads: usize, epochs: usize) -> Result<()> {
    let batch: usize = arg("--batch").map(|s| s.parse()).transpose()?.unwrap_or(64);
    let mut source = SourceConfig::new(Format::ImageFolder, dir);
    source.image_size = Some(224);
    source.resize = autosampler::data::source::Resize::CenterCrop;
    let cfg = DataConfig {
        source,
        split: SplitConfig {
            longtail: Profile::None,
            val_per_class: 0,
            seed: 0,
        },
    };
    let t = Instant::now();
    let ds =
        Dataset::prepare(&cfg, scratch, &|_| {}).with_context(|| format!("preparing {}", dir.display()))?;
    let build_s = t.elapsed().as_secs_f64();
    let view = ds.view(Part::Train);
    let lc = LoaderConfig {
        randaugment: None,
        autoaugment: None,
        cutout: None,
        batch_size: batch,
        threads,
        augment: Augment::resized_crop(224),
        normalize: Normalize::IMAGENET,
        drop_last: false,
        seed: 0,
    };
    let (images, secs, checksum) = time_loader(&view, &lc, epochs)?;
    println!(
        "{}",
        serde_json::json!({"bench": "data_224", "threads": threads, "batch": batch, "epochs": epochs,
            "images": images, "loader_img_per_s": (images as f64 / secs).round(),
            "cache_build_s": (build_s * 100.0).round() / 100.0,
            "cache_build_img_per_s": (view.len() as f64 / build_s).round(), "checksum": checksum})
    );
    Ok(())
}
