//! End-to-end tests of the `autosampler` binary: exit codes, messages, artifacts.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

fn autosampler(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autosampler"))
        .args(args)
        .env("AUTOSAMPLER_CACHE", cache)
        .output()
        .expect("the binary runs")
}

/// `autosampler <cmd> --config <cfg> --out <out>`.
fn stage(cmd: &str, cfg: &Path, out: &Path, cache: &Path) -> Output {
    autosampler(
        &[
            cmd,
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        cache,
    )
}

/// Post-hoc logit adjustment's per-class bias offsets, `−τ · ln(n_c / N)`, from a run folder's
/// split.json training counts.
fn logit_adjustment(run: &Path, tau: f64) -> Vec<f64> {
    let split: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("split.json")).unwrap()).unwrap();
    let counts: Vec<f64> = split["counts"]["train"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let n: f64 = counts.iter().sum();
    counts.iter().map(|c| -tau * (c / n).ln()).collect()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("exp.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"exp\"\n[data.source]\nformat = \"image-folder\"\nroot = \"{}\"\n[data.split]\nval_per_class = 1\n{extra}",
            fixtures().join("folder").display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn prepare_writes_artifacts_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[data.split.longtail]\nkind = \"exp\"\nimbalance_ratio = 5\nn_max = 5\n",
    );
    let out = dir.path().join("run");
    let args = [
        "data",
        "prepare",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = autosampler(&args, &dir.path().join("cache"));
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("train 8 · val 3 · test 3"), "{t}"); // exp IR 5 over 5 available: 5, 2, 1
    for f in ["split.json", "config.toml", "data/class_histogram.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let resolved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        resolved.contains("resize = \"exact\""),
        "defaults filled in: {resolved}"
    );
    // the same command again reuses the split
    let o = autosampler(&args, &dir.path().join("cache"));
    assert!(
        o.status.success() && text(&o).contains("complete, reused"),
        "{}",
        text(&o)
    );
    // another data config into the same folder is refused, and the split is left alone
    let before = std::fs::read(out.join("split.json")).unwrap();
    write_config(
        dir.path(),
        "[data.split.longtail]\nkind = \"exp\"\nimbalance_ratio = 2\n",
    );
    let o = autosampler(&args, &dir.path().join("cache"));
    assert!(
        !o.status.success() && text(&o).contains("another data config"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(out.join("split.json")).unwrap(), before);
}

#[test]
fn config_typo_is_named_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[data.split.longtail]\nkind = \"exp\"\nimbalance_ratoi = 5\n",
    );
    let out = dir.path().join("run");
    let o = stage("run", &cfg, &out, &dir.path().join("cache"));
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("exp.toml: line 9, column 1") && t.contains("unknown field `imbalance_ratoi`"),
        "{t}"
    );
    assert!(!out.exists(), "no run folder for a bad config");
}

#[test]
fn inspect_from_flags_and_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("h.png");
    let root = fixtures().join("tiny");
    let o = autosampler(
        &[
            "data",
            "inspect",
            "--format",
            "tiny-imagenet",
            "--root",
            root.to_str().unwrap(),
            "--val-per-class",
            "1",
            "--png",
            png.to_str().unwrap(),
        ],
        &dir.path().join("cache"),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("n01443537") && png.is_file());
    let o = autosampler(
        &["data", "inspect", "--format", "cifar-10", "--root", "x"],
        dir.path(),
    );
    assert!(
        !o.status.success() && text(&o).contains("format 'cifar-10' is unrecognized"),
        "{}",
        text(&o)
    );
    let o = autosampler(
        &[
            "data",
            "inspect",
            "--format",
            "image-folder",
            "--root",
            fixtures().join("folder").to_str().unwrap(),
            "--ir",
            "0.5",
        ],
        dir.path(),
    );
    assert!(
        !o.status.success() && text(&o).contains("imbalance_ratio 0.5 is invalid"),
        "{}",
        text(&o)
    );
}

/// Starts `autosampler args…` and SIGKILLs it as soon as `file` exists (within 120 s).
fn kill_when_written(args: &[&str], file: &Path, cache: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_autosampler"))
        .args(args)
        .env("AUTOSAMPLER_CACHE", cache)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !file.is_file() && t.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn demo_train_config(dir: &Path, epochs: usize) -> PathBuf {
    let p = dir.join("train.toml");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar10-mini.tar.gz");
    std::fs::write(
        &p,
        format!(
            r#"[data.source]
format = "image-folder"
root = "{}"
[data.split]
val_per_class = 20
[data.split.longtail]
kind = "exp"
imbalance_ratio = 50
[model]
arch = "resnet8"
[train]
epochs = {epochs}
batch_size = 64
lr = 0.05
warmup_epochs = 1
threads = 1
"#,
            data.display()
        ),
    )
    .unwrap();
    p
}

/// Defect: `autosampler features` on a config without `[search]` or `[stage2]` stopped with "the
/// features stage is not complete" (a stage the config's own run skips was skipped when asked for
/// by name); the features are written, for every part, and a second call reuses them.
#[test]
fn features_command_extracts_for_a_config_that_neither_searches_nor_retrains() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = demo_train_config(dir.path(), 1);
    let out = dir.path().join("run");
    let o = stage("features", &cfg, &out, &cache);
    assert!(o.status.success(), "{}", text(&o));
    for part in ["train", "val", "test"] {
        assert!(
            out.join("features").join(format!("{part}.safetensors")).is_file(),
            "{part}: {}",
            text(&o)
        );
    }
    let m = std::fs::read_to_string(out.join("manifests/features.json")).unwrap();
    let o = stage("features", &cfg, &out, &cache);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("manifests/features.json")).unwrap(),
        m
    );
}

/// Defect "selection bias": best-on-val compared the searched classifier by its top-1 on all of
/// validation, half of which the search had fitted its weights on. Now every classifier is also
/// scored on the images the search held out (10 per class of the 20 here), the post-hoc τ chosen
/// on the other half, and both `[stage2] classifier = "best-on-val"` and `table --best` pick on
/// those.
#[test]
fn best_on_val_compares_classifiers_on_the_images_the_search_held_out() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = demo_train_config(dir.path(), 1);
    let mut text_cfg = std::fs::read_to_string(&cfg).unwrap();
    text_cfg.push_str("[search]\ntrajectories = 3\nsamples = 2\nrescore_seeds = 2\n[stage2]\nepochs = 2\n");
    std::fs::write(&cfg, text_cfg).unwrap();
    let out = dir.path().join("run");
    let o = stage("run", &cfg, &out, &cache);
    assert!(o.status.success(), "{}", text(&o));
    let read = |f: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap()
    };
    let best = read(&out.join("search/best_weights.json"));
    let s2 = read(&out.join("stage2/eval.json"));
    assert_eq!(
        (best["val_search"].as_u64(), best["val_choice"].as_u64()),
        (Some(100), Some(100))
    );
    let h = &s2["heldout"];
    assert_eq!(h["n"], 100, "{s2}");
    let keys = [
        "retrained",
        "crt_class_balanced",
        "crt_square_root",
        "lws",
        "tau_normalised",
        "logit_adjusted",
    ];
    let top = keys
        .iter()
        .map(|k| h[*k].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let picked = s2["classifier"].as_str().unwrap().replace('-', "_");
    assert_eq!(
        h[&picked].as_f64().unwrap(),
        top,
        "best-on-val picks the best held-out: {s2}"
    );
    // 100 images: whole percentages
    for k in keys.iter().chain(&["stage1"]) {
        let v = h[*k].as_f64().unwrap();
        assert_eq!(v, v.round(), "{k}: {v}");
    }
    // table --best: the same held-out scores for the stage-2 rows
    let o = autosampler(
        &[
            "table",
            out.to_str().unwrap(),
            "--stage2-rows",
            "--best",
            dir.path().join("best.json").to_str().unwrap(),
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));
    let b = read(&dir.path().join("best.json"));
    let cands = b["candidates"].as_array().unwrap();
    let searched = cands
        .iter()
        .find(|c| {
            c["recipe"]
                .as_str()
                .unwrap()
                .ends_with("stage 2 (searched weights)")
        })
        .unwrap();
    assert_eq!(
        searched["selection_top1"].as_f64(),
        h["retrained"].as_f64(),
        "{b}"
    );
    let max = cands
        .iter()
        .filter_map(|c| c["selection_top1"].as_f64())
        .fold(f64::MIN, f64::max);
    assert_eq!(b["selection_top1"].as_f64(), Some(max), "{b}");
}

/// A run killed with SIGKILL mid-training and resumed ends with the same weights, bit for bit, as
/// an uninterrupted run (CPU).
#[test]
fn sigkill_and_resume_gives_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = demo_train_config(dir.path(), 4);
    let run = |out: &Path, resume: bool| {
        let mut args = vec![
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if resume {
            args.push("--resume");
        }
        autosampler(&args, &cache)
    };
    let whole = dir.path().join("whole");
    let o = run(&whole, false);
    assert!(o.status.success(), "{}", text(&o));

    let killed = dir.path().join("killed");
    let state = killed.join("stage1/state.json");
    kill_when_written(
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            killed.to_str().unwrap(),
        ],
        &state,
        &cache,
    );
    let done: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(
        done["epochs_done"].as_u64().unwrap() < 4,
        "killed too late to test anything: {done}"
    );
    let o = run(&killed, true);
    assert!(o.status.success(), "{}", text(&o));
    let a = std::fs::read(whole.join("stage1/model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("stage1/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    let la = std::fs::read_to_string(whole.join("stage1/metrics.jsonl")).unwrap();
    let lb = std::fs::read_to_string(killed.join("stage1/metrics.jsonl")).unwrap();
    let strip = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut()
                    .unwrap()
                    .retain(|k, _| !["seconds", "img_per_s"].contains(&k.as_str()));
                v.to_string()
            })
            .collect()
    };
    assert_eq!(strip(&la), strip(&lb));
}

