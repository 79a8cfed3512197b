//! Mixed precision through libtorch's own autocast, on CPU and CUDA.
//!
//! `precision = "bf16"` runs a forward pass inside `torch.autocast(device, dtype=torch.bfloat16)`
//! as PyTorch sets it: libtorch's op lists decide what runs in bf16 (convolutions, matrix
//! products, linear layers) and what stays fp32. The weights, the flat gradient and the optimiser
//! state stay fp32 (autocast casts a weight for the forward and its gradient comes back fp32);
//! logits are turned back to fp32 before the loss and the softmax. `"auto"` is bf16 where the
//! hardware computes it natively (a CPU with `avx512_bf16` or `amx_bf16`, a CUDA device of compute
//! capability 8.0 or newer) and fp32 elsewhere.
//!
//! tch 0.24 reaches only the deprecated CUDA-only switch; `csrc/autocast.cpp`, compiled against the
//! same libtorch's headers, sets the per-device state.
use crate::{invalid, Result};
use serde::{Deserialize, Serialize};
use std::sync::Once;
use tch::Device;

/// The arithmetic a section trains and evaluates in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32.
    Fp32,
    /// bf16 autocast.
    Bf16,
    /// bf16 where the device has native bf16, fp32 elsewhere; a run folder that already holds the
    /// stage keeps the precision it was started with.
    #[default]
    Auto,
}

impl Precision {
    /// Parses a config value; the error names `key` and lists what is supported.
    pub fn parse(key: &str, s: &str) -> Result<Precision> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            "auto" => Ok(Precision::Auto),
            "fp16" => Err(invalid!(
                "{key} = \"fp16\" is not supported (fp16 needs loss scaling, which the trainers do not do): use \"bf16\", \"fp32\" or \"auto\""
            )),
            other => Err(invalid!(
                "{key} = {other:?} is not a precision: expected \"fp32\", \"bf16\" or \"auto\""
            )),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Auto => "auto",
        }
    }
    /// `Auto` made concrete for `device`: bf16 where it is native there.
    pub fn on(self, device: Device) -> Precision {
        match self {
            Precision::Auto if native_bf16(device) => Precision::Bf16,
            Precision::Auto => Precision::Fp32,
            p => p,
        }
    }
    /// Whether a forward pass on `device` runs in bf16 autocast (`Auto` resolved for `device`).
    pub fn bf16_on(self, device: Device) -> bool {
        self.on(device) == Precision::Bf16
    }
}

/// Accepts `precision = "…"` with [`Precision::parse`]'s messages (serde's would list variants
/// only).
pub(crate) fn deserialize_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Precision>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| Precision::parse("precision", &s).map_err(serde::de::Error::custom))
        .transpose()
}

extern "C" {
    fn autosampler_autocast_enter(cuda: libc::c_int, enabled: libc::c_int) -> libc::c_long;
    fn autosampler_autocast_exit(cuda: libc::c_int, prev: libc::c_long);
    fn autosampler_cuda_has_bf16() -> libc::c_int;
}

/// Whether `device` computes bf16 natively: a CPU with the `avx512_bf16` or `amx_bf16` flag, or
/// a CUDA device of compute capability 8.0 or newer.
pub fn native_bf16(device: Device) -> bool {
    match device {
        Device::Cpu => cpu_has_bf16(),
        // SAFETY: reads libtorch's CUDA hooks; no arguments, no state changed.
        Device::Cuda(_) => unsafe { autosampler_cuda_has_bf16() != 0 },
        _ => false,
    }
}

fn cpu_has_bf16() -> bool {
    static FLAGS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FLAGS.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("flags")).map(|l| {
                    l.split_whitespace()
                        .any(|f| f == "avx512_bf16" || f == "amx_bf16")
                })
            })
            .unwrap_or(false)
    })
}

/// Runs `f` inside bf16 autocast on `device` when `bf16` is set (as `torch.autocast(device,
/// torch.bfloat16)` does), else plainly. The autocast state is the calling thread's; it is
/// restored when `f` returns or unwinds.
pub fn autocast<T>(bf16: bool, device: Device, f: impl FnOnce() -> T) -> T {
    if !bf16 {
        return f();
    }
    warn_if_emulated(device);
    let cuda = device.is_cuda() as libc::c_int;
    struct Restore(libc::c_int, libc::c_long);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: restores the thread-local autocast flags saved by the matching enter.
            unsafe { autosampler_autocast_exit(self.0, self.1) }
        }
    }
    // SAFETY: sets thread-local autocast flags; the guard restores them.
    let _restore = Restore(cuda, unsafe { autosampler_autocast_enter(cuda, 1) });
    f()
}

/// Says once per process that bf16 on hardware without native bf16 is emulated, and slow.
fn warn_if_emulated(device: Device) {
    // checked once per process (the first bf16 region's device), not on every forward pass
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if !native_bf16(device) {
            tracing::warn!(
                "precision = \"bf16\" on {device:?}, which has no native bf16 ({}): it runs, emulated and slower than fp32; \"auto\" picks fp32 here",
                if device.is_cuda() {
                    "compute capability below 8.0"
                } else {
                    "no avx512_bf16 or amx_bf16 in /proc/cpuinfo"
                }
            );
        }
    });
}

/// The error for a stage folder started in another precision than the config asks.
pub fn resume_refused(dir: &std::path::Path, was: Precision, now: Precision, key: &str) -> crate::Error {
    invalid!(
        "{} was started with {key} = \"{}\" and this config asks for \"{}\": a stage is resumed in the precision it started with. Keep {key} = \"{}\" (or \"auto\") to continue it, or start a new run: autosampler run --config <config> --out <new folder>",
        dir.display(),
        was.name(),
        now.name(),
        was.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn cpu_autocast_runs_convolutions_in_bf16_and_restores_the_state() {
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu));
        let conv = |x: &Tensor| x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        let y = autocast(true, Device::Cpu, || {
            // nested regions keep it on; the cache is cleared when the outer one closes
            let inner = autocast(true, Device::Cpu, || conv(&x));
            assert_eq!(inner.kind(), Kind::BFloat16);
            conv(&x)
        });
        // torch.autocast("cpu", torch.bfloat16): F.conv2d(x, w, padding=1).dtype == torch.bfloat16
        assert_eq!(y.kind(), Kind::BFloat16);
        assert_eq!(conv(&x).kind(), Kind::Float, "off again after the region");
        assert_eq!(autocast(false, Device::Cpu, || conv(&x)).kind(), Kind::Float);
        // within bf16's 8-bit mantissa of the fp32 result
        let diff = (y.to_kind(Kind::Float) - conv(&x)).abs().max().double_value(&[]);
        let scale = conv(&x).abs().max().double_value(&[]);
        assert!(
            diff <= scale / 64.0,
            "bf16 conv differs by {diff} (scale {scale})"
        );
    }

    #[test]
    fn precision_values_are_parsed_naming_the_key() {
        assert_eq!(
            Precision::parse("[train] precision", "bf16").unwrap(),
            Precision::Bf16
        );
        let e = Precision::parse("[train] precision", "fp16")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[train] precision = \"fp16\" is not supported"), "{e}");
        assert!(e.contains("\"bf16\", \"fp32\" or \"auto\""), "{e}");
        let e = Precision::parse("[agent] precision", "bf61")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[agent] precision = \"bf61\" is not a precision"),
            "{e}"
        );
        assert_eq!(Precision::Fp32.on(Device::Cpu), Precision::Fp32);
        assert_eq!(
            Precision::Auto.on(Device::Cpu),
            Precision::Auto.on(Device::Cpu).on(Device::Cpu)
        );
    }
}
