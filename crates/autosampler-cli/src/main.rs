//! The `autosampler` command-line program: one subcommand per pipeline stage.
use anyhow::{bail, Context, Result};
use autosampler::agent::guide::{self as agent_guide, Guide};
use autosampler::agent::train::{self as agent_train, AgentLog, AgentState};
use autosampler::agent::Agent;
use autosampler::config::Config;
use autosampler::data::cache::Cache;
use autosampler::data::source::Catalog;
use autosampler::data::{
    self, DataConfig, Dataset, Format, Part, Profile, Resize, SourceConfig, Split, SplitConfig,
};
use autosampler::mix::MixConfig;
use autosampler::model::{Model, ModelConfig};
use autosampler::report::plot;
use autosampler::train::stage1::{self, EpochLog, EvalReport, Progress, Stage1Paths, State, TrainConfig};
use autosampler::train::stage2::{self, FinetuneConfig};
use autosampler::{features, search};
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
    /// Run the pipeline of a config into its run folder. Stages whose artifacts are complete are
    /// skipped, so the same command resumes a killed run. (Stages so far: data split, stage 1,
    /// evaluation.)
    Run(RunArgs),
    /// Stage 1: train the network of the config's [model] with its [train] section.
    Train(TrainArgs),
    /// The fine auto-sampler's patch agent (GFNet + PPO): train it, locate salient patches.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Evaluate a finished stage 1 (last and best-on-val models, val and test) into eval.json.
    Eval(RunArgs),
    /// Run the frozen stage-1 backbone over train, val and test once; store the features.
    Features(RunArgs),
    /// The coarse auto-sampler: PPO search of per-class sampling weights on the feature proxy.
    Search(RunArgs),
    /// Stage 2: re-train the classifier on the cached features with the searched (or a sampler's)
    /// class weights; also τ-normalisation and post-hoc logit adjustment. Writes stage2/.
    Finetune(RunArgs),
    /// Gather the eval.json of run folders into one table: runs whose configs differ only in
    /// their seeds form one row, with mean ± std over seeds (markdown; CSV with --csv).
    Table(TableArgs),
    /// Run a list of configs × seeds into <root>/<name>_s<seed> (finished runs are skipped), then
    /// print their table.
    Sweep(SweepArgs),
    /// Write report/index.html for a run folder (self-contained: images inlined).
    Report(RunArgs),
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
    Prepare(RunArgs),
}

