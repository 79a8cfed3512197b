//! The packed cache: every pool of a source decoded once into a flat `u8` file (N × S × S × 3,
//! HWC) plus labels and boxes, memory-mapped by later runs, which never decode an image again.
//!
//! ```text
//! <cache_root>/<key>/
//!   meta.json        format version, key, source config, content checksum, classes, size, pools
//!   train.images     N × S × S × 3 bytes        train.labels  N × u32 LE   train.boxes  N × 4 f32 LE (NaN: none)
//!   test.images …
//! ```
//! The key is derived from the source's content checksum and the decoding options, so one cache
//! serves every split, imbalance ratio and seed drawn from that source. The folder is built under
//! a temporary name and renamed into place: a killed build leaves no cache that looks complete.
use super::decode::{decode, RecordFiles};
use super::formats::Catalog;
use super::source::{BBox, Origin, Pool, Resize, SourceConfig};
use crate::{fsx, invalid, Error, Result};
use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const VERSION: u32 = 1;

/// `meta.json` of a cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheMeta {
    pub version: u32,
    pub key: String,
    pub source: SourceConfig,
    /// SHA-256 over every item's label and raw bytes, pool by pool (see [`content_checksum`]).
    pub checksum: String,
    pub classes: Vec<String>,
    pub image_size: u32,
    pub pools: Vec<PoolMeta>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolMeta {
    pub pool: Pool,
    pub len: usize,
    pub has_boxes: bool,
    /// SHA-256 of the `.labels` and `.boxes` files, checked at every open (caches built before
    /// they were recorded have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boxes_sha256: Option<String>,
    /// SHA-256 of the `.images` file: too long to hash at every open, checked on demand
    /// ([`Cache::verify`], `autosampler data verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_sha256: Option<String>,
}

/// One memory-mapped pool.
pub struct PackedPool {
    pub pool: Pool,
    pub labels: Vec<u32>,
    pub boxes: Option<Vec<BBox>>,
    images: Option<Mmap>,
    image_bytes: usize,
}

impl PackedPool {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Image `i` as S × S × 3 bytes (HWC).
    pub fn image(&self, i: usize) -> &[u8] {
        let m = self.images.as_ref().expect("non-empty pool is mapped");
        &m[i * self.image_bytes..(i + 1) * self.image_bytes]
    }
}

/// An opened cache.
pub struct Cache {
    pub dir: PathBuf,
    pub meta: CacheMeta,
    pub pools: Vec<PackedPool>,
}

/// The cache root used when none is given: `$AUTOSAMPLER_CACHE`, else
/// `${XDG_CACHE_HOME:-~/.cache}/autosampler/packed`. A variable set to the empty string counts
/// as unset (it would put the cache in the working folder).
pub fn default_cache_root() -> PathBuf {
    let var = |k: &str| std::env::var_os(k);
    cache_root_from(var("AUTOSAMPLER_CACHE"), var("XDG_CACHE_HOME"), var("HOME"))
}

