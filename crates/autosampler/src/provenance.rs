//! Where a result came from: the program's version and git commit, the device and the thread
//! count it ran with. Recorded in every stage's manifest (with the stage's wall time), in stage 1's
//! and the agent's `state.json`, and shown in the report.
use serde::{Deserialize, Serialize};

/// The crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the library was built from (`unknown` outside a git checkout).
pub const COMMIT: &str = match option_env!("AUTOSAMPLER_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// Version, commit, device, threads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub version: String,
    pub commit: String,
    pub device: String,
    pub threads: usize,
    /// The arithmetic and memory layout of the stage's tensor work ("bf16, channels-last",
    /// "fp32, NCHW"), where the stage trains or runs a network; absent in records made before it
    /// was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
}

impl Provenance {
    /// This build, on `device` with `threads`.
    pub fn here(device: &str, threads: usize) -> Provenance {
        Provenance {
            version: VERSION.to_string(),
            commit: COMMIT.to_string(),
            device: device.to_string(),
            threads,
            precision: None,
        }
    }
    /// The same, recording bf16 or fp32 and the memory layout.
    pub fn with_precision(self, bf16: bool, channels_last: bool) -> Provenance {
        Provenance {
            precision: Some(format!(
                "{}, {}",
                if bf16 { "bf16" } else { "fp32" },
                if channels_last { "channels-last" } else { "NCHW" }
            )),
            ..self
        }
    }
}
