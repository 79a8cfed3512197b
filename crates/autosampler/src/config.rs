//! Run configuration, read from TOML. Every section rejects unknown keys; an error names the file,
//! the line and column, and the key path (`data.split.longtail.imbalance_ratoi`).
use crate::data::DataConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The run's name: its folder is `runs/<name>` unless `--out` says otherwise.
    #[serde(default)]
    pub name: Option<String>,
    pub data: DataConfig,
    /// The network (needed by training stages).
    #[serde(default)]
    pub model: Option<crate::model::ModelConfig>,
    /// The patch agent (the fine auto-sampler), trained here or taken `from` another run.
    #[serde(default)]
    pub agent: Option<crate::agent::AgentConfig>,
    /// Stage 1 (representation learning).
    #[serde(default)]
    pub train: Option<crate::train::stage1::TrainConfig>,
    /// The class-weight search (the coarse auto-sampler).
    #[serde(default)]
    pub search: Option<crate::search::SearchConfig>,
    /// Stage 2: classifier re-training on the cached features.
    #[serde(default)]
    #[serde(alias = "finetune")]
    pub stage2: Option<crate::train::stage2::Stage2Config>,
    /// Where packed caches live; default: `$AUTOSAMPLER_CACHE` or `~/.cache/autosampler/packed`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

impl Config {
    /// Parses `text` (from `file`, for messages). Relative paths stay as written.
    pub fn parse(text: &str, file: &str) -> Result<Config> {
        let cfg: Config = parse_toml(text, file)?;
        cfg.check().map_err(|e| Error::Config {
            file: file.to_string(),
            what: e.to_string(),
        })?;
        Ok(cfg)
    }

    /// The ranges of the sections that say what they accept (NaN, zero and negative values are
    /// refused before any stage runs).
    pub fn check(&self) -> Result<()> {
        if let Some(t) = &self.train {
            t.check()?;
            if t.method == crate::train::stage1::Method::Bbn
                && !self.model.as_ref().is_some_and(|m| m.bilateral)
            {
                return Err(crate::invalid!(
                    "[train] method = \"bbn\" trains two branches: set bilateral = true in [model]"
                ));
            }
            if matches!(t.mix, crate::mix::MixConfig::AgentCutmix { .. }) && self.agent.is_none() {
                return Err(crate::invalid!(
                    "[train.mix] kind = \"agent-cutmix\" needs the patch agent: add an [agent] section (or agent.from)"
                ));
            }
        }
        if let Some(a) = &self.agent {
            a.check()?;
        }
        if let Some(s) = &self.search {
            s.check()?;
            if self.data.split.val_per_class == 0 && self.data.source.val_list.is_none() {
                return Err(crate::invalid!(
                    "[search] scores candidates on validation images, and data.split.val_per_class = 0 holds none out: set it ≥ 1 (or give data.source.val_list)"
                ));
            }
        }
        if let Some(f) = &self.stage2 {
            f.check()?;
        }
        Ok(())
    }

    /// Reads a config file; relative paths inside are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut cfg = Config::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.data.source.resolve_paths(base);
        if let Some(from) = cfg.agent.as_mut().and_then(|a| a.from.as_mut()) {
            if from.is_relative() {
                *from = base.join(&*from);
            }
        }
        if let Some(d) = &mut cfg.cache_dir {
            if d.is_relative() {
                *d = base.join(&*d);
            }
        }
        Ok(cfg)
    }

    /// The config with every seed (split, agent, training, search, stage 2) set to `seed`.
    pub fn with_seed(mut self, seed: u32) -> Config {
        self.data.split.seed = seed;
        if let Some(t) = &mut self.train {
            t.seed = seed as u64;
        }
        if let Some(s) = &mut self.search {
            s.seed = seed as u64;
        }
        if let Some(a) = &mut self.agent {
            a.seed = seed as u64;
        }
        if let Some(f) = &mut self.stage2 {
            f.seed = seed as u64;
        }
        self
    }

    /// The config as TOML, every default filled in.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config always serialises")
    }

    /// The cache root this config uses.
    pub fn cache_root(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(crate::data::cache::default_cache_root)
    }
}

/// Deserialises TOML into `T`, with the key path, line and column in the error.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T> {
    let de = toml::Deserializer::parse(text).map_err(|e| toml_error(file, text, &e, None))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        toml_error(file, text, e.inner(), Some(path))
    })
}

