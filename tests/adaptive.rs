//! Adaptive asymmetry in a real (small) training loop: a linear
//! multi-label classifier trained with ASL whose γ− is set by the
//! controller after every batch. Δp must settle at its target, and a
//! controller restored from its JSON state must continue bit-exactly.

mod common;

use asl::loss::{AdaptiveAsymmetry, AdaptiveAsymmetryConfig, AsymmetricLoss, AsymmetricLossConfig, ProbabilityStats};
use common::uniform;
use tch::{Kind, Tensor};

const FEATURES: i64 = 16;
const CLASSES: i64 = 20;
const BATCH: i64 = 64;

/// Fixed synthetic problem: labels are a noisy linear function of the
/// features, thresholded so ~10% of labels are positive.
fn batch(step: u64, true_weights: &Tensor) -> (Tensor, Tensor) {
    let x = Tensor::from_slice(&uniform((BATCH * FEATURES) as usize, -1.0, 1.0, 1000 + step)).view([BATCH, FEATURES]);
    let noise = Tensor::from_slice(&uniform((BATCH * CLASSES) as usize, -0.3, 0.3, 5000 + step)).view([BATCH, CLASSES]);
    let y = (x.matmul(true_weights) + noise).gt(1.0).to_kind(Kind::Double);
    (x, y)
}

