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
        if let Some(name) = &self.name {
            check_name(name)?;
        }
        self.data.split.longtail.validate()?;
        if let Some(s) = self.data.source.image_size {
            if !(8..=1024).contains(&s) {
                return Err(crate::invalid!(
                    "[data.source] image_size must be 8 to 1024, got {s}"
                ));
            }
        }
        if let Some(crate::model::Head::Causal(c)) = self.model.as_ref().map(|m| m.head) {
            let r = crate::check::Ranges("model.head.causal");
            r.at_least("heads", c.heads.max(0) as usize, 1)?;
            r.positive("tau", c.tau)?;
            r.non_negative("gamma", c.gamma)?;
            r.non_negative("alpha", c.alpha)?;
            r.unit_open("momentum", c.momentum)?;
        }
        if let Some(t) = &self.train {
            t.check()?;
            let side = self.data.source.image_size.or(match self.data.source.format {
                crate::data::Format::Cifar10Bin | crate::data::Format::Cifar100Bin => Some(32),
                crate::data::Format::TinyImagenet => Some(64),
                _ => None,
            });
            if let (Some(c), Some(side)) = (&t.cutout, side) {
                if c.size > side {
                    return Err(crate::invalid!(
                        "[train] cutout.size = {} is larger than the {side} px images: at most {side}",
                        c.size
                    ));
                }
            }
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
        let head = self.model.as_ref().map(|m| m.head).unwrap_or_default();
        if matches!(head, crate::model::Head::Causal(_)) {
            for (section, present) in [
                ("[search]", self.search.is_some()),
                ("[stage2]", self.stage2.is_some()),
            ] {
                if present {
                    return Err(crate::invalid!(
                        "{section} re-trains a linear classifier on the stage-1 features, and model.head = causal (TDE) has no linear form: remove {section}, or use head = \"linear\" or \"cosine\""
                    ));
                }
            }
        }
        if let Some(f) = &self.stage2 {
            if f.sampler.is_none() && self.search.is_none() {
                // said at load, not after stage 1 and the features
                return Err(crate::invalid!(
                    "[stage2] without a sampler uses the searched weights: add [search], or set stage2.sampler"
                ));
            }
        }
        if let Some(f) = &self.stage2 {
            if f.path == crate::train::stage2::Stage2Path::Images && head != crate::model::Head::Linear {
                return Err(crate::invalid!(
                    "stage2.path = \"images\" re-trains the model's own linear classifier, and model.head is {head:?}: use path = \"features\" (the default), which takes every head but TDE's"
                ));
            }
        }
        Ok(())
    }

    /// The model files the config reads exist (`[train.mix] model` of `cam-cutmix`, `[agent]
    /// init`) and `[model] init` fits the network: checked once relative paths are resolved,
    /// before any work.
    pub fn check_files(&self) -> Result<()> {
        let cam = match self.train.as_ref().map(|t| &t.mix) {
            Some(crate::mix::MixConfig::CamCutmix { model, .. }) => Some(("[train.mix] model", model)),
            _ => None,
        };
        let init = self
            .agent
            .as_ref()
            .and_then(|a| a.init.as_ref())
            .map(|p| ("[agent] init", p));
        for (key, p) in cam.into_iter().chain(init) {
            if !p.is_file() {
                return Err(crate::invalid!(
                    "{key} = {:?}: no such file (a model.safetensors written by `autosampler run`)",
                    p.display().to_string()
                ));
            }
        }
        if let Some(m) = &self.model {
            if let Some(p) = &m.init {
                if !p.is_file() {
                    return Err(crate::invalid!(
                        "[model] init = {:?}: no such file (weights under PyTorch's names: autosampler.save_init converts a module or a .pth)",
                        p.display().to_string()
                    ));
                }
                crate::model::Model::check_init(m)?;
            }
        }
        Ok(())
    }

    /// Reads a config file; relative paths inside are taken from the folder of the file that sets
    /// them. `base = "other.toml"` (relative to the file) inherits another config: the file's
    /// keys override its base's, tables merge key by key (a table whose `kind` differs replaces
    /// the base's whole), and bases may have bases (a cycle is an error).
    pub fn load(path: &Path) -> Result<Config> {
        Config::load_inner(path, true)
    }

    /// [`Config::load`] without [`Config::check_files`]: for configs that read a model another
    /// run has yet to write (a shipped config naming `runs/<other>/model.safetensors`).
    /// Everything else is checked as `load` does; the caller checks the files before any work.
    pub fn load_unchecked(path: &Path) -> Result<Config> {
        Config::load_inner(path, false)
    }

    fn load_inner(path: &Path, files: bool) -> Result<Config> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let has_base = toml::from_str::<toml::Table>(&text).is_ok_and(|t| t.contains_key("base"));
        if !has_base {
            // one file: deserialised from its text, so errors give the line and column
            let mut cfg = Config::parse(&text, &file)?;
            cfg.resolve_paths(path.parent().unwrap_or(Path::new(".")));
            if files {
                cfg.check_files().map_err(|e| Error::Config {
                    file: file.clone(),
                    what: e.to_string(),
                })?;
            }
            return Ok(cfg);
        }
        let mut chain = Vec::new();
        let table = read_table(path, &mut chain)?;
        let names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
        Config::from_table(table, &names.join(" over "), files)
    }

    /// [`Config::load`], then `overrides` (`--set section.key=value`) applied. The model files
    /// are checked once the overrides are in, so `--set agent.init=...` can name another file.
    pub fn load_with(path: &Path, overrides: &[String]) -> Result<Config> {
        Config::load_unchecked(path)?.with_overrides(overrides, &path.display().to_string())
    }

    /// The config with `section.key=value` overrides applied (the value read as TOML — a number,
    /// a boolean, a quoted string, an array or an inline table — and as a plain string when it is
    /// not TOML), then checked again, the model files ([`Config::check_files`]) included, with
    /// no overrides too. `file` names the config in errors.
    pub fn with_overrides(self, overrides: &[String], file: &str) -> Result<Config> {
        if overrides.is_empty() {
            self.check_files().map_err(|e| Error::Config {
                file: file.to_string(),
                what: e.to_string(),
            })?;
            return Ok(self);
        }
        let mut table = toml::Table::try_from(&self).expect("a config serialises to a table");
        for o in overrides {
            set_key(&mut table, o)?;
        }
        Config::from_table(
            table,
            &format!("{file} with --set {}", overrides.join(" --set ")),
            true,
        )
    }

    /// Deserialises and checks a merged table (the model files too when `files`); `what` names
    /// where it came from.
    fn from_table(table: toml::Table, what: &str, files: bool) -> Result<Config> {
        let cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| Error::Config {
                file: what.to_string(),
                what: format!("at `{}`: {}", e.path(), e.inner().message().trim()),
            })?;
        cfg.check()
            .and_then(|()| if files { cfg.check_files() } else { Ok(()) })
            .map_err(|e| Error::Config {
                file: what.to_string(),
                what: e.to_string(),
            })?;
        Ok(cfg)
    }

    /// The model, agent and cache paths a config names (the data source's paths are its own).
    fn model_paths_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        let cam_model = match self.train.as_mut().map(|t| &mut t.mix) {
            Some(crate::mix::MixConfig::CamCutmix { model, .. }) => Some(model),
            _ => None,
        };
        let (agent_from, agent_init) = match self.agent.as_mut() {
            Some(a) => (a.from.as_mut(), a.init.as_mut()),
            None => (None, None),
        };
        let model_init = self.model.as_mut().and_then(|m| m.init.as_mut());
        [
            agent_from,
            agent_init,
            self.cache_dir.as_mut(),
            cam_model,
            model_init,
        ]
        .into_iter()
        .flatten()
    }

    /// Makes the config's relative paths relative to `base` (the config file's folder).
    fn resolve_paths(&mut self, base: &Path) {
        self.data.source.resolve_paths(base);
        for p in self.model_paths_mut() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
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

    /// The config as a run folder's `config.toml` records it: [`Config::to_toml`] with every path
    /// absolute, so that the file is a config that works from any folder.
    pub fn to_run_toml(&self) -> String {
        let mut c = self.clone();
        if let Ok(cwd) = std::env::current_dir() {
            c.resolve_paths(&cwd);
        }
        c.to_toml()
    }

    /// Every path made canonical where it exists (data source, agent `from`/`init`, CAM model,
    /// cache folder): configs that name the same files compare equal however they spell them.
    pub fn canonical_paths(&mut self) {
        self.data.source = crate::data::source::canonical_source(&self.data.source);
        for p in self.model_paths_mut() {
            if let Ok(c) = std::fs::canonicalize(&*p) {
                *p = c;
            }
        }
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

/// A run's `name` is one folder name under `runs/`: letters, digits and `. _ - + = ,`, not
/// starting with a dot (no `..`, no path separator, not empty, not absolute).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+=,".contains(c));
    if ok {
        Ok(())
    } else {
        Err(crate::invalid!(
            "name = {name:?} is not a run name: it becomes one folder under runs/, so use letters, digits and . _ - + = , (not starting with a dot, at most 200 characters); --out chooses any folder"
        ))
    }
}

/// The keys that hold paths, resolved against the folder of the file that sets them.
const PATH_KEYS: [&[&str]; 9] = [
    &["agent", "init"],
    &["data", "source", "root"],
    &["train", "mix", "model"],
    &["data", "source", "train_list"],
    &["data", "source", "test_list"],
    &["data", "source", "val_list"],
    &["data", "source", "class_names"],
    &["agent", "from"],
    &["cache_dir"],
];

/// A config file as a table, its `base` chain merged under it and its relative paths resolved;
/// `chain` collects the files read (a file met twice is a cycle).
fn read_table(path: &Path, chain: &mut Vec<PathBuf>) -> Result<toml::Table> {
    let file = path.display().to_string();
    let canonical = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    if chain
        .iter()
        .any(|p| std::fs::canonicalize(p).is_ok_and(|c| c == canonical))
    {
        let mut names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
        names.push(file.clone());
        return Err(Error::Config {
            file,
            what: format!("`base` makes a cycle: {}", names.join(" → ")),
        });
    }
    chain.push(path.to_path_buf());
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut table: toml::Table = parse_toml(&text, &file)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    for key in PATH_KEYS {
        if let Some(toml::Value::String(p)) = get_mut(&mut table, key) {
            if Path::new(p.as_str()).is_relative() {
                *p = dir.join(&*p).display().to_string();
            }
        }
    }
    match table.remove("base") {
        None => Ok(table),
        Some(toml::Value::String(b)) => {
            let base = dir.join(&b);
            if !base.is_file() {
                return Err(Error::Config {
                    file,
                    what: format!("base = {b:?}: there is no file {}", base.display()),
                });
            }
            let mut merged = read_table(&base, chain)?;
            merge(&mut merged, table);
            Ok(merged)
        }
        Some(other) => Err(Error::Config {
            file,
            what: format!("`base` must be a file name (a string), got {other}"),
        }),
    }
}

fn get_mut<'a>(table: &'a mut toml::Table, key: &[&str]) -> Option<&'a mut toml::Value> {
    let (last, parents) = key.split_last()?;
    let mut t = table;
    for k in parents {
        t = t.get_mut(*k)?.as_table_mut()?;
    }
    t.get_mut(*last)
}

