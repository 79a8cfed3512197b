//! The data stage: the run folder's lock, the split (`split.json`, drawn once and reused), the
//! resolved `config.toml` and the class histogram; it opens the [`Dataset`] every later stage reads.
use crate::config::Config;
use crate::data::cache::Cache;
use crate::data::source::{canonical_source, same_source};
use crate::data::Catalog;
use crate::data::{self, Dataset, SourceConfig, Split};
use crate::pipeline::manifest::{self, Inputs};
use crate::pipeline::{hold_lock, text, Observer, RunDir, Stage};
use crate::report::plot;
use crate::train::stage1;
use crate::{fsx, invalid, Error, Result};
use std::time::Instant;

use super::stage1::check_stage1_inputs;

/// Scans the source, builds or opens its packed cache and draws the split.
pub fn open_data(cfg: &Config, obs: &dyn Observer) -> Result<Dataset> {
    cfg.data.split.longtail.validate()?;
    let t = Instant::now();
    let catalog = Catalog::scan(&cfg.data.source)?;
    let total: u64 = catalog.pools.iter().map(|(_, v)| v.len() as u64).sum();
    obs.task("decoding", total);
    let cache = Cache::open_or_build(&catalog, &cfg.cache_root(), &|n| obs.advance(n, ""));
    obs.task_done();
    let cache = cache?;
    tracing::info!(
        "cache {} ready in {:.1}s",
        cache.dir.display(),
        t.elapsed().as_secs_f64()
    );
    let split = data::draw_split(&cache, &cfg.data)?;
    Ok(Dataset { split, cache })
}

/// A data source at another path than the split recorded: the same data is identified by its
/// content (the checksum the split recorded), not its path. Returns the source to read it from;
/// an error names what differs (`[data.source]` keys other than paths, or the content at `root`).
fn moved_source(old: &Split, now: &SourceConfig, split_path: &std::path::Path) -> Result<SourceConfig> {
    let mut was = canonical_source(&old.source);
    let is = canonical_source(now);
    was.root = is.root.clone();
    was.train_list = is.train_list.clone();
    was.test_list = is.test_list.clone();
    was.val_list = is.val_list.clone();
    was.class_names = is.class_names.clone();
    if was != is {
        return Err(invalid!(
            "{} was drawn from another data config ([data.source] differs in more than its paths: its format or decoding options): use another --out, or delete the run folder",
            split_path.display()
        ));
    }
    let catalog = Catalog::scan(now)?;
    let records = data::decode::RecordFiles::load(&catalog)?;
    let sum = data::cache::content_checksum(&catalog, &records)?;
    if sum != old.checksum {
        return Err(invalid!(
            "[data.source] root = {}: not the data {} was drawn from ({}; content checksum {} where the split records {}): point root at that data, use another --out, or delete the run folder",
            now.root.display(),
            split_path.display(),
            old.source.root.display(),
            &sum[..12.min(sum.len())],
            &old.checksum[..12.min(old.checksum.len())]
        ));
    }
    Ok(now.clone())
}

/// The data stage: takes the run folder's lock, refuses a config that the folder's started stages
/// were not made with (before anything is written), reuses the split when it was drawn from the
/// same data config (another is refused), then writes `config.toml` and the class histogram.
pub fn prepare(cfg: &Config, run: &RunDir, obs: &dyn Observer) -> Result<Dataset> {
    let work = manifest::Work::start("cpu", rayon::current_num_threads());
    std::fs::create_dir_all(run.root()).map_err(|e| Error::io(run.root(), e))?;
    hold_lock(run)?;
    if let (Some(m), Some(t)) = (&cfg.model, &cfg.train) {
        stage1::check_compatible(m, t, run)?;
        check_stage1_inputs(cfg, run)?;
    }
    let split_path = run.split();
    if manifest::read(run, Stage::Split).is_some_and(|m| !manifest::outputs_intact(run, &m)) {
        // a damaged split.json is drawn again from the config (the same seeded draw gives the
        // same bytes), not read as it is and re-recorded
        manifest::invalidate(run, Stage::Split)?;
    }
    let ds = if split_path.is_file() {
        let old = Split::load(&split_path)?;
        if old.config != cfg.data.split {
            return Err(invalid!(
                "{} was drawn from another data config ([data.split] differs): use another --out, or delete the run folder",
                split_path.display()
            ));
        }
        let moved = if same_source(&old.source, &cfg.data.source) {
            None
        } else {
            Some(moved_source(&old, &cfg.data.source, &split_path)?)
        };
        if let Some(m) = &moved {
            obs.note(&format!(
                "source    moved: {} → {} (the same content): the split is reused",
                old.source.root.display(),
                m.root.display()
            ));
        }
        obs.note(&format!("split     {} (complete, reused)", split_path.display()));
        obs.task("decoding", 0);
        let ds = Dataset::open_from(old, moved.as_ref(), &cfg.cache_root(), &|n| obs.advance(n, ""));
        obs.task_done();
        ds?
    } else {
        let ds = open_data(cfg, obs)?;
        ds.split.save(&split_path)?;
        ds
    };
    if manifest::read(run, Stage::Split).is_none_or(|m| !manifest::outputs_intact(run, &m)) {
        manifest::commit(run, Stage::Split, Inputs::new(), &[split_path], work)?;
    }
    fsx::write_atomic(&run.config_toml(), cfg.to_run_toml().as_bytes())?;
    let s = &ds.split;
    plot::class_histogram(
        &run.class_histogram(),
        &text::title(s),
        &s.classes,
        &s.counts.train,
        &s.counts.val,
    )?;
    Ok(ds)
}
