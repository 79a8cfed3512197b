//! Plots (PNG via `plotters`, font embedded). The HTML report that shows them is the pipeline's
//! last stage (`pipeline::report`).
pub mod plot;