#[derive(Args)]
struct SourceArgs {
    /// A TOML config (its [data] section); the flags below override it or stand in for it.
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
struct RunArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// Device for training and evaluation: cpu, cuda, cuda:N (overrides [train] device).
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
                    finetune: None,
                }
            }
        };
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
        if let Some(s) = self.seed {
            d.split.seed = s;
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
        Ok(cfg)
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
        Cmd::Data(DataCmd::Prepare(a)) => prepare_cmd(&a).map(|_| ()),
        Cmd::Run(a) => run(&a),
        Cmd::Train(a) => train_cmd(&a.run, a.resume).map(|_| ()),
        Cmd::Agent(AgentCmd::Train(a)) => agent_cmd(&a.run, a.resume, false),
        Cmd::Agent(AgentCmd::Locate(a)) => agent_cmd(&a, true, true),
        Cmd::Eval(a) => eval_cmd(&a),
        Cmd::Features(a) => features_cmd(&a).map(|_| ()),
        Cmd::Search(a) => search_cmd(&a),
        Cmd::Finetune(a) => finetune_cmd(&a),
        Cmd::Table(a) => table_cmd(&a),
        Cmd::Sweep(a) => sweep_cmd(&a),
        Cmd::Report(a) => report_cmd(&a),
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

fn bar(len: u64, msg: &'static str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:36}] {human_pos}/{human_len} {per_sec} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

/// Scans the source, builds or opens its cache (with a progress bar) and draws the split.
fn load(cfg: &Config) -> Result<Dataset> {
    cfg.data.split.longtail.validate()?;
    let t = Instant::now();
    let catalog = Catalog::scan(&cfg.data.source)?;
    let total: u64 = catalog.pools.iter().map(|(_, v)| v.len() as u64).sum();
    let pb = bar(total, "decoding");
    let cache = Cache::open_or_build(&catalog, &cfg.cache_root(), &|n| pb.inc(n))?;
    pb.finish_and_clear();
    tracing::info!(
        "cache {} ready in {:.1}s",
        cache.dir.display(),
        t.elapsed().as_secs_f64()
    );
    let split = data::draw_split(&cache, &cfg.data)?;
    Ok(Dataset { split, cache })
}

fn summary(ds: &Dataset) -> String {
    let s = &ds.split;
    let (tr, va, te) = (&s.counts.train, &s.counts.val, &s.counts.test);
    let sum = |v: &Vec<usize>| v.iter().sum::<usize>();
    let (mx, mn) = (
        tr.iter().max().copied().unwrap_or(0),
        tr.iter().min().copied().unwrap_or(0),
    );
    let mut out = format!(
        "source   {} ({:?}, {} px, cache {})\nclasses  {}\nimages   train {} · val {} · test {}\nimbalance {} / {} = {:.1}\nshots    many {} · medium {} · few {} classes\n\n",
        s.source.root.display(),
        s.source.format,
        s.image_size,
        ds.cache.dir.display(),
        s.num_classes(),
        sum(tr),
        sum(va),
        sum(te),
        mx,
        mn,
        mx as f64 / mn.max(1) as f64,
        s.shot_groups.many.len(),
        s.shot_groups.medium.len(),
        s.shot_groups.few.len(),
    );
    out.push_str(&plot::text_histogram(&s.classes, tr, va, te, 40));
    out
}

fn inspect(a: &InspectArgs) -> Result<()> {
    let cfg = a.src.config()?;
    let ds = load(&cfg)?;
    print!("{}", summary(&ds));
    if let Some(p) = &a.png {
        let s = &ds.split;
        plot::class_histogram(p, &title(s), &s.classes, &s.counts.train, &s.counts.val)?;
        println!("\nhistogram: {}", p.display());
    }
    Ok(())
}

fn title(s: &Split) -> String {
    let name = s
        .source
        .root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match &s.config.longtail {
        Profile::Exp { imbalance_ratio, .. } => {
            format!("{name}: exponential long tail, IR {imbalance_ratio}")
        }
        Profile::Step { imbalance_ratio, .. } => format!("{name}: step long tail, IR {imbalance_ratio}"),
        _ => format!("{name}: training images per class"),
    }
}

fn run_dir(a: &RunArgs, cfg: &Config) -> PathBuf {
    if let Some(o) = &a.out {
        return o.clone();
    }
    let name = cfg.name.clone().or_else(|| {
        a.src
            .config
            .as_ref()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
    });
    Path::new("runs").join(name.unwrap_or_else(|| "default".into()))
}

/// Two source configs name the same data: equal once their paths are made canonical (the same
/// archive reached through different relative paths is the same source).
fn same_source(a: &SourceConfig, b: &SourceConfig) -> bool {
    canonical_source(a) == canonical_source(b)
}

/// The source config with its paths made canonical where they exist.
fn canonical_source(s: &SourceConfig) -> SourceConfig {
    let mut s = s.clone();
    for p in [
        Some(&mut s.root),
        s.train_list.as_mut(),
        s.test_list.as_mut(),
        s.val_list.as_mut(),
        s.class_names.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if let Ok(c) = std::fs::canonicalize(&*p) {
            *p = c;
        }
    }
    s
}

/// The data stage: split.json, config.toml and the histogram in the run folder. A split.json
/// already there for the same data config is reused (resume); one for another config is an error.
fn prepare_cmd(a: &RunArgs) -> Result<(PathBuf, Dataset)> {
    let cfg = a.config()?;
    let dir = run_dir(a, &cfg);
    let ds = prepare(&cfg, &dir)?;
    Ok((dir, ds))
}

/// Holds the run folder's lock for the rest of the process (once per folder).
fn hold_lock(dir: &Path) -> Result<()> {
    static LOCKS: std::sync::Mutex<Vec<(PathBuf, autosampler::fsx::DirLock)>> =
        std::sync::Mutex::new(Vec::new());
    let mut held = LOCKS.lock().expect("not poisoned");
    if !held.iter().any(|(d, _)| d == dir) {
        let lock = autosampler::fsx::lock_dir(dir)?;
        held.push((dir.to_path_buf(), lock));
    }
    Ok(())
}

fn prepare(cfg: &Config, dir: &Path) -> Result<Dataset> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create run folder {}", dir.display()))?;
    hold_lock(dir)?;
    // A stage 1 started with another [model]/[train] is refused here, before anything is written
    // (the run folder's config.toml included).
    if let (Some(m), Some(t)) = (&cfg.model, &cfg.train) {
        autosampler::train::stage1::check_compatible(m, t, dir)?;
    }
    let split_path = dir.join("split.json");
    let ds = if split_path.is_file() {
        let old = Split::load(&split_path)?;
        if !same_source(&old.source, &cfg.data.source) || old.config != cfg.data.split {
            bail!(
                "{} was drawn from another data config: use another --out, or delete the run folder",
                split_path.display()
            );
        }
        eprintln!("split    {} (complete, reused)", split_path.display());
        let pb = bar(0, "decoding");
        let ds = Dataset::open(old, &cfg.cache_root(), &|n| pb.inc(n))?;
        pb.finish_and_clear();
        ds
    } else {
        let ds = load(cfg)?;
        ds.split.save(&split_path)?;
        ds
    };
    autosampler::fsx::write_atomic(&dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    let s = &ds.split;
    let png = dir.join("data").join("class_histogram.png");
    plot::class_histogram(&png, &title(s), &s.classes, &s.counts.train, &s.counts.val)?;
    print!("{}", summary(&ds));
    println!(
        "\nsplit:     {}\nhistogram: {}",
        split_path.display(),
        png.display()
    );
    Ok(ds)
}

fn run(a: &RunArgs) -> Result<()> {
    let cfg = a.config()?;
    pipeline(&cfg, &run_dir(a, &cfg))
}

/// Every stage the config has, in order, into `dir`; finished stages are reused.
fn pipeline(cfg: &Config, dir: &Path) -> Result<()> {
    let t = Instant::now();
    let ds = prepare(cfg, dir)?;
    if cfg.model.is_none() || cfg.train.is_none() {
        let train = ds.view(Part::Train);
        println!(
            "\nrun folder {} ready in {:.1}s ({} training images of {} px; no [model]/[train]: data stage only)",
            dir.display(),
            t.elapsed().as_secs_f64(),
            train.len(),
            train.size
        );
        return Ok(());
    }
    agent_stage(cfg, dir, &ds, true)?;
    stage1_stage(cfg, dir, &ds, true)?;
    let report = evaluate(dir, &ds, cfg)?;
    print_eval(&report);
    if cfg.search.is_some() {
        search_stage(dir, &ds, cfg)?;
    }
    if cfg.finetune.is_some() {
        finetune_stage(dir, &ds, cfg)?;
    }
    let report = autosampler::report::html::write(dir)?;
    print!("{}", run_summary(dir, &ds)?);
    println!("report   {}", report.display());
    println!(
        "run folder {} done in {:.1}s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The one-screen summary a run ends with: test top-1 and many/medium/few of stage 1 and stage 2,
/// the agent's accuracy, and the searched weights beside the class counts.
fn run_summary(dir: &Path, ds: &Dataset) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = format!("\n── summary: {} ──\n", dir.display());
    let f = |x: Option<f64>| x.map(|v| format!("{v:5.1}")).unwrap_or_else(|| "    -".into());
    let line = |out: &mut String, name: &str, m: &autosampler::eval::Metrics| {
        let _ = writeln!(
            out,
            "{name:<46} top-1 {:6.2}   many {} · medium {} · few {}",
            m.top1,
            f(m.many),
            f(m.medium),
            f(m.few)
        );
    };
    if let Ok(e) = autosampler::fsx::read_json::<EvalReport>(&dir.join("eval.json")) {
        line(
            &mut out,
            &format!("stage 1, last epoch ({}), test", e.last.epoch),
            &e.last.test,
        );
    }
    if let Ok(s2) = autosampler::fsx::read_json::<Stage2Report>(&dir.join("stage2/eval.json")) {
        let how = if s2.config.sampler.is_some() {
            "sampler weights"
        } else {
            "searched weights"
        };
        line(
            &mut out,
            &format!("stage 2, re-trained ({how}), test"),
            &s2.crt.test,
        );
        line(
            &mut out,
            "stage 2, class-balanced cRT, test",
            &s2.crt_class_balanced.test,
        );
        line(
            &mut out,
            "stage 2, square-root cRT, test",
            &s2.crt_square_root.test,
        );
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("agent/metrics.jsonl")) {
        if let Some(l) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<AgentLog>(l).ok())
            .next_back()
        {
            let _ = writeln!(
                out,
                "{:<46} val top-1 glance {:.1} → all steps {:.1}",
                "patch agent", l.val_glance, l.val_final
            );
        }
    }
    if let Ok(b) = autosampler::fsx::read_json::<search::Best>(&dir.join("search/best_weights.json")) {
        let counts = &ds.split.counts.train;
        let total: usize = counts.iter().sum();
        let _ = writeln!(
            out,
            "searched weights ({}; vs instance-balanced n_c/N):",
            b.source
        );
        for (c, (name, w)) in ds.split.classes.iter().zip(&b.weights).enumerate().take(20) {
            let _ = writeln!(
                out,
                "  {name:<14} {w:.3}  ({:.3})  {}",
                counts[c] as f64 / total.max(1) as f64,
                "█".repeat((w * 100.0).round() as usize)
            );
        }
        if b.weights.len() > 20 {
            let _ = writeln!(
                out,
                "  … {} more classes in search/best_weights.json",
                b.weights.len() - 20
            );
        }
    }
    Ok(out)
}

/// The stage-1 model (final weights) of a run.
fn stage1_model(dir: &Path, ds: &Dataset, cfg: &Config) -> Result<Model> {
    let (m, t) = training_config(cfg)?;
    let mut model = Model::new(&m, ds.split.num_classes() as i64, t.device()?)?;
    model.load(&Stage1Paths::new(dir).model())?;
    Ok(model)
}

fn features_stage(dir: &Path, ds: &Dataset, cfg: &Config) -> Result<Model> {
    let (_, t) = training_config(cfg)?;
    let model = stage1_model(dir, ds, cfg)?;
    let start = Instant::now();
    features::extract_all(&model, ds, dir, &t.normalize, t.threads)?;
    eprintln!(
        "features  {} ({:.1}s)",
        dir.join("features").display(),
        start.elapsed().as_secs_f64()
    );
    Ok(model)
}

fn features_cmd(a: &RunArgs) -> Result<Model> {
    let (dir, ds, cfg) = train_cmd(a, true)?;
    features_stage(&dir, &ds, &cfg)
}

/// The stage-1 linear classifier `(fc.weight, fc.bias)` on the CPU, which the search and stage 2
/// start from; other heads are refused with the reason.
fn linear_head(model: &Model, who: &str) -> Result<(tch::Tensor, tch::Tensor)> {
    if model.config.head != autosampler::model::Head::Linear {
        bail!("{who} re-trains a linear classifier from the stage-1 one: the stage-1 model needs head = \"linear\" (it has {:?})", model.config.head);
    }
    let vars = model.vs.variables();
    Ok((
        vars["fc.weight"].to_device(tch::Device::Cpu),
        vars["fc.bias"].to_device(tch::Device::Cpu),
    ))
}

fn search_stage(dir: &Path, ds: &Dataset, cfg: &Config) -> Result<()> {
    let Some(sc) = &cfg.search else {
        bail!("the config has no [search] section");
    };
    let out = dir.join("search");
    let best_path = out.join("best_weights.json");
    let stage2 = cfg.finetune.clone().unwrap_or_default().recipe();
    let reuse = best_path.is_file()
        && autosampler::fsx::read_json::<search::Best>(&best_path)
            .is_ok_and(|b| b.config == *sc && b.recipe == sc.recipe(&stage2));
    let best: search::Best = if reuse {
        eprintln!("search    {} (complete, reused)", out.display());
        autosampler::fsx::read_json(&best_path)?
    } else {
        let model = features_stage(dir, ds, cfg)?;
        let (w0, b0) = linear_head(&model, "the search")?;
        let train = features::load(dir, Part::Train)?;
        let val = features::load(dir, Part::Val)?;
        // The proxy's tensors are small: one intra-op thread beats several (which spin and, on a
        // busy machine, stall: 93 s instead of 5 s for the same search here).
        tch::set_num_threads(1);
        let pb = ProgressBar::new(sc.trajectories as u64);
        pb.set_style(
            ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {prefix} {per_sec} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        pb.set_message("search");
        let start = Instant::now();
        let best = search::search(&train, &val, (&w0, &b0), &stage2, sc, &out, |s| {
            pb.set_prefix(format!(
                "mean {:.2}% best {:.2}%",
                s.mean_reward * 100.0,
                s.best_reward * 100.0
            ));
            pb.inc(1);
        })?;
        pb.finish_and_clear();
        eprintln!(
            "search    {} trajectories × {} samples × {} proxy seeds in {:.1}s",
            sc.trajectories,
            sc.samples,
            sc.reward_seeds,
            start.elapsed().as_secs_f64()
        );
        best
    };
    let log: Vec<search::Step> = std::fs::read_to_string(out.join("trajectories.jsonl"))?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    plot::reward_curve(
        &out.join("reward_curve.png"),
        &log.iter().map(|s| s.mean_reward).collect::<Vec<_>>(),
        &log.iter().map(|s| s.best_reward).collect::<Vec<_>>(),
        &best
            .fixed
            .iter()
            .map(|f| (f.source.clone(), f.search_reward))
            .collect::<Vec<_>>(),
    )?;
    let counts = &ds.split.counts.train;
    use autosampler::sampler::power_weights;
    plot::weight_bars(
        &out.join("weights.png"),
        "searched class weights against the standard ones",
        &ds.split.classes,
        &[
            ("searched", best.weights.clone()),
            ("instance (class frequency)", power_weights(counts, 1.0)),
            ("square-root", power_weights(counts, 0.5)),
            ("class-balanced", power_weights(counts, 0.0)),
        ],
    )?;
    let pct = |x: f64| format!("{:.2}", x * 100.0);
    println!(
        "\nsearch: {} validation images searched on, {} held out for the choice; reward {:?}",
        best.val_search, best.val_choice, sc.reward
    );
    println!("{:<22} {:>12} {:>12}", "candidate", "search", "re-scored");
    for c in &best.candidates {
        println!(
            "{:<22} {:>12} {:>12}{}",
            c.source,
            pct(c.search_reward),
            c.rescored.map(pct).unwrap_or_else(|| "-".into()),
            if c.source == best.source {
                "  ← chosen"
            } else {
                ""
            }
        );
    }
    if let (Some(g), Some(se)) = (best.gain_over_fixed, best.gain_se) {
        println!(
            "best sample vs best fixed sampler on the held-out images: {:+.2} points (standard error {:.2}; a sample is chosen only with a gain ≥ {} SE)",
            g * 100.0,
            se * 100.0,
            sc.min_gain_se
        );
    }
    println!("chosen class weights ({}):", best.source);
    for (c, w) in ds.split.classes.iter().zip(&best.weights) {
        println!("  {c:<14} {w:.4}");
    }
    println!(
        "plots: {} and {}",
        out.join("reward_curve.png").display(),
        out.join("weights.png").display()
    );
    Ok(())
}

/// `stage2/eval.json`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stage2Report {
    config: FinetuneConfig,
    weights: Vec<f64>,
    stage1: stage2::Scored,
    crt: stage2::Scored,
    /// The fixed samplers' cRT with the same recipe, for comparison.
    crt_class_balanced: stage2::Scored,
    crt_square_root: stage2::Scored,
    tau_normalised: stage2::PostHoc,
    logit_adjusted: stage2::PostHoc,
    lws_scales: Vec<f64>,
    lws: stage2::Scored,
}

fn finetune_stage(dir: &Path, ds: &Dataset, cfg: &Config) -> Result<()> {
    let Some(fc) = &cfg.finetune else {
        bail!("the config has no [finetune] section");
    };
    let out = dir.join("stage2");
    let report_path = out.join("eval.json");
    let counts = &ds.split.counts.train;
    let weights = match &fc.sampler {
        Some(s) => s.weights(counts, fc.epochs, fc.epochs)?,
        None => {
            if cfg.search.is_none() {
                bail!("[finetune] without a sampler uses the searched weights: add [search], or set finetune.sampler");
            }
            search_stage(dir, ds, cfg)?;
            autosampler::fsx::read_json::<search::Best>(&dir.join("search/best_weights.json"))?.weights
        }
    };
    // Reused only when it was trained with this config *and* these weights (a new search's
    // weights make it stale).
    let report: Stage2Report = match autosampler::fsx::read_json::<Stage2Report>(&report_path) {
        Ok(r) if r.config == *fc && r.weights == weights => {
            eprintln!("stage 2   {} (complete, reused)", out.display());
            r
        }
        _ => {
            let model = features_stage(dir, ds, cfg)?;
            let (w0, b0) = linear_head(&model, "stage 2")?;
            let (train, val, test) = (
                features::load(dir, Part::Train)?,
                features::load(dir, Part::Val)?,
                features::load(dir, Part::Test)?,
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
                    let (_, t) = training_config(cfg)?;
                    let mut m = stage1_model(dir, ds, cfg)?;
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
            autosampler::model::save_tensors(
                &out.join("head.safetensors"),
                &[("fc.weight".into(), head_w), ("fc.bias".into(), head_b)],
            )?;
            tch::set_num_threads(1);
            let (lws_scales, lws) = stage2::learnable_weight_scaling(&parts, (&w0, &b0), counts, fc)?;
            let fixed = |q: f64| -> Result<stage2::Scored> {
                let w = autosampler::sampler::power_weights(counts, q);
                let f = stage2::finetune(&parts, (&w0, &b0), &w, counts, fc)?;
                Ok(stage2::Scored {
                    val: f.val,
                    test: f.test,
                })
            };
            let r = Stage2Report {
                config: fc.clone(),
                weights,
                crt_class_balanced: fixed(0.0)?,
                crt_square_root: fixed(0.5)?,
                stage1: stage2::Scored::of(&parts, &w0, &b0, counts),
                crt,
                tau_normalised: stage2::tau_normalised(&parts, &w0, counts),
                logit_adjusted: stage2::logit_adjusted(&parts, &w0, &b0, counts),
                lws_scales,
                lws,
            };
            autosampler::fsx::write_json(&report_path, &r)?;
            r
        }
    };
    let f = |x: Option<f64>| x.map(|v| format!("{v:5.1}")).unwrap_or_else(|| "    -".into());
    println!(
        "\nstage 2 ({}):",
        if fc.sampler.is_some() {
            "sampler weights"
        } else {
            "searched weights"
        }
    );
    println!(
        "{:<34} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "classifier", "val", "test", "many", "medium", "few"
    );
    let rows = [
        ("stage 1".to_string(), &report.stage1.val, &report.stage1.test),
        (
            format!("re-trained ({} epochs on {:?})", fc.epochs, fc.path),
            &report.crt.val,
            &report.crt.test,
        ),
        (
            "cRT, class-balanced".to_string(),
            &report.crt_class_balanced.val,
            &report.crt_class_balanced.test,
        ),
        (
            "cRT, square-root".to_string(),
            &report.crt_square_root.val,
            &report.crt_square_root.test,
        ),
        (
            format!("τ-normalised (τ = {:.1} on val)", report.tau_normalised.tau),
            &report.tau_normalised.val,
            &report.tau_normalised.test,
        ),
        (
            format!("logit-adjusted (τ = {:.1} on val)", report.logit_adjusted.tau),
            &report.logit_adjusted.val,
            &report.logit_adjusted.test,
        ),
        (
            "learnable weight scaling".to_string(),
            &report.lws.val,
            &report.lws.test,
        ),
    ];
    for (name, val, test) in rows {
        println!(
            "{:<34} {:6.2} {:6.2} {:>6} {:>6} {:>6}",
            name,
            val.top1,
            test.top1,
            f(test.many),
            f(test.medium),
            f(test.few)
        );
    }
    Ok(())
}

/// One row of `autosampler table`: the runs of one config over seeds.
struct TableRow {
    name: String,
    runs: Vec<PathBuf>,
    /// column → one value per run (runs without it are left out of that column)
    values: std::collections::BTreeMap<&'static str, Vec<f64>>,
}

const TABLE_COLUMNS: [&str; 7] = [
    "last test top-1",
    "best-on-val test top-1",
    "many",
    "medium",
    "few",
    "val top-1",
    "stage 2 test top-1",
];

fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// A run's name without the `_s<seed>` suffix that `sweep` adds (`cifar10_lt_ir100_s2` →
/// `cifar10_lt_ir100`); other names, trailing digits included, stay whole.
fn seed_group_label(name: &str) -> String {
    match name.rfind("_s") {
        Some(i) if i + 2 < name.len() && name[i + 2..].bytes().all(|b| b.is_ascii_digit()) => {
            name[..i].to_string()
        }
        _ => name.to_string(),
    }
}

/// A CSV field, quoted (RFC 4180) when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn table_cmd(a: &TableArgs) -> Result<()> {
    let mut rows: Vec<(String, TableRow)> = Vec::new();
    for run in &a.runs {
        let text = std::fs::read_to_string(run.join("config.toml"))
            .with_context(|| format!("{}: no config.toml", run.display()))?;
        let mut cfg = Config::parse(&text, &run.join("config.toml").display().to_string())?;
        let eval: serde_json::Value = autosampler::fsx::read_json(&run.join("eval.json"))
            .with_context(|| format!("{}: no eval.json (run `autosampler eval` first)", run.display()))?;
        // the grouping key: the config with every seed set to 0, no name, canonical paths
        let name = cfg.name.take().unwrap_or_else(|| {
            run.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        cfg.data.split.seed = 0;
        cfg.data.source = canonical_source(&cfg.data.source);
        if let Some(t) = &mut cfg.train {
            t.seed = 0;
        }
        if let Some(s) = &mut cfg.search {
            s.seed = 0;
        }
        if let Some(f) = &mut cfg.finetune {
            f.seed = 0;
        }
        if let Some(a) = &mut cfg.agent {
            a.seed = 0;
        }
        let key = cfg.to_toml();
        let label = seed_group_label(&name);
        let pos = match rows.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                rows.push((
                    key,
                    TableRow {
                        name: label,
                        runs: Vec::new(),
                        values: Default::default(),
                    },
                ));
                rows.len() - 1
            }
        };
        let row = &mut rows[pos].1;
        row.runs.push(run.clone());
        let mut put = |col: &'static str, v: Option<f64>| {
            if let Some(v) = v {
                row.values.entry(col).or_default().push(v);
            }
        };
        put("last test top-1", eval["last"]["test"]["top1"].as_f64());
        put("best-on-val test top-1", eval["best"]["test"]["top1"].as_f64());
        put("many", eval["last"]["test"]["many"].as_f64());
        put("medium", eval["last"]["test"]["medium"].as_f64());
        put("few", eval["last"]["test"]["few"].as_f64());
        put("val top-1", eval["last"]["val"]["top1"].as_f64());
        if let Ok(s2) = autosampler::fsx::read_json::<serde_json::Value>(&run.join("stage2/eval.json")) {
            put("stage 2 test top-1", s2["crt"]["test"]["top1"].as_f64());
        }
    }
    let cell = |v: Option<&Vec<f64>>| match v {
        Some(v) if !v.is_empty() => {
            let (m, s) = mean_std(v);
            if v.len() > 1 {
                format!("{m:.2} ± {s:.2}")
            } else {
                format!("{m:.2}")
            }
        }
        _ => "–".into(),
    };
    println!("| run | seeds | {} |", TABLE_COLUMNS.join(" | "));
    println!("|---|---|{}", "---|".repeat(TABLE_COLUMNS.len()));
    for (_, r) in &rows {
        let cells: Vec<String> = TABLE_COLUMNS.iter().map(|c| cell(r.values.get(c))).collect();
        println!("| {} | {} | {} |", r.name, r.runs.len(), cells.join(" | "));
    }
    if let Some(p) = &a.html {
        let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let mut h = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>autosampler: comparison</title><style>\
             body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;\
             padding:.3em .7em;text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}\
             </style></head><body><h1>Comparison of runs</h1><p>mean ± std over seeds; test metrics of the last \
             epoch unless named</p><table><tr><th>run</th><th>seeds</th>",
        );
        for c in TABLE_COLUMNS {
            h.push_str(&format!("<th>{}</th>", esc(c)));
        }
        h.push_str("<th>reports</th></tr>");
        for (_, r) in &rows {
            let links: Vec<String> = r
                .runs
                .iter()
                .map(|d| {
                    let page = std::fs::canonicalize(d)
                        .unwrap_or_else(|_| d.clone())
                        .join("report/index.html");
                    let label = d
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    format!(
                        "<a href=\"file://{}\">{}</a>",
                        esc(&page.display().to_string()),
                        esc(&label)
                    )
                })
                .collect();
            h.push_str(&format!("<tr><td>{}</td><td>{}</td>", esc(&r.name), r.runs.len()));
            for c in TABLE_COLUMNS {
                h.push_str(&format!("<td>{}</td>", esc(&cell(r.values.get(c)))));
            }
            h.push_str(&format!("<td>{}</td></tr>", links.join(" ")));
        }
        h.push_str("</table></body></html>\n");
        autosampler::fsx::write_atomic(p, h.as_bytes())?;
    }
    if let Some(p) = &a.csv {
        let mut out = format!(
            "run,seeds,{}\n",
            TABLE_COLUMNS
                .iter()
                .flat_map(|c| [format!("{c} mean"), format!("{c} std")])
                .collect::<Vec<_>>()
                .join(",")
        );
        for (_, r) in &rows {
            let cells: Vec<String> = TABLE_COLUMNS
                .iter()
                .flat_map(|c| match r.values.get(c) {
                    Some(v) if !v.is_empty() => {
                        let (m, s) = mean_std(v);
                        [format!("{m:.4}"), format!("{s:.4}")]
                    }
                    _ => [String::new(), String::new()],
                })
                .collect();
            out.push_str(&format!(
                "{},{},{}\n",
                csv_field(&r.name),
                r.runs.len(),
                cells.join(",")
            ));
        }
        autosampler::fsx::write_atomic(p, out.as_bytes())?;
    }
    Ok(())
}

