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
//! - rank 0 alone chooses the best epoch and writes checkpoints and metrics; a resumed run starts
//!   from rank 0's checkpoint, broadcast to all ranks.
//!
//! Evaluation and feature extraction are sharded: each rank runs the model on its contiguous
//! [`block`] of the images and the rows are gathered on every rank ([`gather_rows`]). Rank 0's
//! batch-norm buffers are broadcast first, so that what is evaluated is rank 0's model.
use crate::Result;
use std::ops::Range;
use tch::{Device, Kind, Tensor};

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

/// Broadcasts rank 0's tensors into every rank's, in name order (the same on every rank, whatever
/// order they come in); an error names the tensor.
pub fn broadcast_named(c: &dyn Collective, mut named: Vec<(String, Tensor)>) -> Result<()> {
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in named {
        broadcast_into(c, &t).map_err(|e| crate::invalid!("broadcasting {name}: {e}"))?;
    }
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

/// The rows of `0..n` that rank `rank` of `world` computes in a sharded pass: contiguous blocks
/// in rank order, their sizes differing by at most one (an empty block when `n < world`).
pub fn block(n: usize, rank: usize, world: usize) -> Range<usize> {
    n * rank / world..n * (rank + 1) / world
}

/// Every rank's rows of an `[n, …]` f32 CPU tensor, in order: `mine` is this rank's
/// [`block`] of them, and the whole tensor is returned on every rank. (A sum over ranks of
/// zero-filled copies: every row has one non-zero contributor, so the sum is exact.)
pub fn gather_rows(c: &dyn Collective, mine: &Tensor, n: usize) -> Result<Tensor> {
    let rows = block(n, c.rank(), c.world());
    if c.world() == 1 {
        return Ok(mine.shallow_clone());
    }
    let mut shape = mine.size();
    if shape.first() != Some(&(rows.len() as i64)) {
        return Err(crate::invalid!(
            "rank {} gathers {:?} rows for its block {}..{} of {n}",
            c.rank(),
            shape.first(),
            rows.start,
            rows.end
        ));
    }
    shape[0] = n as i64;
    let all = Tensor::zeros(&shape, (Kind::Float, Device::Cpu));
    if !rows.is_empty() {
        let mut dst = all.narrow(0, rows.start as i64, rows.len() as i64);
        dst.copy_(&mine.to_kind(Kind::Float).to_device(Device::Cpu));
    }
    c.all_reduce_sum(&all)?;
    Ok(all)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_rows_in_rank_order() {
        assert_eq!(block(10, 0, 3), 0..3);
        assert_eq!(block(10, 1, 3), 3..6);
        assert_eq!(block(10, 2, 3), 6..10);
        assert_eq!(block(1, 0, 2), 0..0); // fewer rows than ranks: an empty block
        assert_eq!(block(1, 1, 2), 0..1);
        assert_eq!(block(7, 0, 1), 0..7);
    }

    #[test]
    fn one_rank_gathers_its_own_rows() {
        let t = Tensor::from_slice(&[1f32, 2., 3., 4.]).reshape([2, 2]);
        let g = gather_rows(&Alone, &t, 2).unwrap();
        assert_eq!(Vec::<f32>::try_from(g.reshape([-1])).unwrap(), [1., 2., 3., 4.]);
    }
}
