//! The paper's named special cases against values from elsewhere: tch's
//! own BCE, focal-loss values worked out by hand, and the single-label loss
//! on a hand-computed 3-class example. Also reduced precision, partial
//! labels and the errors bad input must produce.

mod common;

use asl::loss::{
    AsymmetricLoss, AsymmetricLossConfig, AsymmetricLossSingleLabel, LossError, PartialLabels, Reduction,
    SingleLabelConfig,
};
use common::{binary, to_vec, uniform};
use tch::{Kind, Reduction as TchReduction, Tensor};

#[test]
fn bce_preset_equals_tch_binary_cross_entropy_with_logits_summed() {
    for kind in [Kind::Float, Kind::Double] {
        let logits = Tensor::from_slice(&uniform(128 * 80, -15.0, 15.0, 3)).view([128, 80]).to_kind(kind);
        let targets = Tensor::from_slice(&binary(128 * 80, 0.05, 4)).view([128, 80]).to_kind(kind);
        let ours = AsymmetricLoss::bce().forward(&logits, &targets).unwrap().double_value(&[]);
        let reference = logits
            .binary_cross_entropy_with_logits::<Tensor>(&targets, None, None, TchReduction::Sum)
            .double_value(&[]);
        assert!((ours - reference).abs() <= 1e-5 * reference, "{kind:?}: {ours} vs {reference}");
    }
}

#[test]
fn focal_preset_matches_hand_computed_values() {
    // γ = 2. p = σ(0) = 1/2 and σ(ln 3) = 3/4, σ(-ln 3) = 1/4.
    //   positive, p=1/2: (1/2)^2 · ln 2           = 0.25   · 0.693147 = 0.1732868
    //   positive, p=3/4: (1/4)^2 · ln(4/3)        = 0.0625 · 0.287682 = 0.0179801
    //   negative, p=3/4: (3/4)^2 · ln 4           = 0.5625 · 1.386294 = 0.7797906
    //   negative, p=1/4: (1/4)^2 · ln(4/3)        = 0.0625 · 0.287682 = 0.0179801
    let ln3 = 3f64.ln();
    let logits = Tensor::from_slice(&[0.0, ln3, ln3, -ln3]).view([2, 2]);
    let targets = Tensor::from_slice(&[1.0, 1.0, 0.0, 0.0]).view([2, 2]);
    let focal = AsymmetricLoss::focal(2.0).unwrap();
    let per_element = to_vec(&focal.per_element(&logits, &targets).unwrap());
    let expected = [0.1732868, 0.0179801, 0.7797906, 0.0179801];
    for (got, want) in per_element.iter().zip(expected) {
        assert!((got - want).abs() < 1e-7, "{got} vs {want}");
    }
    let total = focal.forward(&logits, &targets).unwrap().double_value(&[]);
    assert!((total - 0.9890376).abs() < 1e-6);
    let mean = focal.with_reduction(Reduction::Mean).forward(&logits, &targets).unwrap().double_value(&[]);
    assert!((mean - 0.9890376 / 4.0).abs() < 1e-6);
}

#[test]
fn single_label_matches_hand_computed_three_class_example() {
    // γ+ = 0, γ- = 4, ε = 0.1, K = 3, mean over 2 samples.
    // Sample 1: z = [1, 2, 3], class 0. softmax = [0.0900306, 0.2447285, 0.6652410].
    //   smoothed targets [0.9333, 0.0333, 0.0333]; weights [1, 0.2447^4, 0.6652^4] = [1, 0.003587, 0.195848]
    //   loss = 0.93333·2.407606 + 0.03333·0.003587·1.407606 + 0.03333·0.195848·0.407606 = 2.2499281
    // Sample 2: z = [0.5, -1, 2], class 2 (same arithmetic) = 0.2252789.
    let loss = AsymmetricLossSingleLabel::new(SingleLabelConfig::default()).unwrap();
    let logits = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 0.5, -1.0, 2.0]).view([2, 3]);
    let targets = Tensor::from_slice(&[0i64, 2]);
    let value = loss.forward(&logits, &targets).unwrap().double_value(&[]);
    assert!((value - (2.2499281 + 0.2252789) / 2.0).abs() < 1e-6, "{value}");
}

#[test]
fn single_label_rejects_class_outside_range() {
    let loss = AsymmetricLossSingleLabel::new(SingleLabelConfig::default()).unwrap();
    let err = loss
        .forward(&Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu)), &Tensor::from_slice(&[0i64, 3]))
        .unwrap_err();
    assert!(matches!(err, LossError::ClassOutOfRange { value: 3, row: 1, classes: 3 }), "{err}");
    assert_eq!(err.to_string(), "target class 3 at row 1 is outside 0..3");
}

