//! A read-only file tree: a folder on disk, or a `.tar` / `.tar.gz` archive read straight into
//! memory (no unpacking step). Paths inside are `/`-separated and relative to the tree's root.
use crate::{Error, Result};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A folder or an archive holding a dataset.
pub struct Tree {
    path: PathBuf,
    kind: Kind,
    /// `prefix/` that every relative path is under (set by [`Tree::descend`]).
    prefix: String,
}

enum Kind {
    Dir,
    /// Archive members: path → content (files only; folders are implied by paths).
    Archive(BTreeMap<String, Vec<u8>>),
}

/// What [`Tree::list`] returns for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
}

/// True when `path` names an archive this module can read.
pub fn is_archive(path: &Path) -> bool {
    let n = path.to_string_lossy();
    n.ends_with(".tar") || n.ends_with(".tar.gz") || n.ends_with(".tgz")
}

impl Tree {
    /// Opens a folder, or reads a whole archive into memory.
    pub fn open(path: &Path) -> Result<Tree> {
        let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let kind = if meta.is_dir() {
            Kind::Dir
        } else if is_archive(path) {
            Kind::Archive(read_archive(path)?)
        } else {
            return Err(Error::format(
                path.display(),
                "expected a folder or a .tar / .tar.gz / .tgz archive",
            ));
        };
        Ok(Tree {
            path: path.to_path_buf(),
            kind,
            prefix: String::new(),
        })
    }

    /// The folder or archive this tree was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the root down into `sub` (a relative folder path).
    pub fn descend(&mut self, sub: &str) {
        let sub = sub.trim_matches('/');
        if !sub.is_empty() {
            self.prefix = format!("{}{sub}/", self.prefix);
        }
    }

    /// If the root holds exactly one folder and no files (the usual shape of an archive:
    /// `cifar10/…`), moves the root into it. Returns the folder's name.
    pub fn descend_single_folder(&mut self) -> Result<Option<String>> {
        let entries = self.list("")?;
        if let [Entry { name, is_dir: true }] = entries.as_slice() {
            let name = name.clone();
            self.descend(&name);
            return Ok(Some(name));
        }
        Ok(None)
    }

    fn full(&self, rel: &str) -> String {
        format!("{}{}", self.prefix, rel.trim_start_matches('/'))
    }

    /// A name for messages: `/data/cifar10/train/cat/1.jpg` or `/data/c.tar.gz:cifar10/train/…`.
    pub fn display(&self, rel: &str) -> String {
        match self.kind {
            Kind::Dir => self.path.join(self.full(rel)).display().to_string(),
            Kind::Archive(_) => format!("{}:{}", self.path.display(), self.full(rel)),
        }
    }

    /// True when `rel` is a folder of the tree.
    pub fn is_dir(&self, rel: &str) -> bool {
        match &self.kind {
            Kind::Dir => self.path.join(self.full(rel)).is_dir(),
            Kind::Archive(files) => {
                let p = self.full(rel);
                let p = if p.is_empty() || p.ends_with('/') {
                    p
                } else {
                    format!("{p}/")
                };
                files
                    .range(p.clone()..)
                    .next()
                    .is_some_and(|(k, _)| k.starts_with(&p))
            }
        }
    }

    /// True when `rel` is a file of the tree.
    pub fn is_file(&self, rel: &str) -> bool {
        match &self.kind {
            Kind::Dir => self.path.join(self.full(rel)).is_file(),
            Kind::Archive(files) => files.contains_key(&self.full(rel)),
        }
    }