#[test]
fn run_chains_data_stage1_eval_features_and_search() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\n[train]\nepochs = 2\nbatch_size = 4\nthreads = 1\n\
         [search]\ntrajectories = 3\nsamples = 2\nproxy_batch = 4\n[stage2]\nepochs = 2\nbatch_size = 4\n",
    );
    let out = dir.path().join("run");
    let args = [
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = autosampler(&args, &dir.path().join("cache"));
    assert!(o.status.success(), "{}", text(&o));
    // the search's settings and cost are said before its first trajectory: 3 fixed + 3 × 2
    // samples + the mean + (3 + 1 + 8) × 8 re-scored (one validation image per class: nothing
    // is held out, so the fixed samplers are not scored again on all of validation)
    let t = text(&o);
    assert!(
        t.contains("search    3 classes × 64-d × ")
            && t.contains(": 3 per-class weights, 3 trajectories; about ")
            && t.contains("(106 proxy runs of "),
        "{t}"
    );
    for f in [
        "eval.json",
        "stage1/model.safetensors",
        "features/train.safetensors",
        "features/val.safetensors",
        "features/test.safetensors",
        "search/best_weights.json",
        "search/reward_curve.png",
        "search/weights.png",
        "stage2/head.safetensors",
        "stage2/eval.json",
        "report/index.html",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // the report is self-contained: every figure inlined, nothing fetched
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    for alt in [
        "class histogram",
        "training accuracy",
        "training loss",
        "per-class accuracy",
        "reward curve",
        "searched weights",
    ] {
        assert!(
            html.contains(&format!("<img alt=\"{alt}\" src=\"data:image/png;base64,")),
            "{alt} missing"
        );
    }
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    assert!(html.contains("Confusion matrix") && html.contains("Stage 2") && html.contains("[train]"));
    // provenance: each stage's wall time, version, commit, device, threads; stage 1's state too
    assert!(
        html.contains("<h2>Provenance</h2>") && html.contains("<td>stage1</td>"),
        "no provenance table"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stage1/state.json")).unwrap()).unwrap();
    assert_eq!(state["provenance"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(state["provenance"]["device"], "cpu");
    assert_eq!(state["provenance"]["threads"], 1);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifests/stage1.json")).unwrap()).unwrap();
    assert!(m["seconds"].as_f64().unwrap() > 0.0 && m["provenance"]["commit"].is_string());
    let traj = std::fs::read_to_string(out.join("search/trajectories.jsonl")).unwrap();
    assert_eq!(traj.lines().count(), 3);
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("search/best_weights.json")).unwrap())
            .unwrap();
    let w: Vec<f64> = best["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(w.len(), 3);
    assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    let s2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stage2/eval.json")).unwrap()).unwrap();
    assert_eq!(
        s2["weights"], best["weights"],
        "stage 2 samples with the searched weights"
    );
    for k in [
        "stage1",
        "crt",
        "crt_class_balanced",
        "crt_square_root",
        "tau_normalised",
        "logit_adjusted",
        "lws",
    ] {
        assert_eq!(s2[k]["test"]["n"], 3, "{k}");
    }
    assert!(html.contains("cRT, class-balanced") && html.contains("held-out"));
    // one validation image per class: the search holds none out, so no held-out scores
    assert_eq!(best["val_choice"], 0);
    assert!(s2.get("heldout").is_none(), "{s2}");
    // the chosen weights are one of the re-scored candidates: the best re-scored one, unless
    // class-balanced was kept because no other fixed sampler led it by more than its standard
    // error (and no sample beat that)
    let best_r = best["reward"].as_f64().unwrap();
    let cands = best["candidates"].as_array().unwrap();
    assert!(cands.iter().any(|c| c["source"] == best["source"]));
    let (g, se) = (
        best["fixed_gain"].as_f64().unwrap(),
        best["fixed_gain_se"].as_f64().unwrap(),
    );
    let kept_default = best["source"] == "class-balanced" && g <= se * (1.0 + 1e-9) + 1e-9;
    assert!(
        kept_default || cands.iter().all(|c| c["rescored"].as_f64().unwrap() <= best_r),
        "{best}"
    );
    // a second run reuses every stage
    let o = autosampler(&args, &dir.path().join("cache"));
    let t = text(&o);
    assert!(
        o.status.success() && t.contains("stage 1") && t.contains("(complete, reused)"),
        "{t}"
    );
    assert!(
        t.contains("search") && t.matches("complete, reused").count() >= 4,
        "{t}"
    );
    // Defect "stale stage 2": another search seed gives other weights, and stage 2 follows them
    // (it used to print "complete, reused" and keep the old weights).
    write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\n[train]\nepochs = 2\nbatch_size = 4\nthreads = 1\n\
         [search]\ntrajectories = 3\nsamples = 2\nselect = \"best-draw\"\nseed = 1\n[stage2]\nepochs = 2\nbatch_size = 4\n",
    );
    let o = autosampler(&args, &dir.path().join("cache"));
    assert!(o.status.success(), "{}", text(&o));
    let best1: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("search/best_weights.json")).unwrap())
            .unwrap();
    assert_ne!(best1["weights"], best["weights"]);
    let s2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stage2/eval.json")).unwrap()).unwrap();
    assert_eq!(s2["weights"], best1["weights"], "stage 2 is stale");
    // the best single draw holds nothing out: no held-out scores
    assert_eq!(best1["val_choice"], 0);
    assert!(s2.get("heldout").is_none(), "{s2}");
    // stage 2 on images (frozen backbone, augmented images) with class-balanced weights
    write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\n[train]\nepochs = 2\nbatch_size = 4\nthreads = 1\n\
         [search]\ntrajectories = 3\nsamples = 2\nproxy_batch = 4\n\
         [stage2]\nepochs = 2\nbatch_size = 4\npath = \"images\"\nsampler = { kind = \"class-balanced\" }\n",
    );
    let o = stage("finetune", &cfg, &out, &dir.path().join("cache"));
    assert!(
        o.status.success() && text(&o).contains("on Images"),
        "{}",
        text(&o)
    );
    let s2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stage2/eval.json")).unwrap()).unwrap();
    assert_eq!(s2["config"]["path"], "images");
    assert_eq!(
        s2["weights"],
        serde_json::json!([1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0])
    );
    assert_eq!(s2["crt"]["test"]["n"], 3);
    // a finished stage 1 is not reused for another [train] config
    write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\n[train]\nepochs = 2\nbatch_size = 4\nthreads = 1\nlr = 0.5\n",
    );
    let before = std::fs::read_to_string(out.join("config.toml")).unwrap();
    let o = autosampler(&args, &dir.path().join("cache"));
    assert!(
        !o.status.success() && text(&o).contains("another [model] or [train] config"),
        "{}",
        text(&o)
    );
    // Defect "a refused config still overwrites the run's config.toml" (which `table` groups by)
    assert_eq!(std::fs::read_to_string(out.join("config.toml")).unwrap(), before);
}

#[test]
fn table_groups_seeds_with_mean_and_std() {
    let dir = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for seed in [0, 1] {
        let cfg = dir.path().join(format!("s{seed}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "name = \"fix_s{seed}\"\n[data.source]\nformat = \"image-folder\"\nroot = \"{}\"\n[data.split]\nval_per_class = 1\nseed = {seed}\n\
                 [model]\narch = \"resnet8\"\n[train]\nepochs = 1\nbatch_size = 4\nthreads = 1\nseed = {seed}\n\
                 [stage2]\nepochs = 1\nbatch_size = 4\nseed = {seed}\nsampler = {{ kind = \"square-root\" }}\n",
                fixtures().join("folder").display()
            ),
        )
        .unwrap();
        let out = dir.path().join(format!("run{seed}"));
        let o = stage("run", &cfg, &out, &dir.path().join("cache"));
        assert!(o.status.success(), "{}", text(&o));
        outs.push(out);
    }
    let csv = dir.path().join("t.csv");
    let o = autosampler(
        &[
            "table",
            outs[0].to_str().unwrap(),
            outs[1].to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
            "--html",
            dir.path().join("cmp.html").to_str().unwrap(),
        ],
        &dir.path().join("cache"),
    );
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("| fix | 2 |"), "two seeds, one row: {t}");
    let page = std::fs::read_to_string(dir.path().join("cmp.html")).unwrap();
    assert!(
        page.contains("<td>fix</td><td>2</td>") && page.matches("report/index.html").count() == 2,
        "{page}"
    );
    // the CSV's mean is the mean of the two eval.json values
    let top1 = |r: &PathBuf| -> f64 {
        let e: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(r.join("eval.json")).unwrap()).unwrap();
        e["last"]["test"]["top1"].as_f64().unwrap()
    };
    let want = (top1(&outs[0]) + top1(&outs[1])) / 2.0;
    let line = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let mean: f64 = line.split(',').nth(2).unwrap().parse().unwrap();
    assert!((mean - want).abs() < 1e-3, "{line} vs {want}");
    assert!(!t.contains("fix · "), "no stage-2 rows unless asked: {t}");
    // --stage2-rows: each stage-2 classifier of the runs is a row of its own after the run's,
    // over both seeds, with the mean of the two stage2/eval.json values
    let o = autosampler(
        &[
            "table",
            outs[0].to_str().unwrap(),
            outs[1].to_str().unwrap(),
            "--stage2-rows",
            "--csv",
            csv.to_str().unwrap(),
            "--best",
            dir.path().join("best.json").to_str().unwrap(),
        ],
        &dir.path().join("cache"),
    );
    assert!(o.status.success(), "{}", text(&o));
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    // --best: the row with the highest mean selection top-1 (ties to the lower val ECE), its
    // test mean, and the stage-2 classifier that reproduces it
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("best.json")).unwrap()).unwrap();
    let cands = best["candidates"].as_array().unwrap();
    let top = cands
        .iter()
        .filter_map(|c| c["selection_top1"].as_f64())
        .fold(f64::MIN, f64::max);
    let at_top: Vec<&serde_json::Value> = cands
        .iter()
        .filter(|c| c["selection_top1"].as_f64() == Some(top))
        .collect();
    let name = best["recipe"].as_str().unwrap().to_string();
    assert!(at_top.iter().any(|c| c["recipe"] == name.as_str()), "{best}");
    let ece = best["val_ece"].as_f64().unwrap();
    for c in &at_top {
        assert!(c["val_ece"].as_f64().unwrap() >= ece, "{c} vs {best}");
    }
    assert_eq!(
        best["tied_on_selection"].as_array().unwrap().len(),
        at_top.len() - 1,
        "{best}"
    );
    let line = csv_text
        .lines()
        .find(|l| l.split(',').next() == Some(name.as_str()))
        .unwrap();
    let cells: Vec<&str> = line.split(',').collect();
    let (val, test): (f64, f64) = (cells[12].parse().unwrap(), cells[2].parse().unwrap());
    assert!((best["val_top1"].as_f64().unwrap() - val).abs() < 0.006, "{best}");
    assert!(
        (best["best_recipe_test_top1"].as_f64().unwrap() - test).abs() < 0.006,
        "{best}"
    );
    assert_eq!(best["seeds"], 2);
    assert_eq!(best["candidates"].as_array().unwrap().len(), 7);
    let classifier = match name.as_str() {
        "fix" => serde_json::Value::Null,
        "fix · cRT class-balanced" => "crt-class-balanced".into(),
        "fix · cRT square-root" => "crt-square-root".into(),
        "fix · LWS" => "lws".into(),
        "fix · τ-normalised" => "tau-normalised".into(),
        "fix · logit-adjusted" => "logit-adjusted".into(),
        "fix · stage 2 (sampler weights)" => "retrained".into(),
        n => panic!("unexpected row {n}"),
    };
    assert_eq!(best["stage2_classifier"], classifier, "{best}");
    let names: Vec<&str> = csv_text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "fix",
            "fix · cRT class-balanced",
            "fix · cRT square-root",
            "fix · LWS",
            "fix · τ-normalised",
            "fix · logit-adjusted",
            "fix · stage 2 (sampler weights)",
        ]
    );
    let s2 = |r: &PathBuf, key: &str| -> (f64, f64) {
        let e: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(r.join("stage2/eval.json")).unwrap()).unwrap();
        (
            e[key]["test"]["top1"].as_f64().unwrap(),
            e[key]["val"]["top1"].as_f64().unwrap(),
        )
    };
    for (line, key) in csv_text.lines().skip(2).zip([
        "crt_class_balanced",
        "crt_square_root",
        "lws",
        "tau_normalised",
        "logit_adjusted",
        "crt",
    ]) {
        let cells: Vec<&str> = line.split(',').collect();
        // run, seeds, then mean/std pairs in COLUMNS order: last test top-1 first, val top-1 sixth
        assert_eq!(cells[1], "2", "{line}");
        let (t0, v0) = s2(&outs[0], key);
        let (t1, v1) = s2(&outs[1], key);
        let test_mean: f64 = cells[2].parse().unwrap();
        let val_mean: f64 = cells[12].parse().unwrap();
        assert!(
            (test_mean - (t0 + t1) / 2.0).abs() < 1e-4,
            "{key}: {line} vs {t0}, {t1}"
        );
        assert!(
            (val_mean - (v0 + v1) / 2.0).abs() < 1e-4,
            "{key}: {line} vs {v0}, {v1}"
        );
        assert_eq!(cells[4], "", "no best-on-val for a stage-2 row: {line}");
    }
    // one folder named twice, and a copy of it (another folder, the same seed), are one seed
    // (`table A A` used to count 2 seeds, ± 0.00); the warnings are plain text off a terminal
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(copy.join("stage2")).unwrap();
    for f in ["config.toml", "eval.json", "stage2/eval.json"] {
        std::fs::copy(outs[0].join(f), copy.join(f)).unwrap();
    }
    let a = outs[0].to_str().unwrap();
    let o = autosampler(
        &["table", a, a, copy.to_str().unwrap()],
        &dir.path().join("cache"),
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("| fix | 1 |"), "one seed: {out}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is given twice: counted once") && err.contains("has the seed (0) of another folder"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "no colour codes in a log: {err:?}");
}

