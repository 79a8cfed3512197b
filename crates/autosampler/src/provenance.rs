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
}

impl Provenance {
    /// This build, on `device` with `threads`.
    pub fn here(device: &str, threads: usize) -> Provenance {
        Provenance {
            version: VERSION.to_string(),
            commit: COMMIT.to_string(),
            device: device.to_string(),
            threads,
        }
    }
}
