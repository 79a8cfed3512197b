//! A class-activation-map locator: a trained classifier's CAM (Zhou et al., 2016) says where in
//! an image its class's evidence lies. The map is upsampled to the image; the salient `p`×`p`
//! patch is either the window of largest mean activation (`Pick::Peak`: the most discriminative
//! part) or centred on the CAM paper's object box (`Pick::Box`: the bounding box of the pixels
//! above 20% of the map's range connected to its peak — the object's extent, not its most
//! telling part). A guide for CutMix with no agent to train
//! (`[train.mix] kind = "cam-cutmix"`), and the baseline the patch agent is scored against
//! (`bench-agent-localization --cam`).
use super::guided::{Locator, Rect};
use crate::data::loader::Batch;
use crate::model::card::{self, Exported};
use crate::{invalid, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Which class's map a patch is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassChoice {
    /// The image's label (training batches, when the model knows the dataset's classes).
    Label,
    /// The model's own prediction (no labels, or another class set).
    Predicted,
}

/// How a patch is read off a class activation map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pick {
    /// The window of largest mean activation.
    #[default]
    Peak,
    /// The patch centred on the CAM paper's box: pixels at or above 20% of the map's range
    /// (min to max), the 4-connected region around the peak, its bounding box.
    Box,
}

/// A trained model used as a locator.
pub struct Cam {
    pub model: Exported,
    /// Side of the patch, and of the images located on, in pixels.
    pub patch: i64,
    pub image: i64,
    pub choice: ClassChoice,
    pub pick: Pick,
}

impl Cam {
    /// Opens a model file written by `autosampler run` (`model.safetensors`) to locate `patch`
    /// px patches on `image` px images. Labels choose the map when the model's classes are
    /// `classes` (same names, same order); its predictions otherwise.
    pub fn open(
        path: &Path,
        patch: i64,
        image: i64,
        classes: Option<&[String]>,
        device: Device,
    ) -> Result<Cam> {
        if !(1..=image).contains(&patch) {
            return Err(invalid!(
                "the CAM patch side must be 1 to the image side {image} px, got {patch}"
            ));
        }
        let model = card::open(path, device)?;
        let choice = match classes {
            Some(c) if c == model.card.classes.as_slice() => ClassChoice::Label,
            _ => ClassChoice::Predicted,
        };
        Ok(Cam {
            model,
            patch,
            image,
            choice,
            pick: Pick::Peak,
        })
    }

    /// The top-left corner (row, col) of each image's salient patch of `x` (`[B, 3, S, S]`),
    /// the map of `labels`' classes (or of the predicted ones: `None`).
    pub fn corners(&self, x: &Tensor, labels: Option<&Tensor>) -> Vec<(i64, i64)> {
        let maps = self
            .model
            .model
            .class_maps(&x.to_device(self.model.model.vs.device()));
        let class = match labels {
            Some(y) => y.to_device(maps.device()),
            None => maps
                .mean_dim([2, 3].as_slice(), false, Kind::Float)
                .argmax(-1, false),
        };
        let (b, _, h, w) = maps.size4().expect("[B, C, h, w]");
        let cam = maps
            .gather(1, &class.view([b, 1, 1, 1]).expand([b, 1, h, w], false), false)
            .to_device(Device::Cpu);
        match self.pick {
            Pick::Peak => best_windows(&cam, x.size()[2], self.patch),
            Pick::Box => box_centred(&cam, x.size()[2], self.patch),
        }
    }
}

/// The top-left corner (row, col) of the `p`×`p` window of largest mean for each map of `cam`
/// (`[B, 1, h, w]`) upsampled (bilinearly) to `s`×`s`; ties go to the first in row-major order.
pub fn best_windows(cam: &Tensor, s: i64, p: i64) -> Vec<(i64, i64)> {
    let p = p.min(s);
    let up = cam
        .to_kind(Kind::Float)
        .upsample_bilinear2d([s, s], false, None, None);
    let sums = up.avg_pool2d([p, p], [1, 1], [0, 0], false, true, None::<i64>);
    let n = s - p + 1;
    let b = cam.size()[0];
    let best = Vec::<i64>::try_from(sums.view([b, n * n]).argmax(-1, false)).expect("i64 indices");
    best.into_iter().map(|i| (i / n, i % n)).collect()
}