#[test]
fn sweep_runs_configs_times_seeds_and_skips_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fix.toml");
    let write = |sampler: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[data.source]\nformat = \"image-folder\"\nroot = \"{}\"\n[data.split]\nval_per_class = 1\n\
                 [model]\narch = \"resnet8\"\n[train]\nepochs = 1\nbatch_size = 4\nthreads = 1\n\
                 [stage2]\nepochs = 1\nbatch_size = 4\nsampler = {{ kind = \"{sampler}\" }}\n",
                fixtures().join("folder").display()
            ),
        )
        .unwrap()
    };
    write("square-root");
    let root = dir.path().join("sweep");
    let args = [
        "sweep",
        cfg.to_str().unwrap(),
        "--seeds",
        "0,1",
        "--root",
        root.to_str().unwrap(),
    ];
    let o = autosampler(&args, &dir.path().join("cache"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("| fix | 2 |"), "{}", text(&o));
    for s in [0, 1] {
        let split: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(format!("fix_s{s}/split.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(split["config"]["seed"], s, "the seed reaches the split");
    }
    let o = autosampler(&args, &dir.path().join("cache"));
    assert!(
        o.status.success() && text(&o).matches("finished, skipped").count() == 2,
        "{}",
        text(&o)
    );
    // Defect "sweep keeps stale results": a run folder is finished only for the config it ran;
    // after an edit to [stage2] the sweep runs again (stage 1 reused) and stage 2 follows the edit
    write("class-balanced");
    let o = autosampler(&args, &dir.path().join("cache"));
    let t = text(&o);
    assert!(o.status.success() && !t.contains("finished, skipped"), "{t}");
    for s in [0, 1] {
        let s2: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(format!("fix_s{s}/stage2/eval.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(s2["config"]["sampler"]["kind"], "class-balanced", "seed {s}");
        let reused = format!(
            "{} (complete, reused)",
            root.join(format!("fix_s{s}/stage1")).display()
        );
        assert!(t.contains(&reused), "seed {s}: stage 1 is reused: {t}");
    }
}

/// The report renders in headless Chromium and its figures are on the page: the screenshot holds
/// the class histogram's bar colours. Skipped (with a note) where Chromium is not installed.
#[test]
fn report_renders_in_headless_chromium() {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }) else {
        eprintln!("skipped: no chromium on PATH (Debian package `chromium`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\n[train]\nepochs = 1\nbatch_size = 4\nthreads = 1\n",
    );
    let out = dir.path().join("run");
    let o = stage("run", &cfg, &out, &dir.path().join("cache"));
    assert!(o.status.success(), "{}", text(&o));
    let shot = dir.path().join("shot.png");
    let o = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1100,1400",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", out.join("report/index.html").display()))
        .output()
        .unwrap();
    assert!(shot.is_file(), "no screenshot: {}", text(&o));
    let img = image::open(&shot).unwrap().to_rgb8();
    // the fixture's classes have 5, 3 and 1 training images: all "few", drawn in (214, 39, 40)
    let red = img.pixels().filter(|p| p.0 == [214, 39, 40]).count();
    assert!(
        red > 500,
        "histogram bars not on the rendered page ({red} pixels)"
    );
    // and the training curve's blue line
    assert!(img.pixels().any(|p| p.0 == [31, 119, 180]));
}

fn tiny_agent_config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("agent.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"agent\"\n[data.source]\nformat = \"tiny-imagenet\"\nroot = \"{}\"\n[data.split]\nval_per_class = 1\n\
             [agent]\nepochs = [1, 1, 1]\nbatch_size = 2\nhidden = 8\nthreads = 1\n{extra}",
            fixtures().join("tiny").display()
        ),
    )
    .unwrap();
    p
}

