//! The command line's arguments (clap): commands, their flags, and the config they resolve to.
use anyhow::{bail, Context, Result};
use autosampler::config::Config;
use autosampler::data::{DataConfig, Format, Profile, Resize, SourceConfig, SplitConfig};
use autosampler::pipeline::RunDir;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "autosampler",
    version,
    about = "Coarse-to-fine auto-sampler for long-tailed image recognition"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Data: inspect a source's long-tailed split, or prepare it (split.json + packed cache).
    #[command(subcommand)]
    Data(DataCmd),
    /// Run every stage of a config into its run folder: data split, patch agent (with [agent]),
    /// stage 1 (with [model] and [train]), evaluation, features, class-weight search (with
    /// [search]), stage 2 (with [stage2]), report. A stage is reused when its manifest records
    /// the inputs it would read now, so the same command resumes a killed run.
    Run(RunArgs),
    /// Stage 1: train the network of the config's [model] with its [train] section.
    Train(TrainArgs),
    /// The fine auto-sampler's patch agent (GFNet + PPO): train it, locate salient patches.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Evaluate a finished stage 1 (last and best-on-val models, val and test) into eval.json;
    /// or, with --checkpoint, any weights with PyTorch's names for the config's [model].
    Eval(EvalArgs),
    /// Run the frozen stage-1 backbone over train, val and test once; store the features.
    Features(RunArgs),
    /// The coarse auto-sampler: PPO search of per-class sampling weights on the feature proxy.
    Search(RunArgs),
    /// Stage 2 ([stage2]): re-train the classifier on the cached features with the searched (or a
    /// sampler's) class weights; also class-balanced and square-root cRT, LWS, τ-normalisation and
    /// post-hoc logit adjustment. The run's model takes the one `[stage2] classifier` picks (by
    /// default the best on val). Writes stage2/. (`finetune` is the old name, still accepted.)
    #[command(alias = "finetune")]
    Stage2(RunArgs),
    /// Gather the eval.json of run folders into one table: runs whose configs differ only in
    /// their seeds form one row, with mean ± std over seeds (markdown; CSV with --csv).
    Table(TableArgs),
    /// Run a list of configs × seeds into <root>/<name>_s<seed> (finished runs are skipped), then
    /// print their table.
    Sweep(SweepArgs),
    /// Write report/index.html for a run folder (self-contained: images inlined).
    Report(ReportArgs),
    /// Classify image files (or folders of them) with a run's exported model (model.safetensors:
    /// backbone, chosen classifier, class names, input size, normalisation).
    Predict(PredictArgs),
}

#[derive(Args)]
pub(crate) struct PredictArgs {
    /// Image files (.jpg, .jpeg, .png) or folders searched for them.
    #[arg(required = true)]
    pub(crate) images: Vec<PathBuf>,
    /// The run folder whose model.safetensors to use.
    #[arg(long, conflicts_with = "model")]
    pub(crate) run: Option<PathBuf>,
    /// A model file written by `autosampler run` (instead of --run).
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// Classes per image.
    #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) topk: usize,
    /// Also write the predictions as CSV (file, rank, class, probability).
    #[arg(long)]
    pub(crate) csv: Option<PathBuf>,
    /// Also write the model's inputs and logits (safetensors: `input`, `logits`), to check the
    /// model elsewhere (PyTorch) on exactly these inputs.
    #[arg(long)]
    pub(crate) save_io: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// fp32, bf16 or auto (bf16 where the device has it natively). fp32 by default, so that the
    /// logits are PyTorch's for the exported weights; bf16 is faster on large folders.
    #[arg(long, default_value = "fp32")]
    pub(crate) precision: String,
}