/// [`default_cache_root`] from the three variables' values.
fn cache_root_from(
    autosampler_cache: Option<std::ffi::OsString>,
    xdg_cache_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    let set = |v: Option<std::ffi::OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = set(autosampler_cache) {
        return p;
    }
    let base = set(xdg_cache_home)
        .or_else(|| set(home).map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("autosampler").join("packed")
}

/// SHA-256 over class names and, pool by pool, every item's label and raw bytes (the encoded
/// file, or the CIFAR record). Identical data gives the same checksum wherever it lives (folder or
/// archive, any path).
pub fn content_checksum(catalog: &Catalog, records: &RecordFiles) -> Result<String> {
    let mut h = Sha256::new();
    for c in &catalog.classes {
        h.update(c.as_bytes());
        h.update([0]);
    }
    for (pool, items) in &catalog.pools {
        h.update(pool.name().as_bytes());
        // Hash item digests computed in parallel, in order: the result does not depend on threads.
        let digests: Vec<Result<[u8; 32]>> = items
            .par_iter()
            .map(|it| {
                let raw = records.raw(&catalog.tree, it)?;
                let mut d = Sha256::new();
                d.update(it.label.to_le_bytes());
                d.update((raw.len() as u64).to_le_bytes());
                d.update(&raw);
                Ok(d.finalize().into())
            })
            .collect();
        for d in digests {
            h.update(d?);
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// The cache key for a checksum and the decoding options.
pub fn cache_key(checksum: &str, size: u32, resize: Resize) -> String {
    let mut h = Sha256::new();
    h.update(format!("v{VERSION}:{checksum}:{size}:{resize:?}"));
    hex::encode(&h.finalize()[..8])
}

impl Cache {
    /// Opens the cache in `dir`: reads `meta.json`, labels and boxes, maps the images.
    pub fn open(dir: &Path) -> Result<Cache> {
        let meta: CacheMeta = fsx::read_json(&dir.join("meta.json"))?;
        if meta.version != VERSION {
            return Err(Error::format(
                dir.join("meta.json").display(),
                format!(
                    "cache format version {} (expected {VERSION}): delete the folder to rebuild it",
                    meta.version
                ),
            ));
        }
        let image_bytes = (meta.image_size as usize).pow(2) * 3;
        let mut pools = Vec::new();
        for pm in &meta.pools {
            let name = pm.pool.name();
            let lpath = dir.join(format!("{name}.labels"));
            let labels = read_u32s_checked(&lpath, pm.len, pm.labels_sha256.as_deref())?;
            if let Some((i, l)) = labels
                .iter()
                .enumerate()
                .find(|(_, &l)| l as usize >= meta.classes.len())
            {
                return Err(Error::format(
                    lpath.display(),
                    format!(
                        "image {i} has label {l}, but the cache has {} classes: the cache is damaged; delete {} to rebuild it",
                        meta.classes.len(),
                        dir.display()
                    ),
                ));
            }
            let boxes = if pm.has_boxes {
                let raw = read_u32s_checked(
                    &dir.join(format!("{name}.boxes")),
                    pm.len * 4,
                    pm.boxes_sha256.as_deref(),
                )?;
                Some(
                    raw.chunks(4)
                        .map(|c| std::array::from_fn(|k| f32::from_bits(c[k])))
                        .collect(),
                )
            } else {
                None
            };
            let path = dir.join(format!("{name}.images"));
            let images = if pm.len == 0 {
                None
            } else {
                let f = fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                // SAFETY: the file is only ever written under a temporary name before the cache
                // folder is renamed into place, never modified afterwards.
                let m = unsafe { Mmap::map(&f) }.map_err(|e| Error::io(&path, e))?;
                if m.len() != pm.len * image_bytes {
                    return Err(Error::format(
                        path.display(),
                        format!("{} bytes: expected {} images of {image_bytes} bytes; delete the cache folder to rebuild it", m.len(), pm.len),
                    ));
                }
                Some(m)
            };
            pools.push(PackedPool {
                pool: pm.pool,
                labels,
                boxes,
                images,
                image_bytes,
            });
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
            meta,
            pools,
        })
    }

    /// Checks every pool's pixels against the SHA-256 recorded when the cache was built (the
    /// labels and boxes are checked at every open). Returns the images checked; an error names the
    /// damaged file and says how to rebuild.
    pub fn verify(&self) -> Result<usize> {
        let mut n = 0;
        for (pm, pool) in self.meta.pools.iter().zip(&self.pools) {
            let path = self.dir.join(format!("{}.images", pm.pool.name()));
            let Some(want) = &pm.images_sha256 else {
                return Err(Error::format(
                    self.dir.join("meta.json").display(),
                    format!(
                        "no pixel checksum recorded for the {} pool (a cache built by an older version): delete {} to rebuild it with one",
                        pm.pool.name(),
                        self.dir.display()
                    ),
                ));
            };
            let got = sha256_file(&path, pool.images.is_some())?;
            if got != *want {
                return Err(Error::format(
                    path.display(),
                    format!(
                        "the cache's pixels are damaged (SHA-256 {got}, recorded {want}): delete {} to rebuild it",
                        self.dir.display()
                    ),
                ));
            }
            n += pool.len();
        }
        Ok(n)
    }

    /// [`Cache::verify`] for the pools that have a pixel checksum (a cache built before they were
    /// recorded is taken as it is), once per cache folder in a process: what every run does when
    /// it opens a cache, so that damaged pixels are never trained on silently. Hashing the pixels
    /// costs about what hashing the source costs, which opening a cache from its source does anyway.
    pub fn check_pixels_once(&self) -> Result<()> {
        static CHECKED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        if CHECKED.lock().unwrap().contains(&self.dir) {
            return Ok(());
        }
        for (pm, pool) in self.meta.pools.iter().zip(&self.pools) {
            let Some(want) = &pm.images_sha256 else { continue };
            let path = self.dir.join(format!("{}.images", pm.pool.name()));
            let got = sha256_file(&path, pool.images.is_some())?;
            if got != *want {
                return Err(Error::format(
                    self.dir.join(format!("{}.images", pm.pool.name())).display(),
                    format!("the cache's pixels are damaged (SHA-256 {got}, meta.json records {want})"),
                ));
            }
        }
        CHECKED.lock().unwrap().push(self.dir.clone());
        Ok(())
    }

    /// Opens the cache in `dir` and checks it ([`Cache::open`], [`Cache::check_pixels_once`]).
    pub fn open_checked(dir: &Path) -> Result<Cache> {
        let c = Cache::open(dir)?;
        c.check_pixels_once()?;
        Ok(c)
    }

    /// The pool `pool`, if the source has it.
    pub fn pool(&self, pool: Pool) -> Option<&PackedPool> {
        self.pools.iter().find(|p| p.pool == pool)
    }

    /// Opens the cache for `catalog` under `root`, building it first if it is not there.
    /// `progress` is called with the number of images decoded since its last call.
    pub fn open_or_build(catalog: &Catalog, root: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<Cache> {
        let records = RecordFiles::load(catalog)?;
        let checksum = content_checksum(catalog, &records)?;
        let size = image_size(catalog)?;
        let key = cache_key(&checksum, size, catalog.config.resize);
        let dir = root.join(&key);
        if dir.join("meta.json").is_file() {
            // A cache that does not read back whole (meta.json, labels, boxes, pixels) is rebuilt
            // from the source, which is here.
            match Cache::open_checked(&dir) {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!("{e}: rebuilding the cache {} from its source", dir.display()),
            }
        } else if dir.exists() {
            // A cache folder is renamed into place whole, meta.json included: one without it was
            // damaged after the fact. It is rebuilt (it used to fail with "Directory not empty").
            tracing::warn!("{} has no meta.json: rebuilding the cache", dir.display());
        }
        if dir.exists() {
            discard(&dir)?;
        }
        build(catalog, &records, checksum, key, size, &dir, progress)?;
        Cache::open_checked(&dir)
    }
}

/// The side of the cached images: the configured size, else the native one, else the first
/// training image's.
pub fn image_size(catalog: &Catalog) -> Result<u32> {
    if let Some(s) = catalog.config.image_size.or(catalog.native_size) {
        return Ok(s);
    }
    let first = catalog
        .pool(Pool::Train)
        .and_then(|v| v.first())
        .ok_or_else(|| invalid!("the source has no training images"))?;
    let Origin::File(rel) = &first.origin else {
        return Ok(32);
    };
    let bytes = catalog.tree.read(rel)?;
    let (w, h) = image::ImageReader::new(std::io::Cursor::new(&bytes[..]))
        .with_guessed_format()
        .map_err(|e| Error::io(catalog.tree.display(rel), e))?
        .into_dimensions()
        .map_err(|e| Error::format(catalog.tree.display(rel), format!("cannot read image size: {e}")))?;
    if w != h {
        return Err(Error::format(
            catalog.tree.display(rel),
            format!("image is {w}×{h}: set `image_size` (and `resize`) to make square images"),
        ));
    }
    Ok(w)
}

/// Takes a damaged cache folder out of the way: renamed first (one step, so no other process
/// opens it half-removed), then removed.
fn discard(dir: &Path) -> Result<()> {
    let gone = fsx::temp_sibling(dir);
    match fs::rename(dir, &gone) {
        Ok(()) => fs::remove_dir_all(&gone).map_err(|e| Error::io(&gone, e)),
        // another process took it away first
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// How long a cache build's temporary folder must have gone unmodified, its process gone, before
/// another build removes it: a build on another machine sharing the cache folder has a process
/// id this machine cannot check, but writes its files continually.
const STALE_BUILD: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the temporary folders that killed cache builds left in `root` (`.<key>.tmp-<pid>`,
/// as large as the cache): those whose process is gone and which nothing has modified for
/// `STALE_BUILD`. Returns how many.
pub fn remove_stale_builds(root: &Path) -> usize {
    let Ok(entries) = fs::read_dir(root) else { return 0 };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if !fsx::is_stale_temp(&name) || !path.is_dir() {
            continue;
        }
        let newest = fs::read_dir(&path)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|f| f.metadata().ok()?.modified().ok())
            .chain(e.metadata().ok().and_then(|m| m.modified().ok()))
            .max();
        let idle = newest.and_then(|t| t.elapsed().ok()).unwrap_or_default();
        if idle >= STALE_BUILD && fs::remove_dir_all(&path).is_ok() {
            tracing::warn!("removed {}: a cache build that was killed", path.display());
            n += 1;
        }
    }
    n
}

/// SHA-256 of a pool's pixel file, read through a buffer rather than the pool's memory map: the
/// pages a map touches count in the process's resident memory, pages read do not (a run on a
/// 224 px Tiny-ImageNet cache of 16 GB peaked at 17,386 MB checked through the map, 1,639 MB this
/// way). An empty pool's file may be absent (`present` false): the hash of nothing.
fn sha256_file(path: &Path, present: bool) -> Result<String> {
    use std::io::Read;
    let mut h = Sha256::new();
    if present {
        let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut buf = vec![0u8; 8 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(hex::encode(h.finalize()))
}

fn build(
    catalog: &Catalog,
    records: &RecordFiles,
    checksum: String,
    key: String,
    size: u32,
    dir: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    remove_stale_builds(parent);
    let tmp = fsx::temp_sibling(dir);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = (|| {
        let mut pools = Vec::new();
        for (pool, items) in &catalog.pools {
            let name = pool.name();
            let has_boxes = items.iter().any(|i| i.bbox.is_some());
            let img_path = tmp.join(format!("{name}.images"));
            let mut boxes: Vec<u8> = Vec::new();
            let mut decode_error = None;
            let mut pixels = Sha256::new();
            let written = fsx::write_atomic_with(&img_path, |w| {
                for chunk in items.chunks(2048) {
                    let decoded: Vec<Result<(Vec<u8>, Option<BBox>)>> = chunk
                        .par_iter()
                        .map(|it| decode(&catalog.tree, records, it, size, catalog.config.resize))
                        .collect();
                    for d in decoded {
                        let (px, b) = match d {
                            Ok(v) => v,
                            Err(e) => {
                                decode_error = Some(e);
                                return Err(std::io::Error::other("decoding failed"));
                            }
                        };
                        w.write_all(&px)?;
                        pixels.update(&px);
                        for v in b.unwrap_or([f32::NAN; 4]) {
                            boxes.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                    progress(chunk.len() as u64);
                }
                Ok(())
            });
            if let Some(e) = decode_error {
                return Err(e);
            }
            written?;
            let labels: Vec<u8> = items.iter().flat_map(|i| i.label.to_le_bytes()).collect();
            fsx::write_atomic(&tmp.join(format!("{name}.labels")), &labels)?;
            if has_boxes {
                fsx::write_atomic(&tmp.join(format!("{name}.boxes")), &boxes)?;
            }
            pools.push(PoolMeta {
                pool: *pool,
                len: items.len(),
                has_boxes,
                labels_sha256: Some(hex::encode(Sha256::digest(&labels))),
                boxes_sha256: has_boxes.then(|| hex::encode(Sha256::digest(&boxes))),
                images_sha256: Some(hex::encode(pixels.finalize())),
            });
        }
        let meta = CacheMeta {
            version: VERSION,
            key,
            source: catalog.config.clone(),
            checksum,
            classes: catalog.classes.clone(),
            image_size: size,
            pools,
        };
        fsx::write_json(&tmp.join("meta.json"), &meta)?;
        match fs::rename(&tmp, dir) {
            Ok(()) => Ok(()),
            // Another process built the same cache first: its finished folder is the cache (the
            // key is the content's, so both hold the same bytes); this build's copy goes.
            Err(_) if dir.join("meta.json").is_file() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => Err(Error::io(dir, e)),
        }
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Reads `n` little-endian u32s; with `sha256`, the file's hash must be that.
fn read_u32s_checked(path: &Path, n: usize, sha256: Option<&str>) -> Result<Vec<u32>> {
    if let Some(want) = sha256 {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        let got = hex::encode(Sha256::digest(&bytes));
        if got != want {
            return Err(Error::format(
                path.display(),
                format!(
                    "the cache is damaged (SHA-256 {got}, recorded {want}): delete {} to rebuild it",
                    path.parent().unwrap_or(Path::new(".")).display()
                ),
            ));
        }
    }
    read_u32s(path, n)
}

fn read_u32s(path: &Path, n: usize) -> Result<Vec<u32>> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() != n * 4 {
        return Err(Error::format(
            path.display(),
            format!(
                "{} bytes: expected {} (delete the cache folder to rebuild it)",
                bytes.len(),
                n * 4
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod cache_root_tests {
    use super::*;

    #[test]
    fn an_empty_cache_variable_counts_as_unset() {
        let v = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(cache_root_from(v("/c"), v("/x"), v("/h")), PathBuf::from("/c"));
        // AUTOSAMPLER_CACHE="" used to give "" (the cache in the working folder)
        assert_eq!(
            cache_root_from(v(""), v(""), v("/h")),
            PathBuf::from("/h/.cache/autosampler/packed")
        );
        assert_eq!(
            cache_root_from(None, v("/x"), v("/h")),
            PathBuf::from("/x/autosampler/packed")
        );
        assert_eq!(
            cache_root_from(v(""), None, v("")),
            std::env::temp_dir().join("autosampler/packed")
        );
    }
}
