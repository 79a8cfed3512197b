//! The agent's figures, as PNG grids of images (enlarged, nearest neighbour) with boxes drawn on:
//!
//! - `patches.png` — located salient patches (red) and, where the data has them, the annotated
//!   object boxes (green): the paper's Fig. 2 left;
//! - `cutmix_compare.png` — per row: target, source, random-box CutMix (one box for the whole
//!   batch, as CutMix draws it), agent-guided CutMix: Fig. 3;
//! - `triples.png` — per row: source with its patch, target with its patch, the mix with the
//!   pasted region (yellow): Fig. 4;
//! - `centres.png` — where the patches sit: a heat map of the located patches' centres over every
//!   located image, beside one of the object boxes' centres where the data has boxes (a policy
//!   stuck at one place shows as one hot spot).
use super::guide::{paste, Rect};
use super::Located;
use crate::data::View;
use crate::rundir::AgentDir;
use crate::{Error, Result};
use image::{Rgb, RgbImage};
use rand::seq::SliceRandom;
use rand::Rng;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

const RED: [u8; 3] = [230, 30, 30];
const GREEN: [u8; 3] = [30, 200, 60];
const YELLOW: [u8; 3] = [250, 220, 0];

/// One picture of a grid: HWC bytes of a `side`×`side` image and boxes to outline.
pub struct Tile {
    pub rgb: Vec<u8>,
    pub side: usize,
    pub rects: Vec<(Rect, [u8; 3])>,
}