/// `over`'s keys into `base`: tables merge key by key, except that a table whose `kind` differs
/// from the base's (another loss, sampler, profile) replaces it whole; other values replace.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o))
                if b.get("kind") == o.get("kind") || o.get("kind").is_none() =>
            {
                merge(b, o)
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Applies one `section.key=value` override.
fn set_key(table: &mut toml::Table, o: &str) -> Result<()> {
    let bad = |why: String| crate::invalid!("--set {o}: {why}");
    let (key, value) = o
        .split_once('=')
        .ok_or_else(|| bad("expected section.key=value".into()))?;
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|k| k.is_empty()) {
        return Err(bad(format!("`{key}` is not a dotted key")));
    }
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let (last, parents) = path.split_last().expect("non-empty");
    let mut t = table;
    for (i, k) in parents.iter().enumerate() {
        t = t
            .entry(k.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| bad(format!("`{}` is not a section", path[..=i].join("."))))?;
    }
    t.insert(last.to_string(), parsed);
    Ok(())
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

    #[test]
    fn stage2_without_a_sampler_or_a_search_is_refused_at_load() {
        let e = Config::parse(
            &format!("{GOOD}[model]\narch = \"resnet8\"\n[train]\n[stage2]\n"),
            "a.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("[stage2] without a sampler uses the searched weights"),
            "{e}"
        );
        Config::parse(&format!("{GOOD}[model]\narch = \"resnet8\"\n[train]\n[stage2]\nsampler = {{ kind = \"class-balanced\" }}\n"), "a.toml").unwrap();
        Config::parse(
            &format!("{GOOD}[model]\narch = \"resnet8\"\n[train]\n[search]\n[stage2]\n"),
            "a.toml",
        )
        .unwrap();
    }

    #[test]
    fn an_epoch_count_that_would_not_end_is_refused() {
        let e = Config::parse(
            &format!("{GOOD}[model]\narch = \"resnet8\"\n[train]\nepochs = 1000000000\n"),
            "a.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("[train] epochs must be at most 100000, got 1000000000"),
            "{e}"
        );
    }

    #[test]
    fn a_name_is_one_safe_folder_name() {
        for bad in ["../x", "/tmp/x", "", "a/b", ".hidden", "..", "a b", "a\\b"] {
            let e = Config::parse(
                &GOOD.replace("name = \"demo\"", &format!("name = {bad:?}")),
                "a.toml",
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("is not a run name") && e.contains(&format!("{bad:?}")),
                "{bad}: {e}"
            );
        }
        for good in ["demo", "c10lt_ir100_e200_cutmix_p0.5_s0", "a-b+c=d,e"] {
            Config::parse(
                &GOOD.replace("name = \"demo\"", &format!("name = {good:?}")),
                "a.toml",
            )
            .unwrap();
        }
    }

    #[test]
    fn precision_is_refused_at_load_naming_the_key_and_the_values_supported() {
        let with =
            |section: &str, line: &str| format!("{GOOD}[model]\narch = \"resnet8\"\n[{section}]\n{line}\n");
        for (section, key) in [
            ("train", "train.precision"),
            ("agent", "agent.precision"),
            ("search", "search.precision"),
        ] {
            let e = Config::parse(&with(section, "precision = \"fp16\""), "a.toml")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(key)
                    && e.contains("\"fp16\" is not supported")
                    && e.contains("\"bf16\", \"fp32\" or \"auto\""),
                "{e}"
            );
            let e = Config::parse(&with(section, "precision = \"bf61\""), "a.toml")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(key) && e.contains("\"bf61\" is not a precision"),
                "{e}"
            );
        }
        let e = Config::parse(&with("train", "bf16 = true\nprecision = \"fp32\""), "a.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[train] bf16 = true and precision = \"fp32\" disagree"),
            "{e}"
        );
        // the older spelling is still read
        let c = Config::parse(&with("train", "bf16 = false"), "a.toml").unwrap();
        assert_eq!(c.train.unwrap().precision(), crate::precision::Precision::Fp32);
    }

    #[test]
    fn model_paths_of_one_file_are_taken_from_its_folder_and_checked() {
        // one file (no base): agent.from, agent.init and the CAM model relative to the file
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cfg/m")).unwrap();
        std::fs::write(dir.path().join("cfg/m/model.safetensors"), b"x").unwrap();
        let text = "[data.source]\nformat = \"cifar10-bin\"\nroot = \"d\"\n[model]\narch = \"resnet8\"\n\
                    [train]\nmix = { kind = \"cam-cutmix\", model = \"m/model.safetensors\" }\n\
                    [agent]\nfrom = \"other/agent\"\ninit = \"m/model.safetensors\"\n";
        let f = dir.path().join("cfg/c.toml");
        std::fs::write(&f, text).unwrap();
        let c = Config::load(&f).unwrap();
        let a = c.agent.as_ref().unwrap();
        assert_eq!(
            a.from.as_deref(),
            Some(dir.path().join("cfg/other/agent").as_path())
        );
        assert_eq!(
            a.init.as_deref(),
            Some(dir.path().join("cfg/m/model.safetensors").as_path())
        );
        match &c.train.as_ref().unwrap().mix {
            crate::mix::MixConfig::CamCutmix { model, .. } => {
                assert_eq!(model, &dir.path().join("cfg/m/model.safetensors"))
            }
            other => panic!("{other:?}"),
        }
        // a missing model file is named with its key, whichever way the config is read
        std::fs::write(&f, text.replace("init = \"m/", "init = \"gone/")).unwrap();
        let e = Config::load(&f).unwrap_err().to_string();
        assert!(
            e.contains("[agent] init") && e.contains("gone/model.safetensors"),
            "{e}"
        );
        let child = dir.path().join("cfg/child.toml");
        std::fs::write(&child, "base = \"c.toml\"\n").unwrap();
        let e = Config::load(&child).unwrap_err().to_string();
        assert!(
            e.contains("[agent] init") && e.contains("gone/model.safetensors"),
            "{e}"
        );
        // load_unchecked reads both, the path still resolved, and leaves the file to the caller
        for p in [&f, &child] {
            let c = Config::load_unchecked(p).unwrap();
            let init = c.agent.as_ref().unwrap().init.clone().unwrap();
            assert_eq!(init, dir.path().join("cfg/gone/model.safetensors"));
            assert!(c.check_files().is_err());
        }
        // an override that names an existing file is taken; the missing one is not checked first
        // (it used to be, at load, before the overrides: `--set agent.init=...` could not help)
        let set = format!(
            "agent.init={:?}",
            dir.path().join("cfg/m/model.safetensors").display().to_string()
        );
        for p in [&f, &child] {
            let c = Config::load_with(p, std::slice::from_ref(&set)).unwrap();
            let init = c.agent.as_ref().unwrap().init.clone().unwrap();
            assert_eq!(init, dir.path().join("cfg/m/model.safetensors"));
            // without the override the missing file is still an error, naming key and file
            let e = Config::load_with(p, &[]).unwrap_err().to_string();
            assert!(
                e.contains("[agent] init") && e.contains("gone/model.safetensors"),
                "{e}"
            );
            let e = Config::load_with(p, &["train.epochs=3".into()])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("[agent] init") && e.contains("gone/model.safetensors"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_base_is_inherited_key_by_key_with_paths_from_its_own_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("base.toml"),
            "name = \"b\"\n[data.source]\nformat = \"cifar10-bin\"\nroot = \"data/x\"\n[data.split]\nval_per_class = 5\n\
             [model]\narch = \"resnet8\"\n[train]\nepochs = 3\nlr = 0.1\nloss = { kind = \"ldam\", s = 20.0 }\n\
             sampler = { kind = \"class-balanced\" }\n",
        )
        .unwrap();
        let child = dir.path().join("sub/child.toml");
        std::fs::write(
            &child,
            "base = \"../base.toml\"\nname = \"c\"\n[train]\nlr = 0.05\nloss = { kind = \"ce\" }\n[search]\nseed = 3\n",
        )
        .unwrap();
        let c = Config::load(&child).unwrap();
        assert_eq!(c.name.as_deref(), Some("c"));
        // the base's relative root is taken from the base's folder, not the child's
        assert_eq!(c.data.source.root, dir.path().join("sub/../data/x"));
        assert_eq!(c.data.split.val_per_class, 5);
        let t = c.train.as_ref().unwrap();
        assert_eq!(
            (t.epochs, t.lr),
            (3, 0.05),
            "kept from the base, overridden by the child"
        );
        // another `kind` replaces the base's table whole (LDAM's `s` is not carried into CE)
        assert_eq!(t.loss, crate::loss::LossConfig::Ce { label_smoothing: 0.0 });
        assert_eq!(t.sampler, crate::sampler::Sampler::ClassBalanced);
        assert_eq!(c.search.as_ref().unwrap().seed, 3);
        // overrides: TOML values, plain strings, inline tables; checked again
        let o = c
            .clone()
            .with_overrides(
                &[
                    "train.epochs=7".into(),
                    "search.reward=top1".into(),
                    "train.loss={ kind = \"focal\", gamma = 2.0 }".into(),
                    "stage2.epochs=4".into(),
                ],
                "child.toml",
            )
            .unwrap();
        let t = o.train.as_ref().unwrap();
        assert_eq!(t.epochs, 7);
        assert_eq!(t.loss, crate::loss::LossConfig::Focal { gamma: 2.0 });
        assert_eq!(o.search.as_ref().unwrap().reward, crate::search::Score::Top1);
        assert_eq!(o.stage2.as_ref().unwrap().epochs, 4);
        for (bad, want) in [
            ("train.lr=nan", "[train] lr must be a finite number > 0, got NaN"),
            ("train.nope=1", "at `train.nope`: unknown field `nope`"),
            ("train.epochs", "expected section.key=value"),
            ("train..lr=1", "is not a dotted key"),
            ("train.lr.x=1", "`train.lr` is not a section"),
        ] {
            let e = c
                .clone()
                .with_overrides(&[bad.into()], "child.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        // a cycle is named
        std::fs::write(dir.path().join("base.toml"), "base = \"sub/child.toml\"\n").unwrap();
        let e = Config::load(&child).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
        // ... as the chain of files (it was "the file is its own base")
        assert!(
            e.contains("child.toml → ") && e.contains("base.toml → ") && e.matches("child.toml").count() >= 2,
            "{e}"
        );
        // a missing base names the file whose base it is
        std::fs::write(dir.path().join("base.toml"), "base = \"gone.toml\"\n").unwrap();
        let e = Config::load(&child).unwrap_err().to_string();
        assert!(
            e.contains("base.toml") && e.contains("base = \"gone.toml\": there is no file"),
            "{e}"
        );
    }
}
