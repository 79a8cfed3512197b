//! Frozen-backbone features: the stage-1 backbone run once over train, val and test (no
//! augmentation), stored as f32 `[N, D]` with i64 labels in `<run>/features/{part}.safetensors`,
//! so that classifier re-training and the class-weight search cost a linear layer, not a CNN.
use crate::data::augment::Normalize;
use crate::data::loader::{for_each_batch, LoaderConfig};
use crate::data::{Dataset, Part, View};
use crate::model::{save_tensors, Model};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Features and labels of one part.
pub struct Features {
    /// `[N, D]` f32.
    pub x: Tensor,
    /// `[N]` i64.
    pub y: Tensor,
}

/// `<run>/features/<part>.safetensors`.
pub fn path(run: &Path, part: Part) -> PathBuf {
    let name = match part {
        Part::Train => "train",
        Part::Val => "val",
        Part::Test => "test",
    };
    run.join("features").join(format!("{name}.safetensors"))
}

/// Applies `f` to every image of `view` in batches (no augmentation, no gradients) on the
/// model's device and concatenates the results on the CPU (`[N, …]`; `[0, width]` when empty).
pub fn map_view(
    model: &Model,
    view: &View,
    normalize: &Normalize,
    threads: usize,
    width: i64,
    f: impl Fn(&Tensor) -> Tensor,
) -> Result<Tensor> {
    let device = model.vs.device();
    let lc = LoaderConfig::evaluation(normalize, threads);
    let plan: Vec<usize> = (0..view.len()).collect();
    let mut out = Vec::new();
    tch::no_grad(|| {
        for_each_batch(view, &plan, &lc, 0, |b| {
            out.push(
                f(&b.images.to_device(device))
                    .to_kind(Kind::Float)
                    .to_device(Device::Cpu),
            );
            Ok(())
        })
    })?;
    Ok(if out.is_empty() {
        Tensor::zeros([0, width], (Kind::Float, Device::Cpu))
    } else {
        Tensor::cat(&out, 0)
    })
}

/// Runs the backbone of `model` over every image of `view` (eval mode, no augmentation).
pub fn extract(model: &Model, view: &View, normalize: &Normalize, threads: usize) -> Result<Features> {
    let x = map_view(model, view, normalize, threads, model.feature_dim(), |x| {
        model.forward_features(x, false)
    })?;
    let labels: Vec<i64> = view.labels.iter().map(|&l| l as i64).collect();
    Ok(Features {
        x,
        y: Tensor::from_slice(&labels),
    })
}

/// Extracts and writes the features of every part (each file atomically); parts already written
/// are kept when they read back whole, with the part's labels in order (a truncated or foreign
/// file is redone, not trusted because it exists).
pub fn extract_all(
    model: &Model,
    ds: &Dataset,
    run: &Path,
    normalize: &Normalize,
    threads: usize,
) -> Result<()> {
    for part in [Part::Train, Part::Val, Part::Test] {
        let p = path(run, part);
        let view = ds.view(part);
        if p.is_file() {
            let want: Vec<i64> = view.labels.iter().map(|&l| l as i64).collect();
            let whole = load(run, part).is_ok_and(|f| {
                f.x.size() == [want.len() as i64, model.feature_dim()]
                    && Vec::<i64>::try_from(&f.y).is_ok_and(|y| y == want)
            });
            if whole {
                continue;
            }
            tracing::warn!(
                "{} is not whole (truncated, or of other data): extracting again",
                p.display()
            );
        }
        let f = extract(model, &view, normalize, threads)?;
        save_tensors(&p, &[("features".into(), f.x), ("labels".into(), f.y)])?;
    }
    Ok(())
}

/// Reads the features of `part`.
pub fn load(run: &Path, part: Part) -> Result<Features> {
    let p = path(run, part);
    let t = Tensor::read_safetensors(&p)
        .map_err(|e| Error::format(p.display(), format!("cannot read features: {e}")))?;
    let get = |name: &str| {
        t.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.shallow_clone())
            .ok_or_else(|| Error::format(p.display(), format!("missing tensor `{name}`")))
    };
    Ok(Features {
        x: get("features")?,
        y: get("labels")?,
    })
}
