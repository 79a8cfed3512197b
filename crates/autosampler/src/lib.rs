//! autosampler: a coarse-to-fine auto-sampler for long-tailed image recognition.
//!
//! Most users need [`prelude`]: a [`Config`](config::Config) loaded from TOML, a
//! [`RunDir`](pipeline::RunDir), and [`pipeline::run`], which runs every stage of the config into
//! the run folder (reusing what is complete) and returns the typed results.
//!
//! ```no_run
//! use autosampler::prelude::*;
//!
//! let cfg = Config::load(std::path::Path::new("configs/demo.toml"))?;
//! let out = pipeline::run(&cfg, &RunDir::new("runs/demo"), &Silent)?;
//! if let Some(e) = &out.eval {
//!     println!("stage-1 test top-1 {:.2}", e.last.test.top1);
//! }
//! # Ok::<(), autosampler::Error>(())
//! ```
//!
//! The modules, from the bottom up (each imports only modules above it in this list or leaves):
//!
//! | module | what it holds |
//! |---|---|
//! | [`error`], [`fsx`], [`check`], [`rundir`], [`rng`], [`provenance`], [`runtime`] | errors, atomic files and locks, range checks, every path of a run folder, seeded generators, what built a result, allocator tuning |
//! | [`data`] | sources and their scanners ([`data::formats`]), the packed cache, the long-tailed split, augmentation and the loader |
//! | [`sampler`] | per-class weights into per-epoch index plans |
//! | [`model`], [`precision`], [`optim`] | the networks (ResNets, BBN, TDE's head), a model file's card, bf16 and channels-last, SGD |
//! | [`loss`], [`mix`], [`eval`] | the long-tailed losses, CutMix/Mixup and the guided CutMix locators, metrics |
//! | [`train`] | stage 1's trainer and stage 2's classifiers |
//! | [`features`], [`linear`], [`search`] | frozen features, the batched linear trainer, the coarse class-weight search |
//! | [`agent`] | the fine patch agent (Glance and Focus, PPO) |
//! | [`export`], [`distributed`] | the model file and prediction, data-parallel collectives |
//! | [`config`] | the whole TOML config, its sections checked at load |
//! | [`pipeline`] | the run folder, its stages and their driver, the report |
//! | [`table`], [`report`] | tables over many run folders, plots |
pub mod agent;
pub mod check;
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
pub mod rundir;
pub mod runtime;
pub mod sampler;
pub mod search;
pub mod table;
pub mod train;

pub use error::{Error, Result};

/// What a library user needs, in one import: the config, the pipeline and its run folder, the
/// dataset, the samplers, the network, the search, stage 2 and the patch agent.
pub mod prelude {
    pub use crate::agent::{Agent, AgentConfig};
    pub use crate::config::Config;
    pub use crate::data::{Dataset, Part};
    pub use crate::model::{Model, ModelConfig};
    pub use crate::pipeline::{self, Observer, Outcome, RunDir, Stage2Report};
    pub use crate::sampler::Sampler;
    pub use crate::search::{Best, SearchConfig};
    pub use crate::train::stage1::{EvalReport, Silent, TrainConfig};
    pub use crate::train::stage2::{Classifier, Stage2Config};
    pub use crate::{Error, Result};
}
