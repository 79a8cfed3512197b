//! Batches: an epoch's index plan cut into batches, each assembled (augmented, normalised) on a
//! worker thread into a `tch` tensor, delivered in plan order.
//!
//! Image `k` of the plan is augmented with the generator `chacha(seed, [epoch, k])`, so a batch's
//! content depends on (seed, epoch, plan) only — never on the number of threads or their timing.
use super::augment::{apply, Augment, Cutout, Lut, Normalize, Window};
use super::randaugment::{AutoAugment, RandAugment};
use super::View;
use crate::rng::chacha;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use tch::Tensor;

/// How batches are made.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Worker threads assembling batches (at least 1).
    pub threads: usize,
    pub augment: Augment,
    /// RandAugment on the source image before `augment`'s crop and flip.
    pub randaugment: Option<RandAugment>,
    /// AutoAugment's policy, where RandAugment goes (a config has one or the other).
    pub autoaugment: Option<AutoAugment>,
    /// Cutout on the normalised image, after the crop and flip.
    pub cutout: Option<Cutout>,
    pub normalize: Normalize,
    /// Drop a last, smaller batch.
    pub drop_last: bool,
    pub seed: u64,
}

impl LoaderConfig {
    /// Evaluation batches: 256 images in view order, no augmentation, nothing dropped.
    pub fn evaluation(normalize: &Normalize, threads: usize) -> LoaderConfig {
        LoaderConfig {
            batch_size: 256,
            threads,
            augment: Augment::None,
            randaugment: None,
            autoaugment: None,
            cutout: None,
            normalize: *normalize,
            drop_last: false,
            seed: 0,
        }
    }
}

/// A contiguous run of a batch's equal shares: shares `from..to` of `of`. Share `s` of a batch of
/// `n` images is its images `n·s/of .. n·(s+1)/of` — how data-parallel ranks (and micro-batches)
/// divide the same global batch, so that the union over ranks is the single-process batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    pub from: usize,
    pub to: usize,
    pub of: usize,
}

impl Shares {
    /// The whole batch.
    pub const ALL: Shares = Shares {
        from: 0,
        to: 1,
        of: 1,
    };

    /// The image range of share `s` in a batch of `n`.
    pub fn range(n: usize, s: usize, of: usize) -> std::ops::Range<usize> {
        n * s / of..n * (s + 1) / of
    }

    /// The image range of these shares in a batch of `n`.
    pub fn images(&self, n: usize) -> std::ops::Range<usize> {
        n * self.from / self.of..n * self.to / self.of
    }
}

/// One batch.
pub struct Batch {
    /// `[batch, 3, H, W]` f32, normalised.
    pub images: Tensor,
    /// `[batch]` i64 class labels.
    pub labels: Tensor,
    /// Positions in the view of the batch's images.
    pub index: Vec<usize>,
    /// The augmentation window of each image (to map boxes and patches through it).
    pub windows: Vec<Window>,
    /// Images in the whole batch of the plan (more than `labels` holds when only shares of it
    /// were assembled).
    pub whole: usize,
}

struct Assembled {
    pixels: Vec<f32>,
    labels: Vec<i64>,
    index: Vec<usize>,
    windows: Vec<Window>,
    whole: usize,
}

/// Runs `f` on every batch of `plan` (positions into `view`) for `epoch`, in order. Stops at the
/// first error, from `f` or from assembling.
pub fn for_each_batch(
    view: &View,
    plan: &[usize],
    cfg: &LoaderConfig,
    epoch: usize,
    f: impl FnMut(Batch) -> Result<()>,
) -> Result<()> {
    for_each_batch_shares(view, plan, cfg, epoch, Shares::ALL, f)
}

/// [`for_each_batch`] assembling only `shares` of each batch (a data-parallel rank's part). An
/// image is augmented exactly as in the whole batch: its generator is keyed by its plan position.
pub fn for_each_batch_shares(
    view: &View,
    plan: &[usize],
    cfg: &LoaderConfig,
    epoch: usize,
    shares: Shares,
    mut f: impl FnMut(Batch) -> Result<()>,
) -> Result<()> {
    if shares.of == 0 || shares.from >= shares.to || shares.to > shares.of {
        return Err(crate::invalid!(
            "loader shares {}..{} of {}: need from < to <= of",
            shares.from,
            shares.to,
            shares.of
        ));
    }
    if cfg.batch_size == 0 {
        return Err(crate::invalid!("batch_size must be at least 1"));
    }
    let s = view.size;
    let o = cfg.augment.out_size(s) as usize;
    let lut = Lut::new(&cfg.normalize);
    let mut starts: Vec<usize> = (0..plan.len()).step_by(cfg.batch_size).collect();
    if cfg.drop_last && !plan.len().is_multiple_of(cfg.batch_size) {
        starts.pop();
    }
    let threads = cfg.threads.max(1);
    let stop = AtomicBool::new(false);
    let assemble = |b: usize| -> Assembled {
        let whole = &plan[starts[b]..(starts[b] + cfg.batch_size).min(plan.len())];
        let part = shares.images(whole.len());
        let start = starts[b] + part.start;
        let idx = &whole[part];
        let mut pixels = vec![0f32; idx.len() * 3 * o * o];
        let mut windows = Vec::with_capacity(idx.len());
        let (mut buf, mut tmp) = (Vec::new(), Vec::new());
        for (j, (&i, out)) in idx.iter().zip(pixels.chunks_mut(3 * o * o)).enumerate() {
            let mut rng = chacha(cfg.seed, &[epoch as u64, (start + j) as u64]);
            let img = match (&cfg.randaugment, &cfg.autoaugment) {
                (Some(ra), _) => {
                    buf.clear();
                    buf.extend_from_slice(view.image(i));
                    ra.apply(&mut buf, s as usize, &mut tmp, &mut rng);
                    &buf[..]
                }
                (None, Some(aa)) => {
                    buf.clear();
                    buf.extend_from_slice(view.image(i));
                    aa.apply(&mut buf, s as usize, &mut tmp, &mut rng);
                    &buf[..]
                }
                (None, None) => view.image(i),
            };
            windows.push(apply(&cfg.augment, img, s, out, &lut, &mut rng));
            if let Some(c) = &cfg.cutout {
                c.apply(out, o, &mut rng);
            }
        }
        Assembled {
            pixels,
            labels: idx.iter().map(|&i| view.labels[i] as i64).collect(),
            index: idx.to_vec(),
            windows,
            whole: whole.len(),
        }
    };
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<(usize, Assembled)>(2 * threads);
        for w in 0..threads {
            let tx = tx.clone();
            let (assemble, stop, n) = (&assemble, &stop, starts.len());
            scope.spawn(move || {
                for b in (w..n).step_by(threads) {
                    if stop.load(Ordering::Relaxed) || tx.send((b, assemble(b))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut next = 0;
        let result = (|| {
            for (b, a) in rx.iter() {
                pending.insert(b, a);
                while let Some(a) = pending.remove(&next) {
                    let n = a.labels.len() as i64;
                    let images = Tensor::from_slice(&a.pixels).view([n, 3, o as i64, o as i64]);
                    let labels = Tensor::from_slice(&a.labels);
                    f(Batch {
                        images,
                        labels,
                        index: a.index,
                        windows: a.windows,
                        whole: a.whole,
                    })?;
                    next += 1;
                }
            }
            Ok::<(), Error>(())
        })();
        stop.store(true, Ordering::Relaxed);
        drop(rx); // unblocks workers waiting on a full channel
        result
    })
}
