//! One-cycle learning rate and β1, as PyTorch's `OneCycleLR` with cosine
//! annealing (two phases): the rate climbs from `max_lr / div_factor` to
//! `max_lr` over `pct_start` of the steps and anneals to
//! `initial / final_div_factor`; β1 moves the opposite way between
//! `beta1_max` and `beta1_min`.

use super::optimizer::StepHyper;
use crate::config::{at_least_one, in_unit, key_error, positive, Result, Validate};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// PyTorch's OneCycleLR with cosine annealing, stepped every optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OneCycleConfig {
    /// Peak learning rate (the reference: 1e-4 to 2e-4).
    pub max_lr: f64,
    /// Share of the steps spent warming up to max_lr.
    pub pct_start: f64,
    /// The rate starts at max_lr / div_factor.
    pub div_factor: f64,
    /// The rate ends at max_lr / div_factor / final_div_factor.
    pub final_div_factor: f64,
    /// β1 at the peak rate; it cycles opposite to the rate.
    pub beta1_min: f64,
    /// β1 at the start and the end.
    pub beta1_max: f64,
    /// Epochs the schedule spans; training may stop earlier (train.epochs).
    pub scheduled_epochs: usize,
}

impl Default for OneCycleConfig {
    fn default() -> Self {
        Self {
            max_lr: 2e-4,
            pct_start: 0.2,
            div_factor: 25.0,
            final_div_factor: 1e4,
            beta1_min: 0.85,
            beta1_max: 0.95,
            scheduled_epochs: 80,
        }
    }
}

impl Validate for OneCycleConfig {
    fn validate(&self) -> Result<()> {
        positive("schedule.max_lr", self.max_lr)?;
        positive("schedule.div_factor", self.div_factor)?;
        positive("schedule.final_div_factor", self.final_div_factor)?;
        if !(self.pct_start > 0.0 && self.pct_start < 1.0) {
            return Err(key_error("schedule.pct_start", format!("must lie in (0, 1), got {}", self.pct_start)));
        }
        in_unit("schedule.beta1_min", self.beta1_min)?;
        in_unit("schedule.beta1_max", self.beta1_max)?;
        at_least_one("schedule.scheduled_epochs", self.scheduled_epochs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneCycle {
    config: OneCycleConfig,
    total_steps: usize,
}

fn cosine(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
}

impl OneCycle {
    /// `total_steps` = scheduled epochs × optimizer steps per epoch. The
    /// warm-up must span more than one step, or its cosine divides by zero.
    pub fn new(config: OneCycleConfig, total_steps: usize) -> Result<Self> {
        let warm_up = config.pct_start * total_steps as f64;
        if warm_up <= 1.0 {
            let message = format!(
                "the warm-up must span more than one step, but pct_start × total steps = {} × {total_steps} = {warm_up} \
                 (total steps = schedule.scheduled_epochs × optimizer steps per epoch); raise schedule.pct_start or \
                 schedule.scheduled_epochs",
                config.pct_start
            );
            return Err(key_error("schedule.pct_start", message));
        }
        Ok(Self { config, total_steps })
    }

    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// Learning rate and β1 for optimizer step `step` (0-based).
    pub fn at(&self, step: usize) -> StepHyper {
        let c = &self.config;
        let initial = c.max_lr / c.div_factor;
        let min = initial / c.final_div_factor;
        let warm_end = c.pct_start * self.total_steps as f64 - 1.0;
        let last = self.total_steps as f64 - 1.0;
        let t = step as f64;
        if t <= warm_end {
            let pct = t / warm_end;
            StepHyper { lr: cosine(initial, c.max_lr, pct), beta1: cosine(c.beta1_max, c.beta1_min, pct) }
        } else {
            let pct = ((t - warm_end) / (last - warm_end)).min(1.0);
            StepHyper { lr: cosine(c.max_lr, min, pct), beta1: cosine(c.beta1_min, c.beta1_max, pct) }
        }
    }
}
