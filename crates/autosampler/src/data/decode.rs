//! Decoding one catalog item into a square RGB image of the cache's size (HWC, u8), with the
//! resize policy applied to the pixels and to the object box.
use super::formats::cifar::PIXELS;
use super::formats::Catalog;
use super::source::{BBox, Item, Origin, Resize};
use super::tree::Tree;
use crate::{Error, Result};
use image::{imageops, RgbImage};
use std::borrow::Cow;
use std::collections::HashMap;

/// The bytes of every CIFAR record file a catalog refers to, read once.
pub struct RecordFiles<'a>(HashMap<String, Cow<'a, [u8]>>);

impl<'a> RecordFiles<'a> {
    pub fn load(catalog: &'a Catalog) -> Result<Self> {
        let mut m = HashMap::new();
        for (_, items) in &catalog.pools {
            for it in items {
                if let Origin::Record { file, .. } = &it.origin {
                    if !m.contains_key(file) {
                        m.insert(file.clone(), catalog.tree.read(file)?);
                    }
                }
            }
        }
        Ok(RecordFiles(m))
    }

    /// The raw bytes behind an item (a record's 3,072 planar bytes, or an encoded file).
    pub fn raw<'b>(&'b self, tree: &'b Tree, item: &Item) -> Result<Cow<'b, [u8]>> {
        match &item.origin {
            Origin::Record { file, offset } => Ok(Cow::Borrowed(&self.0[file][*offset..offset + PIXELS])),
            Origin::File(rel) => tree.read(rel),
        }
    }
}

/// Decodes `item` to `size`×`size`×3 bytes and maps its box through the resize.
pub fn decode(
    tree: &Tree,
    records: &RecordFiles,
    item: &Item,
    size: u32,
    resize: Resize,
) -> Result<(Vec<u8>, Option<BBox>)> {
    let img: RgbImage = match &item.origin {
        Origin::Record { .. } => {
            let raw = records.raw(tree, item)?;
            let mut hwc = vec![0u8; PIXELS];
            for c in 0..3 {
                for p in 0..1024 {
                    hwc[p * 3 + c] = raw[c * 1024 + p];
                }
            }
            RgbImage::from_raw(32, 32, hwc).expect("32×32×3 bytes")
        }
        Origin::File(rel) => load(&tree.read(rel)?, size, resize, || tree.display(rel))?,
    };
    let shown = || match &item.origin {
        Origin::File(rel) => tree.display(rel),
        Origin::Record { file, offset } => format!("{} (record at byte {offset})", tree.display(file)),
    };
    fit(img, item.bbox, size, resize, shown)
}

/// An image file (JPEG or PNG) brought to `size`×`size`×3 bytes by `resize`, for prediction.
pub fn decode_file(path: &std::path::Path, size: u32, resize: Resize) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = load(&bytes, size, resize, || path.display().to_string())?;
    Ok(fit(img, None, size, resize, || path.display().to_string())?.0)
}

/// Decodes an image file's bytes to RGB. With `resize = "exact"` the size is read from the header
/// first, so an image of another size is refused without decoding it (a 20000 × 20000 PNG would
/// take 1.2 GB to decode only to be refused).
fn load(bytes: &[u8], size: u32, resize: Resize, shown: impl Fn() -> String) -> Result<RgbImage> {
    if resize == Resize::Exact {
        let dims = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .ok()
            .and_then(|r| r.into_dimensions().ok());
        if let Some((w, h)) = dims.filter(|&d| d != (size, size)) {
            return Err(wrong_size(&shown(), w, h, size));
        }
    }
    Ok(image::load_from_memory(bytes)
        .map_err(|e| Error::format(shown(), decode_error(&e)))?
        .to_rgb8())
}

fn wrong_size(shown: &str, w: u32, h: u32, size: u32) -> Error {
    Error::format(
        shown,
        format!(
            "image is {w}×{h}: expected {size}×{size} (set `resize = \"stretch\"` or \"center-crop\", or another image_size)"
        ),
    )
}

/// `img` brought to `size`×`size` by `resize`, its box mapped along; `shown` names it in errors.
fn fit(
    img: RgbImage,
    bbox: Option<BBox>,
    size: u32,
    resize: Resize,
    shown: impl Fn() -> String,
) -> Result<(Vec<u8>, Option<BBox>)> {
    let (w, h) = img.dimensions();
    if w == size && h == size {
        return Ok((img.into_raw(), bbox));
    }
    let (out, bbox) = match resize {
        Resize::Exact => return Err(wrong_size(&shown(), w, h, size)),
        Resize::Stretch => {
            let (sx, sy) = (size as f32 / w as f32, size as f32 / h as f32);
            let b = bbox.map(|b| [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]);
            (
                imageops::resize(&img, size, size, imageops::FilterType::Triangle),
                b,
            )
        }
        Resize::CenterCrop => {
            let s = size as f32 / w.min(h) as f32;
            let (nw, nh) = (
                ((w as f32 * s).round() as u32).max(size),
                ((h as f32 * s).round() as u32).max(size),
            );
            let big = imageops::resize(&img, nw, nh, imageops::FilterType::Triangle);
            let (ox, oy) = ((nw - size) / 2, (nh - size) / 2);
            let crop = imageops::crop_imm(&big, ox, oy, size, size).to_image();
            let m = (size - 1) as f32;
            let b = bbox.map(|b| {
                let f = |v: f32, o: u32| (v * s - o as f32).clamp(0.0, m);
                [f(b[0], ox), f(b[1], oy), f(b[2], ox), f(b[3], oy)]
            });
            (crop, b)
        }
    };
    Ok((out.into_raw(), bbox))
}

/// What went wrong decoding an image: a limit is not a format problem (a valid PNG too large for
/// the decoder's memory limit used to be reported as "expected a JPEG or PNG file").
fn decode_error(e: &image::ImageError) -> String {
    match e {
        image::ImageError::Limits(l) => format!(
            "cannot decode image: {l}: the image is larger than the decoder's memory limit (512 MiB); resize it, or leave it out"
        ),
        image::ImageError::Unsupported(_) | image::ImageError::Decoding(_) => {
            format!("cannot decode image: {e} (expected a JPEG or PNG file)")
        }
        _ => format!("cannot decode image: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_not_called_a_format_error() {
        let e = image::ImageError::Limits(image::error::LimitError::from_kind(
            image::error::LimitErrorKind::InsufficientMemory,
        ));
        let t = decode_error(&e);
        assert!(
            t.contains("memory limit") && !t.contains("expected a JPEG"),
            "{t}"
        );
        let bad = image::load_from_memory(b"not an image").unwrap_err();
        assert!(decode_error(&bad).contains("expected a JPEG or PNG file"));
    }
}
