//! How a network's forward passes run: bf16 autocast or fp32, channels-last or not ([`Fast`];
//! `[train]` makes it concrete with `Fast::of`).
use super::Model;
use crate::precision;
use tch::{Kind, Tensor};

/// How forward passes run: bf16 autocast or fp32, channels-last or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fast {
    pub bf16: bool,
    pub channels_last: bool,
}

impl Fast {
    /// Plain fp32, NCHW.
    pub const PLAIN: Fast = Fast {
        bf16: false,
        channels_last: false,
    };
    /// Puts `model`'s convolution weights in the layout asked for (before its weights are loaded:
    /// loading copies into them and keeps the layout).
    pub fn prepare(self, model: &Model) {
        if self.channels_last {
            to_channels_last(model);
        }
    }
    /// `f(x)` with `x` in the memory layout and inside the autocast region asked for; the result
    /// back in fp32.
    pub fn run(self, x: &Tensor, f: impl FnOnce(&Tensor) -> Tensor) -> Tensor {
        let x = if self.channels_last {
            channels_last(x)
        } else {
            x.shallow_clone()
        };
        let y = precision::autocast(self.bf16, x.device(), || f(&x));
        if self.bf16 {
            y.to_kind(Kind::Float)
        } else {
            y
        }
    }
}

/// The same NCHW tensor stored channels-last (NHWC in memory): libtorch picks channels-last
/// kernels for it. (tch has no memory-format API; a permute round trip gives the strides.)
pub fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

fn to_channels_last(model: &Model) {
    tch::no_grad(|| {
        for (_, mut v) in model.vs.variables() {
            if v.dim() == 4 {
                let cl = channels_last(&v);
                v.set_data(&cl);
            }
        }
    });
}
