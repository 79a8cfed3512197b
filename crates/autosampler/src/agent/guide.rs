//! The patch agent as the locator of guided CutMix ([`crate::mix::guided`], Section 3.3.3).
//!
//! The salient patches come from the agent either once per dataset — `locations.bin`, mapped
//! through each image's augmentation window (crop offset, scale, flip) every epoch — or from the
//! agent run on each augmented batch, as the paper does.
//!
//! `locations.bin`: the 8 bytes `ASLOC1\0\0`, then `u32` count and `f32` image side, then per
//! image `f32` row, `f32` col, `f32` side (pixels of the stored image) and `i32` the agent's
//! class; little-endian.
use super::{Agent, Located};
use crate::data::loader::Batch;
pub use crate::mix::guided::{farthest_corner, map_rect, paste, patch_lambda, Locator, Rect};
use crate::{invalid, Error, Result};
use std::path::Path;
use tch::Tensor;

const MAGIC: &[u8; 8] = b"ASLOC1\0\0";

impl Located {
    /// The patch as a box.
    pub fn rect(&self) -> Rect {
        [self.col, self.row, self.col + self.side, self.row + self.side]
    }
}

/// Writes `locations.bin` for the images of a view (in view order), atomically.
pub fn write_locations(path: &Path, image_size: f32, locs: &[Located]) -> Result<()> {
    let mut b = Vec::with_capacity(16 + 16 * locs.len());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&(locs.len() as u32).to_le_bytes());
    b.extend_from_slice(&image_size.to_le_bytes());
    for l in locs {
        b.extend_from_slice(&l.row.to_le_bytes());
        b.extend_from_slice(&l.col.to_le_bytes());
        b.extend_from_slice(&l.side.to_le_bytes());
        b.extend_from_slice(&(l.class as i32).to_le_bytes());
    }
    crate::fsx::write_atomic(path, &b)
}

/// Reads `locations.bin`: the image side and one patch per image.
pub fn read_locations(path: &Path) -> Result<(f32, Vec<Located>)> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if b.len() < 16 || &b[..8] != MAGIC {
        return Err(Error::format(
            path.display(),
            "not a locations file: expected the 8-byte header ASLOC1 at byte 0",
        ));
    }
    let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
    let n = u32::from_le_bytes(word(8)) as usize;
    let size = f32::from_le_bytes(word(12));
    if b.len() != 16 + 16 * n {
        return Err(Error::format(
            path.display(),
            format!(
                "truncated or padded: {} bytes, expected {} for {n} images (16-byte header + 16 per image)",
                b.len(),
                16 + 16 * n
            ),
        ));
    }
    let locs = (0..n)
        .map(|i| {
            let o = 16 + 16 * i;
            Located {
                row: f32::from_le_bytes(word(o)),
                col: f32::from_le_bytes(word(o + 4)),
                side: f32::from_le_bytes(word(o + 8)),
                class: i32::from_le_bytes(word(o + 12)) as i64,
            }
        })
        .collect();
    Ok((size, locs))
}

/// Where the salient patches come from during stage 1.
pub enum Guide {
    /// Located once per image of the training view (`locations.bin`), in pixels of the stored
    /// images of side `size`.
    Stored { size: f32, locs: Vec<Located> },
    /// The agent, run on every augmented batch.
    PerBatch(Box<Agent>),
}

impl Locator for Guide {
    /// Each batch image's salient patch in pixels of the augmented batch `x` (`[B, 3, S, S]`).
    fn rects(&self, batch: &Batch, x: &Tensor) -> Result<Vec<Rect>> {
        let out = x.size()[3] as f32;
        match self {
            Guide::Stored { locs, .. } => batch
                .index
                .iter()
                .zip(&batch.windows)
                .map(|(&i, w)| {
                    let l = locs.get(i).ok_or_else(|| {
                        invalid!(
                            "locations.bin has {} images but the batch asks for image {i}",
                            locs.len()
                        )
                    })?;
                    Ok(map_rect(l.rect(), w, out))
                })
                .collect(),
            Guide::PerBatch(agent) => Ok(agent.locate(x).iter().map(Located::rect).collect()),
        }
    }

    /// S_patch / S_image of the image the agent located on: the nominal patch, whatever a crop
    /// did to it.
    fn patch_and_image(&self) -> (f64, f64) {
        match self {
            Guide::Stored { size, locs } => (locs.first().map_or(*size, |l| l.side) as f64, *size as f64),
            Guide::PerBatch(a) => (a.spec.patch_size as f64, a.spec.image_size as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip_and_reject_truncation() {
        let dir = std::env::temp_dir().join(format!("locs_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("locations.bin");
        let locs = vec![
            Located {
                row: 1.0,
                col: 2.0,
                side: 16.0,
                class: 3,
            },
            Located {
                row: 4.5,
                col: 0.0,
                side: 16.0,
                class: 0,
            },
        ];
        write_locations(&p, 32.0, &locs).unwrap();
        assert_eq!(read_locations(&p).unwrap(), (32.0, locs));
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let e = read_locations(&p).unwrap_err().to_string();
        assert!(
            e.contains("locations.bin") && e.contains("45 bytes, expected 48"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
