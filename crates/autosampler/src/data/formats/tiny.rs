//! Tiny-ImageNet-200 with its object boxes.
//!
//! Layout: `wnids.txt` (class ids), `words.txt` (names, optional), `train/<wnid>/images/*.JPEG`
//! with `train/<wnid>/<wnid>_boxes.txt` (`file x0 y0 x1 y1`), and `val/images/*.JPEG` with
//! `val/val_annotations.txt` (`file wnid x0 y0 x1 y1`). The labelled val set is our test pool;
//! `test/` (unlabelled) is ignored. Classes are the wnids sorted, as `ImageFolder` on `train/`
//! would order them.
use super::{line_error, Scanned};
use crate::data::source::{BBox, Item, Origin, Pool};
use crate::data::tree::Tree;
use crate::{Error, Result};
use std::collections::HashMap;

pub(crate) fn scan(tree: &mut Tree) -> Result<Scanned> {
    if !tree.is_file("wnids.txt") {
        tree.descend_single_folder()?;
    }
    if !tree.is_file("wnids.txt") {
        return Err(Error::format(
            tree.display("wnids.txt"),
            "missing: expected the Tiny-ImageNet layout (wnids.txt, train/, val/)",
        ));
    }
    let mut classes: Vec<String> = tree
        .read_text("wnids.txt")?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    classes.sort();
    let index: HashMap<&str, u32> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u32))
        .collect();

    let mut train = Vec::new();
    for (label, wnid) in classes.iter().enumerate() {
        let boxes_file = format!("train/{wnid}/{wnid}_boxes.txt");
        let boxes = if tree.is_file(&boxes_file) {
            parse_boxes(&tree.read_text(&boxes_file)?, &tree.display(&boxes_file), 0)?
        } else {
            HashMap::new()
        };
        let dir = format!("train/{wnid}/images");
        if !tree.is_dir(&dir) {
            return Err(Error::format(
                tree.display(&dir),
                "missing class folder: expected the class's images",
            ));
        }
        let files = tree.list(&dir)?;
        if files.is_empty() {
            return Err(Error::format(
                tree.display(&dir),
                "empty class folder: expected at least one image",
            ));
        }
        for f in files {
            train.push(Item {
                label: label as u32,
                bbox: boxes.get(&f.name).map(|(_, b)| *b),
                origin: Origin::File(format!("{dir}/{}", f.name)),
            });
        }
    }

    let ann_file = "val/val_annotations.txt";
    let ann = parse_boxes(&tree.read_text(ann_file)?, &tree.display(ann_file), 1)?;
    let mut test = Vec::new();
    let mut names: Vec<&String> = ann.keys().collect();
    names.sort();
    for name in names {
        let (wnid, b) = &ann[name];
        let label = *index.get(wnid.as_str()).ok_or_else(|| {
            Error::format(
                tree.display(ann_file),
                format!("`{name}`: unknown class `{wnid}`"),
            )
        })?;
        let rel = format!("val/images/{name}");
        if !tree.is_file(&rel) {
            return Err(Error::format(
                tree.display(ann_file),
                format!("`{name}`: no such image in val/images"),
            ));
        }
        test.push(Item {
            label,
            origin: Origin::File(rel),
            bbox: Some(*b),
        });
    }
    Ok(Scanned {
        classes,
        pools: vec![(Pool::Train, train), (Pool::Test, test)],
        native_size: Some(64),
    })
}

/// Parses `file [wnid] x0 y0 x1 y1` lines (`extra` = 1 when a wnid column is present).
fn parse_boxes(text: &str, shown: &str, extra: usize) -> Result<HashMap<String, (String, BBox)>> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() != 5 + extra {
            return Err(line_error(
                shown,
                i + 1,
                format!(
                    "expected {} fields (file{} x0 y0 x1 y1), found {}",
                    5 + extra,
                    if extra == 1 { " wnid" } else { "" },
                    f.len()
                ),
            ));
        }
        let mut b = [0f32; 4];
        for (k, v) in f[1 + extra..].iter().enumerate() {
            b[k] = v
                .parse()
                .map_err(|_| line_error(shown, i + 1, format!("box coordinate `{v}` is not a number")))?;
        }
        let wnid = if extra == 1 {
            f[1].to_string()
        } else {
            String::new()
        };
        out.insert(f[0].to_string(), (wnid, b));
    }
    Ok(out)
}
