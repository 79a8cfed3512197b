//! RandAugment (Cubuk et al. 2020), as torchvision's `transforms.RandAugment`: `ops` operations,
//! each drawn uniformly from the 14 below, applied in turn at one shared `magnitude` (index into
//! `bins` evenly spaced strengths), each signed operation's direction drawn by a coin. No policy
//! is learned or fitted to a dataset: two integers set it. It runs on the u8 HWC image before
//! the crop and flip of [`super::augment::Augment`].
//!
//! Strengths at index m of `bins` (torchvision's table): shear 0.3·m/(bins−1); translate
//! (150/331)·side·m/(bins−1) px, whole pixels; rotate 30°·m/(bins−1); brightness, colour,
//! contrast, sharpness: factor 1 ± 0.9·m/(bins−1); posterize 8 − round(4·m/(bins−1)) bits;
//! solarize at 255·(1 − m/(bins−1)); autocontrast, equalize and identity take none. Geometric
//! operations read the nearest source pixel and fill with zero bytes, as torchvision does.
use crate::check::Ranges;
use crate::{invalid, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// `[train] randaugment = { ops = 2, magnitude = 9 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandAugment {
    /// Operations applied to each image.
    #[serde(default = "d_ops")]
    pub ops: usize,
    /// Strength index, `0..bins`.
    #[serde(default = "d_magnitude")]
    pub magnitude: u32,
    /// Number of strength levels.
    #[serde(default = "d_bins")]
    pub bins: u32,
}

fn d_ops() -> usize {
    2
}
fn d_magnitude() -> u32 {
    9
}
fn d_bins() -> u32 {
    31
}

impl Default for RandAugment {
    /// torchvision's defaults: 2 operations at magnitude 9 of 31.
    fn default() -> Self {
        RandAugment {
            ops: d_ops(),
            magnitude: d_magnitude(),
            bins: d_bins(),
        }
    }
}

/// The operations, in torchvision's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
    /// 255 − p (AutoAugment's; not one of RandAugment's 14).
    Invert,
}

pub const OPS: [Op; 14] = [
    Op::Identity,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateX,
    Op::TranslateY,
    Op::Rotate,
    Op::Brightness,
    Op::Color,
    Op::Contrast,
    Op::Sharpness,
    Op::Posterize,
    Op::Solarize,
    Op::AutoContrast,
    Op::Equalize,
];

impl RandAugment {
    /// `ops` ≥ 1, `bins` ≥ 2, `magnitude` < `bins`; errors name the key and the value.
    pub fn check(&self) -> Result<()> {
        let r = Ranges("train");
        r.at_least("randaugment.ops", self.ops, 1)?;
        r.at_least("randaugment.bins", self.bins as usize, 2)?;
        if self.magnitude >= self.bins {
            return Err(invalid!(
                "[train] randaugment.magnitude must be below bins ({}), got {}",
                self.bins,
                self.magnitude
            ));
        }
        Ok(())
    }

    /// The strength fraction m / (bins − 1), in [0, 1].
    fn level(&self) -> f32 {
        self.magnitude as f32 / (self.bins - 1) as f32
    }

    /// Applies `ops` random operations to `img` (`s`×`s`×3, HWC) in place; `tmp` is scratch.
    pub fn apply(&self, img: &mut [u8], s: usize, tmp: &mut Vec<u8>, rng: &mut impl Rng) {
        for _ in 0..self.ops {
            let op = OPS[rng.random_range(0..OPS.len())];
            let sign = if signed(op) && rng.random_bool(0.5) {
                -1.0
            } else {
                1.0
            };
            apply_op(op, sign * self.level(), img, s, tmp);
        }
    }
}

/// Whether an operation's direction is drawn (its strength negated with probability ½).
fn signed(op: Op) -> bool {
    matches!(
        op,
        Op::ShearX
            | Op::ShearY
            | Op::TranslateX
            | Op::TranslateY
            | Op::Rotate
            | Op::Brightness
            | Op::Color
            | Op::Contrast
            | Op::Sharpness
    )
}

