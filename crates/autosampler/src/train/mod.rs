//! Training: schedules, the SGD optimiser, stage-1 representation learning with checkpoints.
pub mod checkpoint;
pub mod schedule;
pub mod stage1;
pub mod stage2;