#[derive(Args)]
pub(crate) struct SweepArgs {
    /// The configs.
    #[arg(required = true)]
    pub(crate) configs: Vec<PathBuf>,
    /// Comma-separated seeds (each sets the split, agent, training, search and stage-2 seeds).
    #[arg(long, default_value = "0")]
    pub(crate) seeds: String,
    /// Where the run folders go.
    #[arg(long, default_value = "runs/sweep")]
    pub(crate) root: PathBuf,
    /// Also write the table as CSV.
    #[arg(long)]
    pub(crate) csv: Option<PathBuf>,
    /// Override one value of every config (`section.key=value`, as `run --set`). Repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// The table's rows include each run's stage-2 classifiers (as `table --stage2-rows`).
    #[arg(long)]
    pub(crate) stage2_rows: bool,
    /// Write the row best on val as one JSON line to this file (as `table --best`).
    #[arg(long)]
    pub(crate) best: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct TableArgs {
    /// Run folders (each with config.toml and eval.json).
    #[arg(required = true)]
    pub(crate) runs: Vec<PathBuf>,
    /// Also write the table as CSV to this file.
    #[arg(long)]
    pub(crate) csv: Option<PathBuf>,
    /// Also write a comparison page (HTML, self-contained, linking each run's report).
    #[arg(long)]
    pub(crate) html: Option<PathBuf>,
    /// After each run's row, a row per stage-2 classifier on its backbone (cRT class-balanced /
    /// square-root, LWS, τ-normalised, logit-adjusted, and its own stage 2 with the searched or
    /// sampler weights), test top-1 in the first column: Table 1's decoupled rows.
    #[arg(long)]
    pub(crate) stage2_rows: bool,
    /// Pick the row with the highest mean val top-1 (with --stage2-rows, over every run ×
    /// stage-2 classifier: the best recipe chosen on validation) and write it, its test metrics
    /// and every candidate as one JSON line to this file.
    #[arg(long)]
    pub(crate) best: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// The run folder (default: the one the config names).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// The config, to find the run folder by its name (not needed with --out).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    #[command(flatten)]
    pub(crate) run: RunArgs,
    /// Evaluate these weights (safetensors with PyTorch's parameter names, e.g. from a PyTorch
    /// training of the same [model]) on the config's validation and test images, instead of the
    /// run's stage 1. Nothing is written.
    #[arg(long)]
    pub(crate) checkpoint: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    pub(crate) run: RunArgs,
    /// Continue a stopped or killed run from its last checkpoint.
    #[arg(long)]
    pub(crate) resume: bool,
}

#[derive(Subcommand)]
pub(crate) enum AgentCmd {
    /// Train the config's [agent] on its training split in GFNet's three stages (random patches;
    /// PPO on the policy; classifier fine-tuning) into <run>/agent; --resume continues a killed run.
    Train(TrainArgs),
    /// Locate every training image's salient patch with the trained (or `from`) agent into
    /// <run>/agent/locations.bin, and draw the figures (patches, random vs agent CutMix, triples).
    Locate(RunArgs),
}

#[derive(Subcommand)]
pub(crate) enum DataCmd {
    /// Print class counts, shot groups and a histogram (text; PNG with --png).
    Inspect(InspectArgs),
    /// Build the packed cache and write split.json, config.toml and the class histogram.
    Prepare(PrepareArgs),
    /// Check the packed cache's pixels against the SHA-256 recorded when it was built (labels
    /// and boxes are checked at every open; pixels only here, as they take a full read).
    Verify(SourceArgs),
}

#[derive(Args)]
pub(crate) struct SourceArgs {
    /// A TOML config; the flags below override it or stand in for its [data] section.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Source format: image-folder, cifar10-bin, cifar100-bin, tiny-imagenet, split-list.
    #[arg(long, value_parser = parse_format)]
    pub(crate) format: Option<Format>,
    /// Folder or .tar/.tar.gz archive of the source.
    #[arg(long)]
    pub(crate) root: Option<PathBuf>,
    /// Exponential long-tailed profile with this imbalance ratio.
    #[arg(long)]
    pub(crate) ir: Option<f64>,
    /// Images per class held out for validation.
    #[arg(long)]
    pub(crate) val_per_class: Option<usize>,
    /// Seed of every random draw: the long-tail subset and hold-out, and (where the config has
    /// them) the agent, stage 1, the search and stage 2.
    #[arg(long)]
    pub(crate) seed: Option<u32>,
    /// Side of the cached images.
    #[arg(long)]
    pub(crate) image_size: Option<u32>,
    /// exact, stretch or center-crop.
    #[arg(long, value_parser = parse_resize)]
    pub(crate) resize: Option<Resize>,
    /// Where packed caches live (default: $AUTOSAMPLER_CACHE or ~/.cache/autosampler/packed).
    #[arg(long)]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Override one config value: `--set train.lr=0.05`, `--set search.reward=top1`,
    /// `--set 'train.loss={kind="ldam"}'` (the value is TOML, or else a string). Repeatable;
    /// applied after the file and the flags above.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// Print the resolved config (base files merged, flags and --set applied, every default
    /// filled in) and exit without doing anything else.
    #[arg(long)]
    pub(crate) print_config: bool,
}

#[derive(Args)]
pub(crate) struct InspectArgs {
    #[command(flatten)]
    pub(crate) src: SourceArgs,
    /// Also draw the histogram into this PNG file.
    #[arg(long)]
    pub(crate) png: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct PrepareArgs {
    #[command(flatten)]
    pub(crate) src: SourceArgs,
    /// The run folder (default: runs/<name from the config, or the config's file name>).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) src: SourceArgs,
    /// Device for training and evaluation: cpu, cuda, cuda:N (overrides [train] and [agent] device).
    #[arg(long)]
    pub(crate) device: Option<String>,
    /// Epochs (overrides [train] epochs).
    #[arg(long)]
    pub(crate) epochs: Option<usize>,
    /// The run folder (default: runs/<name from the config, or the config's file name>).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

pub(crate) fn parse_format(s: &str) -> Result<Format, String> {
    serde_plain(s).map_err(|_| {
        format!("format '{s}' is unrecognized: expected image-folder, cifar10-bin, cifar100-bin, tiny-imagenet or split-list")
    })
}
pub(crate) fn parse_resize(s: &str) -> Result<Resize, String> {
    serde_plain(s)
        .map_err(|_| format!("resize '{s}' is unrecognized: expected exact, stretch or center-crop"))
}
pub(crate) fn serde_plain<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
}

impl SourceArgs {
    /// The config: from the file if given, with flags applied on top.
    pub(crate) fn config(&self) -> Result<Config> {
        let mut cfg = match &self.config {
            // the model files are checked by with_overrides below, once --set is applied
            Some(p) => Config::load_unchecked(p)?,
            None => {
                let (Some(format), Some(root)) = (self.format, &self.root) else {
                    bail!("give --config FILE, or --format and --root");
                };
                Config {
                    name: None,
                    data: DataConfig {
                        source: SourceConfig::new(format, root),
                        split: SplitConfig::default(),
                    },
                    cache_dir: None,
                    model: None,
                    agent: None,
                    train: None,
                    search: None,
                    stage2: None,
                }
            }
        };
        if let Some(s) = self.seed {
            cfg = cfg.with_seed(s);
        }
        let d = &mut cfg.data;
        if self.config.is_some() {
            if let Some(f) = self.format {
                d.source.format = f;
            }
            if let Some(r) = &self.root {
                d.source.root = r.clone();
            }
        }
        if let Some(ir) = self.ir {
            d.split.longtail = Profile::Exp {
                imbalance_ratio: ir,
                n_max: None,
            };
        }
        if let Some(k) = self.val_per_class {
            d.split.val_per_class = k;
        }
        if let Some(s) = self.image_size {
            d.source.image_size = Some(s);
        }
        if let Some(r) = self.resize {
            d.source.resize = r;
        }
        if let Some(c) = &self.cache_dir {
            cfg.cache_dir = Some(c.clone());
        }
        let file = self
            .config
            .as_ref()
            .map_or_else(|| "the command line".to_string(), |p| p.display().to_string());
        Ok(cfg.with_overrides(&self.set, &file)?)
    }

