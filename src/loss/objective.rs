//! The configured loss applied to a training batch: partial labels, the
//! adaptive γ−, and the probability statistics the paper analyses.

use super::config::LossConfig;
use super::error::Result;
use super::{AsymmetricLoss, AsymmetricLossSingleLabel, PartialLabels, ProbabilityStats, Reduction};
use tch::Tensor;

pub enum Objective {
    Asymmetric {
        loss: AsymmetricLoss,
        /// `Some(weight)` when the data has unknown labels (1 / 0 / -1 targets).
        unknown_weight: Option<f64>,
    },
    SingleLabel(AsymmetricLossSingleLabel),
}

impl Objective {
    /// `partial`: whether the training data has unknown labels; without
    /// them the targets go to the loss as they are.
    pub fn new(config: &LossConfig, partial: bool) -> Result<Self> {
        Ok(match config {
            LossConfig::Asymmetric(s) => Objective::Asymmetric {
                loss: AsymmetricLoss::new(s.loss())?,
                unknown_weight: partial.then_some(s.unknown_weight),
            },
            LossConfig::SingleLabel(c) => Objective::SingleLabel(AsymmetricLossSingleLabel::new(*c)?),
        })
    }

    /// Whether the loss sums over the batch (the multi-label default) rather
    /// than averaging: gradients then add up across a batch split among processes.
    pub fn sums_over_batch(&self) -> bool {
        let reduction = match self {
            Objective::Asymmetric { loss, .. } => loss.config().reduction,
            Objective::SingleLabel(l) => l.config().reduction,
        };
        reduction == Reduction::Sum
    }

    /// The current γ− (both losses have one).
    pub fn gamma_neg(&self) -> f64 {
        match self {
            Objective::Asymmetric { loss, .. } => loss.config().gamma_neg,
            Objective::SingleLabel(l) => l.config().gamma_neg,
        }
    }

    pub fn set_gamma_neg(&mut self, gamma_neg: f64) -> Result<()> {
        if let Objective::Asymmetric { loss, .. } = self {
            *loss = loss.with_gamma_neg(gamma_neg)?;
        }
        Ok(())
    }

    /// The scalar loss of `logits` `[B, K]` against a loader batch's targets
    /// `[B, K]` (1 / 0, and -1 unknown for partial data; exactly one 1 per
    /// row for single-label data). The targets are trusted as the loader
    /// built them, so nothing waits for the device; a non-finite logit gives
    /// a non-finite loss.
    pub fn training_loss(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        match self {
            Objective::Asymmetric { loss, unknown_weight: None } => loss.forward_unchecked(logits, targets, None),
            Objective::Asymmetric { loss, unknown_weight: Some(weight) } => {
                let partial = PartialLabels::from_states_unchecked(targets, *weight)?;
                loss.forward_unchecked(logits, &partial.targets, Some(&partial.weights))
            }
            Objective::SingleLabel(loss) => loss.forward_onehot_unchecked(logits, targets),
        }
    }
}

/// The sums behind p_t+ and p_t- of a loader batch over its known labels
/// (targets 1 / 0 / -1 unknown), as a `[4]` f64 tensor left on the device
/// ([`ProbabilityStats::from_sums`] reads them).
pub fn batch_sums(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let known = targets.f_ge(0.0)?;
    let binary = targets.f_clamp_min(0.0)?;
    ProbabilityStats::sums_on_device(logits, &binary, Some(&known))
}
