//! The `autosampler` command-line program: argument parsing, progress display, and calls into
//! the library's pipeline (`autosampler::pipeline`), whose typed results it prints.
use anyhow::{bail, Context, Result};
use autosampler::config::Config;
use autosampler::data::{DataConfig, Format, Part, Profile, Resize, SourceConfig, SplitConfig};
use autosampler::pipeline::{self, table, text, Observer, RunDir};
use autosampler::report::plot;
use autosampler::train::stage1::{EpochLog, Progress};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "autosampler",
    version,
    about = "Coarse-to-fine auto-sampler for long-tailed image recognition"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
    /// sampler's) class weights; also τ-normalisation and post-hoc logit adjustment. Writes
    /// stage2/. (`finetune` is the old name, still accepted.)
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
struct PredictArgs {
    /// Image files (.jpg, .jpeg, .png) or folders searched for them.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// The run folder whose model.safetensors to use.
    #[arg(long, conflicts_with = "model")]
    run: Option<PathBuf>,
    /// A model file written by `autosampler run` (instead of --run).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Classes per image.
    #[arg(long, default_value_t = 5)]
    topk: usize,
    /// Also write the predictions as CSV (file, rank, class, probability).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Also write the model's inputs and logits (safetensors: `input`, `logits`), to check the
    /// model elsewhere (PyTorch) on exactly these inputs.
    #[arg(long)]
    save_io: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct SweepArgs {
    /// The configs.
    #[arg(required = true)]
    configs: Vec<PathBuf>,
    /// Comma-separated seeds (each sets the split, agent, training, search and stage-2 seeds).
    #[arg(long, default_value = "0")]
    seeds: String,
    /// Where the run folders go.
    #[arg(long, default_value = "runs/sweep")]
    root: PathBuf,
    /// Also write the table as CSV.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Override one value of every config (`section.key=value`, as `run --set`). Repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct TableArgs {
    /// Run folders (each with config.toml and eval.json).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Also write the table as CSV to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Also write a comparison page (HTML, self-contained, linking each run's report).
    #[arg(long)]
    html: Option<PathBuf>,
}

#[derive(Args)]
struct ReportArgs {
    /// The run folder (default: the one the config names).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The config, to find the run folder by its name (not needed with --out).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Evaluate these weights (safetensors with PyTorch's parameter names, e.g. from a PyTorch
    /// training of the same [model]) on the config's validation and test images, instead of the
    /// run's stage 1. Nothing is written.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Continue a stopped or killed run from its last checkpoint.
    #[arg(long)]
    resume: bool,
}

#[derive(Subcommand)]
enum AgentCmd {
    /// Train the config's [agent] on its training split in GFNet's three stages (random patches;
    /// PPO on the policy; classifier fine-tuning) into <run>/agent; --resume continues a killed run.
    Train(TrainArgs),
    /// Locate every training image's salient patch with the trained (or `from`) agent into
    /// <run>/agent/locations.bin, and draw the figures (patches, random vs agent CutMix, triples).
    Locate(RunArgs),
}

#[derive(Subcommand)]
enum DataCmd {
    /// Print class counts, shot groups and a histogram (text; PNG with --png).
    Inspect(InspectArgs),
    /// Build the packed cache and write split.json, config.toml and the class histogram.
    Prepare(PrepareArgs),
    /// Check the packed cache's pixels against the SHA-256 recorded when it was built (labels
    /// and boxes are checked at every open; pixels only here, as they take a full read).
    Verify(SourceArgs),
}

#[derive(Args)]
struct SourceArgs {
    /// A TOML config; the flags below override it or stand in for its [data] section.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Source format: image-folder, cifar10-bin, cifar100-bin, tiny-imagenet, split-list.
    #[arg(long, value_parser = parse_format)]
    format: Option<Format>,
    /// Folder or .tar/.tar.gz archive of the source.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Exponential long-tailed profile with this imbalance ratio.
    #[arg(long)]
    ir: Option<f64>,
    /// Images per class held out for validation.
    #[arg(long)]
    val_per_class: Option<usize>,
    /// Seed of every random draw: the long-tail subset and hold-out, and (where the config has
    /// them) the agent, stage 1, the search and stage 2.
    #[arg(long)]
    seed: Option<u32>,
    /// Side of the cached images.
    #[arg(long)]
    image_size: Option<u32>,
    /// exact, stretch or center-crop.
    #[arg(long, value_parser = parse_resize)]
    resize: Option<Resize>,
    /// Where packed caches live (default: $AUTOSAMPLER_CACHE or ~/.cache/autosampler/packed).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Override one config value: `--set train.lr=0.05`, `--set search.reward=top1`,
    /// `--set 'train.loss={kind="ldam"}'` (the value is TOML, or else a string). Repeatable;
    /// applied after the file and the flags above.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Print the resolved config (base files merged, flags and --set applied, every default
    /// filled in) and exit without doing anything else.
    #[arg(long)]
    print_config: bool,
}

#[derive(Args)]
struct InspectArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// Also draw the histogram into this PNG file.
    #[arg(long)]
    png: Option<PathBuf>,
}