fn toml_error(file: &str, text: &str, e: &toml::de::Error, path: Option<String>) -> Error {
    let at = e
        .span()
        .map(|s| {
            let mut start = s.start.min(text.len());
            // Inside a tagged section the span covers the whole table: point at the key itself.
            if let Some(key) = e
                .message()
                .strip_prefix("unknown field `")
                .and_then(|m| m.split('`').next())
            {
                if let Some(off) = find_key(&text[start..], key) {
                    start += off;
                }
            }
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
            format!("line {line}, column {col}: ")
        })
        .unwrap_or_default();
    let key = path
        .filter(|p| p != ".")
        .map(|p| format!("at `{p}`: "))
        .unwrap_or_default();
    Error::Config {
        file: file.to_string(),
        what: format!("{at}{key}{}", e.message().trim()),
    }
}

/// Byte offset of the first line of `text` that assigns `key` (`key = …`).
fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut off = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return Some(off + (line.len() - t.len()));
            }
        }
        off += line.len();
    }
    None
}

/// Range checks of one config section: each error names `[section] key` and the bad value (NaN
/// included), so a bad config is refused at load, before any stage runs.
pub struct Ranges(pub &'static str);

impl Ranges {
    /// A finite number > 0.
    pub fn positive(&self, key: &str, v: f64) -> Result<()> {
        if v > 0.0 && v.is_finite() {
            Ok(())
        } else {
            Err(crate::invalid!(
                "[{}] {key} must be a finite number > 0, got {v}",
                self.0
            ))
        }
    }
    /// A finite number ≥ 0.
    pub fn non_negative(&self, key: &str, v: f64) -> Result<()> {
        if v >= 0.0 && v.is_finite() {
            Ok(())
        } else {
            Err(crate::invalid!(
                "[{}] {key} must be a finite number ≥ 0, got {v}",
                self.0
            ))
        }
    }
    /// A number in [0, 1) (momentum).
    pub fn unit_open(&self, key: &str, v: f64) -> Result<()> {
        if (0.0..1.0).contains(&v) {
            Ok(())
        } else {
            Err(crate::invalid!("[{}] {key} must be in [0, 1), got {v}", self.0))
        }
    }
    /// A number in [0, 1] (a probability).
    pub fn unit(&self, key: &str, v: f64) -> Result<()> {
        if (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            Err(crate::invalid!("[{}] {key} must be in [0, 1], got {v}", self.0))
        }
    }
    /// A count ≥ `min`.
    pub fn at_least(&self, key: &str, v: usize, min: usize) -> Result<()> {
        if v >= min {
            Ok(())
        } else {
            Err(crate::invalid!("[{}] {key} must be ≥ {min}, got {v}", self.0))
        }
    }
    /// "cpu", "cuda" or "cuda:N" (whether the device exists is checked when a stage starts).
    pub fn device(&self, key: &str, v: &str) -> Result<()> {
        let ok =
            v == "cpu" || v == "cuda" || v.strip_prefix("cuda:").is_some_and(|n| n.parse::<u32>().is_ok());
        if ok {
            Ok(())
        } else {
            Err(crate::invalid!(
                "[{}] {key} = \"{v}\" is unrecognized: expected cpu, cuda or cuda:N",
                self.0
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "demo"
[data.source]
format = "cifar10-bin"
root = "x"
[data.split]
val_per_class = 5
[data.split.longtail]
kind = "exp"
imbalance_ratio = 100
"#;

    #[test]
    fn parses_and_round_trips_with_defaults() {
        let c = Config::parse(GOOD, "a.toml").unwrap();
        assert_eq!(c.data.split.val_per_class, 5);
        let again = Config::parse(&c.to_toml(), "b.toml").unwrap();
        assert_eq!(c, again);
        assert!(
            c.to_toml().contains("train_dir = \"train\""),
            "defaults are written out"
        );
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let bad = GOOD.replace(
            "imbalance_ratio = 100",
            "imbalance_ratio = 100\nimbalance_ratoi = 3",
        );
        let e = Config::parse(&bad, "a.toml").unwrap_err().to_string();
        assert!(e.starts_with("a.toml: line 11, column 1"), "{e}");
        assert!(e.contains("imbalance_ratoi"), "{e}");
        let bad = GOOD.replace("val_per_class = 5", "val_per_clas = 5");
        let e = Config::parse(&bad, "a.toml").unwrap_err().to_string();
        assert!(
            e.contains("line 7") && e.contains("val_per_clas") && e.contains("data.split"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_and_unknown_variant_are_named() {
        let e = Config::parse(
            &GOOD.replace("val_per_class = 5", "val_per_class = \"five\""),
            "a.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 7") && e.contains("data.split.val_per_class"),
            "{e}"
        );
        let e = Config::parse(&GOOD.replace("cifar10-bin", "cifar-10"), "a.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4") && e.contains("cifar-10"), "{e}");
    }
}
