//! `report/index.html`: one self-contained page per run (images inlined as base64 PNG, no
//! external files), built from whatever artifacts the run folder holds: the class histogram,
//! training curves, the evaluation table, per-class accuracy, the confusion matrix, the search's
//! reward curve and weights, stage 2, and the resolved config.
use super::plot;
use crate::{fsx, Error, Result};
use base64::Engine;
use serde_json::Value;
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

fn read(path: &Path) -> Option<Value> {
    fsx::read_json(path).ok()
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1040px;margin:2em auto;color:#222}\
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}\
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:.85em}.cm td{min-width:2.2em}";

/// Writes `<run>/report/index.html` (and the plots it embeds) and returns its path.
pub fn write(run: &Path) -> Result<PathBuf> {
    let out = run.join("report");
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let name = run
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut h = String::new();
    let _ = write!(h, "<!doctype html><html><head><meta charset=\"utf-8\"><title>autosampler: {}</title><style>{STYLE}</style></head><body>", esc(&name));
    let _ = write!(h, "<h1>autosampler run <code>{}</code></h1>", esc(&name));

    let split = read(&run.join("split.json"));
    let classes: Vec<String> = split
        .as_ref()
        .and_then(|s| s["classes"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|c| c.as_str().unwrap_or_default().to_string())
        .collect();
    if let Some(s) = &split {
        let sum = |k: &str| {
            s["counts"][k]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).sum::<u64>())
                .unwrap_or(0)
        };
        let _ = write!(
            h,
            "<h2>Data</h2><p>{} classes · train {} · val {} · test {} images · source <code>{}</code></p>",
            classes.len(),
            sum("train"),
            sum("val"),
            sum("test"),
            esc(s["source"]["root"].as_str().unwrap_or_default())
        );
        let hist = run.join("data/class_histogram.png");
        if hist.is_file() {
            h.push_str(&img(&hist, "class histogram")?);
        }
    }

    let agent = run.join("agent");
    if agent.join("patches.png").is_file() || agent.join("metrics.jsonl").is_file() {
        h.push_str("<h2>Patch agent</h2>");
        if let Ok(text) = std::fs::read_to_string(agent.join("metrics.jsonl")) {
            let logs: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            h.push_str("<table><tr><th>stage / epoch</th><th>loss</th><th>val top-1, glance</th><th>val top-1, all steps</th><th>mean reward per focus step</th></tr>");
            for l in &logs {
                let rw: Vec<String> = l["reward"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|v| format!("{:+.4}", v.as_f64().unwrap_or(f64::NAN)))
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = write!(
                    h,
                    "<tr><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    l["stage"],
                    l["epoch"],
                    num(&l["loss"], 4),
                    num(&l["val_glance"], 2),
                    num(&l["val_final"], 2),
                    rw.join(" ")
                );
            }
            h.push_str("</table>");
        } else {
            h.push_str("<p>The agent was trained elsewhere (<code>agent.from</code>); its patches on this run's images:</p>");
        }
        for (f, alt) in [
            ("reward_curve.png", "the agent's PPO reward curve"),
            ("patches.png", "located patches (red) and object boxes (green)"),
            (
                "cutmix_compare.png",
                "target, source, random CutMix, agent-guided CutMix",
            ),
            (
                "triples.png",
                "source with its patch, target with its patch, the mix",
            ),
        ] {
            if agent.join(f).is_file() {
                let _ = write!(h, "<p>{}</p>", esc(alt));
                h.push_str(&img(&agent.join(f), alt)?);
            }
        }
    }

    if let Ok(text) = std::fs::read_to_string(run.join("stage1/metrics.jsonl")) {
        let logs: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let col = |k: &str| {
            logs.iter()
                .map(|l| l[k].as_f64().unwrap_or(f64::NAN))
                .collect::<Vec<_>>()
        };
        let acc = out.join("training_accuracy.png");
        plot::lines(
            &acc,
            "stage 1: accuracy per epoch",
            "epoch",
            "accuracy (%)",
            &[
                ("train (augmented, running)", col("train_acc")),
                ("val top-1", col("val_top1")),
            ],
        )?;
        let loss = out.join("training_loss.png");
        plot::lines(
            &loss,
            "stage 1: training loss per epoch",
            "epoch",
            "loss",
            &[("train loss", col("train_loss"))],
        )?;
        let _ = write!(
            h,
            "<h2>Stage 1</h2>{}{}",
            img(&acc, "training accuracy")?,
            img(&loss, "training loss")?
        );
    }

    if let Some(e) = read(&run.join("eval.json")) {
        h.push_str("<h2>Evaluation</h2><table><tr><th>model / part</th><th>top-1</th><th>top-5</th><th>many</th><th>medium</th><th>few</th><th>balanced</th><th>ECE</th></tr>");
        for m in ["last", "best"] {
            for part in ["val", "test"] {
                let x = &e[m][part];
                let _ = write!(
                    h,
                    "<tr><td>{} (epoch {}) {part}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    if m == "last" { "last" } else { "best-on-val" },
                    e[m]["epoch"],
                    num(&x["top1"], 2),
                    num(&x["top5"], 2),
                    num(&x["many"], 1),
                    num(&x["medium"], 1),
                    num(&x["few"], 1),
                    num(&x["balanced"], 2),
                    num(&x["ece"], 3)
                );
            }
        }
        h.push_str("</table>");
        let per_class = |v: &Value| {
            v.as_array()
                .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(0.0)).collect::<Vec<f64>>())
        };
        let mut series: Vec<(&str, Vec<f64>)> = Vec::new();
        if let Some(p) = per_class(&e["last"]["test"]["per_class"]) {
            series.push(("stage 1 (last)", p));
        }
        if let Some(s2) = read(&run.join("stage2/eval.json")) {
            if let Some(p) = per_class(&s2["crt"]["test"]["per_class"]) {
                series.push(("stage 2 (re-trained)", p));
            }
        }
        if !series.is_empty() && !classes.is_empty() {
            let pc = out.join("per_class_accuracy.png");
            plot::bars(
                &pc,
                "test accuracy per class (classes in order of training frequency)",
                "test accuracy (%)",
                &classes,
                &series,
            )?;
            h.push_str(&img(&pc, "per-class accuracy")?);
        }
        if let Some(cm) = e["last"]["test"]["confusion"].as_array() {
            h.push_str("<h3>Confusion matrix (last model, test; rows: true class)</h3><table class=\"cm\"><tr><th></th>");
            for c in &classes {
                let _ = write!(h, "<th>{}</th>", esc(c));
            }
            h.push_str("</tr>");
            for (i, row) in cm.iter().enumerate() {
                let cells: Vec<u64> = row
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
                let total = cells.iter().sum::<u64>().max(1) as f64;
                let _ = write!(
                    h,
                    "<tr><th>{}</th>",
                    esc(classes.get(i).map(String::as_str).unwrap_or(""))
                );
                for v in cells {
                    let a = v as f64 / total;
                    let _ = write!(h, "<td style=\"background:rgba(31,119,180,{a:.2})\">{v}</td>");
                }
                h.push_str("</tr>");
            }
            h.push_str("</table>");
        }
    }

    let search = run.join("search");
    if search.join("best_weights.json").is_file() {
        h.push_str("<h2>Class-weight search</h2>");
        if let Some(b) = read(&search.join("best_weights.json")) {
            let pct = |v: &Value| {
                v.as_f64()
                    .map_or("-".to_string(), |x| format!("{:.2}", x * 100.0))
            };
            let _ = write!(
                h,
                "<p>Chosen: <b>{}</b>. The search scored candidates on {} validation images; the final \
                 choice re-scored the candidates below on {} held-out ones, with fresh proxy seeds \
                 (the fixed samplers compete on the same terms; a sample must beat the best fixed \
                 sampler by a standard error of the paired difference: here {} ± {} points). Did it \
                 help? Compare the stage-2 table below: the chosen row beside class-balanced and \
                 square-root cRT.</p>\
                 <table><tr><th>candidate</th><th>search reward</th><th>re-scored</th></tr>",
                esc(b["source"].as_str().unwrap_or("")),
                b["val_search"],
                b["val_choice"],
                pct(&b["gain_over_fixed"]),
                pct(&b["gain_se"])
            );
            for c in b["candidates"].as_array().into_iter().flatten() {
                let chosen = c["source"] == b["source"];
                let _ = write!(
                    h,
                    "<tr><td>{}{}</td><td>{}</td><td>{}</td></tr>",
                    esc(c["source"].as_str().unwrap_or("")),
                    if chosen { " ←" } else { "" },
                    pct(&c["search_reward"]),
                    pct(&c["rescored"])
                );
            }
            h.push_str("</table>");
        }
        for (f, alt) in [
            ("reward_curve.png", "reward curve"),
            ("weights.png", "searched weights"),
        ] {
            if search.join(f).is_file() {
                h.push_str(&img(&search.join(f), alt)?);
            }
        }
    }
    if let Some(s2) = read(&run.join("stage2/eval.json")) {
        h.push_str("<h2>Stage 2</h2><table><tr><th>classifier</th><th>val top-1</th><th>test top-1</th><th>many</th><th>medium</th><th>few</th></tr>");
        for (k, label) in [
            ("stage1", "stage 1"),
            ("crt", "re-trained (chosen weights)"),
            ("crt_class_balanced", "cRT, class-balanced"),
            ("crt_square_root", "cRT, square-root"),
            ("tau_normalised", "τ-normalised"),
            ("logit_adjusted", "logit-adjusted"),
            ("lws", "learnable weight scaling"),
        ] {
            let x = &s2[k];
            let _ = write!(
                h,
                "<tr><td>{label}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                num(&x["val"]["top1"], 2),
                num(&x["test"]["top1"], 2),
                num(&x["test"]["many"], 1),
                num(&x["test"]["medium"], 1),
                num(&x["test"]["few"], 1)
            );
        }
        h.push_str("</table>");
    }
    if let Ok(cfg) = std::fs::read_to_string(run.join("config.toml")) {
        let _ = write!(h, "<h2>Config</h2><pre>{}</pre>", esc(&cfg));
    }
    h.push_str("</body></html>\n");
    let index = out.join("index.html");
    fsx::write_atomic(&index, h.as_bytes())?;
    Ok(index)
}