#[test]
fn half_precision_logits_give_finite_loss_and_gradients() {
    for kind in [Kind::Half, Kind::BFloat16] {
        for loss in [
            AsymmetricLoss::asl().with_detach_focusing(false),
            AsymmetricLoss::focal(2.0).unwrap(),
            AsymmetricLoss::bce(),
        ] {
            let logits = Tensor::from_slice(&uniform(64 * 80, -30.0, 30.0, 5))
                .view([64, 80])
                .to_kind(kind)
                .set_requires_grad(true);
            let targets = Tensor::from_slice(&binary(64 * 80, 0.1, 6)).view([64, 80]);
            let value = loss.forward(&logits, &targets).unwrap();
            assert_eq!(value.kind(), Kind::Float, "computed in f32");
            value.backward();
            assert!(value.double_value(&[]).is_finite(), "{kind:?}");
            let grad = logits.grad();
            assert_eq!(grad.kind(), kind);
            assert!(to_vec(&grad).iter().all(|g| g.is_finite()), "{kind:?} gradient");
        }
    }
}

#[test]
fn bad_inputs_are_errors_naming_the_fault() {
    let loss = AsymmetricLoss::asl();
    let logits = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
    let err = loss.forward(&logits, &Tensor::zeros([2, 4], (Kind::Float, tch::Device::Cpu))).unwrap_err();
    assert_eq!(err.to_string(), "targets has shape [2, 4] but logits have shape [2, 3]");

    let err = loss
        .forward(
            &Tensor::zeros([6], (Kind::Float, tch::Device::Cpu)),
            &Tensor::zeros([6], (Kind::Float, tch::Device::Cpu)),
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "logits must be 2-D [batch, classes], got shape [6]");

    let targets = Tensor::from_slice(&[0.0f32, 1.0, 0.0, 1.0, 1.0, 0.5]).view([2, 3]);
    let err = loss.forward(&logits, &targets).unwrap_err();
    assert_eq!(err.to_string(), "targets must be 0 or 1, found 0.5 at [1, 2]");

    let nan_logits = Tensor::from_slice(&[0.0f32, 1.0, f32::NAN, 0.0, 0.0, 0.0]).view([2, 3]);
    let err = loss.forward(&nan_logits, &targets.round()).unwrap_err();
    assert_eq!(err.to_string(), "logit at [0, 2] is NaN, not a finite number");

    let err = AsymmetricLoss::new(AsymmetricLossConfig { gamma_neg: -1.0, ..Default::default() }).unwrap_err();
    assert_eq!(err.to_string(), "invalid loss parameter `gamma_neg` = -1: must be a finite number >= 0");
    let err = AsymmetricLoss::probability_shifting(1.0).unwrap_err();
    assert!(err.to_string().contains("`clip` = 1"), "{err}");
}

#[test]
fn targets_of_any_dtype_are_accepted() {
    let logits = Tensor::from_slice(&uniform(12, -3.0, 3.0, 9)).view([3, 4]).to_kind(Kind::Float);
    let targets = Tensor::from_slice(&binary(12, 0.4, 10)).view([3, 4]);
    let loss = AsymmetricLoss::asl();
    let reference = loss.forward(&logits, &targets).unwrap().double_value(&[]);
    for kind in [Kind::Bool, Kind::Uint8, Kind::Int64, Kind::Half] {
        let value = loss.forward(&logits, &targets.to_kind(kind)).unwrap().double_value(&[]);
        assert_eq!(value, reference, "{kind:?}");
    }
}

#[test]
fn partial_labels_weight_unknowns_as_down_weighted_negatives() {
    // states: 1 positive, 0 negative, -1 unknown. Weights are f32, hence the 1e-6 tolerance.
    let states = Tensor::from_slice(&[1i64, 0, -1, -1, 0, 1]).view([2, 3]);
    let logits = Tensor::from_slice(&[2.0f64, 0.5, 1.5, -0.3, 1.0, -1.0]).view([2, 3]);
    let loss = AsymmetricLoss::new(AsymmetricLossConfig { gamma_neg: 2.0, ..Default::default() }).unwrap();
    let as_negatives = Tensor::from_slice(&[1.0f64, 0.0, 0.0, 0.0, 0.0, 1.0]).view([2, 3]);
    let per_element = to_vec(&loss.per_element(&logits, &as_negatives).unwrap());
    for unknown_weight in [0.0, 0.3, 1.0] {
        let partial = PartialLabels::from_states(&states, unknown_weight).unwrap();
        let value = loss.forward_weighted(&logits, &partial.targets, Some(&partial.weights)).unwrap().double_value(&[]);
        let expected = per_element[0]
            + per_element[1]
            + per_element[4]
            + per_element[5]
            + unknown_weight * (per_element[2] + per_element[3]);
        assert!((value - expected).abs() < 1e-6, "w={unknown_weight}: {value} vs {expected}");
    }
    let err = PartialLabels::from_states(&Tensor::from_slice(&[1i64, 2]).view([1, 2]), 0.5).unwrap_err();
    assert_eq!(err.to_string(), "label state at [0, 1] is 2; expected 1 (positive), 0 (negative) or -1 (unknown)");
}
