//! A class-activation-map locator: a trained classifier's CAM (Zhou et al., 2016) says where in
//! an image its class's evidence lies; the salient patch is the `p`×`p` window with the largest
//! mean activation (the map upsampled to the image). A guide for CutMix with no agent to train
//! (`[train.mix] kind = "cam-cutmix"`), and the baseline the patch agent is scored against
//! (`bench-agent-localization --cam`).
use super::guided::{Locator, Rect};
use crate::data::loader::Batch;
use crate::export::{self, Exported};
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

/// A trained model used as a locator.
pub struct Cam {
    pub model: Exported,
    /// Side of the patch, and of the images located on, in pixels.
    pub patch: i64,
    pub image: i64,
    pub choice: ClassChoice,
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
        let model = export::open(path, device)?;
        let choice = match classes {
            Some(c) if c == model.card.classes.as_slice() => ClassChoice::Label,
            _ => ClassChoice::Predicted,
        };
        Ok(Cam {
            model,
            patch,
            image,
            choice,
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
        best_windows(&cam, x.size()[2], self.patch)
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
}
