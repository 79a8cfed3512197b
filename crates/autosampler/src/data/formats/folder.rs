//! Image folders (`root/<split>/<class>/*.jpg`) and split lists (`relative/path label` per line,
//! the classifier-balancing format used for ImageNet-LT and Places-LT).
use super::{is_image_name, line_error, Scanned};
use crate::data::source::{Item, Origin, Pool, SourceConfig};
use crate::data::tree::Tree;
use crate::{Error, Result};

pub(crate) fn scan_image_folder(tree: &mut Tree, cfg: &SourceConfig) -> Result<Scanned> {
    if !tree.is_dir(&cfg.train_dir) {
        tree.descend_single_folder()?;
    }
    for d in [&cfg.train_dir, &cfg.test_dir] {
        if !tree.is_dir(d) {
            return Err(Error::format(
                tree.display(d),
                format!(
                    "missing folder: expected `{}/<class>/*.jpg` and `{}/<class>/*.jpg` under the root",
                    cfg.train_dir, cfg.test_dir
                ),
            ));
        }
    }
    let classes: Vec<String> = tree
        .list(&cfg.train_dir)?
        .into_iter()
        .filter(|e| e.is_dir)
        .map(|e| e.name)
        .collect();
    if classes.is_empty() {
        return Err(Error::format(
            tree.display(&cfg.train_dir),
            "no class folders: expected one folder of images per class",
        ));
    }
    let mut pools = Vec::new();
    for (pool, dir) in [(Pool::Train, &cfg.train_dir), (Pool::Test, &cfg.test_dir)] {
        for e in tree.list(dir)? {
            if e.is_dir && !classes.contains(&e.name) {
                return Err(Error::format(
                    tree.display(&format!("{dir}/{}", e.name)),
                    format!(
                        "class `{}` is not among the {} training classes",
                        e.name,
                        classes.len()
                    ),
                ));
            }
        }
        let mut items = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let cdir = format!("{dir}/{class}");
            if pool == Pool::Test && !tree.is_dir(&cdir) {
                continue; // a class without test images is allowed
            }
            let mut n = 0;
            for f in tree.list(&cdir)? {
                let rel = format!("{cdir}/{}", f.name);
                if f.is_dir || !is_image_name(&f.name) {
                    return Err(Error::format(
                        tree.display(&rel),
                        "not an image: expected only .jpg, .jpeg or .png files in a class folder",
                    ));
                }
                items.push(Item {
                    label: label as u32,
                    origin: Origin::File(rel),
                    bbox: None,
                });
                n += 1;
            }
            if n == 0 {
                return Err(Error::format(
                    tree.display(&cdir),
                    "empty class folder: expected at least one .jpg, .jpeg or .png image",
                ));
            }
        }
        pools.push((pool, items));
    }
    Ok(Scanned {
        classes,
        pools,
        native_size: None,
    })
}

pub(crate) fn scan_split_lists(tree: &Tree, cfg: &SourceConfig) -> Result<Scanned> {
    let need = |p: &Option<std::path::PathBuf>, what: &str| {
        p.clone()
            .ok_or_else(|| crate::invalid!("format split-list needs `{what}` (a file of `path label` lines)"))
    };
    let train_list = need(&cfg.train_list, "train_list")?;
    let test_list = need(&cfg.test_list, "test_list")?;
    let names: Option<Vec<String>> = match &cfg.class_names {
        Some(p) => {
            let t = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            Some(
                t.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect(),
            )
        }
        None => None,
    };
    let mut lists = vec![(Pool::Train, train_list)];
    if let Some(v) = &cfg.val_list {
        lists.push((Pool::Val, v.clone()));
    }
    lists.push((Pool::Test, test_list));
    let mut pools = Vec::new();
    let mut num_classes = names.as_ref().map(|n| n.len() as u32);
    // an image once in a list, and a training image in no other list: a line repeated would put
    // one image in the hold-out and in training, or in training and the test set
    let mut seen: std::collections::HashMap<String, (Pool, String, usize)> = std::collections::HashMap::new();
    for (pool, list) in lists {
        let shown = list.display().to_string();
        let text = std::fs::read_to_string(&list).map_err(|e| Error::io(&list, e))?;
        let mut items = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, label) = line
                .rsplit_once(char::is_whitespace)
                .ok_or_else(|| line_error(&shown, i + 1, format!("`{line}`: expected `path label`")))?;
            // a leading `/` is the root's, as the field's loaders read Places-LT's lists
            // (`root + line` when a line starts with `/`): never a path of this machine
            let path = path.trim();
            let path = path.strip_prefix('/').unwrap_or(path);
            let label: u32 = label.parse().map_err(|_| {
                line_error(
                    &shown,
                    i + 1,
                    format!("label `{label}` is not a non-negative integer"),
                )
            })?;
            if let Some(c) = num_classes {
                if label >= c {
                    return Err(line_error(
                        &shown,
                        i + 1,
                        format!("unknown class {label}: expected a label from 0 to {}", c - 1),
                    ));
                }
            }
            if std::path::Path::new(path)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(line_error(
                    &shown,
                    i + 1,
                    format!("`{path}` is not a path inside root (no `..`)"),
                ));
            }
            if let Some((p, f, l)) = seen.insert(path.to_string(), (pool, shown.clone(), i + 1)) {
                if p == pool || p == Pool::Train {
                    return Err(line_error(
                        &shown,
                        i + 1,
                        format!(
                            "`{path}` is listed twice (also {f} line {l}): a training image must be in one list, once"
                        ),
                    ));
                }
                tracing::warn!(
                    "{shown} line {}: `{path}` is also in {f} (line {l}): validation and test share images, so choices made on validation are not independent of the test score",
                    i + 1
                );
            }
            if !tree.is_file(path) {
                return Err(line_error(
                    &shown,
                    i + 1,
                    format!("file `{path}` not found under {}", tree.display("")),
                ));
            }
            items.push(Item {
                label,
                origin: Origin::File(path.to_string()),
                bbox: None,
            });
        }
        if items.is_empty() {
            return Err(Error::format(&shown, "empty list: expected `path label` lines"));
        }
        if pool == Pool::Train && num_classes.is_none() {
            // Without a names file, the classes are 0..=max label of the training list, each with
            // training images: a gap is most likely a typo in the line of the largest label.
            let max = items.iter().map(|i| i.label).max().unwrap_or(0);
            let mut has = vec![false; max as usize + 1];
            for it in &items {
                has[it.label as usize] = true;
            }
            if let Some(gap) = has.iter().position(|h| !h) {
                let line = text
                    .lines()
                    .position(|l| {
                        l.trim()
                            .rsplit_once(char::is_whitespace)
                            .is_some_and(|(_, lab)| lab.parse() == Ok(max))
                    })
                    .map_or(0, |i| i + 1);
                return Err(line_error(
                    &shown,
                    line,
                    format!(
                        "label {max}, but class {gap} has no training image: the labels must run from 0 without gaps (a typo? or declare the classes with `class_names`)"
                    ),
                ));
            }
            num_classes = Some(max + 1);
        }
        pools.push((pool, items));
    }
    let c = num_classes.unwrap_or(0);
    let classes = names.unwrap_or_else(|| (0..c).map(|i| i.to_string()).collect());
    Ok(Scanned {
        classes,
        pools,
        native_size: None,
    })
}