    /// The names in folder `rel`, sorted by name (byte order, as Python's `sorted(os.listdir())`).
    /// Hidden names (starting with `.`) are skipped.
    pub fn list(&self, rel: &str) -> Result<Vec<Entry>> {
        let mut out = match &self.kind {
            Kind::Dir => {
                let dir = self.path.join(self.full(rel));
                let rd = fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
                let mut v = Vec::new();
                for e in rd {
                    let e = e.map_err(|e| Error::io(&dir, e))?;
                    let ft = e.file_type().map_err(|err| Error::io(e.path(), err))?;
                    let is_dir = ft.is_dir() || (ft.is_symlink() && e.path().is_dir());
                    // Names are kept as text (split lists and class names refer to them): one
                    // that is not UTF-8 is refused by name, not later as "No such file".
                    let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                        return Err(Error::format(
                            e.path().display(),
                            "the file name is not valid UTF-8: rename it (or move it out of the source)",
                        ));
                    };
                    v.push(Entry { name, is_dir });
                }
                v
            }
            Kind::Archive(files) => {
                let mut p = self.full(rel);
                if !p.is_empty() && !p.ends_with('/') {
                    p.push('/');
                }
                if !p.is_empty() && !self.is_dir(rel) {
                    return Err(Error::format(self.display(rel), "no such folder in the archive"));
                }
                let mut v: Vec<Entry> = Vec::new();
                for k in files
                    .range(p.clone()..)
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(&p))
                {
                    let rest = &k[p.len()..];
                    let (name, is_dir) = match rest.split_once('/') {
                        Some((d, _)) => (d, true),
                        None => (rest, false),
                    };
                    if v.last().is_none_or(|l| l.name != name) {
                        v.push(Entry {
                            name: name.to_string(),
                            is_dir,
                        });
                    }
                }
                v
            }
        };
        out.retain(|e| !e.name.starts_with('.') && !e.name.is_empty());
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The bytes of file `rel`.
    pub fn read(&self, rel: &str) -> Result<Cow<'_, [u8]>> {
        match &self.kind {
            Kind::Dir => {
                let p = self.path.join(self.full(rel));
                fs::read(&p).map(Cow::Owned).map_err(|e| Error::io(&p, e))
            }
            Kind::Archive(files) => files
                .get(&self.full(rel))
                .map(|b| Cow::Borrowed(b.as_slice()))
                .ok_or_else(|| Error::format(self.display(rel), "no such file in the archive")),
        }
    }

    /// The text of file `rel` (UTF-8).
    pub fn read_text(&self, rel: &str) -> Result<String> {
        let bytes = self.read(rel)?;
        String::from_utf8(bytes.into_owned())
            .map_err(|e| Error::format(self.display(rel), format!("not UTF-8 text: {e}")))
    }
}

fn read_archive(path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader: Box<dyn Read> = if path.to_string_lossy().ends_with(".tar") {
        Box::new(std::io::BufReader::new(file))
    } else {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
    };
    let mut ar = tar::Archive::new(reader);
    let mut files = BTreeMap::new();
    let bad = |e: std::io::Error, at: &str| {
        Error::format(
            path.display(),
            format!("unreadable archive{at}: {e} (expected a complete tar / tar.gz file)"),
        )
    };
    for entry in ar.entries().map_err(|e| bad(e, ""))? {
        let mut entry = entry.map_err(|e| bad(e, " after the last good member"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| bad(e, ""))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut buf = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut buf)
            .map_err(|e| bad(e, &format!(" at member {name}")))?;
        files.insert(name, buf);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_tar(dir: &Path, gz: bool) -> PathBuf {
        let p = dir.join(if gz { "t.tar.gz" } else { "t.tar" });
        let f = fs::File::create(&p).unwrap();
        let w: Box<dyn std::io::Write> = if gz {
            Box::new(flate2::write::GzEncoder::new(f, flate2::Compression::fast()))
        } else {
            Box::new(f)
        };
        let mut b = tar::Builder::new(w);
        for (name, data) in [
            ("top/b/2.txt", "two"),
            ("top/a/1.txt", "one"),
            ("top/a/0.txt", "zero"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().flush().unwrap();
        p
    }
    use std::io::Write;

    #[test]
    fn archive_and_folder_list_the_same() {
        let dir = tempfile::tempdir().unwrap();
        for gz in [false, true] {
            let mut t = Tree::open(&make_tar(dir.path(), gz)).unwrap();
            assert_eq!(t.descend_single_folder().unwrap().as_deref(), Some("top"));
            let names: Vec<_> = t.list("a").unwrap().into_iter().map(|e| e.name).collect();
            assert_eq!(names, ["0.txt", "1.txt"]);
            assert!(t.is_dir("b") && !t.is_dir("c") && t.is_file("b/2.txt"));
            assert_eq!(&*t.read("a/1.txt").unwrap(), b"one");
            assert!(t.display("a/1.txt").ends_with(":top/a/1.txt"));
        }
        let root = dir.path().join("d");
        fs::create_dir_all(root.join("top/a")).unwrap();
        fs::write(root.join("top/a/0.txt"), "zero").unwrap();
        let mut t = Tree::open(&root).unwrap();
        t.descend_single_folder().unwrap();
        assert_eq!(t.list("a").unwrap()[0].name, "0.txt");
    }

    #[test]
    fn truncated_archive_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = make_tar(dir.path(), true);
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let err = Tree::open(&p).err().unwrap().to_string();
        assert!(err.contains("t.tar.gz") && err.contains("archive"), "{err}");
    }
}
