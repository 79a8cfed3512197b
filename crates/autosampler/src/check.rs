//! Range checks of config values: a leaf module that the building blocks (loss, mix, augmentation,
//! the agent, stage 1) check their own sections with, so that none of them imports the config.
use crate::Result;

/// Range checks of one config section: each error names `[section] key` and the bad value (NaN
/// included), so a bad config is refused at load, before any stage runs.
pub struct Ranges(pub &'static str);

impl Ranges {
    /// A finite number > 0.
    pub fn positive(&self, key: &str, v: f64) -> Result<()> {
        if v > 0.0 && v.is_finite() {
            Ok(())
        } else {
            Err(crate::invalid!(
                "[{}] {key} must be a finite number > 0, got {v}",
                self.0
            ))
        }
    }
    /// A finite number ≥ 0.
    pub fn non_negative(&self, key: &str, v: f64) -> Result<()> {
        if v >= 0.0 && v.is_finite() {
            Ok(())
        } else {
            Err(crate::invalid!(
                "[{}] {key} must be a finite number ≥ 0, got {v}",
                self.0
            ))
        }
    }
    /// A number in [0, 1) (momentum).
    pub fn unit_open(&self, key: &str, v: f64) -> Result<()> {
        if (0.0..1.0).contains(&v) {
            Ok(())
        } else {
            Err(crate::invalid!("[{}] {key} must be in [0, 1), got {v}", self.0))
        }
    }
    /// A number in [0, 1] (a probability).
    pub fn unit(&self, key: &str, v: f64) -> Result<()> {
        if (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            Err(crate::invalid!("[{}] {key} must be in [0, 1], got {v}", self.0))
        }
    }
    /// A count ≥ `min`.
    pub fn at_least(&self, key: &str, v: usize, min: usize) -> Result<()> {
        if v >= min {
            Ok(())
        } else {
            Err(crate::invalid!("[{}] {key} must be ≥ {min}, got {v}", self.0))
        }
    }
    /// `micro_batches`: the shares each batch is cut into, from 1 to `batch_size`.
    pub fn micro_batches(&self, v: usize, batch_size: usize) -> Result<()> {
        self.at_least("micro_batches", v, 1)?;
        if v > batch_size {
            return Err(crate::invalid!(
                "[{}] micro_batches must be at most batch_size ({batch_size}), got {v}",
                self.0
            ));
        }
        Ok(())
    }
    /// "cpu", "cuda" or "cuda:N" (whether the device exists is checked when a stage starts).
    pub fn device(&self, key: &str, v: &str) -> Result<()> {
        let ok =
            v == "cpu" || v == "cuda" || v.strip_prefix("cuda:").is_some_and(|n| n.parse::<u32>().is_ok());
        if ok {
            Ok(())
        } else {
            Err(crate::invalid!(
                "[{}] {key} = \"{v}\" is unrecognized: expected cpu, cuda or cuda:N",
                self.0
            ))
        }
    }
}
