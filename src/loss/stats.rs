//! Probability analysis (paper §3.3, Eq. 9–10): the mean probability the
//! network gives positives, `p_t+`, the mean `1 - p` it gives negatives,
//! `p_t-`, and their gap `Δp = p_t+ - p_t-`.

use super::error::Result;
use super::validate::{check_multi_label, check_same_shape};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Running sums behind `p_t+` and `p_t-`. Batches [`merge`](Self::merge)
/// into epoch totals; means are exact over all merged elements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbabilityStats {
    pub positive_sum: f64,
    pub positive_count: u64,
    pub negative_sum: f64,
    pub negative_count: u64,
}

impl ProbabilityStats {
    /// Statistics of one batch, computed without gradient. `logits` and 0/1
    /// `targets` are `[B, K]`; `known` (`[B, K]` bool) excludes unknown
    /// labels of partially annotated data.
    pub fn from_batch(logits: &Tensor, targets: &Tensor, known: Option<&Tensor>) -> Result<Self> {
        check_multi_label(logits, targets)?;
        if let Some(known) = known {
            check_same_shape("known-label mask", known, logits)?;
        }
        let sums = Self::sums_on_device(logits, targets, known)?;
        Ok(Self::from_sums(&Vec::<f64>::try_from(sums.f_to_device(tch::Device::Cpu)?)?))
    }

    /// The four sums of a batch as a `[4]` f64 tensor on the logits' device
    /// (positive p, positives, negative 1 − p, negatives), without checks
    /// and without reading anything back: for training, whose inputs the
    /// loader wrote and which reads the sums only when it reports.
    pub fn sums_on_device(logits: &Tensor, targets: &Tensor, known: Option<&Tensor>) -> Result<Tensor> {
        tch::no_grad(|| {
            let p = logits.f_to_kind(Kind::Double)?.f_sigmoid()?;
            let y = targets.f_to_kind(Kind::Double)?;
            let known = match known {
                Some(mask) => mask.f_to_kind(Kind::Double)?,
                None => p.f_ones_like()?,
            };
            let positive = y.f_mul(&known)?;
            let negative = y.f_neg()?.f_add_scalar(1.0)?.f_mul(&known)?;
            Ok(Tensor::f_stack(
                &[
                    p.f_mul(&positive)?.f_sum(Kind::Double)?,
                    positive.f_sum(Kind::Double)?,
                    p.f_neg()?.f_add_scalar(1.0)?.f_mul(&negative)?.f_sum(Kind::Double)?,
                    negative.f_sum(Kind::Double)?,
                ],
                0,
            )?)
        })
    }

    /// The four sums as numbers, for a reduction across processes.
    pub fn to_sums(&self) -> [f64; 4] {
        [self.positive_sum, self.positive_count as f64, self.negative_sum, self.negative_count as f64]
    }

    /// Back from [`to_sums`](Self::to_sums) (added up over processes).
    pub fn from_sums(sums: &[f64]) -> Self {
        Self {
            positive_sum: sums[0],
            positive_count: sums[1].round() as u64,
            negative_sum: sums[2],
            negative_count: sums[3].round() as u64,
        }
    }

    pub fn merge(&mut self, other: &Self) {
        self.positive_sum += other.positive_sum;
        self.positive_count += other.positive_count;
        self.negative_sum += other.negative_sum;
        self.negative_count += other.negative_count;
    }

    /// `p_t+`: mean p over positives; `None` when there were none.
    pub fn p_pos(&self) -> Option<f64> {
        (self.positive_count > 0).then(|| self.positive_sum / self.positive_count as f64)
    }

    /// `p_t-`: mean (1 - p) over negatives; `None` when there were none.
    pub fn p_neg(&self) -> Option<f64> {
        (self.negative_count > 0).then(|| self.negative_sum / self.negative_count as f64)
    }

    /// `Δp = p_t+ - p_t-`; `None` unless both classes of label were seen.
    pub fn delta(&self) -> Option<f64> {
        Some(self.p_pos()? - self.p_neg()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_gap() {
        // p = σ(z): σ(0) = 0.5, σ(ln 3) = 0.75, σ(-ln 3) = 0.25.
        // Positives p = {0.5, 0.75} → p_t+ = 0.625. Negatives 1-p = {0.25, 0.75} → p_t- = 0.5.
        let ln3 = 3f64.ln();
        let logits = Tensor::from_slice(&[0.0, ln3, ln3, -ln3]).view([2, 2]);
        let targets = Tensor::from_slice(&[1.0, 1.0, 0.0, 0.0]).view([2, 2]);
        let stats = ProbabilityStats::from_batch(&logits, &targets, None).unwrap();
        assert!((stats.p_pos().unwrap() - 0.625).abs() < 1e-12);
        assert!((stats.p_neg().unwrap() - 0.5).abs() < 1e-12);
        assert!((stats.delta().unwrap() - 0.125).abs() < 1e-12);
        // Masking out the first negative leaves 1-p = {0.75}.
        let known = Tensor::from_slice(&[true, true, false, true]).view([2, 2]);
        let masked = ProbabilityStats::from_batch(&logits, &targets, Some(&known)).unwrap();
        assert_eq!(masked.negative_count, 1);
        assert!((masked.p_neg().unwrap() - 0.75).abs() < 1e-12);
    }

    #[test]
    fn merging_weights_by_count_and_empty_sides_are_none() {
        let mut a = ProbabilityStats { positive_sum: 1.0, positive_count: 2, negative_sum: 0.0, negative_count: 0 };
        assert_eq!(a.p_neg(), None);
        assert_eq!(a.delta(), None);
        a.merge(&ProbabilityStats { positive_sum: 2.0, positive_count: 2, negative_sum: 3.0, negative_count: 4 });
        assert_eq!(a.p_pos(), Some(0.75));
        assert_eq!(a.delta(), Some(0.0));
    }
}
