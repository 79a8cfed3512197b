//! Guided CutMix (Section 3.3.3): the source image's salient patch is pasted into the target
//! image at the image corner farthest from the centre of the target's own salient patch; the label
//! is `λ·y_source + (1 − λ)·y_target` with `λ = (S_patch / S_image)^τ` (or a fixed λ). Where the
//! patches come from is a [`Locator`]: the patch agent (`agent::guide::Guide`), or any other.
use super::Mixed;
use crate::data::augment::Window;
use crate::data::loader::Batch;
use crate::Result;
use rand::Rng;
use tch::Tensor;

/// A box `[x0, y0, x1, y1]`, half-open, in pixels.
pub type Rect = [f32; 4];

/// Where the salient patches of a batch come from.
pub trait Locator {
    /// Each batch image's salient patch in pixels of the augmented batch `x` (`[B, 3, S, S]`).
    fn rects(&self, batch: &Batch, x: &Tensor) -> Result<Vec<Rect>>;
    /// The sides (patch, image) that λ = (S_patch / S_image)^τ uses.
    fn patch_and_image(&self) -> (f64, f64);
}

/// Guided CutMix of a batch with probability `prob`, or `None`. λ, the pasted patch's label
/// weight, is `fixed_lambda` or `(S_patch / S_image)^tau`; the returned [`Mixed`] weighs the
/// target's label by `1 − λ`.
pub fn guided_cutmix(
    locator: &dyn Locator,
    prob: f64,
    tau: f64,
    fixed_lambda: Option<f64>,
    batch: &Batch,
    x: &Tensor,
    rng: &mut impl Rng,
) -> Result<Option<Mixed>> {
    if !mixes(prob, rng) {
        return Ok(None);
    }
    let rects = locator.rects(batch, x)?;
    Ok(Some(paste_shuffled(
        &rects,
        locator.patch_and_image(),
        tau,
        fixed_lambda,
        x,
        rng,
    )))
}

/// Whether a batch is mixed, with probability `prob` (one uniform from `rng`).
pub fn mixes(prob: f64, rng: &mut impl Rng) -> bool {
    rng.random::<f64>() < prob
}

/// Guided CutMix of `x` (`[B, C, S, S]`) with each image's salient patch given (`rects`, pixels of
/// `x`) and the sides (patch, image) for λ: the batch shuffled by `rng`, each image's partner's
/// patch pasted at its far corner. What [`guided_cutmix`] does once it decided to mix.
pub fn paste_shuffled(
    rects: &[Rect],
    (patch, image): (f64, f64),
    tau: f64,
    fixed_lambda: Option<f64>,
    x: &Tensor,
    rng: &mut impl Rng,
) -> Mixed {
    let b = x.size()[0];
    let mut order: Vec<i64> = (0..b).collect();
    use rand::seq::SliceRandom;
    order.shuffle(rng);
    let (images, _) = paste(x, rects, &order);
    let lambda = fixed_lambda.unwrap_or_else(|| patch_lambda(patch * patch, image * image, tau));
    Mixed {
        images,
        perm: Tensor::from_slice(&order).to_device(x.device()),
        lambda: 1.0 - lambda,
    }
}

/// Maps a box of the source image through an augmentation window to the augmented image of side
/// `out`, clipped to it: `u = (x − win.x)·out / win.w` (and likewise y), mirrored when flipped.
/// (Pad-crop-flip windows have `w = h = out`, so that is a shift.)
pub fn map_rect(r: Rect, win: &Window, out: f32) -> Rect {
    let sx = out / win.w;
    let sy = out / win.h;
    let mut x0 = (r[0] - win.x) * sx;
    let mut x1 = (r[2] - win.x) * sx;
    if win.flip {
        (x0, x1) = (out - x1, out - x0);
    }
    let y0 = (r[1] - win.y) * sy;
    let y1 = (r[3] - win.y) * sy;
    [
        x0.clamp(0.0, out),
        y0.clamp(0.0, out),
        x1.clamp(0.0, out),
        y1.clamp(0.0, out),
    ]
}

/// The top-left of a `w`×`h` box anchored at the vertex of the `side`×`side` image farthest from
/// `centre` (the least important corner of the target). Ties go to the first of top-left,
/// top-right, bottom-left, bottom-right.
pub fn farthest_corner(centre: (f32, f32), side: i64, w: i64, h: i64) -> (i64, i64) {
    let s = side as f32;
    let corners = [(0.0, 0.0), (s, 0.0), (0.0, s), (s, s)];
    let mut best = 0;
    let mut best_d = f32::MIN;
    for (i, (x, y)) in corners.iter().enumerate() {
        let d = (x - centre.0).powi(2) + (y - centre.1).powi(2);
        if d > best_d {
            best_d = d;
            best = i;
        }
    }
    let (x, y) = corners[best];
    (
        if x == 0.0 { 0 } else { side - w },
        if y == 0.0 { 0 } else { side - h },
    )
}

/// Eq. 8: the weight of the pasted patch's label, `(S_patch / S_image)^τ`.
pub fn patch_lambda(patch_area: f64, image_area: f64, tau: f64) -> f64 {
    (patch_area / image_area).powf(tau)
}

/// A box in whole pixels inside `[0, side]`, at least 1×1.
fn pixels(r: Rect, side: i64) -> (i64, i64, i64, i64) {
    let x0 = (r[0].round() as i64).clamp(0, side - 1);
    let y0 = (r[1].round() as i64).clamp(0, side - 1);
    let x1 = (r[2].round() as i64).clamp(x0 + 1, side);
    let y1 = (r[3].round() as i64).clamp(y0 + 1, side);
    (x0, y0, x1, y1)
}