/// The agent trains on real Tiny-ImageNet images (the 2-class fixture, with boxes), locates every
/// training image's patch, draws its figures, and drives agent-guided CutMix in stage 1, with
/// stored locations and per batch.
#[test]
fn agent_trains_locates_and_drives_cutmix() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = dir.path().join("run");
    let cfg = tiny_agent_config(dir.path(), "");
    let o = autosampler(
        &[
            "agent",
            "locate",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(
        !o.status.success() && text(&o).contains("agent train"),
        "{}",
        text(&o)
    );
    let o = autosampler(
        &[
            "agent",
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));
    let logs: Vec<serde_json::Value> = std::fs::read_to_string(out.join("agent/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        logs.iter()
            .map(|l| l["stage"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        logs[1]["reward"].as_array().unwrap().len(),
        2,
        "one mean reward per focus step"
    );
    // 3 training images per class, 1 held out: 4 located patches, 16 bytes each after the header
    assert_eq!(
        std::fs::metadata(out.join("agent/locations.bin")).unwrap().len(),
        16 + 4 * 16
    );
    for f in [
        "agent.json",
        "agent.safetensors",
        "reward_curve.png",
        "patches.png",
        "cutmix_compare.png",
        "triples.png",
        "centres.png",
    ] {
        assert!(out.join("agent").join(f).is_file(), "{f} missing");
    }
    // locations are reused for the same agent and redone for another one
    let locate = || {
        autosampler(
            &[
                "agent",
                "locate",
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &cache,
        )
    };
    let o = locate();
    assert!(
        o.status.success() && text(&o).contains("locations.bin (complete, reused)"),
        "{}",
        text(&o)
    );
    // the locations' manifest as another agent's would be
    let stamp = out.join("manifests/locations.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stamp).unwrap()).unwrap();
    v["fingerprint"] = serde_json::json!("of another agent");
    std::fs::write(&stamp, v.to_string()).unwrap();
    let o = locate();
    assert!(
        o.status.success() && text(&o).contains("located 4 training images"),
        "{}",
        text(&o)
    );
    // a finished agent is reused, not retrained
    let before = std::fs::read(out.join("agent/agent.safetensors")).unwrap();
    let o = autosampler(
        &[
            "agent",
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(
        o.status.success() && text(&o).contains("(complete, reused)"),
        "{}",
        text(&o)
    );
    assert!(before == std::fs::read(out.join("agent/agent.safetensors")).unwrap());
    for (name, mix) in [("stored", ""), ("batch", ", per_batch = true")] {
        let run = dir.path().join(name);
        std::fs::create_dir_all(&run).unwrap();
        let cfg = tiny_agent_config(
            &run,
            &format!(
                "from = \"{}\"\n[model]\narch = \"resnet8\"\n[train]\nepochs = 1\nbatch_size = 2\nthreads = 1\n\
                 mix = {{ kind = \"agent-cutmix\", prob = 1.0, tau = 0.5{mix} }}\n",
                out.join("agent").display()
            ),
        );
        let o = autosampler(
            &[
                "run",
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                run.join("out").to_str().unwrap(),
            ],
            &cache,
        );
        assert!(o.status.success(), "{name}: {}", text(&o));
        assert!(run.join("out/eval.json").is_file() && run.join("out/agent/locations.bin").is_file());
        let html = std::fs::read_to_string(run.join("out/report/index.html")).unwrap();
        assert!(
            html.contains("patches.png") || html.contains("located patches"),
            "the report shows the agent"
        );
    }
    // agent-cutmix without an agent is refused with the reason
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let p = bad.join("bad.toml");
    std::fs::write(
        &p,
        format!(
            "[data.source]\nformat = \"tiny-imagenet\"\nroot = \"{}\"\n[data.split]\nval_per_class = 1\n[model]\narch = \"resnet8\"\n\
             [train]\nepochs = 1\nbatch_size = 2\nmix = {{ kind = \"agent-cutmix\" }}\n",
            fixtures().join("tiny").display()
        ),
    )
    .unwrap();
    let o = autosampler(
        &[
            "run",
            "--config",
            p.to_str().unwrap(),
            "--out",
            bad.join("out").to_str().unwrap(),
        ],
        &cache,
    );
    assert!(
        !o.status.success() && text(&o).contains("[agent]"),
        "{}",
        text(&o)
    );
}

/// An agent run killed with SIGKILL and resumed ends with the same agent, bit for bit.
#[test]
fn agent_sigkill_and_resume_gives_the_same_agent() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar10-mini.tar.gz");
    let cfg = dir.path().join("a.toml");
    std::fs::write(
        &cfg,
        format!(
            "[data.source]\nformat = \"image-folder\"\nroot = \"{}\"\n[data.split]\nval_per_class = 20\n\
             [data.split.longtail]\nkind = \"exp\"\nimbalance_ratio = 10\n\
             [agent]\nepochs = [2, 1, 1]\nbatch_size = 32\nhidden = 32\nthreads = 1\n",
            data.display()
        ),
    )
    .unwrap();
    let args = |out: &Path, resume: bool| {
        let mut a = vec![
            "agent".to_string(),
            "train".into(),
            "--config".into(),
            cfg.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        if resume {
            a.push("--resume".into());
        }
        a
    };
    let whole = dir.path().join("whole");
    let a = args(&whole, false);
    let o = autosampler(&a.iter().map(String::as_str).collect::<Vec<_>>(), &cache);
    assert!(o.status.success(), "{}", text(&o));
    let killed = dir.path().join("killed");
    let state = killed.join("agent/state.json");
    let a = args(&killed, false);
    kill_when_written(&a.iter().map(String::as_str).collect::<Vec<_>>(), &state, &cache);
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(
        s["history"].as_array().unwrap().len() < 4,
        "killed too late to test anything: {s}"
    );
    let a = args(&killed, true);
    let o = autosampler(&a.iter().map(String::as_str).collect::<Vec<_>>(), &cache);
    assert!(o.status.success(), "{}", text(&o));
    let x = std::fs::read(whole.join("agent/agent.safetensors")).unwrap();
    let y = std::fs::read(killed.join("agent/agent.safetensors")).unwrap();
    assert!(x == y, "the resumed agent differs from the uninterrupted one");
    assert_eq!(
        std::fs::read(whole.join("agent/locations.bin")).unwrap(),
        std::fs::read(killed.join("agent/locations.bin")).unwrap()
    );
}

/// `autosampler run` killed with SIGKILL during stage 1 and started again with the same command
/// continues where it stopped and ends with the same model and evaluation as an uninterrupted run.
#[test]
fn run_killed_and_restarted_continues_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = demo_train_config(dir.path(), 4);
    let run = |out: &Path| stage("run", &cfg, out, &cache);
    let whole = dir.path().join("whole");
    let o = run(&whole);
    assert!(o.status.success(), "{}", text(&o));
    let killed = dir.path().join("killed");
    kill_when_written(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            killed.to_str().unwrap(),
        ],
        &killed.join("stage1/state.json"),
        &cache,
    );
    assert!(
        !killed.join("eval.json").exists(),
        "killed too late to test anything"
    );
    let o = run(&killed);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("split    ") && text(&o).contains("(complete, reused)"),
        "{}",
        text(&o)
    );
    assert!(
        std::fs::read(whole.join("stage1/model.safetensors")).unwrap()
            == std::fs::read(killed.join("stage1/model.safetensors")).unwrap()
    );
    let eval = |d: &Path| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("eval.json")).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        v
    };
    assert_eq!(eval(&whole), eval(&killed));
    assert!(killed.join("report/index.html").is_file());
}

/// Defects "panics" and "late or missing config checks": out-of-range [search] / [stage2]
/// values (NaN, zero, negative) and a search without validation images are refused at once, with
/// exit 1, the file, the key and the value, and before anything is written.
#[test]
fn bad_search_and_finetune_values_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[model]\narch = \"resnet8\"\n[train]\nepochs = 1\nbatch_size = 4\nthreads = 1\n";
    for (extra, want) in [
        (
            "[search]\nsigma = nan\n",
            "sigma must be a finite number > 0, got NaN",
        ),
        ("[search]\nproxy_batch = 0\n", "proxy_batch must be ≥ 1, got 0"),
        (
            "[stage2]\nbatch_size = 0\n",
            "[stage2] batch_size must be ≥ 1, got 0",
        ),
        ("[stage2]\nepochs = 0\n", "[stage2] epochs must be ≥ 1, got 0"),
        (
            "[stage2]\nlr = -0.1\n",
            "[stage2] lr must be a finite number > 0, got -0.1",
        ),
        // Defect "[train] is checked only after the agent trained, and its message names no key"
        ("lr = nan\n", "[train] lr must be a finite number > 0, got NaN"),
        (
            "weight_decay = -1\n",
            "[train] weight_decay must be a finite number ≥ 0, got -1",
        ),
        ("momentum = 1.5\n", "[train] momentum must be in [0, 1), got 1.5"),
        ("device = \"gpu\"\n", "[train] device = \"gpu\" is unrecognized"),
        (
            "loss = { kind = \"ldam\", s = -1 }\n",
            "[train.loss] s must be a finite number > 0, got -1",
        ),
        (
            "mix = { kind = \"cutmix\", alpha = 1.0, prob = 2 }\n",
            "[train.mix] prob must be in [0, 1], got 2",
        ),
        (
            "[agent]\nepochs = [1, 1, 1]\nclip = nan\n",
            "[agent] clip must be a finite number > 0, got NaN",
        ),
        ("[agent]\nsteps = 1\n", "[agent] steps must be ≥ 2, got 1"),
    ] {
        // keys without a section header extend [train]
        let cfg = write_config(dir.path(), &format!("{base}{extra}"));
        let out = dir.path().join("run");
        let o = stage("run", &cfg, &out, &dir.path().join("cache"));
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{extra}: {t}");
        assert!(t.contains(want) && t.contains("exp.toml"), "{extra}: {t}");
        assert!(!out.exists(), "{extra}: the run folder was written");
    }
    // val_per_class = 0 with a search
    let p = dir.path().join("noval.toml");
    let text0 = std::fs::read_to_string(write_config(dir.path(), &format!("{base}[search]\n"))).unwrap();
    std::fs::write(&p, text0.replace("val_per_class = 1", "val_per_class = 0")).unwrap();
    let o = stage("run", &p, &dir.path().join("run"), &dir.path().join("cache"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("val_per_class = 0"), "{}", text(&o));
}

/// Defect "messages": a root that does not exist names its config key; a file name that is not
/// UTF-8 is named as such (it was "No such file"); a cache folder whose meta.json was deleted is
/// rebuilt (it was "Directory not empty"); `report --out RUN` needs no config; `run --help` lists
/// every stage and `--seed` says what it sets; `data prepare` has no training flags.
#[test]
fn messages_name_the_key_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let o = autosampler(
        &[
            "data",
            "inspect",
            "--format",
            "image-folder",
            "--root",
            "/no/such/root",
        ],
        &cache,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("data.source.root = \"/no/such/root\": no such file or folder"),
        "{}",
        text(&o)
    );
    let src = dir.path().join("src");
    copy_tree(&fixtures().join("folder"), &src);
    let odd = {
        use std::os::unix::ffi::OsStrExt;
        src.join("train/a")
            .join(std::ffi::OsStr::from_bytes(b"x\xff.png"))
    };
    std::fs::copy(src.join("train/a/000.png"), &odd).unwrap();
    let args = [
        "data",
        "inspect",
        "--format",
        "image-folder",
        "--root",
        src.to_str().unwrap(),
        "--val-per-class",
        "1",
    ];
    let o = autosampler(&args, &cache);
    assert!(
        o.status.code() == Some(1) && text(&o).contains("the file name is not valid UTF-8"),
        "{}",
        text(&o)
    );
    std::fs::remove_file(&odd).unwrap();
    let o = autosampler(&args, &cache);
    assert!(o.status.success(), "{}", text(&o));
    let key = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    std::fs::remove_file(key.join("meta.json")).unwrap();
    let o = autosampler(&args, &cache);
    assert!(o.status.success(), "{}", text(&o));
    assert!(key.join("meta.json").is_file(), "the cache was rebuilt");
    let o = autosampler(
        &[
            "data",
            "verify",
            "--format",
            "image-folder",
            "--root",
            src.to_str().unwrap(),
            "--val-per-class",
            "1",
        ],
        &cache,
    );
    assert!(
        o.status.success() && text(&o).contains("15 images; pixels, labels and boxes match"),
        "{}",
        text(&o)
    );
    // report from the run folder alone
    let cfg = write_config(dir.path(), "");
    let out = dir.path().join("run");
    // --set and --print-config: the resolved config, nothing done
    let o = autosampler(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            "model.arch=resnet8",
            "--set",
            "train.epochs=3",
            "--set",
            "stage2.epochs=2",
            // a [stage2] with neither a sampler nor a [search] is refused at load
            "--set",
            "stage2.sampler={ kind = \"class-balanced\" }",
            "--print-config",
        ],
        &cache,
    );
    let t = text(&o);
    assert!(
        o.status.success() && t.contains("[train]\nepochs = 3\n") && t.contains("[stage2]\nepochs = 2\n"),
        "{t}"
    );
    assert!(!out.exists(), "--print-config did work");
    let o = autosampler(
        &["run", "--config", cfg.to_str().unwrap(), "--set", "train.lr=-1"],
        &cache,
    );
    assert!(
        o.status.code() == Some(1)
            && text(&o).contains("with --set train.lr=-1: [train] lr must be a finite number > 0, got -1"),
        "{}",
        text(&o)
    );
    let o = autosampler(
        &[
            "data",
            "prepare",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = autosampler(&["report", "--out", out.to_str().unwrap()], &cache);
    assert!(
        o.status.success() && out.join("report/index.html").is_file(),
        "{}",
        text(&o)
    );
    // a device that is not here is refused before any work (it failed after the agent's training)
    if !tch::Cuda::is_available() {
        let cfg = write_config(
            dir.path(),
            "[model]\narch = \"resnet8\"\n[train]\nepochs = 1\nbatch_size = 4\nthreads = 1\ndevice = \"cuda\"\n",
        );
        let late = dir.path().join("late");
        let o = stage("run", &cfg, &late, &cache);
        assert!(
            !o.status.success()
                && text(&o).contains("libtorch sees no CUDA device")
                && !late.join("split.json").exists(),
            "{}",
            text(&o)
        );
    }
    // a folder that is no run folder gets no report written into it
    let other = dir.path().join("photos");
    std::fs::create_dir_all(&other).unwrap();
    let o = autosampler(&["report", "--out", other.to_str().unwrap()], &cache);
    assert!(
        !o.status.success() && text(&o).contains("not a run folder (it has no config.toml)"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 0, "nothing written");
    let help = text(&autosampler(&["run", "--help"], &cache));
    for want in [
        "patch agent",
        "stage 1",
        "search",
        "stage 2",
        "report",
        "manifest",
    ] {
        assert!(help.contains(want), "run --help lacks {want}: {help}");
    }
    assert!(help.contains("Seed of every random draw"), "{help}");
    let help = text(&autosampler(&["data", "prepare", "--help"], &cache));
    assert!(!help.contains("--epochs") && !help.contains("--device"), "{help}");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &p);
        } else {
            std::fs::copy(e.path(), p).unwrap();
        }
    }
}

fn python_with_torch() -> Option<String> {
    for py in ["python", "python3"] {
        let ok = Command::new(py)
            .args(["-c", "import torch, safetensors"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(py.to_string());
        }
    }
    eprintln!(
        "skipped the PyTorch half: no python with torch and safetensors on PATH (./x test provides one)"
    );
    None
}

/// `run` exports model.safetensors (backbone + stage 2's classifier + card); `predict` classifies
/// files and folders with it; the same file loads into PyTorch with strict=True and gives the same
/// logits on predict's inputs; `eval --checkpoint` evaluates bare weights with PyTorch's names.
#[test]
fn exported_model_predicts_and_loads_into_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\n[train]\nepochs = 2\nbatch_size = 4\nthreads = 1\n\
         [stage2]\nepochs = 2\nbatch_size = 4\nsampler = { kind = \"class-balanced\" }\n",
    );
    let out = dir.path().join("run");
    let o = stage("run", &cfg, &out, &cache);
    assert!(o.status.success(), "{}", text(&o));
    let model = out.join("model.safetensors");
    assert!(model.is_file() && out.join("manifests/export.json").is_file());
    let test_dir = fixtures().join("folder/test");
    let csv = dir.path().join("p.csv");
    let io = dir.path().join("io.safetensors");
    let o = autosampler(
        &[
            "predict",
            "--run",
            out.to_str().unwrap(),
            test_dir.to_str().unwrap(),
            "--topk",
            "2",
            "--csv",
            csv.to_str().unwrap(),
            "--save-io",
            io.to_str().unwrap(),
        ],
        &cache,
    );
    let t = text(&o);
    assert!(
        o.status.success()
            && t.contains("stage 2: ")
            && (t.contains(
                "(the best of stage 2's classifiers on validation, by more than its standard error)"
            ) || t.contains(
                "(the default: no classifier beat it on validation by more than the standard error)"
            )),
        "{t}"
    );
    // Defect "predict on a folder stops at the first unreadable image": a damaged file among
    // good ones is named, the good ones are predicted, and the exit status says not all were
    let mixed = dir.path().join("mixed");
    copy_tree(&test_dir, &mixed);
    let broken = mixed.join("a/broken.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let o1 = autosampler(
        &["predict", "--run", out.to_str().unwrap(), mixed.to_str().unwrap()],
        &cache,
    );
    let good = String::from_utf8_lossy(&o.stdout).lines().count();
    assert!(
        !o1.status.success()
            && String::from_utf8_lossy(&o1.stdout).lines().count() == good
            && String::from_utf8_lossy(&o1.stderr).contains(&format!("error: {}", broken.display()))
            && text(&o1).contains("1 of the"),
        "{}",
        text(&o1)
    );
    // no classes asked for is refused (it printed nothing per image)
    let o0 = autosampler(
        &[
            "predict",
            "--run",
            out.to_str().unwrap(),
            test_dir.to_str().unwrap(),
            "--topk",
            "0",
        ],
        &cache,
    );
    assert!(
        !o0.status.success() && text(&o0).contains("--topk"),
        "{}",
        text(&o0)
    );
    // by default the model's classifier is the one of stage 2's with the highest val top-1 when it
    // beats the default by more than its standard error, else the default
    let s2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stage2/eval.json")).unwrap()).unwrap();
    let val = |k: &str| s2[k]["val"]["top1"].as_f64().unwrap();
    let fields = [
        ("retrained", "crt"),
        ("crt-class-balanced", "crt_class_balanced"),
        ("crt-square-root", "crt_square_root"),
        ("lws", "lws"),
        ("tau-normalised", "tau_normalised"),
        ("logit-adjusted", "logit_adjusted"),
    ];
    let top = fields.iter().map(|(_, f)| val(f)).fold(f64::MIN, f64::max);
    let first_top = fields.iter().find(|(_, f)| val(f) == top).unwrap().0;
    assert_eq!(s2["choice"]["best"], first_top, "{s2}");
    assert_eq!(s2["classifier"], s2["choice"]["chosen"], "{s2}");
    let rows: Vec<String> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(rows[0], "file,rank,class,probability");
    assert_eq!(rows.len(), 1 + 3 * 2, "3 images × top 2");
    for pair in rows[1..].chunks(2) {
        let p = |r: &String| r.rsplit(',').next().unwrap().parse::<f64>().unwrap();
        assert!(pair[0].contains(",1,") && pair[1].contains(",2,"));
        assert!(p(&pair[0]) >= p(&pair[1]) && p(&pair[0]) + p(&pair[1]) <= 1.0 + 1e-6);
    }
    if let Some(py) = python_with_torch() {
        let script = fixtures().join("../python/load_safetensors.py");
        let o = Command::new(py)
            .arg(script)
            .arg(&model)
            .arg(&io)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let diff: f64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
        assert!(diff < 1e-4, "max abs logit difference {diff}");
    }
    // `[stage2] classifier` picks the model's classifier: the logit-adjusted one is the stage-1
    // weight with the bias b_c − τ·ln(n_c / N), τ the one stage2/eval.json chose on val; stage 2
    // runs again for it (the key is one of its inputs), and predict's card names it
    write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\n[train]\nepochs = 2\nbatch_size = 4\nthreads = 1\n\
         [stage2]\nepochs = 2\nbatch_size = 4\nsampler = { kind = \"class-balanced\" }\n\
         classifier = \"logit-adjusted\"\n",
    );
    let o = stage("run", &cfg, &out, &cache);
    let t = text(&o);
    assert!(
        o.status.success() && !t.contains("stage2 (complete, reused)") && t.contains("*logit-adjusted"),
        "{t}"
    );
    let s2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stage2/eval.json")).unwrap()).unwrap();
    assert_eq!(s2["classifier"], "logit-adjusted");
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(
        html.contains("<b>logit-adjusted (τ = ") && html.matches("(the run's model)").count() == 1,
        "the report marks the model's classifier"
    );
    let tau = s2["logit_adjusted"]["tau"].as_f64().unwrap();
    let offsets = logit_adjustment(&out, tau);
    let read = |p: &Path| -> std::collections::HashMap<String, Vec<f32>> {
        tch::Tensor::read_safetensors(p)
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()))
            .collect()
    };
    let (s1, exported) = (read(&out.join("stage1/model.safetensors")), read(&model));
    assert_eq!(exported["fc.weight"], s1["fc.weight"]);
    for (c, (&got, &b)) in exported["fc.bias"].iter().zip(&s1["fc.bias"]).enumerate() {
        let want = b as f64 + offsets[c];
        assert!((got as f64 - want).abs() < 1e-5, "class {c}: {got} vs {want}");
    }
    let o = autosampler(
        &[
            "predict",
            "--run",
            out.to_str().unwrap(),
            test_dir.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(
        o.status.success() && text(&o).contains("logit-adjusted stage-1 classifier, τ = "),
        "{}",
        text(&o)
    );
    // a file without a card is refused with the reason
    let o = autosampler(
        &[
            "predict",
            "--model",
            out.join("stage1/model.safetensors").to_str().unwrap(),
            test_dir.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(
        o.status.code() == Some(1) && text(&o).contains("no model card"),
        "{}",
        text(&o)
    );
    // eval --checkpoint: the stage-1 weights give eval.json's last-epoch test top-1
    let o = autosampler(
        &[
            "eval",
            "--config",
            cfg.to_str().unwrap(),
            "--checkpoint",
            out.join("stage1/model.safetensors").to_str().unwrap(),
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", text(&o));
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    let want = format!(
        "checkpoint, test {:>width$.2}",
        eval["last"]["test"]["top1"].as_f64().unwrap(),
        width = 20
    );
    let got = text(&o);
    let line = got.lines().find(|l| l.starts_with("checkpoint, test")).unwrap();
    assert_eq!(
        line.split_whitespace().nth(2),
        want.split_whitespace().nth(2),
        "{got}"
    );
    // the exported model guides CutMix in another run (`cam-cutmix`): it trains, and its
    // stage-1 weights differ from the same config without mixing
    let cam_dir = dir.path().join("cam");
    std::fs::create_dir_all(&cam_dir).unwrap();
    let cam_cfg = write_config(
        &cam_dir,
        &format!(
            "[model]\narch = \"resnet8\"\n[train]\nepochs = 2\nbatch_size = 4\nthreads = 1\n\
             mix = {{ kind = \"cam-cutmix\", model = \"{}\", prob = 1.0, patch = 8 }}\n",
            model.display()
        ),
    );
    let o = stage("train", &cam_cfg, &cam_dir.join("run"), &cache);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        std::fs::read(cam_dir.join("run/stage1/model.safetensors")).unwrap()
            != std::fs::read(out.join("stage1/model.safetensors")).unwrap()
    );
    // a missing model is refused at load, naming the key and the path, before any work
    let missing = cam_dir.join("missing.safetensors");
    let bad = write_config(
        &dir.path().join("cam"),
        &format!(
            "[model]\narch = \"resnet8\"\n[train]\nepochs = 1\nmix = {{ kind = \"cam-cutmix\", model = \"{}\" }}\n",
            missing.display()
        ),
    );
    let o = stage("train", &bad, &cam_dir.join("bad"), &cache);
    let t = text(&o);
    assert!(
        o.status.code() == Some(1)
            && t.contains("[train.mix] model")
            && t.contains("missing.safetensors")
            && !cam_dir.join("bad").exists(),
        "{t}"
    );
}

/// A cosine-head model (LDAM-DRW's) goes through the search and stage 2 as a linear one does: its
/// classifier is taken as `s · normalize(W)ᵀ` on normalised features, which ranks the classes as
/// the cosine head does (stage 2's stage-1 row is stage 1's own evaluation), and the export holds
/// stage 2's linear classifier on normalised features (card head `linear-on-normalised`), which
/// `predict` reads. Before, the search refused the head after stage 1 had trained. A config whose
/// head has no linear form (TDE's causal head) is refused before any work.
#[test]
fn a_cosine_model_is_searched_retrained_and_exported() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\nhead = \"cosine\"\n[train]\nepochs = 2\nbatch_size = 4\nthreads = 1\n\
         loss = { kind = \"ldam\", s = 30.0 }\n[search]\ntrajectories = 3\nsamples = 2\n\
         [stage2]\nepochs = 2\nbatch_size = 4\nclassifier = \"logit-adjusted\"\n",
    );
    let out = dir.path().join("run");
    let o = stage("run", &cfg, &out, &cache);
    assert!(o.status.success(), "{}", text(&o));
    let json = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(p)).unwrap()).unwrap()
    };
    let (eval, s2) = (json("eval.json"), json("stage2/eval.json"));
    for part in ["val", "test"] {
        let (a, b) = (&s2["stage1"][part], &eval["last"][part]);
        assert_eq!(a["n"], b["n"], "{part}");
        assert!(
            (a["top1"].as_f64().unwrap() - b["top1"].as_f64().unwrap()).abs() < 1e-9,
            "{part}: stage 2's stage-1 row {a} against stage 1's evaluation {b}"
        );
    }
    assert!(out.join("search/best_weights.json").is_file());
    // the export: fc.weight = 30 · normalize(W_cos)ᵀ, fc.bias = −τ · ln(n_c / N) (logit adjustment
    // of a bias-free classifier), and a card that says the head
    let read = |p: &Path| -> std::collections::HashMap<String, tch::Tensor> {
        tch::Tensor::read_safetensors(p).unwrap().into_iter().collect()
    };
    let (s1, exported) = (
        read(&out.join("stage1/model.safetensors")),
        read(&out.join("model.safetensors")),
    );
    let w = &s1["fc.weight"]; // [D, C]
    let want = (w / w.norm_scalaropt_dim(2, [0], true) * 30.0).tr();
    assert_eq!(exported["fc.weight"].size(), want.size());
    assert!(exported["fc.weight"].allclose(&want, 1e-5, 1e-5, false));
    let tau = s2["logit_adjusted"]["tau"].as_f64().unwrap();
    let offsets = logit_adjustment(&out, tau);
    let bias = Vec::<f32>::try_from(&exported["fc.bias"]).unwrap();
    for (c, &got) in bias.iter().enumerate() {
        let want = offsets[c];
        assert!((got as f64 - want).abs() < 1e-5, "class {c}: {got} vs {want}");
    }
    let o = autosampler(
        &[
            "predict",
            "--run",
            out.to_str().unwrap(),
            fixtures().join("folder/test").to_str().unwrap(),
        ],
        &cache,
    );
    assert!(
        o.status.success() && text(&o).contains("logit-adjusted stage-1 classifier, τ = "),
        "{}",
        text(&o)
    );
    let opened = autosampler::export::open(&out.join("model.safetensors"), tch::Device::Cpu).unwrap();
    assert_eq!(
        opened.card.model.head,
        autosampler::model::Head::LinearOnNormalised
    );
    // TDE's causal head has no linear form: refused at load, naming the section, before any work
    let bad = write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\nhead = { causal = { heads = 2 } }\n[train]\nepochs = 1\n[stage2]\nepochs = 1\n",
    );
    let o = stage("run", &bad, &dir.path().join("tde"), &cache);
    let t = text(&o);
    assert!(
        o.status.code() == Some(1)
            && t.contains("exp.toml")
            && t.contains("[stage2] re-trains a linear classifier")
            && !dir.path().join("tde").exists(),
        "{t}"
    );
}