/// Draws `tiles` in rows of `cols`, each enlarged `scale`×, 4 px apart, into a PNG (atomically).
pub fn grid(path: &Path, tiles: &[Tile], cols: usize, scale: usize) -> Result<()> {
    let side = tiles.iter().map(|t| t.side).max().unwrap_or(1) * scale;
    let gap = 4;
    let rows = tiles.len().div_ceil(cols.max(1));
    let w = (cols * (side + gap) + gap) as u32;
    let h = (rows * (side + gap) + gap) as u32;
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    for (k, t) in tiles.iter().enumerate() {
        let (ox, oy) = (gap + (k % cols) * (side + gap), gap + (k / cols) * (side + gap));
        let f = scale;
        for y in 0..t.side * f {
            for x in 0..t.side * f {
                let p = ((y / f) * t.side + x / f) * 3;
                img.put_pixel(
                    (ox + x) as u32,
                    (oy + y) as u32,
                    Rgb([t.rgb[p], t.rgb[p + 1], t.rgb[p + 2]]),
                );
            }
        }
        for (r, c) in &t.rects {
            outline(
                &mut img,
                ox,
                oy,
                t.side * f,
                [r[0] * f as f32, r[1] * f as f32, r[2] * f as f32, r[3] * f as f32],
                *c,
            );
        }
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = crate::fsx::temp_sibling(path);
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| Error::format(path.display(), format!("cannot write PNG: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// A 2-px outline of `r` (in tile pixels) inside the tile at (ox, oy) of side `s`.
fn outline(img: &mut RgbImage, ox: usize, oy: usize, s: usize, r: Rect, c: [u8; 3]) {
    let cl = |v: f32| (v.round().max(0.0) as usize).min(s.saturating_sub(1));
    let (x0, y0, x1, y1) = (cl(r[0]), cl(r[1]), cl(r[2] - 1.0), cl(r[3] - 1.0));
    for t in 0..2 {
        for x in x0..=x1 {
            for y in [(y0 + t).min(y1), y1.saturating_sub(t).max(y0)] {
                img.put_pixel((ox + x) as u32, (oy + y) as u32, Rgb(c));
            }
        }
        for y in y0..=y1 {
            for x in [(x0 + t).min(x1), x1.saturating_sub(t).max(x0)] {
                img.put_pixel((ox + x) as u32, (oy + y) as u32, Rgb(c));
            }
        }
    }
}

/// `[x0, y0, x1, y1]` half-open from an inclusive annotation box.
fn object_rect(b: [f32; 4]) -> Rect {
    [b[0], b[1], b[2] + 1.0, b[3] + 1.0]
}

fn to_tensor(imgs: &[&[u8]], side: usize) -> Tensor {
    let flat: Vec<u8> = imgs.iter().flat_map(|i| i.iter().copied()).collect();
    Tensor::from_slice(&flat)
        .reshape([imgs.len() as i64, side as i64, side as i64, 3])
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
}

fn to_bytes(x: &Tensor) -> Vec<u8> {
    let t = x.permute([1, 2, 0]).contiguous().to_kind(Kind::Uint8);
    Vec::<u8>::try_from(t.reshape([-1])).expect("u8 image")
}

/// A heat map of `points` (pixel coordinates (x, y) in a `side`×`side` image): counts per pixel,
/// blurred by a 3×3 box, scaled to the largest, white (none) to dark red (most).
pub fn heat_tile(points: &[(f32, f32)], side: usize) -> Tile {
    let mut counts = vec![0f64; side * side];
    for &(x, y) in points {
        let (c, r) = (
            x.floor().clamp(0.0, side as f32 - 1.0) as usize,
            y.floor().clamp(0.0, side as f32 - 1.0) as usize,
        );
        counts[r * side + c] += 1.0;
    }
    let mut blur = vec![0f64; side * side];
    for r in 0..side {
        for c in 0..side {
            let mut s = 0.0;
            for rr in r.saturating_sub(1)..(r + 2).min(side) {
                for cc in c.saturating_sub(1)..(c + 2).min(side) {
                    s += counts[rr * side + cc];
                }
            }
            blur[r * side + c] = s;
        }
    }
    let max = blur.iter().cloned().fold(0.0, f64::max).max(1e-12);
    let mut rgb = Vec::with_capacity(side * side * 3);
    for v in blur {
        let t = (v / max).sqrt(); // square root: faint mass stays visible
        let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
        rgb.extend([lerp(255.0, 150.0), lerp(255.0, 0.0), lerp(255.0, 0.0)]);
    }
    Tile {
        rgb,
        side,
        rects: Vec::new(),
    }
}

/// Writes the four figures for images of `view` and their located patches `locs` (view order)
/// into `dir`; `rows` pairs are drawn from a seeded shuffle.
pub fn write_all(dir: &Path, view: &View, locs: &[Located], rows: usize, seed: u64) -> Result<Vec<PathBuf>> {
    let side = view.size as usize;
    let mut rng = crate::rng::chacha(seed, &[40]);
    let mut order: Vec<usize> = (0..view.len().min(locs.len())).collect();
    order.shuffle(&mut rng);
    let n = (2 * rows).min(order.len() & !1);
    let picked = &order[..n];
    let mut out = Vec::new();

    // patches.png: 4 rows of 6 located patches
    let tiles: Vec<Tile> = order
        .iter()
        .take(24)
        .map(|&i| {
            let mut rects = Vec::new();
            if let Some(b) = view.bbox(i) {
                rects.push((object_rect(b), GREEN));
            }
            rects.push((locs[i].rect(), RED));
            Tile {
                rgb: view.image(i).to_vec(),
                side,
                rects,
            }
        })
        .collect();
    let p = AgentDir::new(dir).figure("patches");
    grid(&p, &tiles, 6, 3)?;
    out.push(p);

    // pairs: target = picked[2k], source = picked[2k + 1]
    let targets: Vec<usize> = picked.iter().step_by(2).copied().collect();
    let sources: Vec<usize> = picked.iter().skip(1).step_by(2).copied().collect();
    let mut imgs: Vec<&[u8]> = targets.iter().map(|&i| view.image(i)).collect();
    imgs.extend(sources.iter().map(|&i| view.image(i)));
    let x = to_tensor(&imgs, side);
    let k = targets.len();
    let rects: Vec<Rect> = targets.iter().chain(&sources).map(|&i| locs[i].rect()).collect();
    // each target i receives source k + i
    let perm: Vec<i64> = (0..k as i64).map(|i| i + k as i64).chain(0..k as i64).collect();
    let (mixed, boxes) = paste(&x, &rects, &perm);
    // random CutMix: one box for the batch, λ ~ U(0, 1) as Beta(1, 1)
    let lambda: f64 = rng.random();
    let (bx0, by0, bx1, by1) = crate::mix::cutmix_box(side as i64, side as i64, lambda, &mut rng);
    let random = x.copy();
    if bx1 > bx0 && by1 > by0 {
        for i in 0..k as i64 {
            random
                .get(i)
                .narrow(1, by0, by1 - by0)
                .narrow(2, bx0, bx1 - bx0)
                .copy_(
                    &x.get(i + k as i64)
                        .narrow(1, by0, by1 - by0)
                        .narrow(2, bx0, bx1 - bx0),
                );
        }
    }
    let pasted = |i: usize| {
        let (tx, ty, w, h) = boxes[i];
        [tx as f32, ty as f32, (tx + w) as f32, (ty + h) as f32]
    };
    let rnd_rect = [bx0 as f32, by0 as f32, bx1 as f32, by1 as f32];
    let plain = |i: usize, rects: Vec<(Rect, [u8; 3])>| Tile {
        rgb: view.image(i).to_vec(),
        side,
        rects,
    };
    let mut compare = Vec::new();
    let mut triples = Vec::new();
    for i in 0..k {
        let (t, s) = (targets[i], sources[i]);
        compare.push(plain(t, vec![]));
        compare.push(plain(s, vec![]));
        compare.push(Tile {
            rgb: to_bytes(&random.get(i as i64)),
            side,
            rects: vec![(rnd_rect, YELLOW)],
        });
        compare.push(Tile {
            rgb: to_bytes(&mixed.get(i as i64)),
            side,
            rects: vec![(pasted(i), YELLOW)],
        });
        triples.push(plain(s, vec![(locs[s].rect(), RED)]));
        triples.push(plain(t, vec![(locs[t].rect(), RED)]));
        triples.push(Tile {
            rgb: to_bytes(&mixed.get(i as i64)),
            side,
            rects: vec![(pasted(i), YELLOW)],
        });
    }
    let p = AgentDir::new(dir).figure("cutmix_compare");
    grid(&p, &compare, 4, 3)?;
    out.push(p);
    let p = AgentDir::new(dir).figure("triples");
    grid(&p, &triples, 3, 3)?;
    out.push(p);

    // centres.png: located patch centres, and object box centres where there are boxes
    let n = view.len().min(locs.len());
    let patch_centres: Vec<(f32, f32)> = locs[..n]
        .iter()
        .map(|l| (l.col + l.side / 2.0, l.row + l.side / 2.0))
        .collect();
    let mut tiles = vec![heat_tile(&patch_centres, side)];
    let box_centres: Vec<(f32, f32)> = (0..n)
        .filter_map(|i| view.bbox(i))
        .map(|b| {
            let r = object_rect(b);
            ((r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0)
        })
        .collect();
    if !box_centres.is_empty() {
        tiles.push(heat_tile(&box_centres, side));
    }
    let p = AgentDir::new(dir).figure("centres");
    grid(&p, &tiles, 2, 4)?;
    out.push(p);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::heat_tile;

    #[test]
    fn the_heat_map_is_hottest_where_the_points_are() {
        // 8 px: five points at (2, 5), one at (6, 1)
        let mut pts = vec![(2.5f32, 5.5f32); 5];
        pts.push((6.0, 1.0));
        let t = heat_tile(&pts, 8);
        let px = |x: usize, y: usize| t.rgb[(y * 8 + x) * 3..(y * 8 + x) * 3 + 3].to_vec();
        assert_eq!(px(2, 5), [150, 0, 0], "the densest pixel is the darkest");
        assert_eq!(px(6, 6), [255, 255, 255], "no points nearby: white");
        assert!(
            px(6, 1)[1] > 0 && px(6, 1)[1] < 255,
            "a single point: a lighter red"
        );
    }
}
