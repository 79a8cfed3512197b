//! `report/index.html`: one self-contained page per run (images inlined as base64 PNG, no
//! external files), built from whatever artifacts the run folder holds: the class histogram,
//! training curves, the evaluation table, per-class accuracy, the confusion matrix, the search's
//! reward curve and weights, stage 2, and the resolved config. Artifacts are read as their types.
use crate::agent::train::AgentLog;
use crate::data::Split;
use crate::pipeline::{self, RunDir, Stage};
use crate::report::plot;
use crate::train::stage1::EpochLog;
use crate::{fsx, Error, Result};
use base64::Engine;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn img(path: &Path, alt: &str) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(format!(
        "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
        esc(alt),
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

fn jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Option<Vec<T>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    )
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1040px;margin:2em auto;color:#222}\
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}\
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:.85em}.cm td{min-width:2.2em}";

/// Writes `<run>/report/index.html` (and the plots it embeds) and returns its path.
pub fn write(run: &RunDir) -> Result<PathBuf> {
    let out = run.report_dir();
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let name = run.name();
    let mut h = String::new();
    let _ = write!(h, "<!doctype html><html><head><meta charset=\"utf-8\"><title>autosampler: {}</title><style>{STYLE}</style></head><body>", esc(&name));
    let _ = write!(h, "<h1>autosampler run <code>{}</code></h1>", esc(&name));

    let split: Option<Split> = fsx::read_json(&run.split()).ok();
    let classes: Vec<String> = split.as_ref().map(|s| s.classes.clone()).unwrap_or_default();
    if let Some(s) = &split {
        let sum = |v: &Vec<usize>| v.iter().sum::<usize>();
        let _ = write!(
            h,
            "<h2>Data</h2><p>{} classes · train {} · val {} · test {} images · source <code>{}</code></p>",
            classes.len(),
            sum(&s.counts.train),
            sum(&s.counts.val),
            sum(&s.counts.test),
            esc(&s.source.root.display().to_string())
        );
        let hist = run.class_histogram();
        if hist.is_file() {
            h.push_str(&img(&hist, "class histogram")?);
        }
    }

    let agent = run.agent();
    let agent_logs: Option<Vec<AgentLog>> = jsonl(&run.agent_metrics());
    if agent.figure("patches").is_file() || agent_logs.is_some() {
        h.push_str("<h2>Patch agent</h2>");
        if let Some(logs) = &agent_logs {
            h.push_str("<table><tr><th>stage / epoch</th><th>loss</th><th>val top-1, glance</th><th>val top-1, all steps</th><th>mean reward per focus step</th></tr>");
            for l in logs {
                let rw: Vec<String> = l.reward.iter().map(|v| format!("{v:+.4}")).collect();
                let _ = write!(
                    h,
                    "<tr><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    l.stage,
                    l.epoch,
                    num(Some(l.loss), 4),
                    num(Some(l.val_glance), 2),
                    num(Some(l.val_final), 2),
                    rw.join(" ")
                );
            }
            h.push_str("</table>");
        } else {
            h.push_str("<p>The agent was trained elsewhere (<code>agent.from</code>); its patches on this run's images:</p>");
        }
        for (f, alt) in [
            ("reward_curve", "the agent's PPO reward curve"),
            ("patches", "located patches (red) and object boxes (green)"),
            (
                "cutmix_compare",
                "target, source, random CutMix, agent-guided CutMix",
            ),
            (
                "triples",
                "source with its patch, target with its patch, the mix",
            ),
            (
                "centres",
                "where the patches sit: located patch centres (left) and object box centres (right, where the data has boxes)",
            ),
        ] {
            if agent.figure(f).is_file() {
                let _ = write!(h, "<p>{}</p>", esc(alt));
                h.push_str(&img(&agent.figure(f), alt)?);
            }
        }
    }

    if let Some(logs) = jsonl::<EpochLog>(&run.stage1().metrics()) {
        let col = |f: fn(&EpochLog) -> f64| logs.iter().map(f).collect::<Vec<_>>();
        let acc = run.report_png("training_accuracy");
        plot::lines(
            &acc,
            "stage 1: accuracy per epoch",
            "epoch",
            "accuracy (%)",
            &[
                ("train (augmented, running)", col(|l| l.train_acc)),
                ("val top-1", col(|l| l.val_top1)),
            ],
        )?;
        let loss = run.report_png("training_loss");
        plot::lines(
            &loss,
            "stage 1: training loss per epoch",
            "epoch",
            "loss",
            &[("train loss", col(|l| l.train_loss))],
        )?;
        let _ = write!(
            h,
            "<h2>Stage 1</h2>{}{}",
            img(&acc, "training accuracy")?,
            img(&loss, "training loss")?
        );
    }

    let stage2 = pipeline::read_stage2(run);
    if let Some(e) = pipeline::read_eval(run) {
        h.push_str("<h2>Evaluation</h2><table><tr><th>model / part</th><th>top-1</th><th>top-5</th><th>many</th><th>medium</th><th>few</th><th>balanced</th><th>ECE</th></tr>");
        for (label, m) in [("last", &e.last), ("best-on-val", &e.best)] {
            for (part, x) in [("val", &m.val), ("test", &m.test)] {
                let _ = write!(
                    h,
                    "<tr><td>{label} (epoch {}) {part}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    m.epoch,
                    num(Some(x.top1), 2),
                    num(Some(x.top5), 2),
                    num(x.many, 1),
                    num(x.medium, 1),
                    num(x.few, 1),
                    num(Some(x.balanced), 2),
                    num(Some(x.ece), 3)
                );
            }
        }
        h.push_str("</table>");
        let mut series: Vec<(&str, Vec<f64>)> = vec![("stage 1 (last)", e.last.test.per_class.clone())];
        if let Some(s2) = &stage2 {
            series.push(("stage 2 (re-trained)", s2.crt.test.per_class.clone()));
        }
        if !classes.is_empty() {
            let pc = run.report_png("per_class_accuracy");
            plot::bars(
                &pc,
                "test accuracy per class (classes in order of training frequency)",
                "test accuracy (%)",
                &classes,
                &series,
            )?;
            h.push_str(&img(&pc, "per-class accuracy")?);
        }
        let cm = &e.last.test.confusion;
        h.push_str(
            "<h3>Confusion matrix (last model, test; rows: true class)</h3><table class=\"cm\"><tr><th></th>",
        );
        for c in &classes {
            let _ = write!(h, "<th>{}</th>", esc(c));
        }
        h.push_str("</tr>");
        for (i, row) in cm.iter().enumerate() {
            let total = row.iter().map(|&v| v as u64).sum::<u64>().max(1) as f64;
            let _ = write!(
                h,
                "<tr><th>{}</th>",
                esc(classes.get(i).map(String::as_str).unwrap_or(""))
            );
            for &v in row {
                let a = v as f64 / total;
                let _ = write!(h, "<td style=\"background:rgba(31,119,180,{a:.2})\">{v}</td>");
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
    }

    if let Some(b) = pipeline::read_best(run) {
        h.push_str("<h2>Class-weight search</h2>");
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{:.2}", x * 100.0));
        let _ = write!(
            h,
            "<p>Chosen: <b>{}</b>. The search scored candidates on {} validation images; the final \
             choice re-scored the candidates below on {} held-out ones, with fresh proxy seeds \
             (the fixed samplers compete on the same terms; a sample must beat the best fixed \
             sampler by a standard error of the paired difference: here {} ± {} points). Did it \
             help? Compare the stage-2 table below: the chosen row beside class-balanced and \
             square-root cRT.</p>\
             <table><tr><th>candidate</th><th>search reward</th><th>re-scored</th></tr>",
            esc(&b.source),
            b.val_search,
            b.val_choice,
            pct(b.gain_over_fixed),
            pct(b.gain_se)
        );
        for c in &b.candidates {
            let _ = write!(
                h,
                "<tr><td>{}{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.source),
                if c.source == b.source { " ←" } else { "" },
                pct(Some(c.search_reward)),
                pct(c.rescored)
            );
        }
        h.push_str("</table>");
        for (p, alt) in [
            (run.search_reward_curve(), "reward curve"),
            (run.search_weights_png(), "searched weights"),
        ] {
            if p.is_file() {
                h.push_str(&img(&p, alt)?);
            }
        }
    }
    if let Some(s2) = &stage2 {
        h.push_str("<h2>Stage 2</h2><table><tr><th>classifier</th><th>val top-1</th>");
        if let Some(hd) = &s2.heldout {
            let _ = write!(h, "<th>top-1 on the {} val images the search held out</th>", hd.n);
        }
        h.push_str("<th>test top-1</th><th>many</th><th>medium</th><th>few</th></tr>");
        for (c, label, val, test) in crate::pipeline::text::stage2_rows(s2) {
            let label = if c == Some(s2.classifier) {
                format!("<b>{label}</b> (the run's model)")
            } else {
                label
            };
            let held = match (&s2.heldout, c) {
                (None, _) => String::new(),
                (Some(hd), None) => format!("<td>{}</td>", num(Some(hd.stage1), 2)),
                (Some(hd), Some(c)) => format!("<td>{}</td>", num(Some(hd.top1(c)), 2)),
            };
            let _ = write!(
                h,
                "<tr><td>{label}</td><td>{}</td>{held}<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                num(Some(val.top1), 2),
                num(Some(test.top1), 2),
                num(test.many, 1),
                num(test.medium, 1),
                num(test.few, 1)
            );
        }
        h.push_str("</table>");
        if let Some(c) = s2.confidence() {
            let _ = write!(h, "<p>The run's model: {}.</p>", esc(&c));
        }
    }
    let stages: Vec<crate::pipeline::Manifest> = [
        Stage::Split,
        Stage::Agent,
        Stage::Locations,
        Stage::Stage1,
        Stage::Eval,
        Stage::Features,
        Stage::Search,
        Stage::Stage2,
        Stage::Export,
    ]
    .into_iter()
    .filter_map(|st| crate::pipeline::manifest::read(run, st))
    .collect();
    if !stages.is_empty() {
        h.push_str("<h2>Provenance</h2><p>Each stage as its manifest records it: the wall time of its work, the program's version and git commit, the device, the threads and, where the stage runs a network, its precision and memory layout.</p><table><tr><th>stage</th><th>seconds</th><th>version</th><th>commit</th><th>device</th><th>threads</th><th>precision</th></tr>");
        for m in &stages {
            let p = &m.provenance;
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&m.stage),
                m.seconds,
                esc(&p.version),
                esc(&p.commit),
                esc(&p.device),
                p.threads,
                esc(p.precision.as_deref().unwrap_or("–"))
            );
        }
        h.push_str("</table>");
    }
    if let Ok(cfg) = std::fs::read_to_string(run.config_toml()) {
        let _ = write!(h, "<h2>Config</h2><pre>{}</pre>", esc(&cfg));
    }
    h.push_str("</body></html>\n");
    let index = run.report_index();
    fsx::write_atomic(&index, h.as_bytes())?;
    Ok(index)
}
