//! The `autosampler` command-line program: argument parsing, progress display, and calls into
//! the library's pipeline (`autosampler::pipeline`), whose typed results it prints.
mod args;
mod progress;

use anyhow::{bail, Context, Result};
use args::*;
use autosampler::config::Config;
use autosampler::data::Part;
use autosampler::pipeline::{self, text, RunDir};
use autosampler::report::plot;
use autosampler::table;
use clap::Parser;
use progress::Bars;
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    autosampler::runtime::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // colour codes only on a terminal: a log file (nohup, a scheduler) gets plain text
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Data(DataCmd::Inspect(a)) => inspect(&a),
        Cmd::Data(DataCmd::Prepare(a)) => prepare_cmd(&a),
        Cmd::Data(DataCmd::Verify(a)) => verify_cmd(&a),
        Cmd::Run(a) => run_cmd(&a),
        Cmd::Train(a) => train_cmd(&a.run, a.resume),
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
    print!("{}", text::prepared(run, &ds));
    Ok(ds)
}

fn prepare_cmd(a: &PrepareArgs) -> Result<()> {
    let cfg = a.src.resolved(a.src.config()?);
    prepared(&cfg, &a.src.run_dir(a.out.as_ref(), &cfg)?, &Bars::new())?;
    Ok(())
}

/// `run`: every stage, then the results and the one-screen summary.
fn run_cmd(a: &RunArgs) -> Result<()> {
    let cfg = a.config()?;
    let run = a.src.run_dir(a.out.as_ref(), &cfg)?;
    run_config(&cfg, &run)
}

fn run_config(cfg: &Config, run: &RunDir) -> Result<()> {
    let t = Instant::now();
    let out = pipeline::run(cfg, run, &Bars::new())?;
    let (Some(model), Some(report)) = (out.eval.as_ref().map(|_| run.model()), &out.report) else {
        let train = out.dataset.view(Part::Train);
        println!(
            "\nrun folder {} ready in {:.1}s ({} training images of {} px; no [model]/[train]: data stage only)",
            run.root().display(),
            t.elapsed().as_secs_f64(),
            train.len(),
            train.size
        );
        return Ok(());
    };
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

/// The data stage of a command that needs a trained stage 1 (the stages before what it asks for
/// run in the pipeline, each reused when complete).
fn with_data(a: &RunArgs) -> Result<(RunDir, autosampler::data::Dataset, Config)> {
    let cfg = a.config()?;
    pipeline::training_config(&cfg)?;
    let run = a.src.run_dir(a.out.as_ref(), &cfg)?;
    let ds = prepared(&cfg, &run, &Bars::new())?;
    Ok((run, ds, cfg))
}

/// `train`: the data stage, the agent (when configured) and stage 1.
fn train_cmd(a: &RunArgs, resume: bool) -> Result<()> {
    let (run, ds, cfg) = with_data(a)?;
    pipeline::stage1(&cfg, &run, &ds, resume, &Bars::new())?;
    Ok(())
}

/// `autosampler agent train|locate`: the data stage, then the agent stage.
fn agent_cmd(a: &RunArgs, resume: bool, locate: bool) -> Result<()> {
    let cfg = a.config()?;
    let Some(ac) = &cfg.agent else {
        bail!("the config has no [agent] section");
    };
    let run = a.src.run_dir(a.out.as_ref(), &cfg)?;
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
        let part =
            |p| autosampler::train::stage1::evaluate(&model, &ds, p, t, &autosampler::distributed::Alone);
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
    let (run, ds, cfg) = with_data(&a.run)?;
    print!(
        "{}",
        text::eval_table(&pipeline::evaluate(&cfg, &run, &ds, &Bars::new())?)
    );
    Ok(())
}

fn features_cmd(a: &RunArgs) -> Result<()> {
    let (run, ds, cfg) = with_data(a)?;
    pipeline::features(&cfg, &run, &ds, &Bars::new())?;
    println!("features: {}", run.features_dir().display());
    Ok(())
}

fn search_cmd(a: &RunArgs) -> Result<()> {
    let (run, ds, cfg) = with_data(a)?;
    let Some(sc) = &cfg.search else {
        bail!("the config has no [search] section");
    };
    let best = pipeline::search(&cfg, &run, &ds, &Bars::new())?;
    print!("{}", text::search_table(&best, sc, &ds.split.classes, &run));
    Ok(())
}

fn stage2_cmd(a: &RunArgs) -> Result<()> {
    let (run, ds, cfg) = with_data(a)?;
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
            // only the run folder's name is read: a model file the config names need not exist
            let cfg = Config::load_unchecked(c)?;
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
            src.run_dir(None, &cfg)?
        }
        (None, None) => bail!("give the run folder (--out RUN) or its config (--config FILE)"),
    };
    if !run.root().is_dir() {
        bail!("{}: no such run folder", run.root().display());
    }
    if !run.config_toml().is_file() {
        // a report is written into the folder: only into one that `autosampler` made
        bail!(
            "{}: not a run folder (it has no config.toml): give a folder that `autosampler run` or `data prepare` wrote",
            run.root().display()
        );
    }
    let p = pipeline::report::write(&run)?;
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
    let precision = autosampler::precision::Precision::parse("--precision", &a.precision)?;
    let m = autosampler::export::open(&path, device)
        .with_context(|| format!("{}: run `autosampler run` to write it", path.display()))?
        .in_precision(precision);
    let files = autosampler::export::image_files(&a.images)?;
    // every image that can be read is predicted; each one that cannot is named, and the command
    // fails at the end
    let (predicted, bad) = autosampler::export::predict_readable(&m, &files, a.topk, 256)?;
    for (f, e) in &bad {
        eprintln!("error: {}: {e}", f.display());
    }
    let Some(autosampler::export::Predicted {
        top: preds,
        inputs,
        logits,
    }) = predicted
    else {
        bail!("none of the {} images could be read", files.len());
    };
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
        autosampler::model::save_tensors(io, &[("input".into(), inputs), ("logits".into(), logits)])?;
    }
    eprintln!(
        "{} images, model {} ({}; {})",
        preds.len(),
        path.display(),
        format!("{:?}", m.card.model.arch).to_lowercase(),
        m.card.classifier
    );
    if !bad.is_empty() {
        bail!(
            "{} of the {} images could not be read (named above); the others were predicted",
            bad.len(),
            files.len()
        );
    }
    Ok(())
}

