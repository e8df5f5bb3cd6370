//! The ASL family against independent ground truth: central finite
//! differences in f64 of the hand-written formula (tests/common), the
//! paper's closed-form negative gradient (Eq. 8), and the exact zero
//! region below the margin.

mod common;

use asl::loss::{AsymmetricLoss, AsymmetricLossConfig};
use common::{binary, element_loss, focus_weight, log_factor, sigmoid, to_vec, uniform, Params};
use tch::{Kind, Tensor};

fn presets() -> Vec<(&'static str, AsymmetricLoss)> {
    vec![
        ("bce", AsymmetricLoss::bce()),
        ("focal(2)", AsymmetricLoss::focal(2.0).unwrap()),
        ("asymmetric focusing(4, 1)", AsymmetricLoss::asymmetric_focusing(4.0, 1.0).unwrap()),
        ("probability shifting(0.05)", AsymmetricLoss::probability_shifting(0.05).unwrap()),
        ("asl(4, 0, 0.05)", AsymmetricLoss::asl()),
        (
            "asl(3, 1, 0.2)",
            AsymmetricLoss::new(AsymmetricLossConfig {
                gamma_neg: 3.0,
                gamma_pos: 1.0,
                clip: 0.2,
                ..Default::default()
            })
            .unwrap(),
        ),
    ]
}

fn params(loss: &AsymmetricLoss) -> Params {
    let c = loss.config();
    Params { gamma_neg: c.gamma_neg, gamma_pos: c.gamma_pos, clip: c.clip, eps: c.eps }
}

/// Logits in [-4, 4], nudged away from the margin kink p = m, with ~30% positives.
fn batch(seed: u64, clip: f64) -> (Vec<f64>, Vec<f64>) {
    let z: Vec<f64> = uniform(48, -4.0, 4.0, seed)
        .into_iter()
        .map(|z| if (sigmoid(z) - clip).abs() < 1e-3 { z + 0.01 } else { z })
        .collect();
    (z, binary(48, 0.3, seed + 1))
}

fn autograd(loss: &AsymmetricLoss, z: &[f64], y: &[f64]) -> (f64, Vec<f64>) {
    let logits = Tensor::from_slice(z).view([6, 8]).set_requires_grad(true);
    let targets = Tensor::from_slice(y).view([6, 8]);
    let value = loss.forward(&logits, &targets).unwrap();
    assert_eq!(value.kind(), Kind::Double);
    value.backward();
    (value.double_value(&[]), to_vec(&logits.grad()))
}

fn central_difference(f: impl Fn(f64) -> f64, z: f64) -> f64 {
    let h = 1e-6;
    (f(z + h) - f(z - h)) / (2.0 * h)
}

#[test]
fn value_matches_the_written_out_formula() {
    for (name, loss) in presets() {
        let p = params(&loss);
        let (z, y) = batch(7, p.clip);
        let expected: f64 = z.iter().zip(&y).map(|(&z, &y)| element_loss(z, y, &p)).sum();
        let (value, _) = autograd(&loss, &z, &y);
        assert!((value - expected).abs() <= 1e-10 * expected.abs().max(1.0), "{name}: {value} vs {expected}");
    }
}

#[test]
fn full_gradient_matches_finite_differences() {
    for (name, loss) in presets() {
        let loss = loss.with_detach_focusing(false);
        let p = params(&loss);
        let (z, y) = batch(11, p.clip);
        let (_, grad) = autograd(&loss, &z, &y);
        for i in 0..z.len() {
            let numeric = central_difference(|zi| element_loss(zi, y[i], &p), z[i]);
            assert!((grad[i] - numeric).abs() < 1e-6, "{name} element {i}: autograd {} vs fd {numeric}", grad[i]);
        }
    }
}

#[test]
fn detached_focusing_gradient_matches_finite_differences_with_frozen_weight() {
    for (name, loss) in presets() {
        let loss = loss.with_detach_focusing(true);
        let p = params(&loss);
        let (z, y) = batch(13, p.clip);
        let (_, grad) = autograd(&loss, &z, &y);
        for i in 0..z.len() {
            let weight = focus_weight(z[i], y[i], &p);
            let numeric = central_difference(|zi| weight * log_factor(zi, y[i], &p), z[i]);
            assert!((grad[i] - numeric).abs() < 1e-6, "{name} element {i}: autograd {} vs fd {numeric}", grad[i]);
        }
    }
}