fn report_cmd(a: &RunArgs) -> Result<()> {
    let cfg = a.config()?;
    let p = autosampler::report::html::write(&run_dir(a, &cfg))?;
    println!("report: {}", p.display());
    Ok(())
}

fn finetune_cmd(a: &RunArgs) -> Result<()> {
    let (dir, ds, cfg) = train_cmd(a, true)?;
    finetune_stage(&dir, &ds, &cfg)
}

fn search_cmd(a: &RunArgs) -> Result<()> {
    let (dir, ds, cfg) = train_cmd(a, true)?;
    search_stage(&dir, &ds, &cfg)
}

/// The [model] and [train] sections, with command-line overrides.
fn training_config(cfg: &Config) -> Result<(ModelConfig, TrainConfig)> {
    let (Some(m), Some(t)) = (&cfg.model, &cfg.train) else {
        bail!("the config needs [model] and [train] sections to train");
    };
    t.validate()?;
    Ok((m.clone(), t.clone()))
}

impl RunArgs {
    /// The config with every command-line override applied (what config.toml records).
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
        Ok(cfg)
    }
}

struct Bars {
    bar: ProgressBar,
}

impl Bars {
    /// The per-epoch bar of a training stage.
    fn new() -> Bars {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg:>13} [{bar:30}] {pos}/{len} {prefix} {per_sec} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Bars { bar }
    }

    /// A line above the bar (on stderr when the bar is hidden, e.g. not a terminal).
    fn line(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

impl Progress for Bars {
    fn epoch_start(&self, epoch: usize, epochs: usize, batches: usize) {
        self.bar.reset();
        self.bar.set_length(batches as u64);
        self.bar.set_message(format!("epoch {}/{epochs}", epoch + 1));
    }
    fn batch(&self, loss: f64) {
        self.bar.set_prefix(format!("loss {loss:.3}"));
        self.bar.inc(1);
    }
    fn epoch_end(&self, l: &EpochLog) {
        let line = format!(
            "epoch {:>3}  lr {:.4}  loss {:.4}  train {:5.1}%  val {:5.1}%  {:6.0} img/s  {:5.1}s",
            l.epoch, l.lr, l.train_loss, l.train_acc, l.val_top1, l.img_per_s, l.seconds
        );
        self.line(line);
    }
}

fn train_cmd(a: &RunArgs, resume: bool) -> Result<(PathBuf, Dataset, Config)> {
    let cfg = a.config()?;
    training_config(&cfg)?;
    let (dir, ds) = prepare_cmd(a)?;
    agent_stage(&cfg, &dir, &ds, true)?;
    stage1_stage(&cfg, &dir, &ds, resume)?;
    Ok((dir, ds, cfg))
}

/// Stage 1 into `dir`, reused when finished with the same [model]/[train].
fn stage1_stage(cfg: &Config, dir: &Path, ds: &Dataset, resume: bool) -> Result<()> {
    let (model_cfg, train_cfg) = training_config(cfg)?;
    let paths = Stage1Paths::new(dir);
    if paths.state().is_file() && autosampler::fsx::read_json::<State>(&paths.state())?.done {
        stage1::check_started(&model_cfg, &train_cfg, dir)?;
        eprintln!("stage 1   {} (complete, reused)", paths.dir.display());
        return Ok(());
    }
    let bars = Bars::new();
    let guide = guide_for(cfg, dir, &train_cfg)?;
    let (_, state) = stage1::train_guided(ds, &model_cfg, &train_cfg, dir, resume, &bars, guide.as_ref())?;
    bars.bar.finish_and_clear();
    println!(
        "stage 1: {} epochs, best val top-1 {:.2}% at epoch {}",
        state.epochs_done,
        state.best_val_top1,
        state.best_epoch.unwrap_or(0)
    );
    Ok(())
}

/// `autosampler agent train|locate`: the data stage, then the agent stage.
fn agent_cmd(a: &RunArgs, resume: bool, locate: bool) -> Result<()> {
    let cfg = a.config()?;
    let Some(ac) = &cfg.agent else {
        bail!("the config has no [agent] section");
    };
    let dir = run_dir(a, &cfg);
    let state = dir.join("agent/state.json");
    let finished = state.is_file() && autosampler::fsx::read_json::<AgentState>(&state)?.done;
    if locate && ac.from.is_none() && !finished {
        bail!(
            "{} has no trained agent: run `autosampler agent train` first (or set agent.from)",
            dir.display()
        );
    }
    let (dir, ds) = prepare_cmd(a)?;
    agent_stage(&cfg, &dir, &ds, resume)?;
    Ok(())
}

/// The patch agent of a run: trained into `<run>/agent` (resumed, or reused when finished) or
/// opened `from` another run; then the training images' salient patches (`locations.bin`), the
/// reward curve and the figures. Nothing when the config has no [agent].
fn agent_stage(cfg: &Config, dir: &Path, ds: &Dataset, resume: bool) -> Result<()> {
    let Some(ac) = &cfg.agent else { return Ok(()) };
    let out = dir.join("agent");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let device = stage1::parse_device(&ac.device)?;
    let agent = match &ac.from {
        Some(from) => {
            let agent = Agent::open(from, device)
                .with_context(|| format!("agent.from = {}: not a trained agent folder", from.display()))?;
            eprintln!(
                "agent     {} ({} classes, {} px, patch {} px)",
                from.display(),
                agent.spec.num_classes,
                agent.spec.image_size,
                agent.spec.patch_size
            );
            agent
        }
        None => {
            let state_path = out.join("state.json");
            let done = state_path.is_file() && autosampler::fsx::read_json::<AgentState>(&state_path)?.done;
            let bars = Bars::new();
            let print = |l: &AgentLog| {
                let reward = if l.reward.is_empty() {
                    String::new()
                } else {
                    let r: Vec<String> = l.reward.iter().map(|v| format!("{v:+.4}")).collect();
                    format!("  reward {}", r.join(" "))
                };
                let line = format!(
                    "agent stage {} epoch {:>2}  lr {:.4}  loss {:.4}  val glance {:5.1}%  all steps {:5.1}%{reward}  {:6.0} img/s  {:5.1}s",
                    l.stage, l.epoch, l.lr, l.loss, l.val_glance, l.val_final, l.img_per_s, l.seconds
                );
                bars.line(line);
            };
            let agent = agent_train::train(ds, ac, &out, resume || done, &bars, &print)?;
            bars.bar.finish_and_clear();
            if done {
                eprintln!("agent     {} (complete, reused)", out.display());
            }
            agent
        }
    };
    // The reward curve of stage 2, batch by batch (moving mean over 20 batches).
    if let Ok(text) = std::fs::read_to_string(out.join("metrics.jsonl")) {
        let trace: Vec<f64> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<AgentLog>(l).ok())
            .flat_map(|l| l.reward_trace)
            .collect();
        if !trace.is_empty() {
            let k = 20.min(trace.len());
            let smooth: Vec<f64> = (0..trace.len())
                .map(|i| {
                    let lo = (i + 1).saturating_sub(k);
                    100.0 * trace[lo..=i].iter().sum::<f64>() / (i + 1 - lo) as f64
                })
                .collect();
            plot::lines(
                &out.join("reward_curve.png"),
                "patch agent, PPO (stage 2): summed reward per image",
                "batch",
                "reward, points of p(y) (moving mean of 20 batches)",
                &[("p_T(y) - p_1(y), x100", smooth)],
            )?;
        }
    }
    let train = ds.view(Part::Train);
    let locs_path = out.join("locations.bin");
    // Which agent located: locations of another agent (a new `from`, a retrained one) are redone.
    let source = ac.from.clone().unwrap_or_else(|| out.clone());
    let stamp = serde_json::json!({ "agent": Agent::fingerprint(&source)?, "images": train.len() });
    let stamp_path = out.join("locations.json");
    let reuse = locs_path.is_file()
        && autosampler::fsx::read_json::<serde_json::Value>(&stamp_path).ok() == Some(stamp.clone())
        && agent_guide::read_locations(&locs_path)
            .map(|(_, l)| l.len() == train.len())
            .unwrap_or(false);
    let locs = if reuse {
        eprintln!("locations {} (complete, reused)", locs_path.display());
        agent_guide::read_locations(&locs_path)?.1
    } else {
        let t = Instant::now();
        let threads = ac.threads;
        tch::set_num_threads(threads.max(1) as i32);
        let locs = agent_train::locate_view(&agent, &train, &Default::default(), threads)?;
        agent_guide::write_locations(&locs_path, train.size as f32, &locs)?;
        autosampler::fsx::write_json(&stamp_path, &stamp)?;
        println!(
            "agent: located {} training images' salient patches in {:.1}s → {}",
            locs.len(),
            t.elapsed().as_secs_f64(),
            locs_path.display()
        );
        locs
    };
    if !out.join("triples.png").is_file() || !reuse {
        let figs = autosampler::agent::figures::write_all(&out, &train, &locs, 8, ac.seed)?;
        for f in figs {
            println!("figure:   {}", f.display());
        }
    }
    Ok(())
}

