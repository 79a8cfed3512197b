//! Frozen-backbone features: the stage-1 backbone run once over train, val and test (no
//! augmentation), stored as f32 `[N, D]` with i64 labels in `<run>/features/{part}.safetensors`,
//! so that classifier re-training and the class-weight search cost a linear layer, not a CNN.
use crate::data::augment::Normalize;
use crate::data::loader::{for_each_batch, LoaderConfig};
use crate::data::{Dataset, Part, View};
use crate::distributed::{self, Collective};
use crate::model::fast::Fast;
use crate::model::{save_tensors, Model};
use crate::rundir::RunDir;
use crate::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Features and labels of one part.
pub struct Features {
    /// `[N, D]` f32.
    pub x: Tensor,
    /// `[N]` i64.
    pub y: Tensor,
}

/// Applies `f` to every image of `view` in batches (no augmentation, no gradients) on the
/// model's device and concatenates the results on the CPU (`[N, width]` f32). Sharded over the
/// ranks of `comm`: each runs its [`distributed::block`] of the images, and every rank gets all
/// the rows ([`distributed::Alone`]: one process runs them all).
pub fn map_view(
    model: &Model,
    view: &View,
    normalize: &Normalize,
    threads: usize,
    width: i64,
    comm: &dyn Collective,
    f: impl Fn(&Tensor) -> Tensor,
) -> Result<Tensor> {
    let device = model.vs.device();
    let lc = LoaderConfig::evaluation(normalize, threads);
    let plan: Vec<usize> = distributed::block(view.len(), comm.rank(), comm.world()).collect();
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
    let mine = if out.is_empty() {
        Tensor::zeros([0, width], (Kind::Float, Device::Cpu))
    } else {
        Tensor::cat(&out, 0)
    };
    distributed::gather_rows(comm, &mine, view.len())
}

/// Runs the backbone of `model` over every image of `view` (eval mode, no augmentation; in
/// `fast`'s precision and layout, the features back in fp32), sharded over the ranks of `comm`
/// (every rank gets every row).
pub fn extract(
    model: &Model,
    view: &View,
    normalize: &Normalize,
    threads: usize,
    fast: Fast,
    comm: &dyn Collective,
) -> Result<Features> {
    let x = map_view(model, view, normalize, threads, model.feature_dim(), comm, |x| {
        fast.run(x, |x| model.forward_features(x, false))
    })?;
    let labels: Vec<i64> = view.labels.iter().map(|&l| l as i64).collect();
    Ok(Features {
        x,
        y: Tensor::from_slice(&labels),
    })
}

/// Extracts and writes the features of every part (each file atomically); parts already written
/// are kept when they read back whole (`whole`). Sharded over the ranks of `comm`: rank 0
/// decides which parts to redo and writes them; the others compute their blocks.
pub fn extract_all(
    model: &Model,
    ds: &Dataset,
    run: &RunDir,
    normalize: &Normalize,
    threads: usize,
    fast: Fast,
    comm: &dyn Collective,
) -> Result<()> {
    for part in [Part::Train, Part::Val, Part::Test] {
        let p = run.features(part);
        let view = ds.view(part);
        let redo = comm.rank() == 0 && !whole(model, &view, run, part);
        if distributed::broadcast_usize(comm, redo as usize)? == 0 {
            continue;
        }
        let f = extract(model, &view, normalize, threads, fast, comm)?;
        if comm.rank() == 0 {
            save_tensors(&p, &[("features".into(), f.x), ("labels".into(), f.y)])?;
        }
    }
    Ok(())
}

/// Whether `part`'s features file exists and reads back whole: `[N, D]` with the view's labels in
/// order (a truncated or foreign file is redone, not trusted because it exists).
fn whole(model: &Model, view: &View, run: &RunDir, part: Part) -> bool {
    let p = run.features(part);
    if !p.is_file() {
        return false;
    }
    let want: Vec<i64> = view.labels.iter().map(|&l| l as i64).collect();
    let whole = load(run, part).is_ok_and(|f| {
        f.x.size() == [want.len() as i64, model.feature_dim()]
            && Vec::<i64>::try_from(&f.y).is_ok_and(|y| y == want)
    });
    if !whole {
        tracing::warn!(
            "{} is not whole (truncated, or of other data): extracting again",
            p.display()
        );
    }
    whole
}

/// Reads the features of `part`.
pub fn load(run: &RunDir, part: Part) -> Result<Features> {
    let p = run.features(part);
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