fn table_cmd(a: &TableArgs) -> Result<()> {
    let rows = table::rows(&a.runs, a.stage2_rows)?;
    print!("{}", table::markdown(&rows));
    for n in table::notes(&rows) {
        println!("\n{n}");
    }
    if let Some(p) = &a.html {
        autosampler::fsx::write_atomic(p, table::html(&rows).as_bytes())?;
    }
    if let Some(p) = &a.csv {
        autosampler::fsx::write_atomic(p, table::csv(&rows).as_bytes())?;
    }
    if let Some(p) = &a.best {
        let Some(best) = table::best_json(&rows) else {
            bail!("--best: no row has a val top-1 to choose on");
        };
        let spread = match best["best_recipe_test_top1_std"].as_f64() {
            Some(sd) => format!(" ± {sd} over {} seeds", best["seeds"]),
            None => " (one seed)".into(),
        };
        let on_seeds = match best["selection_seeds"].as_array() {
            Some(s) if s.len() == 1 => format!(" on seed {}", s[0]),
            Some(s) => format!(
                " on seeds {}",
                s.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
            ),
            None => String::new(),
        };
        println!(
            "\nbest on val: {} (val {}, compared on {}{on_seeds}, test {}{spread})",
            best["recipe"].as_str().unwrap_or_default(),
            best["val_top1"],
            best["selection_top1"],
            best["best_recipe_test_top1"],
        );
        autosampler::fsx::write_atomic(p, format!("{best}\n").as_bytes())?;
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
            stage2_rows: a.stage2_rows,
            best: a.best.clone(),
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
