//! The stages of a run folder, one file each: the data stage ([`data`]), then the [`Step`]s the
//! driver runs, in the order of [`STEPS`].
pub(crate) mod agent;
pub(crate) mod data;
pub(crate) mod eval;
pub(crate) mod export;
pub(crate) mod features;
pub(crate) mod search;
pub(crate) mod stage1;
pub(crate) mod stage2;

use super::driver::Step;

/// Every stage after the data stage, in order.
pub(crate) static STEPS: &[&dyn Step] = &[
    &agent::Agent,
    &agent::Locations,
    &stage1::Stage1,
    &eval::Eval,
    &features::Features,
    &search::Search,
    &stage2::Stage2,
    &export::Export,
];
