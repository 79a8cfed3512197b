//! Stage manifests: the one rule by which a stage is reused.
//!
//! A stage is complete when `manifests/<stage>.json` exists, records the fingerprint of the
//! stage's inputs (its config section and the digests of the upstream stages it read), and every
//! output it lists is on disk with the recorded size and SHA-256. A stage removes its manifest
//! before it writes anything and writes it last, by one rename: a kill at any instant leaves
//! either the old complete state or no manifest (the stage reruns).
use crate::provenance::Provenance;
use crate::rundir::{RunDir, Stage};
use crate::{fsx, Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What a stage read: named values (config sections as JSON, upstream digests).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inputs(pub BTreeMap<String, String>);

impl Inputs {
    pub fn new() -> Inputs {
        Inputs::default()
    }
    /// A value the stage depends on, recorded as its JSON text.
    pub fn value<T: Serialize + ?Sized>(mut self, name: &str, v: &T) -> Inputs {
        let text = serde_json::to_string(v).expect("inputs serialise");
        self.0.insert(name.to_string(), text);
        self
    }
    /// An upstream stage's digest (its outputs' content).
    pub fn upstream(mut self, m: &Manifest) -> Inputs {
        self.0.insert(format!("{}.digest", m.stage), m.digest());
        self
    }
    /// SHA-256 of the inputs (hex).
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(
            serde_json::to_string(&self.0).expect("inputs serialise"),
        ))
    }
}

/// One output file's size and content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub bytes: u64,
    pub sha256: String,
}

/// `manifests/<stage>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub stage: String,
    pub fingerprint: String,
    pub inputs: Inputs,
    /// Output path relative to the run folder → its digest.
    pub outputs: BTreeMap<String, FileDigest>,
    /// Wall time of the stage's work in this process (0 when it only re-committed).
    #[serde(default)]
    pub seconds: f64,
    /// The build, device and threads that did the work.
    #[serde(default)]
    pub provenance: Provenance,
}

impl Manifest {
    /// SHA-256 of the outputs' digests: what downstream stages record as this stage's content.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(
            serde_json::to_string(&self.outputs).expect("digests serialise"),
        ))
    }
}

/// Size and SHA-256 of a file.
pub fn file_digest(path: &Path) -> Result<FileDigest> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        h.update(&buf[..n]);
    }
    Ok(FileDigest {
        bytes,
        sha256: hex::encode(h.finalize()),
    })
}

/// The stage's manifest when it is complete for `inputs`: the fingerprint matches and every
/// output reads back with its recorded size and hash. `None` otherwise (the stage must run).
pub fn complete(run: &RunDir, stage: Stage, inputs: &Inputs) -> Option<Manifest> {
    let m = read(run, stage)?;
    (m.fingerprint == inputs.fingerprint() && outputs_intact(run, &m)).then_some(m)
}

/// Whether every output of `m` is on disk with its recorded size and content.
pub fn outputs_intact(run: &RunDir, m: &Manifest) -> bool {
    m.outputs.iter().all(|(rel, d)| {
        let p = run.root().join(rel);
        std::fs::metadata(&p).is_ok_and(|md| md.len() == d.bytes)
            && file_digest(&p).is_ok_and(|got| got == *d)
    })
}

/// The stage's manifest as recorded, whatever its inputs (`None` when absent or unreadable).
pub fn read(run: &RunDir, stage: Stage) -> Option<Manifest> {
    let p = run.manifest(stage);
    p.is_file().then(|| fsx::read_json(&p).ok()).flatten()
}

/// How a stage writes an output again once it is damaged.
enum Rebuild {
    /// Rerunning the stage writes it (features, the search, stage 2, eval, the report).
    Rerun,
    /// The stage writes it again from a checkpoint (the file named, relative to the run folder)
    /// without training; without that checkpoint it could not.
    From(PathBuf),
    /// Only training the stage again writes it (stage 1's best-on-validation weights).
    Never,
}

fn rebuild(run: &RunDir, stage: Stage, rel: &Path) -> Rebuild {
    let s1 = run.stage1();
    let is = |p: PathBuf| run.relative(&p) == rel;
    match stage {
        Stage::Stage1 if is(s1.best()) => Rebuild::Never,
        Stage::Stage1 if is(s1.model()) => Rebuild::From(run.relative(&s1.last()).to_path_buf()),
        Stage::Agent => Rebuild::From(run.relative(&run.agent_last()).to_path_buf()),
        _ => Rebuild::Rerun,
    }
}

