//! Adaptive asymmetry (paper §3.4, Eq. 11): a controller that moves γ−
//! after every batch so that the probability gap Δp settles at a target.
//!
//! Raising γ− down-weights easy negatives, which raises `p_t+` and lowers
//! `p_t-`, so Δp grows with γ−. The stable update is therefore
//! `γ− ← γ− + λ(Δp_target − Δp)`: γ− rises while Δp is below its target.
//! The sign matters: with Δp defined as above, `γ− + λ(Δp − Δp_target)`
//! lowers γ− while Δp is too small and runs away from the target.
//! `tests/adaptive.rs` trains a model with this controller and checks
//! that Δp converges.

use super::error::{LossError, Result};
use super::stats::ProbabilityStats;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveAsymmetryConfig {
    /// Δp_target; the paper's Table 3 uses values in 0..0.3.
    pub target_delta: f64,
    /// λ: step size of the γ− update per batch.
    pub lambda: f64,
    /// Lower clamp for γ−.
    pub gamma_neg_min: f64,
    /// Upper clamp for γ−.
    pub gamma_neg_max: f64,
    /// The controller follows an exponential moving average of the batches' Δp with this weight on the
    /// past (0 uses each batch's Δp as it is): a batch's Δp is noisy at small batch sizes.
    pub smoothing: f64,
    /// The largest change of γ− in one update.
    pub max_step: f64,
}

impl Default for AdaptiveAsymmetryConfig {
    fn default() -> Self {
        Self {
            target_delta: 0.1,
            lambda: 0.01,
            gamma_neg_min: 0.0,
            gamma_neg_max: 10.0,
            smoothing: 0.9,
            max_step: 0.02,
        }
    }
}

/// The γ− controller. Serializable, its whole state included, so that a
/// resumed run continues with exactly the same γ− (serde_json keeps f64
/// round-trip exact).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveAsymmetry {
    config: AdaptiveAsymmetryConfig,
    gamma_neg: f64,
    updates: u64,
    /// The smoothed Δp the controller acts on; `None` before the first batch.
    #[serde(default)]
    smoothed_delta: Option<f64>,
}

impl AdaptiveAsymmetry {
    /// Starts at `initial_gamma_neg` (the loss's `gamma_neg`), clamped into
    /// the configured bounds.
    pub fn new(config: AdaptiveAsymmetryConfig, initial_gamma_neg: f64) -> Result<Self> {
        let invalid = |name, value, reason| LossError::InvalidParameter { name, value, reason };
        if !(config.lambda.is_finite() && config.lambda >= 0.0) {
            return Err(invalid("lambda", config.lambda, "must be a finite number >= 0"));
        }
        if !(config.gamma_neg_min >= 0.0 && config.gamma_neg_min <= config.gamma_neg_max) {
            return Err(invalid(
                "gamma_neg_min",
                config.gamma_neg_min,
                "must satisfy 0 <= gamma_neg_min <= gamma_neg_max",
            ));
        }
        if !config.gamma_neg_max.is_finite() {
            return Err(invalid("gamma_neg_max", config.gamma_neg_max, "must be finite"));
        }
        if !(-1.0..=1.0).contains(&config.target_delta) {
            return Err(invalid("target_delta", config.target_delta, "a probability gap lies in [-1, 1]"));
        }
        if !(0.0..1.0).contains(&config.smoothing) {
            return Err(invalid("smoothing", config.smoothing, "must satisfy 0 <= smoothing < 1"));
        }
        if !(config.max_step > 0.0 && config.max_step.is_finite()) {
            return Err(invalid("max_step", config.max_step, "must be a finite number > 0"));
        }
        let gamma_neg = initial_gamma_neg.clamp(config.gamma_neg_min, config.gamma_neg_max);
        Ok(Self { config, gamma_neg, updates: 0, smoothed_delta: None })
    }

    pub fn gamma_neg(&self) -> f64 {
        self.gamma_neg
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The smoothed Δp the last update acted on.
    pub fn smoothed_delta(&self) -> Option<f64> {
        self.smoothed_delta
    }

    pub fn config(&self) -> &AdaptiveAsymmetryConfig {
        &self.config
    }

    /// Applies one update from a batch's statistics and returns the new γ−:
    /// `γ− ← γ− + clamp(λ(Δp_target − Δp̄), ±max_step)`, with Δp̄ the
    /// smoothed Δp. A batch without positives or without negatives leaves
    /// γ− unchanged.
    pub fn update(&mut self, batch: &ProbabilityStats) -> f64 {
        if let Some(delta) = batch.delta() {
            let weight = self.config.smoothing;
            let smoothed = self.smoothed_delta.map_or(delta, |past| weight * past + (1.0 - weight) * delta);
            self.smoothed_delta = Some(smoothed);
            let step = (self.config.lambda * (self.config.target_delta - smoothed))
                .clamp(-self.config.max_step, self.config.max_step);
            self.gamma_neg = (self.gamma_neg + step).clamp(self.config.gamma_neg_min, self.config.gamma_neg_max);
            self.updates += 1;
        }
        self.gamma_neg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(p_pos: f64, p_neg: f64) -> ProbabilityStats {
        ProbabilityStats { positive_sum: p_pos, positive_count: 1, negative_sum: p_neg, negative_count: 1 }
    }

    #[test]
    fn one_update_by_hand() {
        // Δp = 0.3 - 0.7 = -0.4, below the target 0.1: γ- = 4 + 0.1·(0.1 - (-0.4)) = 4.05.
        let config = AdaptiveAsymmetryConfig {
            target_delta: 0.1,
            lambda: 0.1,
            smoothing: 0.0,
            max_step: 1.0,
            ..Default::default()
        };
        let mut controller = AdaptiveAsymmetry::new(config, 4.0).unwrap();
        assert!((controller.update(&stats(0.3, 0.7)) - 4.05).abs() < 1e-12);
        assert_eq!(controller.updates(), 1);
    }

    #[test]
    fn clamps_and_skips_batches_without_a_gap() {
        let config = AdaptiveAsymmetryConfig {
            target_delta: 0.0,
            lambda: 100.0,
            gamma_neg_min: 1.0,
            gamma_neg_max: 5.0,
            smoothing: 0.0,
            max_step: 10.0,
        };
        let mut controller = AdaptiveAsymmetry::new(config, 3.0).unwrap();
        assert_eq!(controller.update(&stats(0.0, 1.0)), 5.0);
        assert_eq!(controller.update(&stats(1.0, 0.0)), 1.0);
        assert_eq!(controller.update(&ProbabilityStats::default()), 1.0);
        assert_eq!(controller.updates(), 2);
    }

    #[test]
    fn rejects_inverted_bounds() {
        let config = AdaptiveAsymmetryConfig { gamma_neg_min: 6.0, gamma_neg_max: 5.0, ..Default::default() };
        let err = AdaptiveAsymmetry::new(config, 4.0).unwrap_err();
        assert!(err.to_string().contains("gamma_neg_min"), "{err}");
    }
}