#[derive(Args)]
struct PrepareArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// The run folder (default: runs/<name from the config, or the config's file name>).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// Device for training and evaluation: cpu, cuda, cuda:N (overrides [train] and [agent] device).
    #[arg(long)]
    device: Option<String>,
    /// Epochs (overrides [train] epochs).
    #[arg(long)]
    epochs: Option<usize>,
    /// The run folder (default: runs/<name from the config, or the config's file name>).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_format(s: &str) -> Result<Format, String> {
    serde_plain(s).map_err(|_| {
        format!("format '{s}' is unrecognized: expected image-folder, cifar10-bin, cifar100-bin, tiny-imagenet or split-list")
    })
}
fn parse_resize(s: &str) -> Result<Resize, String> {
    serde_plain(s)
        .map_err(|_| format!("resize '{s}' is unrecognized: expected exact, stretch or center-crop"))
}
fn serde_plain<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
}

impl SourceArgs {
    /// The config: from the file if given, with flags applied on top.
    fn config(&self) -> Result<Config> {
        let mut cfg = match &self.config {
            Some(p) => Config::load(p)?,
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
    fn resolved(&self, cfg: Config) -> Config {
        if self.print_config {
            print!("{}", cfg.to_toml());
            std::process::exit(0);
        }
        cfg
    }

    /// The run folder: `out`, or runs/<the config's name or file name>.
    fn run_dir(&self, out: Option<&PathBuf>, cfg: &Config) -> RunDir {
        if let Some(o) = out {
            return RunDir::new(o);
        }
        let name = cfg.name.clone().or_else(|| {
            self.config
                .as_ref()
                .and_then(|p| p.file_stem())
                .map(|s| s.to_string_lossy().into_owned())
        });
        RunDir::new(Path::new("runs").join(name.unwrap_or_else(|| "default".into())))
    }
}

impl RunArgs {
    /// The config with every command-line override applied (what config.toml records), checked
    /// again after the overrides.
    fn config(&self) -> Result<Config> {
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

fn main() {
    autosampler::runtime::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Data(DataCmd::Inspect(a)) => inspect(&a),
        Cmd::Data(DataCmd::Prepare(a)) => prepare_cmd(&a),
        Cmd::Data(DataCmd::Verify(a)) => verify_cmd(&a),
        Cmd::Run(a) => run_cmd(&a),
        Cmd::Train(a) => train_cmd(&a.run, a.resume).map(|_| ()),
        Cmd::Agent(AgentCmd::Train(a)) => agent_cmd(&a.run, a.resume, false),
        Cmd::Agent(AgentCmd::Locate(a)) => agent_cmd(&a, true, true),
        Cmd::Eval(a) => eval_cmd(&a),
        Cmd::Features(a) => features_cmd(&a),
        Cmd::Search(a) => search_cmd(&a),
        Cmd::Stage2(a) => stage2_cmd(&a),
        Cmd::Table(a) => table_cmd(&a),
        Cmd::Sweep(a) => sweep_cmd(&a),
        Cmd::Report(a) => report_cmd(&a),
        Cmd::Predict(a) => predict_cmd(&a),
    };
    if let Err(e) = result {
        eprintln!("error: {}", error_text(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, each said once: a cause whose text its parent already quotes (an
/// I/O error on a path says its OS error itself) is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

/// The progress display: one bar, reused by every task and training epoch; lines above it.
struct Bars {
    bar: ProgressBar,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            bar: ProgressBar::hidden(),
        }
    }

    fn style(&self, template: &str) {
        self.bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
    }

    /// A line above the bar (on stderr when the bar is hidden, e.g. not a terminal).
    fn line(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Starts the bar afresh (visible on a terminal).
    fn start(&self, len: u64, msg: String) {
        self.bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.bar.reset();
        self.bar.set_length(len);
        self.bar.set_prefix("");
        self.bar.set_message(msg);
    }
}

impl Progress for Bars {
    fn epoch_start(&self, epoch: usize, epochs: usize, batches: usize) {
        self.style("{msg:>13} [{bar:30}] {pos}/{len} {prefix} {per_sec} ETA {eta}");
        self.start(batches as u64, format!("epoch {}/{epochs}", epoch + 1));
    }
    fn batch(&self, loss: f64) {
        self.bar.set_prefix(format!("loss {loss:.3}"));
        self.bar.inc(1);
    }
    fn epoch_end(&self, l: &EpochLog) {
        self.line(&text::epoch_line(l));
    }
}

impl Observer for Bars {
    fn note(&self, line: &str) {
        self.line(line);
    }
    fn task(&self, what: &'static str, total: u64) {
        self.style("{msg:>10} [{bar:36}] {human_pos}/{human_len} {prefix} {per_sec} ETA {eta}");
        self.start(total, what.to_string());
    }
    fn advance(&self, n: u64, info: &str) {
        if !info.is_empty() {
            self.bar.set_prefix(info.to_string());
        }
        self.bar.inc(n);
    }
    fn task_done(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn inspect(a: &InspectArgs) -> Result<()> {
    let cfg = a.src.resolved(a.src.config()?);
    let ds = pipeline::open_data(&cfg, &Bars::new())?;
    print!("{}", text::data_summary(&ds));
    if let Some(p) = &a.png {
        let s = &ds.split;
        plot::class_histogram(p, &text::title(s), &s.classes, &s.counts.train, &s.counts.val)?;
        println!("\nhistogram: {}", p.display());
    }
    Ok(())
}

fn verify_cmd(a: &SourceArgs) -> Result<()> {
    let cfg = a.resolved(a.config()?);
    let ds = pipeline::open_data(&cfg, &Bars::new())?;
    let t = Instant::now();
    let n = ds.cache.verify()?;
    println!(
        "cache {}: {n} images; pixels, labels and boxes match their recorded SHA-256 ({:.1}s)",
        ds.cache.dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The data stage, with its summary printed.
fn prepared(cfg: &Config, run: &RunDir, bars: &Bars) -> Result<autosampler::data::Dataset> {
    let ds = pipeline::prepare(cfg, run, bars)?;
    print!("{}", text::data_summary(&ds));
    println!(
        "\nsplit:     {}\nhistogram: {}",
        run.split().display(),
        run.class_histogram().display()
    );
    Ok(ds)
}

fn prepare_cmd(a: &PrepareArgs) -> Result<()> {
    let cfg = a.src.resolved(a.src.config()?);
    prepared(&cfg, &a.src.run_dir(a.out.as_ref(), &cfg), &Bars::new())?;
    Ok(())
}

/// `run`: every stage, then the results and the one-screen summary.
fn run_cmd(a: &RunArgs) -> Result<()> {
    let cfg = a.config()?;
    let run = a.src.run_dir(a.out.as_ref(), &cfg);
    run_config(&cfg, &run)
}

fn run_config(cfg: &Config, run: &RunDir) -> Result<()> {
    let t = Instant::now();
    let bars = Bars::new();
    let ds = prepared(cfg, run, &bars)?;
    if pipeline::training_config(cfg).is_err() {
        let train = ds.view(Part::Train);
        println!(
            "\nrun folder {} ready in {:.1}s ({} training images of {} px; no [model]/[train]: data stage only)",
            run.root().display(),
            t.elapsed().as_secs_f64(),
            train.len(),
            train.size
        );
        return Ok(());
    }
    pipeline::agent(cfg, run, &ds, true, &bars)?;
    pipeline::stage1(cfg, run, &ds, true, &bars)?;
    print!("{}", text::eval_table(&pipeline::evaluate(cfg, run, &ds)?));
    if let Some(sc) = &cfg.search {
        let best = pipeline::search(cfg, run, &ds, &bars)?;
        print!("{}", text::search_table(&best, sc, &ds.split.classes, run));
    }
    if cfg.stage2.is_some() {
        print!("{}", text::stage2_table(&pipeline::stage2(cfg, run, &ds, &bars)?));
    }
    let model = pipeline::export(cfg, run, &ds)?;
    let report = autosampler::report::html::write(run)?;
    print!("{}", text::run_summary(run, &ds));
    println!(
        "model    {} (backbone + chosen classifier + card; `autosampler predict --run {}`)",
        model.display(),
        run.root().display()
    );
    println!("report   {}", report.display());
    println!(
        "run folder {} done in {:.1}s",
        run.root().display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The data stage, the agent (when configured) and stage 1: what every later command needs.
fn train_cmd(a: &RunArgs, resume: bool) -> Result<(RunDir, autosampler::data::Dataset, Config)> {
    let cfg = a.config()?;
    pipeline::training_config(&cfg)?;
    let run = a.src.run_dir(a.out.as_ref(), &cfg);
    let bars = Bars::new();
    let ds = prepared(&cfg, &run, &bars)?;
    pipeline::agent(&cfg, &run, &ds, true, &bars)?;
    pipeline::stage1(&cfg, &run, &ds, resume, &bars)?;
    Ok((run, ds, cfg))
}

/// `autosampler agent train|locate`: the data stage, then the agent stage.
fn agent_cmd(a: &RunArgs, resume: bool, locate: bool) -> Result<()> {
    let cfg = a.config()?;
    let Some(ac) = &cfg.agent else {
        bail!("the config has no [agent] section");
    };
    let run = a.src.run_dir(a.out.as_ref(), &cfg);
    let finished = pipeline::read_agent_state(&run).is_some_and(|s| s.done);
    if locate && ac.from.is_none() && !finished {
        bail!(
            "{} has no trained agent: run `autosampler agent train` first (or set agent.from)",
            run.root().display()
        );
    }
    let bars = Bars::new();
    let ds = prepared(&cfg, &run, &bars)?;
    pipeline::agent(&cfg, &run, &ds, resume, &bars)?;
    Ok(())
}

fn eval_cmd(a: &EvalArgs) -> Result<()> {
    if let Some(ck) = &a.checkpoint {
        let cfg = a.run.config()?;
        let (m, t) = pipeline::training_config(&cfg)?;
        let ds = pipeline::open_data(&cfg, &Bars::new())?;
        let mut model = autosampler::model::Model::new(m, ds.split.num_classes() as i64, t.device()?)?;
        model.load(ck)?;
        let part = |p| autosampler::train::stage1::evaluate(&model, &ds, p, t);
        let (val, test) = (part(Part::Val)?, part(Part::Test)?);
        print!(
            "{}",
            text::metrics_table(&[
                ("checkpoint, val".into(), &val),
                ("checkpoint, test".into(), &test)
            ])
        );
        println!("checkpoint {}", ck.display());
        return Ok(());
    }
    let (run, ds, cfg) = train_cmd(&a.run, true)?;
    print!("{}", text::eval_table(&pipeline::evaluate(&cfg, &run, &ds)?));
    Ok(())
}

fn features_cmd(a: &RunArgs) -> Result<()> {
    let (run, ds, cfg) = train_cmd(a, true)?;
    pipeline::features(&cfg, &run, &ds, &Bars::new())?;
    println!("features: {}", run.features_dir().display());
    Ok(())
}

fn search_cmd(a: &RunArgs) -> Result<()> {
    let (run, ds, cfg) = train_cmd(a, true)?;
    let Some(sc) = &cfg.search else {
        bail!("the config has no [search] section");
    };
    let best = pipeline::search(&cfg, &run, &ds, &Bars::new())?;
    print!("{}", text::search_table(&best, sc, &ds.split.classes, &run));
    Ok(())
}

fn stage2_cmd(a: &RunArgs) -> Result<()> {
    let (run, ds, cfg) = train_cmd(a, true)?;
    print!(
        "{}",
        text::stage2_table(&pipeline::stage2(&cfg, &run, &ds, &Bars::new())?)
    );
    Ok(())
}

/// `report`: the run folder from --out (its own config.toml is not needed), or the one the
/// config names.
fn report_cmd(a: &ReportArgs) -> Result<()> {
    let run = match (&a.out, &a.config) {
        (Some(o), _) => RunDir::new(o),
        (None, Some(c)) => {
            let cfg = Config::load(c)?;
            let src = SourceArgs {
                config: Some(c.clone()),
                format: None,
                root: None,
                ir: None,
                val_per_class: None,
                seed: None,
                image_size: None,
                resize: None,
                cache_dir: None,
                set: Vec::new(),
                print_config: false,
            };
            src.run_dir(None, &cfg)
        }
        (None, None) => bail!("give the run folder (--out RUN) or its config (--config FILE)"),
    };
    if !run.root().is_dir() {
        bail!("{}: no such run folder", run.root().display());
    }
    let p = autosampler::report::html::write(&run)?;
    println!("report: {}", p.display());
    Ok(())
}

fn predict_cmd(a: &PredictArgs) -> Result<()> {
    let path = match (&a.run, &a.model) {
        (Some(r), None) => RunDir::new(r).model(),
        (None, Some(m)) => m.clone(),
        _ => bail!("give the run folder (--run RUN) or a model file (--model FILE)"),
    };
    let device = autosampler::train::stage1::parse_device(&a.device)?;
    let m = autosampler::export::open(&path, device)
        .with_context(|| format!("{}: run `autosampler run` to write it", path.display()))?;
    let files = autosampler::export::image_files(&a.images)?;
    let (preds, logits) = autosampler::export::predict(&m, &files, a.topk, 256)?;
    for p in &preds {
        let top: Vec<String> = p.top.iter().map(|(c, q)| format!("{c} {:.3}", q)).collect();
        println!("{}\t{}", p.file.display(), top.join("  "));
    }
    if let Some(csv) = &a.csv {
        let mut out = String::from("file,rank,class,probability\n");
        for p in &preds {
            for (r, (c, q)) in p.top.iter().enumerate() {
                out.push_str(&format!(
                    "{},{},{},{q:.6}\n",
                    text::csv_field(&p.file.display().to_string()),
                    r + 1,
                    text::csv_field(c)
                ));
            }
        }
        autosampler::fsx::write_atomic(csv, out.as_bytes())?;
    }
    if let Some(io) = &a.save_io {
        let x = autosampler::export::inputs(&m.card, &files)?;
        autosampler::model::save_tensors(io, &[("input".into(), x), ("logits".into(), logits)])?;
    }
    eprintln!(
        "{} images, model {} ({}; {})",
        preds.len(),
        path.display(),
        format!("{:?}", m.card.model.arch).to_lowercase(),
        m.card.classifier
    );
    Ok(())
}

fn table_cmd(a: &TableArgs) -> Result<()> {
    let rows = table::rows(&a.runs)?;
    print!("{}", table::markdown(&rows));
    if let Some(p) = &a.html {
        autosampler::fsx::write_atomic(p, table::html(&rows).as_bytes())?;
    }
    if let Some(p) = &a.csv {
        autosampler::fsx::write_atomic(p, table::csv(&rows).as_bytes())?;
    }
    Ok(())
}

/// `autosampler sweep`: every config × seed into `<root>/<name>_s<seed>`, finished runs skipped,
/// then the table of them all.
fn sweep_cmd(a: &SweepArgs) -> Result<()> {
    let seeds: Vec<u32> = a
        .seeds
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("--seeds: '{s}' is not a non-negative integer"))
        })
        .collect::<Result<_>>()?;
    // every config is loaded (and checked) before any run starts
    let configs: Vec<(PathBuf, Config)> = a
        .configs
        .iter()
        .map(|p| Ok((p.clone(), Config::load_with(p, &a.set)?)))
        .collect::<Result<_>>()?;
    let mut dirs = Vec::new();
    let mut failed = Vec::new();
    for (path, base) in &configs {
        for &seed in &seeds {
            let mut cfg = base.clone().with_seed(seed);
            let name = cfg.name.clone().unwrap_or_else(|| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            cfg.name = Some(format!("{name}_s{seed}"));
            let run = RunDir::new(a.root.join(format!("{name}_s{seed}")));
            if pipeline::finished(&cfg, &run) {
                eprintln!("sweep     {} (finished, skipped)", run.root().display());
            } else if let Err(e) = run_config(&cfg, &run) {
                eprintln!("sweep     {} failed: {}", run.root().display(), error_text(&e));
                failed.push(run.root().to_path_buf());
                continue;
            }
            if run.eval().is_file() {
                dirs.push(run.root().to_path_buf());
            }
        }
    }
    if !dirs.is_empty() {
        println!();
        table_cmd(&TableArgs {
            runs: dirs,
            csv: a.csv.clone(),
            html: None,
        })?;
    }
    if !failed.is_empty() {
        bail!(
            "{} of the sweep's runs failed: {}",
            failed.len(),
            failed
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect: I/O errors repeated their text ("(os error 2): … (os error 2)").
    #[test]
    fn io_errors_say_their_cause_once() {
        let io = std::io::Error::from_raw_os_error(2);
        let e =
            anyhow::Error::new(autosampler::Error::io("/no/such/file", io)).context("cannot read the config");
        let t = error_text(&e);
        assert_eq!(t.matches("os error 2").count(), 1, "{t}");
        assert!(t.starts_with("cannot read the config: /no/such/file: "), "{t}");
    }
}
