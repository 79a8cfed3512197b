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
    let o = autosampler(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &dir.path().join("cache"),
    );
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