/// The tables of the long runs on the results pages (`docs/results.md` and each experiment's
/// `configs/*/README.md`) are the output of the `autosampler table` command written above each of
/// them, over the run summaries committed in `bench/results/runs/` (the queue copies each finished
/// run's config.toml, eval.json and stage2/eval.json there): a table edited by hand, or a result
/// committed without its table, fails here.
#[test]
fn readmes_long_run_tables_are_what_table_prints_of_the_committed_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut pages = vec![root.join("docs/results.md")];
    let mut readmes: Vec<PathBuf> = std::fs::read_dir(root.join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path().join("README.md"))
        .filter(|p| p.is_file())
        .collect();
    readmes.sort();
    pages.extend(readmes);
    let marker = "`autosampler table bench/results/runs/";
    let mut checked = 0;
    for page in &pages {
        let readme = std::fs::read_to_string(page).unwrap();
        for (at, _) in readme.match_indices(marker) {
            let command = &readme[at + 1..][..readme[at + 1..].find('`').unwrap()];
            // a command that writes a file (`--best FILE`, `--csv FILE`) is prose, not a table
            if command.contains("--best") || command.contains("--csv") {
                continue;
            }
            let mut args: Vec<String> = Vec::new();
            for word in command.split_whitespace().skip(1) {
                match word.strip_suffix("/*") {
                    // the shell's glob: the folder's entries that are folders, in sorted order
                    Some(dir) => {
                        let mut runs: Vec<String> = std::fs::read_dir(root.join(dir))
                            .unwrap_or_else(|e| panic!("{command}: {dir}: {e}"))
                            .map(|e| e.unwrap().path())
                            .filter(|p| p.is_dir())
                            .map(|p| p.to_str().unwrap().to_string())
                            .collect();
                        runs.sort();
                        args.extend(runs);
                    }
                    None if word.starts_with("bench/") => {
                        args.push(root.join(word).to_str().unwrap().to_string())
                    }
                    None => args.push(word.to_string()),
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let cache = tempfile::tempdir().unwrap();
            let o = autosampler(&args, cache.path());
            assert!(o.status.success(), "{command}: {}", text(&o));
            let table = String::from_utf8_lossy(&o.stdout).trim().to_string();
            assert!(table.starts_with("| run |"), "{command}: {table}");
            assert!(
                readme[at..].contains(&format!("\n{table}\n")),
                "{}: the table after `{command}` is not what the command prints:\n{table}",
                page.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "the results pages name {checked} `autosampler table bench/results/runs/…` commands, expected the three long-run tables"
    );
}

/// Flips one bit of `path`'s byte at `len - from_end` (the last tensor's data in a safetensors
/// file, a float's mantissa).
fn flip_bit(path: &Path, from_end: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() - from_end;
    b[i] ^= 0x10;
    std::fs::write(path, b).unwrap();
}

/// Defect "a corrupted stage output is re-blessed": a stage rerun because an output no longer
/// matched its manifest kept any file that still parsed, and the commit recorded the damaged
/// file's hash as valid. Now a damaged output is removed (the log names it) and written again:
/// stage 1's final model from its checkpoint, features by extracting them again, stage 2's
/// classifier by training it again, bit for bit what they were. Stage 1's best-on-validation
/// weights cannot be written again without training: the run stops naming the file and the
/// command that discards the stage.
#[test]
fn a_damaged_stage_output_is_rebuilt_identical_or_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = demo_train_config(dir.path(), 2);
    let mut text_cfg = std::fs::read_to_string(&cfg).unwrap();
    text_cfg.push_str("[stage2]\nepochs = 2\nbatch_size = 16\nsampler = { kind = \"class-balanced\" }\n");
    std::fs::write(&cfg, text_cfg).unwrap();
    let out = dir.path().join("run");
    let o = stage("run", &cfg, &out, &cache);
    assert!(o.status.success(), "{}", text(&o));
    let files = [
        "split.json",
        "stage1/model.safetensors",
        "features/train.safetensors",
        "stage2/head.safetensors",
        "model.safetensors",
    ];
    let good: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    let eval = std::fs::read(out.join("eval.json")).unwrap();
    for (f, want) in files.iter().zip(&good) {
        flip_bit(&out.join(f), 5);
        let o = stage("run", &cfg, &out, &cache);
        assert!(o.status.success(), "{f}: {}", text(&o));
        assert!(
            text(&o).contains(&format!("{f} does not match the size and SHA-256"))
                && text(&o).contains("removed"),
            "{f}: {}",
            text(&o)
        );
        assert!(
            std::fs::read(out.join(f)).unwrap() == *want,
            "{f} not rebuilt identical"
        );
        assert_eq!(std::fs::read(out.join("eval.json")).unwrap(), eval, "{f}");
    }
    // the same command once more: everything reused, nothing removed
    let o = stage("run", &cfg, &out, &cache);
    assert!(
        o.status.success() && !text(&o).contains("removed"),
        "{}",
        text(&o)
    );
    let best = out.join("stage1/best.safetensors");
    let best_bytes = std::fs::read(&best).unwrap();
    flip_bit(&best, 5);
    let o = stage("run", &cfg, &out, &cache);
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(
        msg.contains("stage1/best.safetensors does not match the size and SHA-256")
            && msg.contains("only training stage1 again can write it")
            && msg.contains(&format!("rm -r {}", out.join("stage1").display())),
        "{msg}"
    );
    // refused, not removed: the file is left for the user to decide
    assert!(best.is_file());
    std::fs::write(&best, &best_bytes).unwrap();
    let o = stage("run", &cfg, &out, &cache);
    assert!(
        o.status.success() && !text(&o).contains("removed"),
        "{}",
        text(&o)
    );
}

/// Defect "checkpoints have no integrity check": a bit flipped in a killed stage 1's checkpoint
/// was resumed from. A checkpoint now carries the SHA-256 of its tensors; a resume from a damaged
/// one stops naming the file and the command that discards it.
#[test]
fn a_damaged_checkpoint_stops_the_resume_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = demo_train_config(dir.path(), 6);
    let out = dir.path().join("run");
    let args = [
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    kill_when_written(&args, &out.join("stage1/state.json"), &cache);
    let last = out.join("stage1/last.safetensors");
    assert!(
        last.is_file() && !out.join("eval.json").exists(),
        "killed too late to test anything"
    );
    let good = std::fs::read(&last).unwrap();
    flip_bit(&last, 5);
    let o = autosampler(&args, &cache);
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(
        msg.contains(&last.display().to_string())
            && msg.contains("damaged")
            && msg.contains(&format!(
                "rm {} {}",
                last.display(),
                out.join("stage1/state.json").display()
            )),
        "{msg}"
    );
    std::fs::write(&last, &good).unwrap();
    let o = autosampler(&args, &cache);
    assert!(o.status.success(), "{}", text(&o));
}

/// Defect "new runs use damaged cache pixels silently": a run checks the cache's pixels against
/// their recorded SHA-256 the first time it opens the cache, and rebuilds a damaged cache from its
/// source (the log says which file and why), to the same bytes.
#[test]
fn damaged_cache_pixels_are_rebuilt_from_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = write_config(dir.path(), "");
    let out = dir.path().join("run");
    let prepare = |out: &Path| {
        autosampler(
            &[
                "data",
                "prepare",
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &cache,
        )
    };
    let o = prepare(&out);
    assert!(o.status.success(), "{}", text(&o));
    let key = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .find(|e| e.path().join("meta.json").is_file())
        .unwrap()
        .path();
    let images = key.join("train.images");
    let good = std::fs::read(&images).unwrap();
    flip_bit(&images, 100);
    let o = prepare(&dir.path().join("run2"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("train.images")
            && text(&o).contains("pixels are damaged")
            && text(&o).contains("rebuilding the cache"),
        "{}",
        text(&o)
    );
    assert!(std::fs::read(&images).unwrap() == good);
}

/// Defects "two processes building the same new cache" (one failed with "Directory not empty")
/// and "a killed cache build leaves its temporary folder forever": four processes build one cache
/// at once and all succeed; a dead build's temporary folder, idle for an hour, goes.
#[test]
fn concurrent_builds_of_one_cache_all_open_it_and_dead_builds_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = write_config(dir.path(), "");
    // all four started before any has finished: each sees no cache and builds it
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_autosampler"))
                .args([
                    "data",
                    "prepare",
                    "--config",
                    cfg.to_str().unwrap(),
                    "--out",
                    dir.path().join(format!("run{i}")).to_str().unwrap(),
                ])
                .env("AUTOSAMPLER_CACHE", &cache)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let entries: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "one cache, no temporary folders left: {entries:?}"
    );
    let stale = cache.join(".0123456789abcdef.tmp-999999999");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("train.images"), b"partial").unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for p in [stale.join("train.images"), stale.clone()] {
        std::fs::File::options()
            .write(true)
            .open(&p)
            .or_else(|_| std::fs::File::open(&p))
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    }
    assert_eq!(autosampler::data::cache::remove_stale_builds(&cache), 1);
    assert!(!stale.exists());
}