/// Applies `op` at signed strength `v` ∈ [−1, 1] (the fraction of its largest strength) to `img`.
pub fn apply_op(op: Op, v: f32, img: &mut [u8], s: usize, tmp: &mut Vec<u8>) {
    let level = v.abs();
    match op {
        Op::Identity => {}
        Op::ShearX => warp(img, s, tmp, |x, y| (x + 0.3 * v * y, y)),
        Op::ShearY => warp(img, s, tmp, |x, y| (x, y + 0.3 * v * x)),
        Op::TranslateX => {
            let t = shift(v, s);
            warp(img, s, tmp, |x, y| (x - t, y))
        }
        Op::TranslateY => {
            let t = shift(v, s);
            warp(img, s, tmp, |x, y| (x, y - t))
        }
        Op::Rotate => {
            let (sin, cos) = (30.0 * v).to_radians().sin_cos();
            let c = (s as f32 - 1.0) / 2.0;
            // the source of an output pixel: rotate back by the angle about the centre
            warp(img, s, tmp, |x, y| {
                let (dx, dy) = (x - c, y - c);
                (c + cos * dx - sin * dy, c + sin * dx + cos * dy)
            })
        }
        Op::Brightness => blend_with(img, 1.0 + 0.9 * v, |_| [0.0; 3]),
        Op::Color => blend_with(img, 1.0 + 0.9 * v, |p| [gray(p); 3]),
        Op::Contrast => {
            let n = (img.len() / 3) as f32;
            let mean = img.chunks_exact(3).map(gray).sum::<f32>() / n;
            blend_with(img, 1.0 + 0.9 * v, |_| [mean; 3])
        }
        Op::Sharpness => sharpness(img, s, 1.0 + 0.9 * v, tmp),
        Op::Posterize => {
            let bits = 8 - (4.0 * level).round() as u32;
            let mask = (0xFFu32 << (8 - bits)) as u8;
            img.iter_mut().for_each(|p| *p &= mask);
        }
        Op::Solarize => {
            let threshold = 255.0 * (1.0 - level);
            img.iter_mut()
                .filter(|p| **p as f32 >= threshold)
                .for_each(|p| *p = 255 - *p);
        }
        Op::AutoContrast => {
            for c in 0..3 {
                let ch = || img.iter().skip(c).step_by(3);
                let (lo, hi) = (*ch().min().unwrap_or(&0), *ch().max().unwrap_or(&255));
                if hi > lo {
                    let scale = 255.0 / (hi - lo) as f32;
                    for p in img.iter_mut().skip(c).step_by(3) {
                        *p = ((*p - lo) as f32 * scale).clamp(0.0, 255.0) as u8;
                    }
                }
            }
        }
        Op::Equalize => {
            for c in 0..3 {
                equalize_channel(img, c);
            }
        }
        Op::Invert => img.iter_mut().for_each(|p| *p = 255 - *p),
    }
}

/// `[train] autoaugment`: AutoAugment (Cubuk et al. 2019) with a learned policy, as torchvision's
/// `transforms.AutoAugment`: one of the policy's sub-policies drawn uniformly per image, each of
/// its two operations applied with its probability at its strength (index into 10 levels, the
/// same strength table as RandAugment's with 10 bins), a signed operation's direction drawn by a
/// coin. Runs where RandAugment does: on the u8 image before the crop and flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AutoAugment {
    /// The policy learned on reduced CIFAR-10 (torchvision's `AutoAugmentPolicy.CIFAR10`).
    Cifar10,
}

/// One operation of a sub-policy: the operation, its probability and its strength index (0–9;
/// none for the operations without a strength).
pub type Step = (Op, f64, Option<u8>);

