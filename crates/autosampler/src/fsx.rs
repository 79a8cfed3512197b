//! File-system helpers: atomic writes (write to a temporary name in the same folder, flush to disk,
//! rename into place), so that a killed run or a full disk never leaves a half-written artifact.
use crate::{Error, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A temporary sibling of `path`: same folder (so the rename is atomic), unique per process.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Whether a temporary sibling's name (`.<name>.tmp-<pid>`) belongs to a process that is gone.
pub fn is_stale_temp(name: &str) -> bool {
    let Some(pid) = name
        .starts_with('.')
        .then(|| name.rsplit_once(".tmp-"))
        .flatten()
        .and_then(|(_, pid)| pid.parse::<i32>().ok())
    else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    pid != std::process::id() as i32
        && unsafe { libc::kill(pid, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Removes the temporary siblings (files and folders) that killed processes left in `dir` and its
/// sub-folders; returns how many. Only for a folder this process holds the lock of, or for
/// entries whose process is gone (checked per entry).
pub fn remove_stale_temps(dir: &Path) -> usize {
    let mut n = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_stale_temp(&name) {
            let gone = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            n += usize::from(gone.is_ok());
        } else if is_dir {
            n += remove_stale_temps(&path);
        }
    }
    n
}

/// An exclusive lock on a run folder (`<dir>/.lock`, flock), held until dropped.
pub struct DirLock {
    _file: fs::File,
}

/// Takes the run folder's lock, or fails at once, naming the folder and the process that holds it.
/// Temporary files that killed runs left in the folder are removed once the lock is held.
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    use std::os::unix::io::AsRawFd;
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(".lock");
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = fs::read_to_string(&path).unwrap_or_default();
        return Err(crate::invalid!(
            "{} is in use by another autosampler process (pid {}): wait for it, or use another --out",
            dir.display(),
            holder.trim()
        ));
    }
    let _ = file.set_len(0);
    let _ = write!(file, "{}", std::process::id());
    remove_stale_temps(dir);
    Ok(DirLock { _file: file })
}

/// Writes `bytes` to `path` atomically. On any failure the temporary file is removed and the
/// previous content of `path`, if any, is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], but the content is produced by `fill` writing into the file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = temp_sibling(path);
    let result = (|| {
        let file = fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(&file);
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| crate::invalid!("cannot serialise {}: {e}", path.display()))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads and parses a JSON file, naming the file and the line on error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        Error::format(
            path.display(),
            format!(
                "line {}, column {}: at `{}`: {inner}",
                inner.line(),
                inner.column(),
                e.path()
            ),
        )
    })
}

#[cfg(test)]
mod tests {

    /// Defects "no lock on a run folder" and "temporary files are left after a kill".
    #[test]
    fn a_run_folder_is_locked_once_and_stale_temps_go() {
        let d = tempfile::tempdir().unwrap();
        // a dead process's temporaries (pid 2^22 + 1 is above Linux's pid_max), and a live one's
        let dead = d.path().join(".state.json.tmp-4194305");
        std::fs::write(&dead, b"x").unwrap();
        std::fs::create_dir_all(d.path().join("sub/.key.tmp-4194305")).unwrap();
        let live = d.path().join(format!(".x.tmp-{}", std::process::id()));
        std::fs::write(&live, b"x").unwrap();
        let lock = lock_dir(d.path()).unwrap();
        assert!(!dead.exists() && !d.path().join("sub/.key.tmp-4194305").exists());
        assert!(live.exists(), "this process's own temporary stays");
        let e = lock_dir(d.path()).err().unwrap().to_string();
        assert!(
            e.contains("in use by another autosampler process")
                && e.contains(&std::process::id().to_string()),
            "{e}"
        );
        drop(lock);
        lock_dir(d.path()).unwrap();
    }

    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn failed_fill_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |_| Err(std::io::Error::other("disk full"))).unwrap_err();
        assert!(err.to_string().contains("a.bin"), "{err}");
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn full_disk_is_reported_with_the_path() {
        // /dev/full accepts opens and fails every write with ENOSPC; we cannot rename onto it,
        // so write through a folder we cannot create instead: the error must still name the path.
        let err = write_atomic(Path::new("/proc/no-such-dir/x.json"), b"x").unwrap_err();
        assert!(err.to_string().contains("/proc/no-such-dir"), "{err}");
    }
}