/// The flipped-bit probe on the patch agent's artifacts: a damaged `agent.safetensors` is written
/// again from the agent's last checkpoint, and damaged `locations.bin` by locating again, to the
/// same bytes, the log naming each.
#[test]
fn a_damaged_agent_or_locations_file_is_rebuilt_identical() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = dir.path().join("run");
    let cfg = tiny_agent_config(dir.path(), "");
    let train = || {
        autosampler(
            &[
                "agent",
                "train",
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &cache,
        )
    };
    let o = train();
    assert!(o.status.success(), "{}", text(&o));
    for f in ["agent/agent.safetensors", "agent/locations.bin"] {
        let good = std::fs::read(out.join(f)).unwrap();
        flip_bit(&out.join(f), 5);
        let o = train();
        assert!(
            o.status.success()
                && text(&o).contains(&format!("{f} does not match the size and SHA-256"))
                && !text(&o).contains("epoch"),
            "{f}: {}",
            text(&o)
        );
        assert!(
            std::fs::read(out.join(f)).unwrap() == good,
            "{f} not rebuilt identical"
        );
    }
}

/// Defect "choices made on validation that cannot tell the candidates apart": `best-on-val`
/// keeps the default classifier (class-balanced cRT after a plainly trained stage 1, stage 1's own
/// after balanced softmax) unless the best on validation beats it by more than the standard error
/// of the paired difference, and the search keeps class-balanced among the fixed samplers on the
/// same terms; both are recorded, and the summary says how confident the choice is.
#[test]
fn best_on_val_keeps_the_default_unless_beaten_by_more_than_the_noise() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    for (loss, default) in [("ce", "crt-class-balanced"), ("logit-adjusted", "stage1")] {
        let cfg = demo_train_config(dir.path(), 2);
        let mut text_cfg = std::fs::read_to_string(&cfg).unwrap();
        text_cfg.push_str(&format!(
            "loss = {{ kind = \"{loss}\" }}\n[search]\ntrajectories = 3\nsamples = 2\nrescore_seeds = 2\n[stage2]\nepochs = 2\n"
        ));
        std::fs::write(&cfg, text_cfg).unwrap();
        let out = dir.path().join(loss);
        let o = stage("run", &cfg, &out, &cache);
        assert!(o.status.success(), "{}", text(&o));
        let s2: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("stage2/eval.json")).unwrap()).unwrap();
        let c = &s2["choice"];
        assert_eq!(c["default"], default, "{loss}: {c}");
        assert_eq!(c["basis"], "held", "{c}");
        let (gain, se) = (c["gain"].as_f64().unwrap(), c["se"].as_f64().unwrap());
        let want = if c["best"] != c["default"] && gain > se {
            &c["best"]
        } else {
            &c["default"]
        };
        assert_eq!(&c["chosen"], want, "{c}");
        assert_eq!(&s2["classifier"], want, "the model's classifier is the choice");
        assert!(text(&o).contains("  choice: "), "{}", text(&o));
        let best: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("search/best_weights.json")).unwrap())
                .unwrap();
        let (g, se) = (
            best["fixed_gain"].as_f64().unwrap(),
            best["fixed_gain_se"].as_f64().unwrap(),
        );
        let fixed = if best["fixed_best"] != "class-balanced" && g > se {
            best["fixed_best"].as_str().unwrap()
        } else {
            "class-balanced"
        };
        let source = best["source"].as_str().unwrap();
        assert!(
            source == fixed || source.starts_with("sample") || source == "policy mean",
            "{best}"
        );
    }
}

