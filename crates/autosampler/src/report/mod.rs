//! Plots (PNG via `plotters`, font embedded) and, later, the HTML report.
pub mod html;
pub mod plot;