    /// The config as resolved: with --print-config, printed, and the process ends here.
    pub(crate) fn resolved(&self, cfg: Config) -> Config {
        if self.print_config {
            print!("{}", cfg.to_toml());
            std::process::exit(0);
        }
        cfg
    }

    /// The run folder: `out`, or runs/<the config's name or file name>. Refused when the config
    /// file is that folder's own `config.toml` and differs from the resolved config the run
    /// writes there: the run would replace the user's file (its comments, its `base =` chain).
    pub(crate) fn run_dir(&self, out: Option<&PathBuf>, cfg: &Config) -> anyhow::Result<RunDir> {
        let run = match out {
            Some(o) => RunDir::new(o),
            None => {
                let name = cfg.name.clone().or_else(|| {
                    self.config
                        .as_ref()
                        .and_then(|p| p.file_stem())
                        .map(|s| s.to_string_lossy().into_owned())
                });
                RunDir::new(Path::new("runs").join(name.unwrap_or_else(|| "default".into())))
            }
        };
        if run.root().exists() && !run.root().is_dir() {
            anyhow::bail!(
                "--out {}: a file, not a folder (the run folder is created there)",
                run.root().display()
            );
        }
        if let Some(c) = &self.config {
            let own = run.config_toml();
            let same = matches!(
                (std::fs::canonicalize(c), std::fs::canonicalize(&own)),
                (Ok(a), Ok(b)) if a == b
            );
            if same && std::fs::read_to_string(c).ok() != Some(cfg.to_run_toml()) {
                anyhow::bail!(
                    "--config {} is the run folder's own config.toml, which a run rewrites with the resolved config (bases merged, every default filled in): your file would be replaced. Keep your config outside the run folder, or give another --out",
                    c.display()
                );
            }
        }
        Ok(run)
    }
}

impl RunArgs {
    /// The config with every command-line override applied (what config.toml records), checked
    /// again after the overrides.
    pub(crate) fn config(&self) -> Result<Config> {
        let mut cfg = self.src.config()?;
        if let (Some(a), Some(d)) = (&mut cfg.agent, &self.device) {
            a.device = d.clone();
        }
        if let Some(t) = &mut cfg.train {
            if let Some(d) = &self.device {
                t.device = d.clone();
            }
            if let Some(e) = self.epochs {
                t.epochs = e;
            }
        }
        cfg.check().context("the command-line overrides")?;
        Ok(self.src.resolved(cfg))
    }
}
