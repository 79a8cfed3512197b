//! Data-parallel training: the collectives stage 1 needs, behind a trait that the process group
//! implements.
//!
//! The library does not talk to a network: `tch` exposes no distributed API, and we do not write
//! our own all-reduce. The process group is PyTorch's (`torch.distributed`: c10d with Gloo on CPU,
//! NCCL on CUDA), driven from the Python package (`python -m autosampler.distributed`, launched by
//! `torchrun`), which hands an implementation of [`Collective`] to the Rust training loop. The
//! tensors cross without a copy: the Python side wraps the buffer's address in a `torch.Tensor`
//! view. See ARCHITECTURE.md, "Data-parallel training".
//!
//! What data parallelism means here (stage 1):
//! - every rank runs the same epoch plan (seeded, global) and assembles only its shares of each
//!   batch ([`crate::data::loader::Shares`]): the union over ranks is the single-process batch, and
//!   each image is augmented exactly as it would be there;
//! - each rank scales its loss by its share of the batch (`n_r / n`), so the all-reduced **sum** of
//!   the flat gradient is the gradient of the combined batch's mean loss (even for a last, uneven
//!   batch);
//! - batch-norm statistics are each rank's own, as DistributedDataParallel's default; rank 0's
//!   running statistics are the ones evaluated and saved (DDP broadcasts rank 0's to the others
//!   each step, which leaves rank 0's unchanged). SyncBN is not offered;
//! - rank 0 alone evaluates, chooses the best epoch and writes checkpoints and metrics; a resumed
//!   run starts from rank 0's checkpoint, broadcast to all ranks.
use crate::Result;
use tch::{Kind, Tensor};

/// The collectives of a process group of `world()` ranks. Every rank must call them in the same
/// order with tensors of the same size, kind and device; the tensors are contiguous.
pub trait Collective {
    /// This process's rank, `0..world()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn world(&self) -> usize;
    /// Replaces `t` (in place) with the element-wise sum of every rank's `t`.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<()>;
    /// Replaces `t` (in place) with rank `root`'s `t`.
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<()>;
    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<()>;
}

/// Broadcasts rank 0's `t` into every rank's `t` (any layout: a non-contiguous tensor goes
/// through a contiguous copy).
pub fn broadcast_into(c: &dyn Collective, t: &Tensor) -> Result<()> {
    if t.is_contiguous() {
        return c.broadcast(t, 0);
    }
    let tmp = t.contiguous();
    c.broadcast(&tmp, 0)?;
    tch::no_grad(|| {
        let mut t = t.shallow_clone();
        t.copy_(&tmp);
    });
    Ok(())
}

/// Rank 0's value of a count (an epoch number, a flag) on every rank.
pub fn broadcast_usize(c: &dyn Collective, v: usize) -> Result<usize> {
    let t = Tensor::from_slice(&[v as i64]);
    c.broadcast(&t, 0)?;
    Ok(t.int64_value(&[0]) as usize)
}

/// The sum over ranks of a few f64 totals (losses, counts).
pub fn sum_f64(c: &dyn Collective, v: &[f64]) -> Result<Vec<f64>> {
    let t = Tensor::from_slice(v).to_kind(Kind::Double);
    c.all_reduce_sum(&t)?;
    Ok(Vec::<f64>::try_from(&t)?)
}

/// A group of one: every collective is the identity. What a single process is.
pub struct Alone;

impl Collective for Alone {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _: &Tensor) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _: &Tensor, _: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