/// torchvision's `AutoAugmentPolicy.CIFAR10`, in its order.
pub const CIFAR10_POLICY: [[Step; 2]; 25] = {
    use Op::*;
    [
        [(Invert, 0.1, None), (Contrast, 0.2, Some(6))],
        [(Rotate, 0.7, Some(2)), (TranslateX, 0.3, Some(9))],
        [(Sharpness, 0.8, Some(1)), (Sharpness, 0.9, Some(3))],
        [(ShearY, 0.5, Some(8)), (TranslateY, 0.7, Some(9))],
        [(AutoContrast, 0.5, None), (Equalize, 0.9, None)],
        [(ShearY, 0.2, Some(7)), (Posterize, 0.3, Some(7))],
        [(Color, 0.4, Some(3)), (Brightness, 0.6, Some(7))],
        [(Sharpness, 0.3, Some(9)), (Brightness, 0.7, Some(9))],
        [(Equalize, 0.6, None), (Equalize, 0.5, None)],
        [(Contrast, 0.6, Some(7)), (Sharpness, 0.6, Some(5))],
        [(Color, 0.7, Some(7)), (TranslateX, 0.5, Some(8))],
        [(Equalize, 0.3, None), (AutoContrast, 0.4, None)],
        [(TranslateY, 0.4, Some(3)), (Sharpness, 0.2, Some(6))],
        [(Brightness, 0.9, Some(6)), (Color, 0.2, Some(8))],
        [(Solarize, 0.5, Some(2)), (Invert, 0.0, None)],
        [(Equalize, 0.2, None), (AutoContrast, 0.6, None)],
        [(Equalize, 0.2, None), (Equalize, 0.6, None)],
        [(Color, 0.9, Some(9)), (Equalize, 0.6, None)],
        [(AutoContrast, 0.8, None), (Solarize, 0.2, Some(8))],
        [(Brightness, 0.1, Some(3)), (Color, 0.7, Some(0))],
        [(Solarize, 0.4, Some(5)), (AutoContrast, 0.9, None)],
        [(TranslateY, 0.9, Some(9)), (TranslateY, 0.7, Some(9))],
        [(AutoContrast, 0.9, None), (Solarize, 0.8, Some(3))],
        [(Equalize, 0.8, None), (Invert, 0.1, None)],
        [(TranslateY, 0.7, Some(9)), (AutoContrast, 0.9, None)],
    ]
};

impl AutoAugment {
    /// The policy's sub-policies.
    pub fn policy(&self) -> &'static [[Step; 2]] {
        match self {
            AutoAugment::Cifar10 => &CIFAR10_POLICY,
        }
    }

    /// Applies one sub-policy, drawn from `rng`, to `img` (`s`×`s`×3, HWC) in place.
    pub fn apply(&self, img: &mut [u8], s: usize, tmp: &mut Vec<u8>, rng: &mut impl Rng) {
        let policy = self.policy();
        let sub = policy[rng.random_range(0..policy.len())];
        for (op, p, m) in sub {
            let (draw, negative): (f64, bool) = (rng.random(), rng.random_bool(0.5));
            if draw >= p {
                continue;
            }
            let level = m.map_or(0.0, |m| m as f32 / 9.0);
            let sign = if signed(op) && negative { -1.0 } else { 1.0 };
            apply_op(op, sign * level, img, s, tmp);
        }
    }
}

/// A translation's signed whole-pixel shift at strength `v` on a side of `s` px: up to 150/331 of
/// the side, truncated.
fn shift(v: f32, s: usize) -> f32 {
    (150.0 / 331.0 * s as f32 * v.abs()).trunc() * v.signum()
}

/// ITU-R 601 luma, torchvision's `rgb_to_grayscale`.
fn gray(p: &[u8]) -> f32 {
    0.2989 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
}

/// `img ← clamp(f·img + (1 − f)·degenerate(pixel))`, rounded.
fn blend_with(img: &mut [u8], f: f32, degenerate: impl Fn(&[u8]) -> [f32; 3]) {
    for p in img.chunks_exact_mut(3) {
        let d = degenerate(p);
        for c in 0..3 {
            p[c] = (f * p[c] as f32 + (1.0 - f) * d[c]).clamp(0.0, 255.0).round() as u8;
        }
    }
}