/// Trains for `steps` batches and returns Δp and the stats of every batch.
fn train(steps: u64, controller: &mut AdaptiveAsymmetry) -> (Vec<f64>, Vec<ProbabilityStats>) {
    let true_weights =
        Tensor::from_slice(&uniform((FEATURES * CLASSES) as usize, -1.0, 1.0, 42)).view([FEATURES, CLASSES]);
    let mut weights = Tensor::zeros([FEATURES, CLASSES], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
    let mut bias = Tensor::zeros([CLASSES], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
    let base = AsymmetricLossConfig { gamma_pos: 0.0, clip: 0.05, ..Default::default() };
    let (mut deltas, mut all_stats) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let (x, y) = batch(step, &true_weights);
        let logits = x.matmul(&weights) + &bias;
        let stats = ProbabilityStats::from_batch(&logits, &y, None).unwrap();
        let loss = AsymmetricLoss::new(AsymmetricLossConfig { gamma_neg: controller.gamma_neg(), ..base }).unwrap();
        let value = loss.forward(&logits, &y).unwrap() / BATCH as f64;
        value.backward();
        tch::no_grad(|| {
            for t in [&mut weights, &mut bias] {
                let step = t.grad() * 0.5;
                let _ = t.f_sub_(&step).unwrap();
                let _ = t.grad().zero_();
            }
        });
        controller.update(&stats);
        deltas.push(stats.delta().unwrap());
        all_stats.push(stats);
    }
    (deltas, all_stats)
}

fn config(target_delta: f64) -> AdaptiveAsymmetryConfig {
    AdaptiveAsymmetryConfig { target_delta, lambda: 0.2, gamma_neg_max: 12.0, max_step: 1.0, ..Default::default() }
}

fn late_mean(deltas: &[f64]) -> f64 {
    deltas[deltas.len() - 100..].iter().sum::<f64>() / 100.0
}

#[test]
fn controller_drives_delta_p_to_its_target() {
    // Without control (λ = 0, γ- fixed at 0) the imbalance leaves Δp far below 0.
    let mut fixed = AdaptiveAsymmetry::new(AdaptiveAsymmetryConfig { lambda: 0.0, ..config(0.0) }, 0.0).unwrap();
    let uncontrolled = late_mean(&train(600, &mut fixed).0);
    assert!(uncontrolled < -0.1, "plain CE should give a strongly negative Δp, got {uncontrolled}");
    for target in [0.0, 0.1] {
        let mut controller = AdaptiveAsymmetry::new(config(target), 0.0).unwrap();
        let late = late_mean(&train(600, &mut controller).0);
        assert!((late - target).abs() < 0.03, "target {target}: late Δp {late}, uncontrolled {uncontrolled}");
        assert!(controller.gamma_neg() > 0.5, "γ- should have risen from 0, is {}", controller.gamma_neg());
    }
}

#[test]
fn higher_target_needs_higher_gamma_neg() {
    let mut low = AdaptiveAsymmetry::new(config(0.0), 0.0).unwrap();
    let mut high = AdaptiveAsymmetry::new(config(0.1), 0.0).unwrap();
    train(400, &mut low);
    train(400, &mut high);
    assert!(high.gamma_neg() > low.gamma_neg(), "{} vs {}", high.gamma_neg(), low.gamma_neg());
}

#[test]
fn restored_controller_continues_bit_exactly() {
    let mut recorder = AdaptiveAsymmetry::new(config(0.1), 1.0).unwrap();
    let (_, stats) = train(120, &mut recorder);

    let mut uninterrupted = AdaptiveAsymmetry::new(config(0.1), 1.0).unwrap();
    let mut first_half = AdaptiveAsymmetry::new(config(0.1), 1.0).unwrap();
    for s in &stats[..60] {
        uninterrupted.update(s);
        first_half.update(s);
    }
    let saved = serde_json::to_string(&first_half).unwrap();
    let mut resumed: AdaptiveAsymmetry = serde_json::from_str(&saved).unwrap();
    for s in &stats[60..] {
        assert_eq!(uninterrupted.update(s).to_bits(), resumed.update(s).to_bits());
    }
    assert_eq!(uninterrupted, resumed);
    assert_eq!(recorder.gamma_neg().to_bits(), resumed.gamma_neg().to_bits());
}

/// A batch whose Δp responds to γ− as training would, on average:
/// Δp = 0.1 + 0.2·(γ− − 4.5), plus the noise of a small batch (±0.1).
fn plant_batch(gamma_neg: f64, noise: f64) -> ProbabilityStats {
    let delta = 0.1 + 0.2 * (gamma_neg - 4.5) + noise;
    ProbabilityStats { positive_sum: 0.5 + delta, positive_count: 1, negative_sum: 0.5, negative_count: 1 }
}

#[test]
fn from_the_recipes_start_the_default_controller_settles_in_bounded_steps_by_bounded_moves() {
    // The start rule: γ− begins at the loss's gamma_neg, 4 in every recipe.
    let config = AdaptiveAsymmetryConfig::default();
    let mut controller = AdaptiveAsymmetry::new(config, 4.0).unwrap();
    let noise = uniform(4000, -0.1, 0.1, 77);
    let mut gammas = vec![controller.gamma_neg()];
    for &n in &noise {
        let before = controller.gamma_neg();
        let after = controller.update(&plant_batch(before, n));
        assert!((after - before).abs() <= config.max_step + 1e-12, "moved {} in one update", after - before);
        gammas.push(after);
    }
    // Δp = 0.1 needs γ− = 4.5: reached (within 0.1) and held.
    let reached = gammas.iter().position(|g| (g - 4.5).abs() < 0.1).expect("the target is reached");
    assert!(reached <= 2500, "reached after {reached} updates");
    let late = &gammas[3500..];
    assert!(
        late.iter().all(|g| (g - 4.5).abs() < 0.15),
        "γ− wanders late: {:?}",
        late.iter().fold((9.0f64, 0.0f64), |(lo, hi), g| (lo.min(*g), hi.max(*g)))
    );
    let smoothed = controller.smoothed_delta().unwrap();
    assert!((smoothed - 0.1).abs() < 0.05, "smoothed Δp {smoothed}");
}

#[test]
fn the_step_limit_binds_when_lambda_would_jump() {
    let config = AdaptiveAsymmetryConfig { lambda: 5.0, max_step: 0.02, smoothing: 0.0, ..Default::default() };
    let mut controller = AdaptiveAsymmetry::new(config, 0.0).unwrap();
    // Δp far below its target: λ alone would move γ− by 5 × 0.6 = 3 per batch.
    let first = controller.update(&plant_batch(0.0, 0.0));
    assert_eq!(first, 0.02);
    for _ in 0..9 {
        controller.update(&plant_batch(controller.gamma_neg(), 0.0));
    }
    assert!((controller.gamma_neg() - 0.2).abs() < 1e-12, "{}", controller.gamma_neg());
}
