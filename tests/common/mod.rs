//! Shared ground truth for the loss tests: the per-element ASL formula
//! written out in plain f64 arithmetic, independent of any tensor code.
#![allow(dead_code)]

pub mod coco_mini;
pub mod distributed;
pub mod python;
pub mod training;

use tch::{Kind, Tensor};

#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub gamma_neg: f64,
    pub gamma_pos: f64,
    pub clip: f64,
    pub eps: f64,
}

pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Focusing weight of one element, as a function of the probability.
pub fn focus_weight(z: f64, y: f64, p: &Params) -> f64 {
    let prob = sigmoid(z);
    if y == 1.0 {
        (1.0 - prob).powf(p.gamma_pos)
    } else {
        (prob - p.clip).max(0.0).powf(p.gamma_neg)
    }
}

/// The log factor of one element (negated, so it is >= 0).
pub fn log_factor(z: f64, y: f64, p: &Params) -> f64 {
    let prob = sigmoid(z);
    if y == 1.0 {
        -prob.max(p.eps).ln()
    } else {
        let p_m = (prob - p.clip).max(0.0);
        -(1.0 - p_m).max(p.eps).ln()
    }
}

/// DESIGN.md §2: `-(1-p)^γ+ log(max(p,eps))` or `-p_m^γ- log(max(1-p_m,eps))`.
pub fn element_loss(z: f64, y: f64, p: &Params) -> f64 {
    focus_weight(z, y, p) * log_factor(z, y, p)
}

pub fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).contiguous().view([-1])).unwrap()
}

/// Deterministic pseudo-random values in [lo, hi) (a fixed LCG, so tests
/// do not depend on libtorch's RNG stream).
pub fn uniform(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((state >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

/// 0/1 targets with roughly `rate` positives.
pub fn binary(n: usize, rate: f64, seed: u64) -> Vec<f64> {
    uniform(n, 0.0, 1.0, seed).into_iter().map(|u| f64::from(u < rate)).collect()
}
