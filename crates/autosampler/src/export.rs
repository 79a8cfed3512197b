//! One file for a trained model: `model.safetensors` at a run folder's root holds the stage-1
//! backbone and the chosen classifier (the one `[stage2] classifier` picks when stage 2 ran: by
//! default the best on validation) under PyTorch's parameter names, with a [`ModelCard`] in the safetensors header (`__metadata__`, key
//! `autosampler`): the architecture, the class names, the input size, the resize policy and the
//! normalisation. `autosampler predict` and the Python package read it; PyTorch's
//! `load_state_dict(strict=True)` takes its tensors.
use crate::data::augment::{self, Augment, Lut};
use crate::data::decode::decode_file;
use crate::data::source::Resize;
pub use crate::model::card::{open, write, Exported, ModelCard, CARD_KEY, FORMAT};
use crate::{invalid, Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The image files of `inputs`: files as given, folders searched (recursively, sorted) for
/// `.jpg`, `.jpeg` and `.png`.
pub fn image_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
            .collect::<Result<_>>()?;
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| ["jpg", "jpeg", "png"].contains(&x.to_ascii_lowercase().as_str()))
            {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(invalid!("{}: no such image file or folder", p.display()));
        }
    }
    if out.is_empty() {
        return Err(invalid!("no .jpg, .jpeg or .png images in the given paths"));
    }
    Ok(out)
}

/// The model's inputs for image files: decoded, brought to the card's size, normalised
/// (`[N, 3, S, S]` f32 on the CPU).
pub fn inputs(card: &ModelCard, files: &[PathBuf]) -> Result<Tensor> {
    let s = card.input_size;
    let lut = Lut::new(&card.normalize);
    let plane = (s * s * 3) as usize;
    let mut data = vec![0f32; plane * files.len()];
    let mut rng = crate::rng::chacha(0, &[]);
    for (f, out) in files.iter().zip(data.chunks_mut(plane)) {
        let px = decode_file(f, s, card.resize).map_err(|e| match card.resize {
            // the data stage's advice (a config key) is no option of predict's
            Resize::Exact if image::image_dimensions(f).is_ok_and(|d| d != (s, s)) => Error::format(
                f.display(),
                format!(
                    "image is {}×{}: the model takes {s}×{s} images as they are (it was trained with resize = \"exact\"): resize it to {s}×{s} first, or train with [data.source] resize = \"stretch\" or \"center-crop\" for a model that resizes its inputs",
                    image::image_dimensions(f).map(|d| d.0).unwrap_or(0),
                    image::image_dimensions(f).map(|d| d.1).unwrap_or(0)
                ),
            ),
            _ => e,
        })?;
        augment::apply(&Augment::None, &px, s, out, &lut, &mut rng);
    }
    Ok(Tensor::from_slice(&data).reshape([files.len() as i64, 3, s as i64, s as i64]))
}

/// The files that could not be read, each with its error.
pub type Unreadable = Vec<(PathBuf, Error)>;

/// [`predict`] over the files that can be read: every file that cannot (not an image, damaged,
/// the wrong size) is returned with its error instead of stopping the others. `None` when no file
/// can be read.
pub fn predict_readable(
    m: &Exported,
    files: &[PathBuf],
    k: usize,
    batch: i64,
) -> Result<(Option<Predicted>, Unreadable)> {
    // each file decoded once: the readable ones' inputs are what is predicted
    let (mut good, mut bad, mut x) = (Vec::new(), Vec::new(), Vec::new());
    for f in files {
        match inputs(&m.card, std::slice::from_ref(f)) {
            Ok(t) => {
                good.push(f.clone());
                x.push(t);
            }
            Err(e) => bad.push((f.clone(), e)),
        }
    }
    let p = if good.is_empty() {
        None
    } else {
        Some(predict_inputs(m, &good, Tensor::cat(&x, 0), k, batch)?)
    };
    Ok((p, bad))
}

/// Logits `[N, C]` of the model for `x` (`[N, 3, S, S]`), in batches of `batch`, on the CPU.
pub fn logits(m: &Exported, x: &Tensor, batch: i64) -> Tensor {
    let device = m.model.vs.device();
    let n = x.size()[0];
    let parts: Vec<Tensor> = tch::no_grad(|| {
        (0..n)
            .step_by(batch.max(1) as usize)
            .map(|i| {
                let b = x.narrow(0, i, batch.min(n - i)).to_device(device);
                m.fast
                    .run(&b, |b| m.model.forward(b, false))
                    .to_kind(Kind::Float)
                    .to_device(Device::Cpu)
            })
            .collect()
    });
    Tensor::cat(&parts, 0)
}

/// One image's top-k classes and probabilities.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub file: PathBuf,
    pub top: Vec<(String, f64)>,
}

/// What [`predict`] returns: the top-k per image, the model's inputs and its logits.
pub struct Predicted {
    pub top: Vec<Prediction>,
    /// `[N, 3, S, S]`, normalised.
    pub inputs: Tensor,
    /// `[N, C]`.
    pub logits: Tensor,
}

/// Top-`k` predictions of the model for image files.
pub fn predict(m: &Exported, files: &[PathBuf], k: usize, batch: i64) -> Result<Predicted> {
    predict_inputs(m, files, inputs(&m.card, files)?, k, batch)
}

/// [`predict`] of the decoded inputs `x` of `files`.
fn predict_inputs(m: &Exported, files: &[PathBuf], x: Tensor, k: usize, batch: i64) -> Result<Predicted> {
    let logits = logits(m, &x, batch);
    let probs = logits.softmax(-1, Kind::Double);
    let k = k.clamp(1, m.card.classes.len());
    let (p, idx) = probs.topk(k as i64, -1, true, true);
    let p: Vec<f64> = Vec::try_from(p.flatten(0, -1))?;
    let idx: Vec<i64> = Vec::try_from(idx.flatten(0, -1))?;
    let top = files
        .iter()
        .enumerate()
        .map(|(i, f)| Prediction {
            file: f.clone(),
            top: (0..k)
                .map(|j| (m.card.classes[idx[i * k + j] as usize].clone(), p[i * k + j]))
                .collect(),
        })
        .collect();
    Ok(Predicted {
        top,
        inputs: x,
        logits,
    })
}
