//! autosampler: a coarse-to-fine auto-sampler for long-tailed image recognition.
//!
//! The modules follow the pipeline (see `ARCHITECTURE.md`): [`data`] reads sources, builds the
//! long-tailed split and the packed cache and assembles augmented batches; [`sampler`] turns
//! per-class weights into per-epoch index plans; [`report`] draws the plots.
pub mod agent;
pub mod config;
pub mod data;
pub mod distributed;
pub mod error;
pub mod eval;
pub mod export;
pub mod features;
pub mod fsx;
pub mod linear;
pub mod loss;
pub mod mix;
pub mod model;
pub mod optim;
pub mod pipeline;
pub mod precision;
pub mod provenance;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod sampler;
pub mod search;
pub mod train;

pub use error::{Error, Result};
