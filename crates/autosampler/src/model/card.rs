//! A model file's card and the file opened: `model.safetensors` holds the network's tensors under
//! PyTorch's names and a [`ModelCard`] in its header (`__metadata__`, key `autosampler`). The
//! export stage writes it ([`write()`]); prediction, the CAM locator and the agent's `init` open it
//! ([`open`]).
use super::fast::Fast;
use super::{Model, ModelConfig};
use crate::data::augment::Normalize;
use crate::data::source::Resize;
use crate::precision::Precision;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Tensor};

/// The header key of the card.
pub const CARD_KEY: &str = "autosampler";
/// The card's format name.
pub const FORMAT: &str = "autosampler.model/1";

/// What a model file says of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: String,
    pub model: ModelConfig,
    pub classes: Vec<String>,
    /// Side of the square input images.
    pub input_size: u32,
    /// How images of another size are brought to `input_size`.
    pub resize: Resize,
    pub normalize: Normalize,
    /// Which classifier the file holds ("stage 1", or stage 2's with the weights it used).
    pub classifier: String,
    /// The run it was exported from.
    pub run: String,
}

/// Writes `model`'s tensors, with `head` (`fc.weight [C, D]`, `fc.bias [C]`) in place of its
/// classifier when given (a cosine head's `fc.weight [D, C]` included: the card's `model.head`
/// then says the head the file holds), and the card, atomically.
pub fn write(path: &Path, model: &Model, head: Option<(&Tensor, &Tensor)>, card: &ModelCard) -> Result<()> {
    let mut tensors = model.state_dict();
    if let Some((w, b)) = head {
        tensors.retain(|(name, _)| name != "fc.weight" && name != "fc.bias");
        tensors.push(("fc.weight".into(), w.shallow_clone()));
        tensors.push(("fc.bias".into(), b.shallow_clone()));
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let meta = HashMap::from([(
        CARD_KEY.to_string(),
        serde_json::to_string(card).expect("a card serialises"),
    )]);
    crate::model::save_tensors_with(path, &tensors, Some(meta))
}

/// A model file opened: the network on `device` and its card.
pub struct Exported {
    pub model: Model,
    pub card: ModelCard,
    /// How `export::logits` runs the network: plain fp32 as opened, see [`Exported::in_precision`].
    pub fast: Fast,
}

impl Exported {
    /// The same model run in `precision` (`auto`: bf16 where the device has it natively), with
    /// channels-last convolutions.
    pub fn in_precision(mut self, precision: Precision) -> Exported {
        let device = self.model.vs.device();
        let fast = Fast {
            bf16: precision.bf16_on(device),
            channels_last: true,
        };
        fast.prepare(&self.model);
        self.fast = fast;
        self
    }
}

/// Reads a model file written by [`write()`].
pub fn open(path: &Path, device: Device) -> Result<Exported> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(path.display(), format!("not a safetensors file: {e:?}")))?;
    let card_text = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CARD_KEY))
        .ok_or_else(|| {
            Error::format(
                path.display(),
                "no model card in the header (`__metadata__.autosampler`): write it with `autosampler run`, or evaluate the bare weights with `eval --checkpoint`",
            )
        })?;
    let card: ModelCard = serde_json::from_str(card_text)
        .map_err(|e| Error::format(path.display(), format!("bad model card: {e}")))?;
    if card.format != FORMAT {
        return Err(Error::format(
            path.display(),
            format!("model card format {:?}, expected {FORMAT:?}", card.format),
        ));
    }
    let mut model = Model::new(&card.model, card.classes.len() as i64, device)?;
    model.load(path)?;
    Ok(Exported {
        model,
        card,
        fast: Fast::PLAIN,
    })
}
