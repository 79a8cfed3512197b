//! Augmentation and normalisation of one u8 HWC image into f32 CHW, seeded per image.
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Per-channel mean and std of `(pixel / 255 − mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// The CIFAR-10 statistics used by the PyTorch reference.
    pub const CIFAR10: Normalize = Normalize {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2470, 0.2435, 0.2616],
    };
    /// The ImageNet statistics.
    pub const IMAGENET: Normalize = Normalize {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize::CIFAR10
    }
}

/// A lookup table of the normalised value of every byte, per channel.
pub struct Lut([[f32; 256]; 3]);

impl Lut {
    pub fn new(n: &Normalize) -> Lut {
        let mut t = [[0f32; 256]; 3];
        for (c, row) in t.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                *x = (v as f32 / 255.0 - n.mean[c]) / n.std[c];
            }
        }
        Lut(t)
    }
    #[inline]
    fn get(&self, c: usize, v: u8) -> f32 {
        self.0[c][v as usize]
    }
    /// The normalised value of a (possibly fractional) pixel value in [0, 255].
    #[inline]
    fn affine(&self, c: usize, v: f32) -> f32 {
        let lo = self.0[c][0];
        lo + (self.0[c][255] - lo) * (v / 255.0)
    }
}

/// Training-time augmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Augment {
    /// Normalisation only (evaluation).
    None,
    /// Zero-pad by `pad` pixels, random crop back to the image size, horizontal flip with
    /// probability ½ (the CIFAR recipe; pad 4 on 32 px).
    PadCropFlip { pad: u32 },
    /// torchvision's `RandomResizedCrop(size, scale, ratio)` (bilinear) + horizontal flip.
    RandomResizedCrop {
        size: u32,
        scale: [f32; 2],
        ratio: [f32; 2],
    },
}

impl Augment {
    /// The CIFAR default: pad 4, crop, flip.
    pub fn cifar() -> Augment {
        Augment::PadCropFlip { pad: 4 }
    }
    /// The ImageNet-style default for larger images: scale (0.08, 1), ratio (3/4, 4/3).
    pub fn resized_crop(size: u32) -> Augment {
        Augment::RandomResizedCrop {
            size,
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
        }
    }
    /// Side of the output for input images of side `s`.
    pub fn out_size(&self, s: u32) -> u32 {
        match self {
            Augment::RandomResizedCrop { size, .. } => *size,
            _ => s,
        }
    }
}

/// A crop window and flip, in source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub flip: bool,
}

/// torchvision's `RandomResizedCrop.get_params` on an `s`×`s` image.
pub fn resized_crop_window(
    s: u32,
    scale: [f32; 2],
    ratio: [f32; 2],
    rng: &mut impl Rng,
) -> (u32, u32, u32, u32) {
    let area = (s * s) as f32;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale[0]..=scale[1]);
        let aspect = rng.random_range(lr0..=lr1).exp();
        let w = (target * aspect).sqrt().round() as u32;
        let h = (target / aspect).sqrt().round() as u32;
        if 0 < w && w <= s && 0 < h && h <= s {
            let y = rng.random_range(0..=s - h);
            let x = rng.random_range(0..=s - w);
            return (x, y, w, h);
        }
    }
    // Fallback: the whole (square) image, whose ratio 1 lies within any sensible `ratio`.
    (0, 0, s, s)
}

/// Augments `img` (`s`×`s`×3, HWC) into `out` (3 × o × o, CHW) and returns the window used (for
/// mapping boxes and patch locations through the augmentation).
pub fn apply(aug: &Augment, img: &[u8], s: u32, out: &mut [f32], lut: &Lut, rng: &mut impl Rng) -> Window {
    let su = s as usize;
    debug_assert_eq!(img.len(), su * su * 3);
    match aug {
        Augment::None => {
            let plane = su * su;
            for p in 0..plane {
                for c in 0..3 {
                    out[c * plane + p] = lut.get(c, img[p * 3 + c]);
                }
            }
            Window {
                x: 0.0,
                y: 0.0,
                w: s as f32,
                h: s as f32,
                flip: false,
            }
        }
        Augment::PadCropFlip { pad } => {
            let pad = *pad as i64;
            let ox = rng.random_range(0..=2 * pad) - pad;
            let oy = rng.random_range(0..=2 * pad) - pad;
            let flip = rng.random_bool(0.5);
            pad_crop_flip(img, su, ox, oy, flip, out, lut);
            Window {
                x: ox as f32,
                y: oy as f32,
                w: s as f32,
                h: s as f32,
                flip,
            }
        }
        Augment::RandomResizedCrop { size, scale, ratio } => {
            let (x, y, w, h) = resized_crop_window(s, *scale, *ratio, rng);
            let flip = rng.random_bool(0.5);
            let win = Window {
                x: x as f32,
                y: y as f32,
                w: w as f32,
                h: h as f32,
                flip,
            };
            resample(img, su, &win, *size as usize, out, lut);
            win
        }
    }
}

/// Output pixel (x, y) reads source pixel (x' + ox, y + oy), x' = s−1−x when flipped; outside the
/// image it reads a zero byte (the zero padding).
pub fn pad_crop_flip(img: &[u8], s: usize, ox: i64, oy: i64, flip: bool, out: &mut [f32], lut: &Lut) {
    let plane = s * s;
    let zero = [lut.get(0, 0), lut.get(1, 0), lut.get(2, 0)];
    for y in 0..s {
        let sy = y as i64 + oy;
        let row = y * s;
        if sy < 0 || sy >= s as i64 {
            for (c, z) in zero.iter().enumerate() {
                out[c * plane + row..c * plane + row + s].fill(*z);
            }
            continue;
        }
        let src = &img[sy as usize * s * 3..(sy as usize + 1) * s * 3];
        for x in 0..s {
            let xx = if flip { s - 1 - x } else { x };
            let sx = xx as i64 + ox;
            if sx < 0 || sx >= s as i64 {
                for (c, z) in zero.iter().enumerate() {
                    out[c * plane + row + x] = *z;
                }
            } else {
                let p = &src[sx as usize * 3..sx as usize * 3 + 3];
                out[row + x] = lut.get(0, p[0]);
                out[plane + row + x] = lut.get(1, p[1]);
                out[2 * plane + row + x] = lut.get(2, p[2]);
            }
        }
    }
}

/// Bilinear resampling of window `win` of the image to `o`×`o` (half-pixel centres, as
/// `F.interpolate(align_corners=False)`), flipped if asked. Separable: each source row an output
/// row reads is resampled along x once (two rows kept), then the two rows are blended along y —
/// the same products and sums per pixel as the four-tap formula, in contiguous passes.
pub fn resample(img: &[u8], s: usize, win: &Window, o: usize, out: &mut [f32], lut: &Lut) {
    let plane = o * o;
    let xs = taps(o, win.x, win.w, s);
    let ys = taps(o, win.y, win.h, s);
    let cols: Vec<(usize, usize, f32)> = (0..o).map(|x| xs[if win.flip { o - 1 - x } else { x }]).collect();
    // `[c][x]`: source row `r` resampled along x
    let fill = |r: usize, buf: &mut [f32]| {
        let src = &img[r * s * 3..(r + 1) * s * 3];
        for (x, &(x0, x1, a)) in cols.iter().enumerate() {
            for c in 0..3 {
                buf[c * o + x] = src[x0 * 3 + c] as f32 * (1.0 - a) + src[x1 * 3 + c] as f32 * a;
            }
        }
    };
    let mut rows = [(usize::MAX, vec![0f32; 3 * o]), (usize::MAX, vec![0f32; 3 * o])];
    // the buffer holding source row `r`, filled if absent in the one not holding `keep`
    let hold = |r: usize, keep: usize, rows: &mut [(usize, Vec<f32>); 2]| -> usize {
        if let Some(i) = rows.iter().position(|b| b.0 == r) {
            return i;
        }
        let i = usize::from(rows[0].0 == keep);
        fill(r, &mut rows[i].1);
        rows[i].0 = r;
        i
    };
    for (y, &(y0, y1, b)) in ys.iter().enumerate() {
        let i0 = hold(y0, y1, &mut rows);
        let i1 = hold(y1, y0, &mut rows);
        let (top, bot) = (&rows[i0].1, &rows[i1].1);
        for c in 0..3 {
            let dst = &mut out[c * plane + y * o..c * plane + (y + 1) * o];
            for (x, d) in dst.iter_mut().enumerate() {
                *d = lut.affine(c, top[c * o + x] * (1.0 - b) + bot[c * o + x] * b);
            }
        }
    }
}

/// For each of `o` outputs along one axis of a window (`start`, `len`) of an `s`-pixel image:
/// the two source pixels and the weight of the second.
fn taps(o: usize, start: f32, len: f32, s: usize) -> Vec<(usize, usize, f32)> {
    let f = len / o as f32;
    let last = (len - 1.0).max(0.0);
    let base = start as usize;
    (0..o)
        .map(|i| {
            let v = ((i as f32 + 0.5) * f - 0.5).clamp(0.0, last);
            let i0 = v.floor();
            let i1 = (i0 + 1.0).min(last);
            (
                (base + i0 as usize).min(s - 1),
                (base + i1 as usize).min(s - 1),
                v - i0,
            )
        })
        .collect()
}

/// `[train] cutout = { size = 16 }`: Cutout (DeVries & Taylor 2017) as its reference code does
/// it: one `size`×`size` square, its centre drawn uniformly over the image, clipped at the
/// borders, set to zero in the normalised image (the dataset's mean colour) after the crop and
/// flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cutout {
    pub size: u32,
}

impl Cutout {
    /// Zeroes the square in `out` (`3`×`s`×`s`, CHW); returns its rows and columns (clipped).
    pub fn apply(
        &self,
        out: &mut [f32],
        s: usize,
        rng: &mut impl Rng,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (cy, cx) = (rng.random_range(0..s) as i64, rng.random_range(0..s) as i64);
        let half = self.size as i64 / 2;
        let clip = |c: i64| (c - half).clamp(0, s as i64) as usize..(c + half).clamp(0, s as i64) as usize;
        let (rows, cols) = (clip(cy), clip(cx));
        for plane in out.chunks_mut(s * s) {
            for y in rows.clone() {
                plane[y * s + cols.start..y * s + cols.end].fill(0.0);
            }
        }
        (rows, cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ramp(s: usize) -> Vec<u8> {
        (0..s * s * 3).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn none_is_normalisation() {
        let img = ramp(4);
        let mut out = vec![0f32; 48];
        let lut = Lut::new(&Normalize::CIFAR10);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        apply(&Augment::None, &img, 4, &mut out, &lut, &mut rng);
        // pixel (y=1, x=2), channel 1 sits at HWC offset (1*4+2)*3+1 = 19
        let want = (19.0 / 255.0 - 0.4822) / 0.2435;
        assert!((out[16 + 6] - want).abs() < 1e-6);
    }

    #[test]
    fn pad_crop_flip_matches_its_definition() {
        let s = 5;
        let img = ramp(s);
        let lut = Lut::new(&Normalize {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
        }); // identity on bytes
        let mut out = vec![0f32; 3 * s * s];
        pad_crop_flip(&img, s, 2, -1, true, &mut out, &lut);
        for c in 0..3 {
            for y in 0..s {
                for x in 0..s {
                    let (sy, sx) = (y as i64 - 1, (s - 1 - x) as i64 + 2);
                    let want = if sy < 0 || sx >= s as i64 {
                        0.0
                    } else {
                        img[(sy as usize * s + sx as usize) * 3 + c] as f32
                    };
                    assert!((out[c * s * s + y * s + x] - want).abs() < 1e-3, "c{c} y{y} x{x}");
                }
            }
        }
    }

    #[test]
    fn separable_resample_equals_the_four_tap_formula_bit_for_bit() {
        // the formula resample used to compute, pixel by pixel
        fn direct(img: &[u8], s: usize, win: &Window, o: usize, out: &mut [f32], lut: &Lut) {
            let plane = o * o;
            let xs = taps(o, win.x, win.w, s);
            let ys = taps(o, win.y, win.h, s);
            for (y, &(y0, y1, b)) in ys.iter().enumerate() {
                for x in 0..o {
                    let (x0, x1, a) = xs[if win.flip { o - 1 - x } else { x }];
                    for c in 0..3 {
                        let p = |yy: usize, xx: usize| img[(yy * s + xx) * 3 + c] as f32;
                        let top = p(y0, x0) * (1.0 - a) + p(y0, x1) * a;
                        let bot = p(y1, x0) * (1.0 - a) + p(y1, x1) * a;
                        out[c * plane + y * o + x] = lut.affine(c, top * (1.0 - b) + bot * b);
                    }
                }
            }
        }
        let s = 37;
        let img: Vec<u8> = (0..s * s * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        let lut = Lut::new(&Normalize::IMAGENET);
        let mut rng = crate::rng::chacha(3, &[]);
        for (k, o) in [(0, 16), (1, 64), (2, 37), (3, 5), (4, 90)] {
            let (x, y, w, h) = resized_crop_window(s as u32, [0.08, 1.0], [0.75, 4.0 / 3.0], &mut rng);
            let win = Window {
                x: x as f32,
                y: y as f32,
                w: w as f32,
                h: h as f32,
                flip: k % 2 == 1,
            };
            let (mut a, mut b) = (vec![0f32; 3 * o * o], vec![0f32; 3 * o * o]);
            resample(&img, s, &win, o, &mut a, &lut);
            direct(&img, s, &win, o, &mut b, &lut);
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "window {win:?} to {o}"
            );
        }
    }

    #[test]
    fn full_window_resample_is_identity() {
        let s = 6;
        let img = ramp(s);
        let lut = Lut::new(&Normalize {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
        });
        let mut out = vec![0f32; 3 * s * s];
        let win = Window {
            x: 0.0,
            y: 0.0,
            w: s as f32,
            h: s as f32,
            flip: false,
        };
        resample(&img, s, &win, s, &mut out, &lut);
        for y in 0..s {
            for x in 0..s {
                assert!((out[y * s + x] - img[(y * s + x) * 3] as f32).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn resized_crop_window_stays_inside() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..1000 {
            let (x, y, w, h) = resized_crop_window(64, [0.08, 1.0], [0.75, 4.0 / 3.0], &mut rng);
            assert!(w > 0 && h > 0 && x + w <= 64 && y + h <= 64);
        }
    }

    /// Cutout as the reference code (DeVries & Taylor) draws it: centre (cy, cx) uniform over the
    /// image, the square [cy − size/2, cy + size/2) × [cx − size/2, cx + size/2) clipped, zero in
    /// every channel. Here on an 8 px image of ones, size 4.
    #[test]
    fn cutout_zeroes_one_clipped_square_in_every_channel() {
        let s = 8;
        for seed in 0..20 {
            let mut out = vec![1.0f32; 3 * s * s];
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let (rows, cols) = Cutout { size: 4 }.apply(&mut out, s, &mut rng);
            // the same draws give the centre: the square is clipped at the borders
            let mut again = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let (cy, cx): (usize, usize) = (again.random_range(0..s), again.random_range(0..s));
            assert_eq!(rows, cy.saturating_sub(2)..(cy + 2).min(s));
            assert_eq!(cols, cx.saturating_sub(2)..(cx + 2).min(s));
            for c in 0..3 {
                for y in 0..s {
                    for x in 0..s {
                        let inside = rows.contains(&y) && cols.contains(&x);
                        assert_eq!(out[c * s * s + y * s + x], if inside { 0.0 } else { 1.0 });
                    }
                }
            }
        }
    }
}
