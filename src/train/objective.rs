//! The configured loss applied to a batch, including partial labels and
//! the adaptive γ−, plus the probability statistics the paper analyses.

use super::error::Result;
use crate::config::LossSection;
use crate::loss::{AsymmetricLoss, AsymmetricLossConfig, AsymmetricLossSingleLabel, PartialLabels, ProbabilityStats};
use tch::{Kind, Tensor};

pub enum Objective {
    Asymmetric { loss: AsymmetricLoss, unknown_weight: f64 },
    SingleLabel(AsymmetricLossSingleLabel),
}

impl Objective {
    pub fn from_config(section: &LossSection) -> Result<Self> {
        Ok(match section {
            LossSection::Asymmetric(s) => Objective::Asymmetric {
                loss: AsymmetricLoss::new(AsymmetricLossConfig {
                    gamma_neg: s.gamma_neg,
                    gamma_pos: s.gamma_pos,
                    clip: s.clip,
                    eps: s.eps,
                    detach_focusing: s.detach_focusing,
                    reduction: s.reduction,
                })?,
                unknown_weight: s.unknown_weight,
            },
            LossSection::SingleLabel(c) => Objective::SingleLabel(AsymmetricLossSingleLabel::new(*c)?),
        })
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

    /// The scalar loss of `logits` `[B, K]` against targets `[B, K]` (1 / 0 / -1 unknown).
    pub fn loss(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        match self {
            Objective::Asymmetric { loss, unknown_weight } => {
                let partial = PartialLabels::from_states(&targets.f_to_kind(Kind::Int64)?, *unknown_weight)?;
                Ok(loss.forward_weighted(logits, &partial.targets, Some(&partial.weights))?)
            }
            Objective::SingleLabel(loss) => Ok(loss.forward(logits, &targets.f_argmax(1, false)?)?),
        }
    }
}

/// p_t+, p_t- of a batch over its known labels.
pub fn batch_stats(logits: &Tensor, targets: &Tensor) -> Result<ProbabilityStats> {
    let known = targets.f_ge(0.0)?;
    let binary = targets.f_clamp_min(0.0)?;
    Ok(ProbabilityStats::from_batch(logits, &binary, Some(&known))?)
}