/// Each output pixel (x, y) takes the source pixel nearest to `src(x, y)`, zero outside.
fn warp(img: &mut [u8], s: usize, tmp: &mut Vec<u8>, src: impl Fn(f32, f32) -> (f32, f32)) {
    tmp.clear();
    tmp.extend_from_slice(img);
    for y in 0..s {
        for x in 0..s {
            let (sx, sy) = src(x as f32, y as f32);
            let (sx, sy) = (sx.round(), sy.round());
            let o = (y * s + x) * 3;
            if sx < 0.0 || sy < 0.0 || sx >= s as f32 || sy >= s as f32 {
                img[o..o + 3].fill(0);
            } else {
                let i = (sy as usize * s + sx as usize) * 3;
                img[o..o + 3].copy_from_slice(&tmp[i..i + 3]);
            }
        }
    }
}

/// Blends with the image smoothed by PIL's SMOOTH kernel (1 1 1 / 1 5 1 / 1 1 1, over 13),
/// border pixels unsmoothed (torchvision's `adjust_sharpness`).
fn sharpness(img: &mut [u8], s: usize, f: f32, tmp: &mut Vec<u8>) {
    tmp.clear();
    tmp.extend_from_slice(img);
    for y in 1..s.saturating_sub(1) {
        for x in 1..s - 1 {
            for c in 0..3 {
                let mut acc = 0u32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        let w = if dx == 1 && dy == 1 { 5 } else { 1 };
                        acc += w * tmp[((y + dy - 1) * s + x + dx - 1) * 3 + c] as u32;
                    }
                }
                let smooth = (acc as f32 / 13.0).round();
                let o = (y * s + x) * 3 + c;
                img[o] = (f * tmp[o] as f32 + (1.0 - f) * smooth).clamp(0.0, 255.0).round() as u8;
            }
        }
    }
}

