//! The pipeline's results as text: what the command line prints, and what other front ends may
//! show the same way.
use super::{RunDir, Stage2Report};
use crate::agent::train::AgentLog;
use crate::data::{Dataset, Profile, Split};
use crate::eval::Metrics;
use crate::report::plot;
use crate::search::{Best, SearchConfig};
use crate::train::stage1::{EpochLog, EvalReport};
use crate::train::stage2::Classifier;
use std::fmt::Write as _;

fn opt(x: Option<f64>) -> String {
    x.map(|v| format!("{v:5.1}")).unwrap_or_else(|| "    -".into())
}

/// The class histogram's title: the source's name and its long-tail profile.
pub fn title(s: &Split) -> String {
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

/// The data summary: source, classes, images per part, imbalance, shot groups, text histogram.
pub fn data_summary(ds: &Dataset) -> String {
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

/// The data stage's text: the data summary and where the split and the histogram are.
pub fn prepared(run: &RunDir, ds: &Dataset) -> String {
    format!(
        "{}\nsplit:     {}\nhistogram: {}\n",
        data_summary(ds),
        run.split().display(),
        run.class_histogram().display()
    )
}

/// One stage-1 epoch's line.
pub fn epoch_line(l: &EpochLog) -> String {
    format!(
        "epoch {:>3}  lr {:.4}  loss {:.4}  train {:5.1}%  val {:5.1}%  {:6.0} img/s  {:5.1}s",
        l.epoch, l.lr, l.train_loss, l.train_acc, l.val_top1, l.img_per_s, l.seconds
    )
}

/// One agent epoch's line.
pub fn agent_epoch(l: &AgentLog) -> String {
    let reward = if l.reward.is_empty() {
        String::new()
    } else {
        let r: Vec<String> = l.reward.iter().map(|v| format!("{v:+.4}")).collect();
        format!("  reward {}", r.join(" "))
    };
    format!(
        "agent stage {} epoch {:>2}  lr {:.4}  loss {:.4}  val glance {:5.1}%  all steps {:5.1}%{reward}  {:6.0} img/s  {:5.1}s",
        l.stage, l.epoch, l.lr, l.loss, l.val_glance, l.val_final, l.img_per_s, l.seconds
    )
}

/// eval.json as a table: last and best-on-val models, val and test.
pub fn eval_table(r: &EvalReport) -> String {
    let rows: Vec<(String, &Metrics)> = [("last", &r.last), ("best-on-val", &r.best)]
        .into_iter()
        .flat_map(|(name, m)| {
            [("val", &m.val), ("test", &m.test)]
                .map(|(part, x)| (format!("{name} (epoch {}) {part}", m.epoch), x))
        })
        .collect();
    metrics_table(&rows)
}

/// Rows of metrics: top-1, top-5, many/medium/few, ECE.
pub fn metrics_table(rows: &[(String, &Metrics)]) -> String {
    let mut out = format!(
        "\n{:<30} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}\n",
        "model / part", "top-1", "top-5", "many", "medium", "few", "ECE"
    );
    for (name, x) in rows {
        let _ = writeln!(
            out,
            "{:<30} {:6.2} {:6.2} {:>6} {:>6} {:>6} {:6.3}",
            name,
            x.top1,
            x.top5,
            opt(x.many),
            opt(x.medium),
            opt(x.few),
            x.ece
        );
    }
    out
}

/// The search's candidates (search and re-scored rewards), the gain over the best fixed sampler
/// and the chosen class weights.
pub fn search_table(best: &Best, sc: &SearchConfig, classes: &[String], run: &RunDir) -> String {
    let pct = |x: f64| format!("{:.2}", x * 100.0);
    let mut out = format!(
        "\nsearch: {} validation images searched on, {} held out for the choice; reward {:?}\n",
        best.val_search, best.val_choice, sc.reward
    );
    let _ = writeln!(out, "{:<22} {:>12} {:>12}", "candidate", "search", "re-scored");
    for c in &best.candidates {
        let _ = writeln!(
            out,
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
        let _ = writeln!(
            out,
            "best sample vs best fixed sampler on the held-out images: {:+.2} points (standard error {:.2}; a sample is chosen only with a gain ≥ {} SE)",
            g * 100.0,
            se * 100.0,
            sc.min_gain_se
        );
    }
    let _ = writeln!(out, "chosen class weights ({}):", best.source);
    for (c, w) in classes.iter().zip(&best.weights) {
        let _ = writeln!(out, "  {c:<14} {w:.4}");
    }
    let _ = writeln!(
        out,
        "plots: {} and {}; weights as CSV: {}",
        run.search_reward_curve().display(),
        run.search_weights_png().display(),
        run.best_weights_csv().display()
    );
    out
}

/// The searched weights as CSV: class, n_c, w_c and the per-sample weight w_c / n_c (what
/// `torch.utils.data.WeightedRandomSampler` takes).
pub fn weights_csv(classes: &[String], counts: &[usize], weights: &[f64]) -> String {
    let mut out = String::from("class,n_c,w_c,per_sample_weight\n");
    for ((c, &n), &w) in classes.iter().zip(counts).zip(weights) {
        let per = if n > 0 { w / n as f64 } else { 0.0 };
        let _ = writeln!(out, "{},{n},{w:.10},{per:.10e}", csv_field(c));
    }
    out
}

/// A CSV field, quoted (RFC 4180) when it holds a comma, a quote or a line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// stage 2's classifiers in the order its tables list them, after the stage-1 one (`None`), each
/// with its name there and its val and test metrics: what the printed and the HTML tables show.
pub fn stage2_rows(r: &Stage2Report) -> Vec<(Option<Classifier>, String, &Metrics, &Metrics)> {
    let fc = &r.config;
    let name = |c: Classifier| match c {
        Classifier::Retrained | Classifier::BestOnVal => {
            format!("re-trained ({} epochs on {:?})", fc.epochs, fc.path)
        }
        Classifier::CrtClassBalanced => "cRT, class-balanced".into(),
        Classifier::CrtSquareRoot => "cRT, square-root".into(),
        Classifier::TauNormalised => format!("τ-normalised (τ = {:.1} on val)", r.tau_normalised.tau),
        Classifier::LogitAdjusted => format!("logit-adjusted (τ = {:.1} on val)", r.logit_adjusted.tau),
        Classifier::Lws => "learnable weight scaling".into(),
        Classifier::Stage1 => "stage 1".into(),
    };
    let mut rows = vec![(
        Some(Classifier::Stage1),
        name(Classifier::Stage1),
        &r.stage1.val,
        &r.stage1.test,
    )];
    for c in [
        Classifier::Retrained,
        Classifier::CrtClassBalanced,
        Classifier::CrtSquareRoot,
        Classifier::TauNormalised,
        Classifier::LogitAdjusted,
        Classifier::Lws,
    ] {
        let (val, test) = r.scored(c);
        rows.push((Some(c), name(c), val, test));
    }
    rows
}

/// stage2/eval.json as a table; `*` marks the classifier of the run's model. With held-out
/// scores (searched weights), a `held` column: each classifier's top-1 on the validation images
/// the search held out, which `best-on-val` compares.
pub fn stage2_table(r: &Stage2Report) -> String {
    let held = |c: Option<Classifier>| -> String {
        match (&r.heldout, c) {
            (None, _) => String::new(),
            (Some(h), None) => format!(" {:6.2}", h.stage1),
            (Some(h), Some(c)) => format!(" {:6.2}", h.top1(c)),
        }
    };
    let mut out = format!(
        "\nstage 2 ({}):\n{:<34} {:>6}{} {:>6} {:>6} {:>6} {:>6}\n",
        r.weights_label(),
        "classifier",
        "val",
        if r.heldout.is_some() { "   held" } else { "" },
        "test",
        "many",
        "medium",
        "few"
    );
    for (c, name, val, test) in stage2_rows(r) {
        let mark = if c == Some(r.classifier) { "*" } else { " " };
        let _ = writeln!(
            out,
            "{mark}{:<33} {:6.2}{} {:6.2} {:>6} {:>6} {:>6}",
            name,
            val.top1,
            held(c),
            test.top1,
            opt(test.many),
            opt(test.medium),
            opt(test.few)
        );
    }
    let how = match (&r.heldout, r.config.classifier) {
        (Some(_), Classifier::BestOnVal) => " (best on the held-out val images)",
        (None, Classifier::BestOnVal) => " (best on val; post-hoc rows by their cross-fitted τ)",
        _ => "",
    };
    let _ = writeln!(out, "* the run's model: {}{how}", r.describe(r.classifier));
    if let Some(c) = r.confidence() {
        let _ = writeln!(out, "  choice: {c}");
    }
    if let Some(h) = &r.heldout {
        let _ = writeln!(
            out,
            "held: top-1 on the {} val images the search held out (it fitted its weights on the \
             others, where the post-hoc τ is re-chosen: τ-normalised {:.1}, logit-adjusted {:.1})",
            h.n, h.tau_normalised_tau, h.logit_adjusted_tau
        );
    }
    out
}

/// The one-screen summary a run ends with: test top-1 and many/medium/few of stage 1 and stage 2,
/// the agent's accuracy, and the searched weights beside the class counts.
pub fn run_summary(run: &RunDir, ds: &Dataset) -> String {
    let mut out = format!("\n── summary: {} ──\n", run.root().display());
    let line = |out: &mut String, name: &str, m: &Metrics| {
        let _ = writeln!(
            out,
            "{name:<46} top-1 {:6.2}   many {} · medium {} · few {}",
            m.top1,
            opt(m.many),
            opt(m.medium),
            opt(m.few)
        );
    };
    if let Some(e) = super::read_eval(run) {
        line(
            &mut out,
            &format!("stage 1, last epoch ({}), test", e.last.epoch),
            &e.last.test,
        );
    }
    if let Some(s2) = super::read_stage2(run) {
        let how = s2.weights_label();
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
        if s2.classifier != Classifier::Retrained {
            line(
                &mut out,
                &format!("model: {}, test", s2.label(s2.classifier)),
                s2.scored(s2.classifier).1,
            );
        }
        if let Some(c) = s2.confidence() {
            let _ = writeln!(out, "  choice: {c}");
        }
    }
    if let Some(l) = super::read_agent_last(run) {
        let _ = writeln!(
            out,
            "{:<46} val top-1 glance {:.1} → all steps {:.1}",
            "patch agent", l.val_glance, l.val_final
        );
    }
    if let Some(b) = super::read_best(run) {
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
                "  … {} more classes in {}",
                b.weights.len() - 20,
                run.best_weights().display()
            );
        }
    }
    out
}

/// The line said before a search's first trajectory: its settings and expected time.
pub fn search_estimate(e: &crate::search::Estimate, budget_s: Option<f64>) -> String {
    let s = &e.settings;
    let param = match s.groups {
        Some(g) => format!("{g} frequency groups"),
        None => format!("{} per-class weights", s.shape.classes),
    };
    let mut shortcuts = Vec::new();
    if let Some(c) = s.proxy_cap {
        shortcuts.push(format!("≤ {c} images per class"));
    }
    if let Some(m) = s.proxy_max_epochs {
        shortcuts.push(format!("≤ {m} epochs"));
    }
    let budget = match budget_s {
        Some(b) if e.total_s > b => format!("; budget_s = {b}: it will stop early"),
        Some(b) => format!("; budget_s = {b}"),
        None => String::new(),
    };
    format!(
        "search    {} classes × {}-d × {} images: {param}, {} trajectories{}; about {} ({} proxy runs of {:.2}s){budget}",
        s.shape.classes,
        s.shape.dim,
        s.shape.images,
        s.trajectories,
        if shortcuts.is_empty() {
            String::new()
        } else {
            format!(", proxies of {}", shortcuts.join(" and "))
        },
        duration(e.total_s),
        e.proxy_runs,
        e.run_s
    )
}

/// Seconds as "42 s", "12 min", "3.5 h".
fn duration(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_csv_has_per_sample_weights_and_quotes_names() {
        let csv = weights_csv(&["a".into(), "b,c".into()], &[4, 1], &[0.2, 0.8]);
        assert_eq!(
            csv,
            "class,n_c,w_c,per_sample_weight\na,4,0.2000000000,5.0000000000e-2\n\"b,c\",1,0.8000000000,8.0000000000e-1\n"
        );
    }
}
