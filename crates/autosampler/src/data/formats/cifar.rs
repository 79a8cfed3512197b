//! CIFAR-10 / CIFAR-100 in the original binary format.
//!
//! CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`, records of 1 label
//! byte + 3,072 pixel bytes (1,024 R, 1,024 G, 1,024 B, row-major 32×32); class names in
//! `batches.meta.txt` when present. CIFAR-100: `train.bin` and `test.bin`, records of a coarse
//! label byte, a fine label byte and 3,072 pixel bytes; names in `fine_label_names.txt` /
//! `coarse_label_names.txt`.
use super::Scanned;
use crate::data::source::{Cifar100Label, Format, Item, Origin, Pool};
use crate::data::tree::Tree;
use crate::{Error, Result};

/// Pixel bytes of one record.
pub const PIXELS: usize = 3 * 32 * 32;

const CIFAR10_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

pub(crate) fn scan(tree: &mut Tree, format: Format, which: Cifar100Label) -> Result<Scanned> {
    let (train_files, test_files, label_bytes, num_classes): (Vec<String>, Vec<String>, usize, u32) =
        match format {
            Format::Cifar10Bin => (
                (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
                vec!["test_batch.bin".into()],
                1,
                10,
            ),
            _ => (
                vec!["train.bin".into()],
                vec!["test.bin".into()],
                2,
                if which == Cifar100Label::Fine { 100 } else { 20 },
            ),
        };
    if !tree.is_file(&train_files[0]) {
        tree.descend_single_folder()?;
    }
    let label_at = if label_bytes == 2 && which == Cifar100Label::Fine {
        1
    } else {
        0
    };
    let mut pools = Vec::new();
    for (pool, files) in [(Pool::Train, &train_files), (Pool::Test, &test_files)] {
        let mut items = Vec::new();
        for f in files {
            if !tree.is_file(f) {
                return Err(Error::format(
                    tree.display(f),
                    "missing: expected the CIFAR binary files data_batch_1..5.bin and test_batch.bin \
                     (CIFAR-10) or train.bin and test.bin (CIFAR-100)",
                ));
            }
            let bytes = tree.read(f)?;
            items.extend(parse_records(
                &bytes,
                &tree.display(f),
                f,
                label_bytes,
                label_at,
                num_classes,
            )?);
        }
        pools.push((pool, items));
    }
    let names_file = match (format, which) {
        (Format::Cifar10Bin, _) => "batches.meta.txt",
        (_, Cifar100Label::Fine) => "fine_label_names.txt",
        _ => "coarse_label_names.txt",
    };
    let classes = if tree.is_file(names_file) {
        let text = tree.read_text(names_file)?;
        let names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if names.len() != num_classes as usize {
            return Err(Error::format(
                tree.display(names_file),
                format!("expected {num_classes} class names, found {}", names.len()),
            ));
        }
        names
    } else if format == Format::Cifar10Bin {
        CIFAR10_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..num_classes).map(|i| format!("class_{i:03}")).collect()
    };
    Ok(Scanned {
        classes,
        pools,
        native_size: Some(32),
    })
}

/// Splits a CIFAR binary file into records, checking length and labels.
fn parse_records(
    bytes: &[u8],
    shown: &str,
    rel: &str,
    label_bytes: usize,
    label_at: usize,
    num_classes: u32,
) -> Result<Vec<Item>> {
    let rec = label_bytes + PIXELS;
    if bytes.is_empty() {
        return Err(Error::format(
            shown,
            format!("empty file: expected records of {rec} bytes"),
        ));
    }
    let whole = bytes.len() / rec;
    if !bytes.len().is_multiple_of(rec) {
        return Err(Error::format(
            shown,
            format!(
                "record {} (byte offset {}) is truncated: expected {rec} bytes, found {}",
                whole,
                whole * rec,
                bytes.len() - whole * rec
            ),
        ));
    }
    (0..whole)
        .map(|i| {
            let label = bytes[i * rec + label_at] as u32;
            if label >= num_classes {
                return Err(Error::format(
                    shown,
                    format!(
                        "record {i} (byte offset {}): label {label} is out of range: expected 0 to {}",
                        i * rec + label_at,
                        num_classes - 1
                    ),
                ));
            }
            Ok(Item {
                label,
                origin: Origin::Record {
                    file: rel.to_string(),
                    offset: i * rec + label_bytes,
                },
                bbox: None,
            })
        })
        .collect()
}

/// Writes `(label bytes, planar RGB pixels)` records as a CIFAR binary file; used by tests and
/// by anyone converting data to the format.
pub fn write_records(path: &std::path::Path, records: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    crate::fsx::write_atomic_with(path, |w| {
        use std::io::Write;
        for (labels, pixels) in records {
            assert_eq!(pixels.len(), PIXELS, "a CIFAR record has 3,072 pixel bytes");
            w.write_all(labels)?;
            w.write_all(pixels)?;
        }
        Ok(())
    })
}