/// The top-left corner (row, col) of the `p`×`p` patch centred on each map's CAM box (`[B, 1, h,
/// w]` upsampled bilinearly to `s`×`s`): the bounding box of the 4-connected pixels at or above
/// 20% of the range that contain the maximum; the patch is clamped into the image.
pub fn box_centred(cam: &Tensor, s: i64, p: i64) -> Vec<(i64, i64)> {
    let p = p.min(s);
    let su = s as usize;
    let up = cam
        .to_kind(Kind::Float)
        .upsample_bilinear2d([s, s], false, None, None);
    let b = cam.size()[0];
    let all = Vec::<f32>::try_from(up.view([-1])).expect("f32 maps");
    (0..b as usize)
        .map(|i| {
            let m = &all[i * su * su..(i + 1) * su * su];
            let (lo, hi) = m
                .iter()
                .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            let peak = m.iter().position(|&v| v == hi).unwrap_or(0);
            let thr = lo + 0.2 * (hi - lo);
            // flood fill from the peak
            let mut seen = vec![false; m.len()];
            let mut stack = vec![peak];
            seen[peak] = true;
            let (mut r0, mut r1, mut c0, mut c1) = (su, 0, su, 0);
            while let Some(k) = stack.pop() {
                let (r, c) = (k / su, k % su);
                (r0, r1, c0, c1) = (r0.min(r), r1.max(r), c0.min(c), c1.max(c));
                let mut push = |rr: usize, cc: usize| {
                    let q = rr * su + cc;
                    if !seen[q] && m[q] >= thr {
                        seen[q] = true;
                        stack.push(q);
                    }
                };
                if r > 0 {
                    push(r - 1, c);
                }
                if r + 1 < su {
                    push(r + 1, c);
                }
                if c > 0 {
                    push(r, c - 1);
                }
                if c + 1 < su {
                    push(r, c + 1);
                }
            }
            // centre of the box (pixel centres), the patch around it, clamped
            let place = |a: usize, z: usize| {
                let centre = (a + z + 1) as f64 / 2.0;
                ((centre - p as f64 / 2.0).round() as i64).clamp(0, s - p)
            };
            (place(r0, r1), place(c0, c1))
        })
        .collect()
}

impl Locator for Cam {
    fn rects(&self, batch: &Batch, x: &Tensor) -> Result<Vec<Rect>> {
        let labels = (self.choice == ClassChoice::Label).then_some(&batch.labels);
        let p = self.patch.min(x.size()[2]) as f32;
        Ok(self
            .corners(x, labels)
            .into_iter()
            .map(|(r, c)| [c as f32, r as f32, c as f32 + p, r as f32 + p])
            .collect())
    }

    fn patch_and_image(&self) -> (f64, f64) {
        (self.patch as f64, self.image as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_of_largest_mean_is_found() {
        // 4×4 maps upsampled to 16 px: each map pixel covers a 4×4 block (bilinear blurs its
        // edges by half a block), 8 px windows
        let mut v = vec![0f32; 2 * 16];
        v[5] = 10.0; // map 0: peak at (1, 1) → pixels 4..8: the 8 px window centred there
        v[16 + 15] = 10.0; // map 1: peak at (3, 3), the bottom-right corner
        let cam = Tensor::from_slice(&v).view([2, 1, 4, 4]);
        let w = best_windows(&cam, 16, 8);
        assert_eq!(w, vec![(2, 2), (8, 8)]);
        // a flat map: the first window
        assert_eq!(
            best_windows(&Tensor::ones([1, 1, 4, 4], (Kind::Float, Device::Cpu)), 16, 8),
            vec![(0, 0)]
        );
        // a patch as large as the image: the whole image
        assert_eq!(best_windows(&cam, 16, 32), vec![(0, 0), (0, 0)]);
    }

    #[test]
    fn the_cam_box_spans_the_region_around_the_peak() {
        // 8×8 maps at 8 px (no resampling): map 0 has a 3×5 region of 1s at rows 2..5, cols
        // 1..6 with the peak 2 inside it, and a separate blob of 1s at (7, 7) that is not
        // connected to it; box rows 2–4, cols 1–5: centre (3.5, 3.5) → a 4 px patch at (2, 2)
        let mut v = vec![0f32; 2 * 64];
        for r in 2..5 {
            for c in 1..6 {
                v[r * 8 + c] = 1.0;
            }
        }
        v[3 * 8 + 2] = 2.0;
        v[63] = 1.0;
        // map 1: one hot pixel in the corner (0, 0): the patch is clamped into the image
        v[64] = 5.0;
        let cam = Tensor::from_slice(&v).view([2, 1, 8, 8]);
        assert_eq!(box_centred(&cam, 8, 4), vec![(2, 2), (0, 0)]);
        assert_eq!(box_centred(&cam, 8, 8), vec![(0, 0), (0, 0)]);
    }
}
