//! The data behind the paper's Figure 2 (loss of a negative sample against
//! its probability p) and Figure 3 (the loss gradient dL/dz against p).
//!
//! Both are produced by running [`AsymmetricLoss`] itself on a grid of
//! negative samples and differentiating it with autograd, so the curves
//! show what the training code computes, not a separate formula.

use crate::loss::{AsymmetricLoss, AsymmetricLossConfig, Result};
use tch::{Kind, Tensor};

/// One named curve over the shared p grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub name: String,
    pub values: Vec<f64>,
}

/// Curves sampled at the same x values (probabilities for Figures 2 and 3).
#[derive(Debug, Clone, PartialEq)]
pub struct CurveSet {
    /// Name of the x column in CSV output.
    pub x_name: String,
    pub x: Vec<f64>,
    pub curves: Vec<Curve>,
}

/// Loss and gradient of a negative sample at each `p` (f64), with the
/// full gradient of Eq. 8 (`detach_focusing` off).
pub fn negative_loss_and_gradient(loss: &AsymmetricLoss, probabilities: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
    let loss = loss.with_detach_focusing(false);
    let p = Tensor::from_slice(probabilities).to_kind(Kind::Double);
    let logits = p.f_logit(None::<f64>)?.f_detach()?.f_requires_grad_(true)?;
    let targets = logits.f_zeros_like()?;
    let per_element = loss.per_element(&logits.f_unsqueeze(0)?, &targets.f_unsqueeze(0)?)?;
    per_element.f_sum(Kind::Double)?.f_backward()?;
    let values = Vec::<f64>::try_from(per_element.f_detach()?.f_view([-1])?)?;
    let gradient = Vec::<f64>::try_from(logits.f_grad()?)?;
    Ok((values, gradient))
}

/// `n` probabilities evenly spaced strictly inside (0, 1).
pub fn probability_grid(n: usize) -> Vec<f64> {
    (1..=n).map(|i| i as f64 / (n + 1) as f64).collect()
}

/// p*: the probability at which a negative's gradient peaks. Above it the
/// gradient falls, so very confident "negatives", likely mislabeled
/// positives, pull on the network less and less. `None` when the gradient
/// rises all the way to p = 1 (CE, focal loss), i.e. nothing is rejected.
pub fn rejection_point(loss: &AsymmetricLoss) -> Result<Option<f64>> {
    let grid = probability_grid(100_000);
    let (_, gradient) = negative_loss_and_gradient(loss, &grid)?;
    let peak = gradient.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
    Ok(peak.filter(|&i| i + 1 < grid.len()).map(|i| grid[i]))
}

/// The loss family members drawn in Figures 2 and 3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurveParameters {
    /// The ASL being analysed (γ−, γ+, m).
    pub asl: AsymmetricLossConfig,
    /// γ of the focal-loss comparison curve.
    pub focal_gamma: f64,
}

impl Default for CurveParameters {
    fn default() -> Self {
        Self { asl: AsymmetricLossConfig::default(), focal_gamma: 2.0 }
    }
}

/// Figure 2: negative-sample loss for CE, focal loss and ASL.
/// Figure 3: dL/dz for CE, CE + probability shifting, asymmetric focusing and ASL.
pub fn figure_curves(params: &CurveParameters, points: usize) -> Result<(CurveSet, CurveSet)> {
    let asl = AsymmetricLoss::new(params.asl)?;
    let AsymmetricLossConfig { gamma_neg, gamma_pos, clip, .. } = params.asl;
    let probabilities = probability_grid(points);
    let members = |list: Vec<(String, AsymmetricLoss)>, take_gradient: bool| -> Result<CurveSet> {
        let mut curves = Vec::with_capacity(list.len());
        for (name, loss) in list {
            let (values, gradient) = negative_loss_and_gradient(&loss, &probabilities)?;
            curves.push(Curve { name, values: if take_gradient { gradient } else { values } });
        }
        Ok(CurveSet { x_name: "p".into(), x: probabilities.clone(), curves })
    };
    let figure2 = members(
        vec![
            ("CE".into(), AsymmetricLoss::bce()),
            (format!("focal g={}", params.focal_gamma), AsymmetricLoss::focal(params.focal_gamma)?),
            (asl_name(gamma_neg, gamma_pos, clip), asl),
        ],
        false,
    )?;
    let figure3 = members(
        vec![
            ("CE".into(), AsymmetricLoss::bce()),
            (format!("CE+PS m={clip}"), AsymmetricLoss::probability_shifting(clip)?),
            (format!("AF g-={gamma_neg}"), AsymmetricLoss::asymmetric_focusing(gamma_neg, gamma_pos)?),
            (asl_name(gamma_neg, gamma_pos, clip), asl),
        ],
        true,
    )?;
    Ok((figure2, figure3))
}

fn asl_name(gamma_neg: f64, gamma_pos: f64, clip: f64) -> String {
    format!("ASL g-={gamma_neg} g+={gamma_pos} m={clip}")
}

impl CurveSet {
    /// CSV with the x column followed by one column per curve.
    pub fn to_csv(&self) -> String {
        let mut out = self.x_name.clone();
        for curve in &self.curves {
            out.push(',');
            out.push_str(&curve.name);
        }
        out.push('\n');
        for (i, p) in self.x.iter().enumerate() {
            out.push_str(&p.to_string());
            for curve in &self.curves {
                out.push(',');
                // `+ 0.0` prints -0.0 (from negating a zero loss) as 0.
                out.push_str(&(curve.values[i] + 0.0).to_string());
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_point_exists_only_with_a_margin_or_focusing() {
        assert_eq!(rejection_point(&AsymmetricLoss::bce()).unwrap(), None);
        let p_star = rejection_point(&AsymmetricLoss::asl()).unwrap().unwrap();
        // The Eq. 8 gradient for (4, 0, 0.05) peaks near p = 0.90 (see the Figure 3 plot).
        assert!((0.85..0.95).contains(&p_star), "{p_star}");
    }

    #[test]
    fn csv_has_a_column_per_curve_and_no_negative_zero() {
        let (figure2, figure3) = figure_curves(&CurveParameters::default(), 9).unwrap();
        let csv = figure2.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "p,CE,focal g=2,ASL g-=4 g+=0 m=0.05");
        assert_eq!(lines.len(), 10);
        assert!(!csv.contains("-0,") && !csv.contains("-0\n"), "{csv}");
        assert_eq!(figure3.curves.len(), 4);
        // CE's loss at p = 0.1 is -ln(0.9).
        let ce_at_01: f64 = lines[1].split(',').nth(1).unwrap().parse().unwrap();
        assert!((ce_at_01 + 0.9f64.ln()).abs() < 1e-12);
    }
}
