//! One-cycle learning rate and β1, as PyTorch's `OneCycleLR` with cosine
//! annealing (two phases): the rate climbs from `max_lr / div_factor` to
//! `max_lr` over `pct_start` of the steps and anneals to
//! `initial / final_div_factor`; β1 moves the opposite way between
//! `beta1_max` and `beta1_min`.

use super::optimizer::StepHyper;
use crate::config::ScheduleSection;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneCycle {
    config: ScheduleSection,
    total_steps: usize,
}

fn cosine(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
}

impl OneCycle {
    /// `total_steps` = scheduled epochs × optimizer steps per epoch.
    pub fn new(config: ScheduleSection, total_steps: usize) -> Self {
        Self { config, total_steps: total_steps.max(2) }
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