/// Pastes, into each image `i` of `x` (`[B, C, S, S]`), the salient patch `rects[perm[i]]` of its
/// partner `perm[i]`, at the corner of image `i` farthest from the centre of `rects[i]`. Returns the
/// mixed images and, per image, the pasted box `(x0, y0, w, h)` in the target.
pub fn paste(x: &Tensor, rects: &[Rect], perm: &[i64]) -> (Tensor, Vec<(i64, i64, i64, i64)>) {
    let side = x.size()[3];
    let out = x.copy();
    let mut boxes = Vec::with_capacity(perm.len());
    tch::no_grad(|| {
        for (i, &j) in perm.iter().enumerate() {
            let (x0, y0, x1, y1) = pixels(rects[j as usize], side);
            let (w, h) = (x1 - x0, y1 - y0);
            let t = rects[i];
            let (tx, ty) = farthest_corner(((t[0] + t[2]) / 2.0, (t[1] + t[3]) / 2.0), side, w, h);
            out.get(i as i64)
                .narrow(1, ty, h)
                .narrow(2, tx, w)
                .copy_(&x.get(j).narrow(1, y0, h).narrow(2, x0, w));
            boxes.push((tx, ty, w, h));
        }
    });
    (out, boxes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corner_is_the_vertex_farthest_from_the_patch_centre() {
        // patch centred top-left → paste bottom-right, and so on
        assert_eq!(farthest_corner((5.0, 5.0), 32, 16, 16), (16, 16));
        assert_eq!(farthest_corner((28.0, 4.0), 32, 16, 8), (0, 24));
        assert_eq!(farthest_corner((4.0, 30.0), 32, 10, 10), (22, 0));
        assert_eq!(farthest_corner((30.0, 30.0), 32, 16, 16), (0, 0));
        // the exact centre: all four tie, the first (top-left) wins
        assert_eq!(farthest_corner((16.0, 16.0), 32, 16, 16), (0, 0));
    }

    #[test]
    fn lambda_is_the_area_ratio_to_the_tau() {
        // a 32 px patch of a 64 px image: area ratio 1/4; τ = 1 → 0.25, τ = 0.5 → 0.5
        assert!((patch_lambda(1024.0, 4096.0, 1.0) - 0.25).abs() < 1e-12);
        assert!((patch_lambda(1024.0, 4096.0, 0.5) - 0.5).abs() < 1e-12);
        assert!((patch_lambda(1024.0, 4096.0, 0.3) - 0.25f64.powf(0.3)).abs() < 1e-12);
    }

    #[test]
    fn boxes_follow_crops_and_flips() {
        let r = [4.0, 8.0, 20.0, 24.0];
        // pad-crop-flip on 32 px: window shifted by (+2, −3), no flip → box shifted by (−2, +3)
        let w = Window {
            x: 2.0,
            y: -3.0,
            w: 32.0,
            h: 32.0,
            flip: false,
        };
        assert_eq!(map_rect(r, &w, 32.0), [2.0, 11.0, 18.0, 27.0]);
        // the same, flipped: x ↦ 32 − x, edges swapped
        let w = Window { flip: true, ..w };
        assert_eq!(map_rect(r, &w, 32.0), [14.0, 11.0, 30.0, 27.0]);
        // a random-resized-crop window (x 8, y 0, 32×32 of a 64 px image) resampled to 64 px:
        // ×2 from the window's origin; the part outside the window is clipped
        let w = Window {
            x: 8.0,
            y: 0.0,
            w: 32.0,
            h: 32.0,
            flip: false,
        };
        assert_eq!(map_rect(r, &w, 64.0), [0.0, 16.0, 24.0, 48.0]);
        // an identity window changes nothing
        let id = Window {
            x: 0.0,
            y: 0.0,
            w: 32.0,
            h: 32.0,
            flip: false,
        };
        assert_eq!(map_rect(r, &id, 32.0), r);
    }

    #[test]
    fn paste_takes_the_source_patch_to_the_far_corner() {
        // image 0 = zeros, image 1 = its pixel index; image 0 receives image 1's patch at (8, 4)
        // (x, y) of size 8×8; image 0's own patch sits top-left → the paste goes bottom-right.
        let x = Tensor::cat(
            &[
                Tensor::zeros([1, 1, 16, 16], (tch::Kind::Float, tch::Device::Cpu)),
                Tensor::arange(256, (tch::Kind::Float, tch::Device::Cpu)).reshape([1, 1, 16, 16]),
            ],
            0,
        );
        let rects = [[0.0, 0.0, 8.0, 8.0], [8.0, 4.0, 16.0, 12.0]];
        let (out, boxes) = paste(&x, &rects, &[1, 0]);
        assert_eq!(boxes[0], (8, 8, 8, 8));
        // target (8, 8) holds source (x 8, y 4) = 4·16 + 8
        assert_eq!(out.double_value(&[0, 0, 8, 8]), 72.0);
        assert_eq!(out.double_value(&[0, 0, 15, 15]), (11 * 16 + 15) as f64);
        assert_eq!(
            out.double_value(&[0, 0, 7, 7]),
            0.0,
            "outside the paste: the target"
        );
        // image 1's patch centre (12, 8): vertices (0, 0) and (0, 16) tie at distance² 208, the
        // first wins → image 0's patch (zeros) goes top-left
        assert_eq!(boxes[1], (0, 0, 8, 8));
        assert_eq!(out.double_value(&[1, 0, 7, 7]), 0.0);
        assert_eq!(out.double_value(&[1, 0, 8, 0]), 128.0);
        assert_eq!(out.double_value(&[1, 0, 0, 9]), 9.0);
    }
}