#[test]
fn detaching_changes_the_gradient_only_when_focusing_is_on() {
    let (z, y) = batch(17, 0.05);
    let (_, with_grad) = autograd(&AsymmetricLoss::asl().with_detach_focusing(false), &z, &y);
    let (_, detached) = autograd(&AsymmetricLoss::asl().with_detach_focusing(true), &z, &y);
    assert!(with_grad.iter().zip(&detached).any(|(a, b)| (a - b).abs() > 1e-3));
    let (_, bce_a) = autograd(&AsymmetricLoss::bce().with_detach_focusing(false), &z, &y);
    let (_, bce_b) = autograd(&AsymmetricLoss::bce().with_detach_focusing(true), &z, &y);
    assert_eq!(bce_a, bce_b);
}

/// Paper Eq. 8: dL-/dz = p_m^γ- [1/(1-p_m) - γ- log(1-p_m)/p_m] · p(1-p), for p > m.
fn eq8(p: f64, gamma_neg: f64, clip: f64) -> f64 {
    let p_m = p - clip;
    p_m.powf(gamma_neg) * (1.0 / (1.0 - p_m) - gamma_neg * (1.0 - p_m).ln() / p_m) * p * (1.0 - p)
}

#[test]
fn negative_gradient_equals_closed_form_eq8() {
    for (gamma_neg, clip) in [(4.0, 0.05), (2.0, 0.2), (1.0, 0.0), (4.5, 0.1)] {
        let loss = AsymmetricLoss::new(AsymmetricLossConfig {
            gamma_neg,
            gamma_pos: 0.0,
            clip,
            detach_focusing: false,
            ..Default::default()
        })
        .unwrap();
        let probabilities: Vec<f64> = (1..=19).map(|i| clip + (1.0 - clip) * i as f64 / 20.0).collect();
        let z: Vec<f64> = probabilities.iter().map(|p| (p / (1.0 - p)).ln()).collect();
        let logits = Tensor::from_slice(&z).view([1, -1]).set_requires_grad(true);
        loss.forward(&logits, &logits.zeros_like()).unwrap().backward();
        for (p, g) in probabilities.iter().zip(to_vec(&logits.grad())) {
            let expected = eq8(*p, gamma_neg, clip);
            assert!(
                (g - expected).abs() < 1e-12 * expected.abs().max(1.0),
                "γ-={gamma_neg} m={clip} p={p}: {g} vs {expected}"
            );
        }
    }
}

#[test]
fn negatives_below_the_margin_have_exactly_zero_loss_and_gradient() {
    for detach in [false, true] {
        for kind in [Kind::Float, Kind::Double] {
            let loss = AsymmetricLoss::asl().with_detach_focusing(detach);
            // p from ~1e-13 up to 0.049, all below m = 0.05.
            let z: Vec<f64> = vec![-30.0, -10.0, -5.0, -3.5, -3.0, (0.049f64 / 0.951).ln()];
            let logits = Tensor::from_slice(&z).to_kind(kind).view([1, -1]).set_requires_grad(true);
            let value = loss.forward(&logits, &logits.zeros_like()).unwrap();
            value.backward();
            assert_eq!(value.double_value(&[]), 0.0, "detach={detach} {kind:?}");
            assert!(to_vec(&logits.grad()).iter().all(|&g| g == 0.0), "detach={detach} {kind:?}");
        }
    }
}

#[test]
fn fractional_gamma_at_zero_focusing_base_gives_finite_gradient() {
    let loss = AsymmetricLoss::new(AsymmetricLossConfig {
        gamma_neg: 0.5,
        gamma_pos: 0.5,
        detach_focusing: false,
        ..Default::default()
    })
    .unwrap();
    let logits = Tensor::from_slice(&[-5.0f32, 40.0, 0.0, 40.0]).view([2, 2]).set_requires_grad(true);
    let targets = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 0.0]).view([2, 2]);
    loss.forward(&logits, &targets).unwrap().backward();
    let grad = to_vec(&logits.grad());
    assert!(grad.iter().all(|g| g.is_finite()), "{grad:?}");
    assert_eq!(grad[0], 0.0);
}
