//! The stages of a run folder, one file each: the data stage ([`data`]), then the [`Step`]s the
//! driver runs in order (see [`super::driver::STEPS`]).
//!
//! [`Step`]: super::driver::Step
pub(crate) mod agent;
pub(crate) mod data;
pub(crate) mod eval;
pub(crate) mod export;
pub(crate) mod features;
pub(crate) mod search;
pub(crate) mod stage1;
pub(crate) mod stage2;
