//! What stage 1 and the patch agent share in their epoch loops: the epoch's commit point (one
//! checkpoint that carries the weights, the optimiser and the loop's state), reading it back on
//! resume, the readable copies (`state.json`, `metrics.jsonl`), and the NaN stop.
use crate::{fsx, invalid, Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

/// The entry of a checkpoint that holds the loop's state (UTF-8 JSON bytes) it was written with.
pub const STATE_KEY: &str = "autosampler.state";

/// The header key (`__metadata__`) under which a checkpoint carries its own digest: SHA-256 of
/// its tensors (state included), checked on every read.
pub const DIGEST_KEY: &str = "autosampler.sha256";

/// Commits an epoch: `tensors` (weights and optimiser) and `state` in one file, one atomic rename;
/// then the readable copies `state.json` (beside the checkpoint) and `metrics.jsonl` (`history`).
/// A kill at any instant leaves the previous epoch's checkpoint or this one; the copies are
/// rewritten from it on resume.
pub fn commit<S: Serialize, L: Serialize>(
    checkpoint: &Path,
    mut tensors: Vec<(String, Tensor)>,
    state: &S,
    state_json: &Path,
    metrics: &Path,
    history: &[L],
) -> Result<()> {
    let json = serde_json::to_vec(state).expect("serialisable");
    tensors.push((STATE_KEY.to_string(), Tensor::from_slice(&json)));
    crate::model::save_tensors_sealed(checkpoint, &tensors, DIGEST_KEY)?;
    fsx::write_json(state_json, state)?;
    let lines: String = history
        .iter()
        .map(|l| serde_json::to_string(l).expect("serialisable") + "\n")
        .collect();
    fsx::write_atomic(metrics, lines.as_bytes())
}

/// Reads a checkpoint: its tensors, and the state it carries (`None` for a checkpoint written
/// before states were embedded). The checkpoint's content is checked against the digest it
/// carries first (one written before digests were is read as it is): a damaged checkpoint stops
/// the resume naming the file, and the command that discards it, instead of training on from
/// damaged weights.
pub fn read<S: DeserializeOwned>(checkpoint: &Path) -> Result<(HashMap<String, Tensor>, Option<S>)> {
    crate::model::check_sealed(checkpoint, DIGEST_KEY).map_err(|e| {
        let state = checkpoint.with_file_name("state.json");
        invalid!(
            "{e}. Training cannot resume from it; to discard it and train this stage from its first epoch: rm {} {}",
            checkpoint.display(),
            state.display()
        )
    })?;
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(checkpoint)
        .map_err(|e| Error::format(checkpoint.display(), format!("cannot read checkpoint: {e}")))?
        .into_iter()
        .collect();
    let state = match tensors.get(STATE_KEY) {
        Some(t) => Some(
            serde_json::from_slice(&Vec::<u8>::try_from(t)?)
                .map_err(|e| Error::format(checkpoint.display(), format!("bad embedded state: {e}")))?,
        ),
        None => None,
    };
    Ok((tensors, state))
}

/// The NaN stop: an error when `loss` is not finite (or exploded past 1e4), saying where and that
/// the last good checkpoint is kept.
pub fn check_loss(loss: f64, what: &str, position: &str, kept: &Path) -> Result<()> {
    if loss.is_finite() && loss <= 1e4 {
        return Ok(());
    }
    if !kept.is_file() {
        return Err(invalid!(
            "{what} is {loss} at {position}: training stopped before its first epoch ended, so there is no checkpoint to keep (lower the learning rate, or check the data)"
        ));
    }
    Err(invalid!(
        "{what} is {loss} at {position}: training stopped; the last good checkpoint is kept in {}",
        kept.display()
    ))
}
