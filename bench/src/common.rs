//! What the benchmark binaries share.

/// This process's peak resident memory (VmHWM), in MB.
#[allow(dead_code)]
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// The value after `--name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

use anyhow::{Context, Result};
use autosampler::config::Config;
use autosampler::data::{Part, Split};
use autosampler::features;
use autosampler::search::SearchConfig;
use autosampler::train::stage2::Stage2Config;
use std::path::Path;
use tch::Tensor;

/// A finished run's cached features, stage-1 classifier, class counts and search/stage-2 configs.
#[allow(dead_code)]
pub struct Run {
    pub train: features::Features,
    pub val: features::Features,
    pub test: features::Features,
    pub w0: Tensor,
    pub b0: Tensor,
    pub counts: Vec<usize>,
    pub search: SearchConfig,
    pub stage2: Stage2Config,
    pub from_config: bool,
}

/// Opens a finished run (stage 1 and features done).
#[allow(dead_code)]
pub fn open_run(run: &Path) -> Result<Run> {
    let st: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(autosampler::rundir::RunDir::new(run).stage1().model())
            .with_context(|| format!("{}: no stage-1 model", run.display()))?
            .into_iter()
            .collect();
    let cfg = Config::load(&autosampler::rundir::RunDir::new(run).config_toml())?;
    Ok(Run {
        train: features::load(&autosampler::rundir::RunDir::new(run), Part::Train)
            .with_context(|| format!("{}: run `autosampler features` first", run.display()))?,
        val: features::load(&autosampler::rundir::RunDir::new(run), Part::Val)?,
        test: features::load(&autosampler::rundir::RunDir::new(run), Part::Test)?,
        w0: st["fc.weight"].shallow_clone(),
        b0: st["fc.bias"].shallow_clone(),
        counts: Split::load(&autosampler::rundir::RunDir::new(run).split())?
            .counts
            .train,
        from_config: cfg.search.is_some(),
        search: cfg.search.unwrap_or_default(),
        stage2: cfg.stage2.unwrap_or_default(),
    })
}