/// PIL's / torchvision's histogram equalisation of channel `c`.
fn equalize_channel(img: &mut [u8], c: usize) {
    let mut hist = [0usize; 256];
    img.iter().skip(c).step_by(3).for_each(|&p| hist[p as usize] += 1);
    // the pixels outside the last occupied bin, over 255; one occupied bin leaves the channel
    let Some(last) = hist.iter().rposition(|&h| h > 0) else {
        return;
    };
    if hist.iter().filter(|&&h| h > 0).count() <= 1 {
        return;
    }
    let step = (img.len() / 3 - hist[last]) / 255;
    if step == 0 {
        return;
    }
    let mut lut = [0u8; 256];
    let mut cum = step / 2;
    for (v, h) in hist.iter().enumerate() {
        lut[v] = (cum / step).min(255) as u8;
        cum += h;
    }
    img.iter_mut()
        .skip(c)
        .step_by(3)
        .for_each(|p| *p = lut[*p as usize]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A 4×4 image whose pixel (x, y) has channels (16·y + 4·x, 100, 255 − 16·y − 4·x).
    fn grid() -> Vec<u8> {
        let mut v = Vec::new();
        for y in 0..4u8 {
            for x in 0..4u8 {
                let a = 16 * y + 4 * x;
                v.extend([a, 100, 255 - a]);
            }
        }
        v
    }

    fn px(img: &[u8], s: usize, x: usize, y: usize) -> [u8; 3] {
        let i = (y * s + x) * 3;
        [img[i], img[i + 1], img[i + 2]]
    }

    #[test]
    fn translate_shifts_by_whole_pixels_and_fills_zero() {
        // 150/331 · 4 px at full strength = 1.81 → 1 px
        let (mut img, mut tmp) = (grid(), Vec::new());
        apply_op(Op::TranslateX, 1.0, &mut img, 4, &mut tmp);
        let g = grid();
        for y in 0..4 {
            assert_eq!(px(&img, 4, 0, y), [0, 0, 0]);
            for x in 1..4 {
                assert_eq!(px(&img, 4, x, y), px(&g, 4, x - 1, y));
            }
        }
        let mut up = grid();
        apply_op(Op::TranslateY, -1.0, &mut up, 4, &mut tmp);
        assert_eq!(px(&up, 4, 2, 0), px(&g, 4, 2, 1));
        assert_eq!(px(&up, 4, 2, 3), [0, 0, 0]);
    }

    #[test]
    fn rotate_by_zero_is_identity_and_turns_about_the_centre() {
        let (mut img, mut tmp) = (grid(), Vec::new());
        apply_op(Op::Rotate, 0.0, &mut img, 4, &mut tmp);
        assert_eq!(img, grid());
        // 30° at full strength on a 5×5 image: the centre pixel stays
        let mut five: Vec<u8> = (0..75).map(|i| i as u8).collect();
        let centre = px(&five, 5, 2, 2);
        apply_op(Op::Rotate, 1.0, &mut five, 5, &mut tmp);
        assert_eq!(px(&five, 5, 2, 2), centre);
        assert_ne!(five, (0..75).map(|i| i as u8).collect::<Vec<_>>());
    }

    #[test]
    fn shear_x_moves_rows_by_their_height() {
        // strength 1 → 0.3 px per row: row 3 reads x + 0.9 → x + 1; rows 0 and 1 stay
        let (mut img, mut tmp) = (grid(), Vec::new());
        apply_op(Op::ShearX, 1.0, &mut img, 4, &mut tmp);
        let g = grid();
        assert_eq!(px(&img, 4, 2, 0), px(&g, 4, 2, 0));
        assert_eq!(px(&img, 4, 2, 1), px(&g, 4, 2, 1));
        assert_eq!(px(&img, 4, 1, 3), px(&g, 4, 2, 3));
        assert_eq!(px(&img, 4, 3, 3), [0, 0, 0]);
    }

    #[test]
    fn colour_operations_match_their_formulas() {
        let mut tmp = Vec::new();
        let mut b = vec![100u8, 200, 20];
        apply_op(Op::Brightness, 0.5, &mut b, 1, &mut tmp); // factor 1.45
        assert_eq!(b, vec![145, 255, 29]); // 290 clamps
        let mut g = vec![100u8, 200, 10];
        apply_op(Op::Color, -1.0, &mut g, 1, &mut tmp); // factor 0.1 towards the gray 148.45
        let gray = 0.2989 * 100.0 + 0.587 * 200.0 + 0.114 * 10.0;
        let want = |v: f32| (0.1 * v + 0.9 * gray).round() as u8;
        assert_eq!(g, vec![want(100.0), want(200.0), want(10.0)]);
        let mut c = vec![0u8, 0, 0, 255, 255, 255];
        apply_op(Op::Contrast, -1.0, &mut c, 1, &mut tmp); // gray mean 127.47..; factor 0.1
        let m = (0.2989f32 + 0.587 + 0.114) * 255.0 / 2.0;
        assert_eq!(c[0], (0.9 * m).round() as u8);
        assert_eq!(c[3], (25.5 + 0.9 * m).round() as u8);
    }

    #[test]
    fn posterize_solarize_autocontrast() {
        let mut tmp = Vec::new();
        let mut p = vec![255u8, 0x37, 0x80];
        apply_op(Op::Posterize, 1.0, &mut p, 1, &mut tmp); // 4 bits
        assert_eq!(p, vec![0xF0, 0x30, 0x80]);
        let mut s = [10u8, 127, 128];
        apply_op(Op::Solarize, 0.5, &mut s, 1, &mut tmp); // threshold 127.5
        assert_eq!(s, [10, 127, 127]);
        let mut a = vec![50u8, 0, 0, 100, 0, 0, 150, 0, 0];
        apply_op(Op::AutoContrast, 0.0, &mut a, 3, &mut tmp);
        assert_eq!(
            a.iter().step_by(3).copied().collect::<Vec<_>>(),
            vec![0, 127, 255]
        );
        assert_eq!(a[1], 0); // a constant channel is left alone
    }

    #[test]
    fn equalize_matches_pil() {
        // values 0 (×2), 1 (×1), 2 (×1) in channel 0: step = (4 − 1) / 255 = 0 → unchanged
        let mut tmp = Vec::new();
        let mut few = vec![0u8, 0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0];
        let before = few.clone();
        apply_op(Op::Equalize, 0.0, &mut few, 2, &mut tmp);
        assert_eq!(few, before);
        // 32×32: 512 pixels of value 10, 512 of 20 → step (1024 − 512) / 255 = 2;
        // lut[10] = (0 + 1) / 2 = 0, lut[20] = (512 + 1) / 2 = 256, clamped to 255; a constant
        // channel has one histogram bin and is left alone
        let mut img: Vec<u8> = (0..1024)
            .flat_map(|i| [if i < 512 { 10 } else { 20 }, 7, 7])
            .collect();
        apply_op(Op::Equalize, 0.0, &mut img, 32, &mut tmp);
        assert_eq!((img[0], img[512 * 3]), (0, 255));
        assert_eq!(img[1], 7);
    }

    #[test]
    fn sharpness_keeps_the_border_and_a_flat_image() {
        let mut tmp = Vec::new();
        let mut flat = vec![90u8; 5 * 5 * 3];
        apply_op(Op::Sharpness, 1.0, &mut flat, 5, &mut tmp);
        assert!(flat.iter().all(|&p| p == 90));
        // a single bright pixel at the centre of 3×3: smooth = (5·130 + 8·0)/13 = 50;
        // factor 1.9 → 1.9·130 − 0.9·50 = 202
        let mut dot = vec![0u8; 27];
        dot[12..15].fill(130);
        apply_op(Op::Sharpness, 1.0, &mut dot, 3, &mut tmp);
        assert_eq!(&dot[12..15], &[202, 202, 202]);
        assert_eq!(dot[0], 0);
    }

    #[test]
    fn same_generator_same_image_and_check_names_the_key() {
        let ra = RandAugment::default();
        let img: Vec<u8> = (0..32 * 32 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let run = |seed| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let (mut x, mut tmp) = (img.clone(), Vec::new());
            ra.apply(&mut x, 32, &mut tmp, &mut rng);
            x
        };
        assert_eq!(run(3), run(3));
        assert!((0..8).any(|s| run(s) != img));
        let bad = RandAugment { magnitude: 31, ..ra };
        let e = bad.check().unwrap_err().to_string();
        assert!(e.contains("randaugment.magnitude") && e.contains("31"), "{e}");
        assert!(RandAugment { ops: 0, ..ra }.check().is_err());
    }

    /// The CIFAR-10 policy is torchvision's `AutoAugmentPolicy.CIFAR10` (torchvision 0.26,
    /// `transforms/autoaugment.py`): 25 sub-policies; the first, the fifteenth and the
    /// twenty-third as torchvision lists them: (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    /// (("Solarize", 0.5, 2), ("Invert", 0.0, None)), (("AutoContrast", 0.9, None),
    /// ("Solarize", 0.8, 3)).
    #[test]
    fn autoaugment_cifar10_is_torchvisions_policy() {
        let p = AutoAugment::Cifar10.policy();
        assert_eq!(p.len(), 25);
        assert_eq!(p[0], [(Op::Invert, 0.1, None), (Op::Contrast, 0.2, Some(6))]);
        assert_eq!(p[14], [(Op::Solarize, 0.5, Some(2)), (Op::Invert, 0.0, None)]);
        assert_eq!(
            p[22],
            [(Op::AutoContrast, 0.9, None), (Op::Solarize, 0.8, Some(3))]
        );
        // torchvision's F.invert on uint8: 255 − x
        let mut img = grid();
        let before = img.clone();
        apply_op(Op::Invert, 0.0, &mut img, 4, &mut Vec::new());
        assert!(img.iter().zip(&before).all(|(a, b)| *a == 255 - *b));
        // Posterize at strength index 7 of 10 keeps 8 − round(7 / 2.25) = 5 bits, as torchvision's
        // table [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
        let mut img = vec![0xFFu8; 48];
        apply_op(Op::Posterize, 7.0 / 9.0, &mut img, 4, &mut Vec::new());
        assert!(img.iter().all(|&v| v == 0xF8));
        // one image, one seed: the same sub-policy and draws every time; over many seeds some
        // images change and some do not (every operation has a probability)
        let run = |seed: u64| {
            let mut img = grid();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            AutoAugment::Cifar10.apply(&mut img, 4, &mut Vec::new(), &mut rng);
            img
        };
        assert_eq!(run(3), run(3));
        let changed = (0..50).filter(|&s| run(s) != grid()).count();
        assert!(changed > 10 && changed < 50, "{changed}");
    }
}