/// Defect "accepted silently": a warm-up longer than the training and a batch larger than an
/// epoch's images run (a short test run may want both) but say so.
#[test]
fn a_warmup_longer_than_training_and_a_batch_larger_than_the_data_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\n[train]\nepochs = 1\nwarmup_epochs = 2\nbatch_size = 64\nthreads = 1\n",
    );
    let o = stage("train", &cfg, &dir.path().join("run"), &dir.path().join("cache"));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("warmup_epochs = 2 is more than epochs = 1")
            && t.contains("batch_size = 64 is more than the 9 images of an epoch"),
        "{t}"
    );
}

/// Defect "nothing in a log file during long work": without a terminal the progress bar is not
/// drawn, so a line with the step, the rate and the time left is written at a steady interval
/// (here every step: `AUTOSAMPLER_PROGRESS_SECONDS=0`).
#[test]
fn progress_lines_reach_a_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\n[train]\nepochs = 1\nwarmup_epochs = 0\nbatch_size = 4\nthreads = 1\n",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_autosampler"))
        .args([
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            dir.path().join("run").to_str().unwrap(),
        ])
        .env("AUTOSAMPLER_CACHE", dir.path().join("cache"))
        .env("AUTOSAMPLER_PROGRESS_SECONDS", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // 9 training images in batches of 4: steps 1/3, 2/3, 3/3
    for step in ["epoch 1/1: 1/3 (33%) loss ", "epoch 1/1: 3/3 (100%) loss "] {
        assert!(err.contains(step), "{step:?} not in:\n{err}");
    }
    assert!(err.contains("/s, ETA "), "{err}");
}

/// Defect "`run --out DIR` overwrites the user's own `DIR/config.toml`": a config kept in the run
/// folder under the name the run writes its resolved config to is refused before anything is
/// written, and the file is left as it was; the run folder's own resolved config is still
/// accepted as a config.
#[test]
fn a_config_that_is_the_run_folders_config_toml_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = dir.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    let mine = out.join("config.toml");
    let text_cfg = format!(
        "# my experiment\nname = \"exp\"\n[data.source]\nformat = \"image-folder\"\nroot = \"{}\"\n[data.split]\nval_per_class = 1\n",
        fixtures().join("folder").display()
    );
    std::fs::write(&mine, &text_cfg).unwrap();
    let prepare = |cfg: &Path| {
        autosampler(
            &[
                "data",
                "prepare",
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &cache,
        )
    };
    let o = prepare(&mine);
    assert!(
        !o.status.success() && text(&o).contains("is the run folder's own config.toml"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), text_cfg);
    assert!(!out.join("split.json").exists(), "nothing written");
    // from elsewhere the run writes its resolved config there, and that file is a config too
    let elsewhere = dir.path().join("exp.toml");
    std::fs::write(&elsewhere, &text_cfg).unwrap();
    let o = prepare(&elsewhere);
    assert!(o.status.success(), "{}", text(&o));
    let o = prepare(&mine);
    assert!(o.status.success(), "{}", text(&o));
}

