//! Optimisers, written so their state goes into checkpoints (a resumed run continues bit for bit):
//! [`Sgd`] for stage 1, stage 2 and the agent's encoders; [`Adam`] for the agent's policy and the
//! class-weight search.
pub mod adam;
pub mod sgd;

pub use adam::Adam;
pub use sgd::{Sam, Sgd};