/// The guide stage 1 needs for `mix = { kind = "agent-cutmix" }`: the stored locations, or the
/// agent itself on the training device for `per_batch`.
fn guide_for(cfg: &Config, dir: &Path, t: &TrainConfig) -> Result<Option<Guide>> {
    let MixConfig::AgentCutmix { per_batch, .. } = t.mix else {
        return Ok(None);
    };
    let Some(ac) = &cfg.agent else {
        bail!("[train.mix] kind = \"agent-cutmix\" needs the patch agent: add an [agent] section (or agent.from)");
    };
    Ok(Some(if per_batch {
        let from = ac.from.clone().unwrap_or_else(|| dir.join("agent"));
        Guide::PerBatch(Box::new(Agent::open(&from, t.device()?)?))
    } else {
        let (size, locs) = agent_guide::read_locations(&dir.join("agent/locations.bin"))?;
        Guide::Stored { size, locs }
    }))
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
                .with_context(|| format!("seed '{s}' is not a non-negative integer"))
        })
        .collect::<Result<_>>()?;
    let mut dirs = Vec::new();
    let mut failed = Vec::new();
    for path in &a.configs {
        let base = Config::load(path)?;
        for &seed in &seeds {
            let mut cfg = base.clone();
            cfg.data.split.seed = seed;
            if let Some(t) = &mut cfg.train {
                t.seed = seed as u64;
            }
            if let Some(s) = &mut cfg.search {
                s.seed = seed as u64;
            }
            if let Some(a) = &mut cfg.agent {
                a.seed = seed as u64;
            }
            if let Some(f) = &mut cfg.finetune {
                f.seed = seed as u64;
            }
            let name = cfg.name.clone().unwrap_or_else(|| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            cfg.name = Some(format!("{name}_s{seed}"));
            let dir = a.root.join(format!("{name}_s{seed}"));
            let finished = dir.join("eval.json").is_file()
                && (cfg.finetune.is_none() || dir.join("stage2/eval.json").is_file());
            if finished {
                eprintln!("sweep     {} (finished, skipped)", dir.display());
            } else if let Err(e) = pipeline(&cfg, &dir) {
                eprintln!("sweep     {} failed: {e:#}", dir.display());
                failed.push(dir.clone());
                continue;
            }
            if dir.join("eval.json").is_file() {
                dirs.push(dir);
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

fn evaluate(dir: &Path, ds: &Dataset, cfg: &Config) -> Result<EvalReport> {
    let (m, t) = (
        cfg.model.as_ref().expect("checked"),
        cfg.train.as_ref().expect("checked"),
    );
    Ok(stage1::evaluate_run(ds, m, t, dir)?)
}

fn eval_cmd(a: &RunArgs) -> Result<()> {
    let cfg = a.config()?;
    let (m, t) = training_config(&cfg)?;
    let (dir, ds) = prepare_cmd(a)?;
    let report = stage1::evaluate_run(&ds, &m, &t, &dir)?;
    print_eval(&report);
    Ok(())
}

fn print_eval(r: &EvalReport) {
    let f = |x: Option<f64>| x.map(|v| format!("{v:5.1}")).unwrap_or_else(|| "    -".into());
    println!(
        "\n{:<30} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "model / part", "top-1", "top-5", "many", "medium", "few", "ECE"
    );
    for (name, m) in [("last", &r.last), ("best-on-val", &r.best)] {
        for (part, x) in [("val", &m.val), ("test", &m.test)] {
            println!(
                "{:<30} {:6.2} {:6.2} {:>6} {:>6} {:>6} {:6.3}",
                format!("{name} (epoch {}) {part}", m.epoch),
                x.top1,
                x.top5,
                f(x.many),
                f(x.medium),
                f(x.few),
                x.ece
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect: `table` dropped trailing digits from run names (`…_ir10`, `…_ir50` and `…_ir100`
    /// all showed as `…_ir`), and a comma in a name broke the CSV.
    #[test]
    fn table_names_keep_their_digits_and_csv_quotes_commas() {
        assert_eq!(seed_group_label("cifar10_lt_ir100"), "cifar10_lt_ir100");
        assert_eq!(seed_group_label("cifar10_lt_ir10"), "cifar10_lt_ir10");
        assert_eq!(seed_group_label("cifar10_lt_ir50_s2"), "cifar10_lt_ir50");
        assert_eq!(seed_group_label("run_s"), "run_s");
        assert_eq!(seed_group_label("a_s1x"), "a_s1x");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

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