/// Defect "messages": `--out` naming a file said only "File exists (os error 17)", and `eval
/// --checkpoint` with a missing file printed a Debug struct.
#[test]
fn an_out_that_is_a_file_and_a_missing_checkpoint_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\n[train]\nepochs = 1\nthreads = 1\n",
    );
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "mine").unwrap();
    let o = stage("run", &cfg, &file, &cache);
    assert!(
        !o.status.success() && text(&o).contains("notes.txt: a file, not a folder"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    let missing = dir.path().join("missing.safetensors");
    let o = autosampler(
        &[
            "eval",
            "--config",
            cfg.to_str().unwrap(),
            "--checkpoint",
            missing.to_str().unwrap(),
        ],
        &cache,
    );
    let t = text(&o);
    assert!(
        !o.status.success()
            && t.contains("missing.safetensors")
            && t.contains("No such file")
            && !t.contains("Torch("),
        "{t}"
    );
}

/// Defect "a moved dataset blocks resume": the same bytes at a new path are the same data (the
/// split records their content checksum), so the run continues and says the source moved; other
/// content at the new path is refused naming `root`. And a run folder's `config.toml` is a config
/// that works from any folder (its paths are absolute).
#[test]
fn a_moved_dataset_is_recognised_by_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    copy_tree(&fixtures().join("folder"), &a);
    let config = |root: &Path| {
        let p = dir.path().join("exp.toml");
        std::fs::write(
            &p,
            format!(
                "name = \"exp\"\n[data.source]\nformat = \"image-folder\"\nroot = \"{}\"\n[data.split]\nval_per_class = 1\n",
                root.display()
            ),
        )
        .unwrap();
        p
    };
    let out = dir.path().join("run");
    let prepare = |cfg: &Path, cwd: &Path| {
        Command::new(env!("CARGO_BIN_EXE_autosampler"))
            .args([
                "data",
                "prepare",
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .env("AUTOSAMPLER_CACHE", &cache)
            .current_dir(cwd)
            .output()
            .unwrap()
    };
    let o = prepare(&config(&a), dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let split = std::fs::read(out.join("split.json")).unwrap();
    std::fs::rename(&a, &b).unwrap();
    let o = prepare(&config(&b), dir.path());
    assert!(
        o.status.success() && text(&o).contains("(the same content): the split is reused"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(out.join("split.json")).unwrap(),
        split,
        "the split is kept"
    );
    // the run folder's own config.toml, from another working folder
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let o = prepare(&out.join("config.toml"), &elsewhere);
    assert!(o.status.success(), "{}", text(&o));
    // other content at the new path: refused, naming root
    std::fs::copy(b.join("train/b/000.png"), b.join("train/a/000.png")).unwrap();
    let o = prepare(&config(&b), dir.path());
    assert!(
        !o.status.success()
            && text(&o).contains(&format!("[data.source] root = {}", b.display()))
            && text(&o).contains("not the data"),
        "{}",
        text(&o)
    );
}

/// Defect "a damaged cache `meta.json` gives no advice": a cache whose `meta.json` does not read
/// back is rebuilt from its source, the log naming the file.
#[test]
fn a_cache_with_a_damaged_meta_json_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = write_config(dir.path(), "");
    let prepare = |out: &str| {
        autosampler(
            &[
                "data",
                "prepare",
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                dir.path().join(out).to_str().unwrap(),
            ],
            &cache,
        )
    };
    let o = prepare("run");
    assert!(o.status.success(), "{}", text(&o));
    let key = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .find(|e| e.path().join("meta.json").is_file())
        .unwrap()
        .path();
    let meta = std::fs::read(key.join("meta.json")).unwrap();
    std::fs::write(key.join("meta.json"), &meta[..meta.len() / 2]).unwrap();
    let o = prepare("run2");
    assert!(
        o.status.success() && text(&o).contains("meta.json") && text(&o).contains("rebuilding the cache"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(key.join("meta.json")).unwrap(), meta);
}

/// `[model] init`: a run starts from another run's weights (a cosine classifier's `fc.weight` is
/// another shape: re-initialised, and said); the same file moved elsewhere reuses the finished
/// stage 1; another network's file is refused at load, naming tensors, before any run folder.
#[test]
fn a_run_starts_from_an_init_file_and_another_networks_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let train = "[train]\nepochs = 1\nbatch_size = 4\nthreads = 1\n";
    let cos = write_config(
        dir.path(),
        &format!("[model]\narch = \"resnet8\"\nhead = \"cosine\"\n{train}"),
    );
    let first = dir.path().join("first");
    let o = stage("run", &cos, &first, &cache);
    assert!(o.status.success(), "{}", text(&o));
    let init = dir.path().join("w").join("init.safetensors");
    std::fs::create_dir_all(init.parent().unwrap()).unwrap();
    std::fs::copy(first.join("stage1/model.safetensors"), &init).unwrap();
    let with_init = |arch: &str, file: &Path| {
        write_config(
            dir.path(),
            &format!(
                "[model]\narch = \"{arch}\"\ninit = \"{}\"\n{train}",
                file.display()
            ),
        )
    };
    let out = dir.path().join("second");
    let o = stage("run", &with_init("resnet8", &init), &out, &cache);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("the classifier re-initialised for 3 classes (the file's fc.weight: [64, 3])"),
        "{t}"
    );
    // the same bytes under another name: stage 1 is the same, reused, not trained again
    let moved = dir.path().join("moved.safetensors");
    std::fs::rename(&init, &moved).unwrap();
    let o = stage("run", &with_init("resnet8", &moved), &out, &cache);
    let t = text(&o);
    assert!(o.status.success() && !t.contains("[model] init:"), "{t}");
    // ResNet-20 from ResNet-8's weights
    let bad = dir.path().join("bad");
    let o = stage("run", &with_init("resnet20", &moved), &bad, &cache);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("moved.safetensors: [model] init does not fit arch = \"resnet20\"")
            && t.contains("tensor `layers.1.conv1.weight` is [32, 16, 3, 3], the model's is [16, 16, 3, 3]"),
        "{t}"
    );
    assert!(!bad.exists(), "refused before any work");
    let o = stage(
        "run",
        &with_init("resnet8", &dir.path().join("none.safetensors")),
        &bad,
        &cache,
    );
    assert!(
        text(&o).contains("[model] init = ") && text(&o).contains("none.safetensors\": no such file"),
        "{}",
        text(&o)
    );
}

/// The large benchmarks' configs (configs/large/) on tiny synthetic trees in their list files'
/// exact layouts and file-name patterns (ImageNet-LT's wnid folders and ILSVRC names, iNaturalist
/// 2018's kingdom/id/hash, Places-LT's root-relative `/data_256/…` lines), 3 classes, 32 px:
/// each runs from the lists to the exported model; Places-LT starts from a 1,000-class
/// ResNet-152's weights (its classifier re-initialised for 3 classes).
#[test]
fn the_large_benchmark_configs_run_on_trees_in_their_list_formats() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let jpeg = |root: &Path, rel: &str, seed: usize| {
        let p = root.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        image::RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([
                (x as usize * 6 + seed * 37) as u8,
                (y as usize * 8) as u8,
                (seed * 71) as u8,
            ])
        })
        .save_with_format(&p, image::ImageFormat::Jpeg)
        .unwrap();
    };
    // (config, root folder, list folder, list names, a line's path for (part, class, i))
    type Name = fn(&str, usize, usize) -> String;
    let imagenet: Name = |part, c, i| match part {
        "test" => format!("val/n0144076{c}/ILSVRC2012_val_{:08}.JPEG", c * 100 + i),
        _ => format!(
            "train/n0144076{c}/n0144076{c}_{}.JPEG",
            if part == "val" { 900 + i } else { 10026 + i }
        ),
    };
    let inat: Name = |part, c, i| {
        let h = format!("{:032x}", c * 1000 + i + if part == "train" { 0 } else { 500 });
        format!("train_val2018/Plantae/{c}/{h}.jpg")
    };
    let places: Name = |part, c, i| match part {
        "train" => format!(
            "/data_256/{}/{:08}.jpg",
            ["a/airfield", "a/alley", "b/bakery"][c],
            i + 2
        ),
        _ => format!(
            "/val_256/Places365_val_{:08}.jpg",
            c * 100 + i + if part == "test" { 50 } else { 0 }
        ),
    };
    // "pretrained" weights: random, each block's last batch norm zeroed (torchvision's
    // zero_init_residual), so that 50 random blocks do not blow the features up
    let weights = d.join("r152.safetensors");
    let r152 = autosampler::model::Model::new(
        &autosampler::model::ModelConfig {
            arch: autosampler::model::Arch::Resnet152,
            head: autosampler::model::Head::Linear,
            stem: autosampler::model::Stem::Imagenet,
            bilateral: false,
            init: None,
        },
        1000,
        tch::Device::Cpu,
    )
    .unwrap();
    tch::no_grad(|| {
        for (name, mut v) in r152.vs.variables() {
            if name.ends_with("bn3.weight") {
                let _ = v.fill_(0.0);
            }
        }
    });
    r152.save(&weights).unwrap();
    let cases: [(&str, &str, &str, [&str; 3], Name); 4] = [
        (
            "imagenet_lt_resnet50",
            "imagenet",
            "ImageNet_LT",
            [
                "ImageNet_LT_train.txt",
                "ImageNet_LT_val.txt",
                "ImageNet_LT_test.txt",
            ],
            imagenet,
        ),
        (
            "imagenet_lt_resnext50",
            "imagenet",
            "ImageNet_LT",
            [
                "ImageNet_LT_train.txt",
                "ImageNet_LT_val.txt",
                "ImageNet_LT_test.txt",
            ],
            imagenet,
        ),
        (
            "inat2018_resnet50",
            "inat2018",
            "iNaturalist18",
            ["iNaturalist18_train.txt", "", "iNaturalist18_val.txt"],
            inat,
        ),
        (
            "places_lt_resnet152",
            "places365",
            "Places_LT",
            ["Places_LT_train.txt", "Places_LT_val.txt", "Places_LT_test.txt"],
            places,
        ),
    ];
    for (config, root, lists, files, name) in cases {
        let (root, lists) = (d.join(root), d.join(lists));
        std::fs::create_dir_all(&lists).unwrap();
        let mut set = vec![
            format!("data.source.root={}", root.display()),
            "data.source.image_size=32".into(),
            "train.device=cpu".into(),
            "train.threads=1".into(),
            "train.epochs=1".into(),
            // 9 training images in batches of 3: no batch of one image, whose batch norm at the
            // 1×1 maps of a 32 px ImageNet-stem network has no variance (PyTorch refuses it)
            "train.batch_size=3".into(),
            // lr 0.1 on 3 noise images sends the features of a ResNet-50 from scratch to 1e4
            "train.lr=0.001".into(),
            "stage2.epochs=1".into(),
        ];
        for (part, file, per_class) in [
            ("train", files[0], [4, 3, 2]),
            ("val", files[1], [2; 3]),
            ("test", files[2], [2; 3]),
        ] {
            if file.is_empty() {
                continue;
            }
            let mut text = String::new();
            for (c, &n) in per_class.iter().enumerate() {
                for i in 0..n {
                    let p = name(part, c, i);
                    jpeg(&root, &p, c * 10 + i);
                    text += &format!("{p} {c}\n");
                }
            }
            std::fs::write(lists.join(file), text).unwrap();
            set.push(format!("data.source.{part}_list={}", lists.join(file).display()));
        }
        if config.starts_with("places") {
            set.push(format!("model.init={}", weights.display()));
        }
        if config != "inat2018_resnet50" {
            set.extend(
                [
                    "search.group_trajectories=2",
                    "search.trajectories=2",
                    "search.samples=2",
                ]
                .map(String::from),
            );
        }
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../configs/large/{config}.toml"));
        let out = d.join("runs").join(config);
        let mut args: Vec<String> = [
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        for s in &set {
            args.extend(["--set".to_string(), s.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = autosampler(&args, &d.join("cache"));
        let t = text(&o);
        assert!(o.status.success(), "{config}: {t}");
        assert!(out.join("model.safetensors").is_file(), "{config}");
        let split: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("split.json")).unwrap()).unwrap();
        assert_eq!(split["counts"]["train"], serde_json::json!([4, 3, 2]), "{config}");
        if config.starts_with("places") {
            assert!(
                t.contains(
                    "the classifier re-initialised for 3 classes (the file's fc.weight: [1000, 2048])"
                ),
                "{t}"
            );
        }
    }
}

/// `[search] budget_s` spent before the first trajectory: the run goes on with class-balanced
/// weights, and the search's note, `best_weights.json` and the plots say so; `budget_s = 0` is
/// refused at load, naming the key.
#[test]
fn a_search_past_its_budget_keeps_class_balanced_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\n[train]\nepochs = 1\nbatch_size = 4\nthreads = 1\n\
         [search]\ntrajectories = 3\nsamples = 2\nbudget_s = 1e-6\n[stage2]\nepochs = 1\nbatch_size = 4\n",
    );
    let out = dir.path().join("run");
    let o = stage("run", &cfg, &out, &dir.path().join("cache"));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("budget_s = 0.000001: it will stop early"), "{t}");
    assert!(
        t.contains("(budget_s = 0.000001: stopped after 0 of 3 trajectories, the choice among what it had)"),
        "{t}"
    );
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("search/best_weights.json")).unwrap())
            .unwrap();
    assert_eq!(best["source"], "class-balanced");
    assert_eq!(best["budget_stop"]["trajectories"], 0);
    assert!(out.join("search/reward_curve.png").is_file());
    let bad = write_config(
        dir.path(),
        "[model]\narch = \"resnet8\"\n[search]\nbudget_s = 0\n",
    );
    let o = stage("run", &bad, &dir.path().join("bad"), &dir.path().join("cache"));
    assert!(
        text(&o).contains("[search] budget_s must be a finite number > 0, got 0"),
        "{}",
        text(&o)
    );
    assert!(!dir.path().join("bad").exists());
}