/// Removes the stage's manifest before the stage rewrites its outputs, so that a kill part-way
/// leaves the stage incomplete rather than complete with mixed files.
///
/// An output the last manifest recorded that no longer reads back with its recorded size and
/// SHA-256 was damaged after the stage wrote it: the stage must not keep it (a stage keeps a
/// file that still parses, and the commit would record the damaged file's hash as valid). It is
/// removed, with a warning naming it, so that the stage writes it again; when the stage cannot
/// (only training again would: stage 1's best-on-validation weights, or a file whose checkpoint
/// is gone), the run stops here naming the file and the command that discards the stage.
pub fn invalidate(run: &RunDir, stage: Stage) -> Result<()> {
    if let Some(old) = read(run, stage) {
        let manifest = run.manifest(stage);
        for (rel, d) in &old.outputs {
            let p = run.root().join(rel);
            let intact = file_digest(&p).is_ok_and(|got| got == *d);
            if intact {
                continue;
            }
            let present = p.exists();
            let what = if present {
                "does not match the size and SHA-256 that"
            } else {
                "is missing, and"
            };
            let from = match rebuild(run, stage, Path::new(rel)) {
                Rebuild::Rerun => None,
                Rebuild::From(ckpt) if run.root().join(&ckpt).is_file() => Some(ckpt),
                Rebuild::From(_) | Rebuild::Never => {
                    let dir = run.root().join(rel);
                    let dir = dir.parent().unwrap_or(run.root());
                    return Err(crate::invalid!(
                        "{} {what} {} records: only training {} again can write it. To discard {} and train it again: rm -r {} {}",
                        p.display(),
                        manifest.display(),
                        stage.name(),
                        stage.name(),
                        dir.display(),
                        manifest.display()
                    ));
                }
            };
            if present {
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                tracing::warn!(
                    "{} {what} {} records (damaged after {} wrote it): removed; {} writes it again{}",
                    p.display(),
                    manifest.display(),
                    stage.name(),
                    stage.name(),
                    from.map(|f| format!(" from {}", run.root().join(f).display()))
                        .unwrap_or_default()
                );
            }
        }
    }
    let p = run.manifest(stage);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&p, e)),
    }
}

/// How a stage's work was done: its wall time and provenance.
pub struct Work {
    pub started: std::time::Instant,
    pub provenance: Provenance,
}

impl Work {
    /// Work starting now on `device` with `threads`.
    pub fn start(device: &str, threads: usize) -> Work {
        Work {
            started: std::time::Instant::now(),
            provenance: Provenance::here(device, threads),
        }
    }
}

/// Commits the stage: hashes its outputs and writes the manifest (one atomic rename, last).
pub fn commit(
    run: &RunDir,
    stage: Stage,
    inputs: Inputs,
    outputs: &[PathBuf],
    work: Work,
) -> Result<Manifest> {
    let mut map = BTreeMap::new();
    for p in outputs {
        let rel = run.relative(p).to_string_lossy().into_owned();
        map.insert(rel, file_digest(p)?);
    }
    let m = Manifest {
        stage: stage.name().to_string(),
        fingerprint: inputs.fingerprint(),
        inputs,
        outputs: map,
        seconds: work.started.elapsed().as_secs_f64(),
        provenance: work.provenance,
    };
    fsx::write_json(&run.manifest(stage), &m)?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_complete_only_for_its_inputs_and_intact_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let out = dir.path().join("eval.json");
        std::fs::write(&out, b"{\"a\": 1}").unwrap();
        let inputs = Inputs::new().value("config", &[1, 2]);
        assert!(complete(&run, Stage::Eval, &inputs).is_none(), "no manifest yet");
        let m = commit(
            &run,
            Stage::Eval,
            inputs.clone(),
            std::slice::from_ref(&out),
            Work::start("cpu", 1),
        )
        .unwrap();
        assert_eq!(m.provenance.version, crate::provenance::VERSION);
        assert_eq!(m.outputs["eval.json"].bytes, 8);
        // sha256 of the 8 bytes above, as `sha256sum` prints it
        assert_eq!(
            m.outputs["eval.json"].sha256,
            "f9d86028c6e0d64e225186f96acb69338b2c59764df79162107f5c4bb34d1310"
        );
        assert_eq!(complete(&run, Stage::Eval, &inputs), Some(m.clone()));
        // other inputs: incomplete
        let other = Inputs::new().value("config", &[1, 3]);
        assert!(complete(&run, Stage::Eval, &other).is_none());
        // same size, other content: incomplete
        std::fs::write(&out, b"{\"a\": 2}").unwrap();
        assert!(complete(&run, Stage::Eval, &inputs).is_none());
        // truncated: incomplete
        std::fs::write(&out, b"{").unwrap();
        assert!(complete(&run, Stage::Eval, &inputs).is_none());
        std::fs::write(&out, b"{\"a\": 1}").unwrap();
        assert!(complete(&run, Stage::Eval, &inputs).is_some());
        invalidate(&run, Stage::Eval).unwrap();
        assert!(complete(&run, Stage::Eval, &inputs).is_none());
        invalidate(&run, Stage::Eval).unwrap();
        // an upstream's digest depends on its outputs' content only
        let up = Inputs::new().upstream(&m);
        assert_eq!(up.0["eval.digest"], m.digest());
    }
}
