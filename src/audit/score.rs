//! Which labels look wrong, from out-of-sample probabilities. A label is
//! read against its own class, not against one global threshold: each
//! class's calibration curve, fitted to that class's observed labels, says
//! what share of the class's labels at a given probability are observed
//! positive. That share, q(p), is the label's score:
//!
//! - a label observed negative (or unknown) is `missing` with score q(p):
//!   among its class's labels that probable, the share that are positive;
//! - a label observed positive is `wrong` with score 1 − q(p). Unknown
//!   labels are never wrong.
//!
//! The curve is beta calibration (Kull, Silva Filho and Flach, AISTATS
//! 2017): `q = σ(a·ln p − b·ln(1 − p) + c)` with a, b ≥ 0, a logistic
//! regression on the two log-probabilities. It is monotone like isotonic
//! regression, but smooth: a step function ties whole stretches of a
//! class's labels and its steps follow the noise of a few labels, which on
//! the audit bench left wrong labels no better ranked than by the raw
//! probability. A class whose model is never very sure (a rare class, a
//! hard one) is still read on its own scale: a probability of 0.3 can be a
//! typical positive there and a clear negative elsewhere. An image's
//! suspicion is the chance that the model disagrees with at least one of
//! its labels, `1 − Π(1 − s)` over its labels with `s` the probability of
//! the label's opposite (p for a negative, 1 − p for a positive).

use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A label as the dataset states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Observed {
    Positive,
    Negative,
    Unknown,
}

impl Observed {
    /// From a target: 1, 0 or -1.
    pub fn from_target(target: f32) -> Self {
        match target {
            t if t > 0.5 => Observed::Positive,
            t if t < -0.5 => Observed::Unknown,
            _ => Observed::Negative,
        }
    }

    /// As `suspects.csv` writes it.
    pub fn as_csv(self) -> &'static str {
        match self {
            Observed::Positive => "1",
            Observed::Negative => "0",
            Observed::Unknown => "unknown",
        }
    }
}

/// What a suspect label is suspected of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SuspectKind {
    /// Observed negative or unknown; the image likely shows the class.
    Missing,
    /// Observed positive; the image likely does not show the class.
    Wrong,
}

impl SuspectKind {
    pub fn name(self) -> &'static str {
        match self {
            SuspectKind::Missing => "missing",
            SuspectKind::Wrong => "wrong",
        }
    }
}

/// One label of one image: its observed state and out-of-sample probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelScore {
    pub image: u32,
    pub class: u32,
    pub observed: Observed,
    pub probability: f32,
}

/// A class's calibration: its labels' counts and the curve from a
/// probability to the share of labels observed positive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassCalibration {
    pub positives: usize,
    pub negatives: usize,
    pub unknown: usize,
    /// The curve's `[a, b, c]`: `q = σ(a·ln p − b·ln(1 − p) + c)`.
    curve: [f64; 3],
}

impl ClassCalibration {
    /// The share of the class's labels observed positive at probability `p`.
    pub fn share(&self, p: f32) -> f64 {
        let [a, b, c] = self.curve;
        let [ln_p, ln_not_p] = log_features(p);
        sigmoid(a * ln_p + b * ln_not_p + c)
    }

    /// The estimated share of the class's observed labels that are wrong:
    /// those the curve says more likely the other way (`flipped` of them).
    pub fn noise_rate(&self, flipped: usize) -> f64 {
        let observed = self.positives + self.negatives + self.unknown;
        if observed == 0 {
            0.0
        } else {
            flipped as f64 / observed as f64
        }
    }
}

/// A suspect label, as `suspects.csv` lists it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Suspect {
    pub label: LabelScore,
    pub score: f64,
    pub kind: SuspectKind,
}

/// Each class's calibration from `labels` (every observed label of the split).
pub fn calibrate(labels: &[LabelScore], classes: usize) -> Vec<ClassCalibration> {
    let mut columns: Vec<Vec<(f32, bool)>> = vec![Vec::new(); classes];
    let mut unknown = vec![0; classes];
    for label in labels {
        match label.observed {
            Observed::Unknown => unknown[label.class as usize] += 1,
            observed => columns[label.class as usize].push((label.probability, observed == Observed::Positive)),
        }
    }
    columns
        .into_iter()
        .zip(unknown)
        .map(|(column, unknown)| {
            let positives = column.iter().filter(|(_, y)| *y).count();
            let negatives = column.len() - positives;
            ClassCalibration { positives, negatives, unknown, curve: beta_calibration(&column) }
        })
        .collect()
}

/// `[ln p, −ln(1 − p)]`, with p kept inside (0, 1) so that a saturated
/// probability stays finite.
fn log_features(p: f32) -> [f64; 2] {
    let p = f64::from(p).clamp(1e-6, 1.0 - 1e-6);
    [p.ln(), -(1.0 - p).ln()]
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The beta calibration `[a, b, c]` of `(p, positive)` labels, monotone: a
/// fit that gives a or b a negative weight is refitted without that
/// feature, as Kull et al. do.
fn beta_calibration(labels: &[(f32, bool)]) -> [f64; 3] {
    let full = fit_logistic(labels, [true, true]);
    match (full[0] < 0.0, full[1] < 0.0) {
        (false, false) => full,
        (true, _) => fit_logistic(labels, [false, true]),
        (false, true) => fit_logistic(labels, [true, false]),
    }
}

/// Logistic regression of `positive` on the features `active` keeps of
/// [`log_features`], plus an intercept, by Newton's method. A light ridge
/// on the feature weights keeps the fit finite when a class's labels are
/// separable (a tiny class, a perfect model); a weight that would still go
/// negative stays at zero.
fn fit_logistic(labels: &[(f32, bool)], active: [bool; 2]) -> [f64; 3] {
    const RIDGE: f64 = 1e-3;
    let rows: Vec<([f64; 3], f64)> = labels
        .iter()
        .map(|&(p, positive)| {
            let [x0, x1] = log_features(p);
            ([if active[0] { x0 } else { 0.0 }, if active[1] { x1 } else { 0.0 }, 1.0], f64::from(u8::from(positive)))
        })
        .collect();
    let mut theta = [0.0f64; 3];
    for _ in 0..50 {
        let mut gradient = [0.0f64; 3];
        let mut hessian = [[0.0f64; 3]; 3];
        for (x, y) in &rows {
            let q = sigmoid(x.iter().zip(&theta).map(|(x, t)| x * t).sum());
            let w = (q * (1.0 - q)).max(1e-12);
            for i in 0..3 {
                gradient[i] += (q - y) * x[i];
                for j in 0..3 {
                    hessian[i][j] += w * x[i] * x[j];
                }
            }
        }
        for i in 0..2 {
            gradient[i] += RIDGE * theta[i];
            hessian[i][i] += if active[i] { RIDGE } else { 1.0 };
        }
        hessian[2][2] += 1e-9;
        let step = solve3(hessian, gradient);
        for i in 0..3 {
            theta[i] -= step[i];
        }
        if step.iter().all(|s| s.abs() < 1e-10) {
            break;
        }
    }
    theta
}

/// `m⁻¹ v` for a symmetric positive definite 3 × 3 `m`, by Gaussian elimination.
fn solve3(mut m: [[f64; 3]; 3], mut v: [f64; 3]) -> [f64; 3] {
    for k in 0..3 {
        for i in k + 1..3 {
            let pivot = m[k];
            let f = m[i][k] / pivot[k];
            for (value, above) in m[i].iter_mut().zip(pivot).skip(k) {
                *value -= f * above;
            }
            v[i] -= f * v[k];
        }
    }
    let mut x = [0.0; 3];
    for k in (0..3).rev() {
        x[k] = (v[k] - (k + 1..3).map(|j| m[k][j] * x[j]).sum::<f64>()) / m[k][k];
    }
    x
}

/// The score of one label against its class, and what it would be suspected of.
pub fn judge(label: &LabelScore, calibration: &ClassCalibration) -> (f64, SuspectKind) {
    let share = calibration.share(label.probability);
    match label.observed {
        Observed::Positive => (1.0 - share, SuspectKind::Wrong),
        Observed::Negative | Observed::Unknown => (share, SuspectKind::Missing),
    }
}

/// The order of suspects, most suspect first: by score, then by how far
/// the raw probability leans the suspected way, then image and class (so
/// that the order is total and the outputs reproducible).
fn rank(a: &Suspect, b: &Suspect) -> Ordering {
    let lean = |s: &Suspect| match s.kind {
        SuspectKind::Missing => s.label.probability,
        SuspectKind::Wrong => 1.0 - s.label.probability,
    };
    (b.score.total_cmp(&a.score))
        .then(lean(b).total_cmp(&lean(a)))
        .then(a.label.image.cmp(&b.label.image))
        .then(a.label.class.cmp(&b.label.class))
}

/// A suspect ordered by [`rank`], for the bounded heap of [`most_suspect`]:
/// the greatest is the least suspect.
struct Ranked(Suspect);

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        rank(&self.0, &other.0)
    }
}

/// Each label judged against its class, those with a positive score.
fn judged<'a>(labels: &'a [LabelScore], calibration: &'a [ClassCalibration]) -> impl Iterator<Item = Suspect> + 'a {
    labels
        .iter()
        .map(|label| {
            let (score, kind) = judge(label, &calibration[label.class as usize]);
            Suspect { label: *label, score, kind }
        })
        .filter(|s| s.score > 0.0)
}

/// The `limit` most suspect labels that `keep` admits, most suspect first.
/// Only `limit` suspects are held at a time, not one per label: with a
/// smooth curve every label scores above zero, and a split of Open Images
/// holds hundreds of millions of labels.
pub fn most_suspect(
    labels: &[LabelScore],
    calibration: &[ClassCalibration],
    limit: usize,
    keep: impl Fn(&Suspect) -> bool,
) -> Vec<Suspect> {
    let mut heap = BinaryHeap::new();
    for suspect in judged(labels, calibration).filter(|s| keep(s)) {
        if heap.len() < limit {
            heap.push(Ranked(suspect));
        } else if let Some(mut least) = heap.peek_mut() {
            if rank(&suspect, &least.0) == Ordering::Less {
                *least = Ranked(suspect);
            }
        }
    }
    heap.into_sorted_vec().into_iter().map(|r| r.0).collect()
}

/// The labels [`is_flipped`] relabels, most suspect first.
pub fn relabelled(labels: &[LabelScore], calibration: &[ClassCalibration]) -> Vec<Suspect> {
    let mut found: Vec<Suspect> =
        judged(labels, calibration).filter(|s| is_flipped(s, &calibration[s.label.class as usize])).collect();
    found.sort_by(rank);
    found
}

/// How many of `relabelled` each of the `classes` holds.
pub fn flipped(relabelled: &[Suspect], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for suspect in relabelled {
        counts[suspect.label.class as usize] += 1;
    }
    counts
}

/// Whether a suspect is likely enough the other way to be relabelled. A
/// missing one: most of its class's labels that probable are positive
/// (score above one half). A wrong one: it sits where its class's negatives
/// are denser than its positives, `(1 − q) / q > negatives / positives`
/// (negatives outnumber positives, so a positive is not wrong merely for
/// having more negatives about it), and the model itself says absent
/// (p < ½). A model trained with a strong negative focus scores many true
/// negatives above ½, so the curve alone would hide true positives there:
/// on the audit bench two in three of those were right.
pub fn is_flipped(suspect: &Suspect, calibration: &ClassCalibration) -> bool {
    match suspect.kind {
        SuspectKind::Missing => suspect.score > 0.5,
        SuspectKind::Wrong => {
            let share = 1.0 - suspect.score;
            let ratio = calibration.negatives as f64 / calibration.positives.max(1) as f64;
            suspect.label.probability < 0.5 && suspect.score > ratio * share
        }
    }
}

/// Whether a missing label's evidence is strong enough to add it as a
/// positive rather than only mark it unknown: at least 4 in 5 of its
/// class's labels that probable are positive, and the model says more
/// likely than not.
pub fn strong_missing(suspect: &Suspect) -> bool {
    suspect.kind == SuspectKind::Missing && suspect.score >= 0.8 && suspect.label.probability >= 0.5
}

/// Each image's suspicion (of `images`): the chance that the model
/// disagrees with at least one of its labels.
pub fn image_suspicion(labels: &[LabelScore], images: usize) -> Vec<f64> {
    let mut agree = vec![1.0f64; images];
    for label in labels {
        let p = f64::from(label.probability);
        let opposite = match label.observed {
            Observed::Positive => 1.0 - p,
            Observed::Negative | Observed::Unknown => p,
        };
        agree[label.image as usize] *= 1.0 - opposite.clamp(0.0, 1.0);
    }
    agree.into_iter().map(|a| 1.0 - a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(image: u32, class: u32, observed: Observed, probability: f32) -> LabelScore {
        LabelScore { image, class, observed, probability }
    }

    /// `n` labels at probabilities spread over (0, 1), each positive with the
    /// chance the curve `[a, b, c]` gives it (a fixed-seed generator).
    fn drawn(n: usize, curve: [f64; 3]) -> Vec<(f32, bool)> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let truth = ClassCalibration { positives: 0, negatives: 0, unknown: 0, curve };
        (0..n)
            .map(|_| {
                let p = (0.005 + 0.99 * uniform()) as f32;
                (p, uniform() < truth.share(p))
            })
            .collect()
    }

    #[test]
    fn beta_calibration_recovers_the_curve_its_labels_were_drawn_from() {
        let fitted = beta_calibration(&drawn(40_000, [1.5, 0.8, 0.3]));
        for (got, want) in fitted.iter().zip([1.5, 0.8, 0.3]) {
            assert!((got - want).abs() < 0.08, "{fitted:?}");
        }
        // A curve with no weight on −ln(1 − p) is fitted without it rather than with a negative one, so the
        // share never falls as p rises.
        let fitted = beta_calibration(&drawn(40_000, [-0.0, 0.0, -1.0]));
        assert!(fitted[0] >= 0.0 && fitted[1] >= 0.0, "{fitted:?}");
        let curve = ClassCalibration { positives: 0, negatives: 0, unknown: 0, curve: fitted };
        let shares: Vec<f64> = (1..100).map(|i| curve.share(i as f32 / 100.0)).collect();
        assert!(shares.windows(2).all(|w| w[0] <= w[1]), "{shares:?}");
        assert!((shares[49] - sigmoid(-1.0)).abs() < 0.03, "{shares:?}");
    }

    #[test]
    fn separable_labels_give_a_finite_steep_curve() {
        let labels = [(0.1, false), (0.2, false), (0.8, true), (0.9, true)];
        let fitted = beta_calibration(&labels);
        assert!(fitted.iter().all(|v| v.is_finite()), "{fitted:?}");
        let curve = ClassCalibration { positives: 2, negatives: 2, unknown: 0, curve: fitted };
        assert!(curve.share(0.1) < 0.2 && curve.share(0.9) > 0.8, "{fitted:?}");
    }

    #[test]
    fn each_class_is_read_on_its_own_curve() {
        // Class 0: a confident model (positives 0.9). Class 1: one never sure (its positives at 0.3).
        let labels = vec![
            label(0, 0, Observed::Positive, 0.9),
            label(1, 0, Observed::Positive, 0.92),
            label(2, 0, Observed::Negative, 0.1),
            label(3, 0, Observed::Negative, 0.4),
            label(0, 1, Observed::Positive, 0.3),
            label(1, 1, Observed::Positive, 0.32),
            label(2, 1, Observed::Negative, 0.05),
            label(3, 1, Observed::Negative, 0.31),
            label(4, 1, Observed::Unknown, 0.31),
        ];
        let calibration = calibrate(&labels, 2);
        let found = most_suspect(&labels, &calibration, usize::MAX, |_| true);
        // Image 3's class 1 at 0.31 sits among its class's positives: suspect, though class 0's negative at 0.4
        // has the higher raw probability and is a plain negative of its class.
        let missing = |image, class| {
            found.iter().any(|s| (s.label.image, s.label.class, s.kind) == (image, class, SuspectKind::Missing))
        };
        assert!(missing(3, 1), "{found:?}");
        let rank = |image, class| found.iter().position(|s| (s.label.image, s.label.class) == (image, class));
        assert!(rank(3, 1) < rank(3, 0), "{found:?}");
        let relabelled = relabelled(&labels, &calibration);
        assert!(relabelled.iter().all(|s| s.label.class == 1) && !relabelled.is_empty(), "class 0 is clean: {found:?}");
        // The unknown label is judged as a missing one; only observed positives are ever wrong.
        assert!(found.iter().any(|s| s.label.observed == Observed::Unknown && s.kind == SuspectKind::Missing));
        assert!(found.iter().all(|s| s.kind != SuspectKind::Wrong || s.label.observed == Observed::Positive));
        assert!(!found.iter().any(strong_missing), "p 0.31 < 0.5 is never added: {found:?}");
    }

    #[test]
    fn a_positive_among_negatives_is_wrong_and_counts_as_noise() {
        let labels = vec![
            label(0, 0, Observed::Positive, 0.95),
            label(1, 0, Observed::Positive, 0.85),
            label(2, 0, Observed::Positive, 0.02),
            label(3, 0, Observed::Negative, 0.05),
            label(4, 0, Observed::Negative, 0.01),
        ];
        let calibration = calibrate(&labels, 1);
        let found = most_suspect(&labels, &calibration, usize::MAX, |_| true);
        assert_eq!((found[0].label.image, found[0].kind), (2, SuspectKind::Wrong), "{found:?}");
        let flipped = flipped(&relabelled(&labels, &calibration), 1);
        assert_eq!(flipped, [1], "{found:?}");
        assert!((calibration[0].noise_rate(flipped[0]) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn a_positive_the_model_still_believes_is_not_relabelled() {
        // Negatives scored high (0.6 to 0.7), as a strong negative focus leaves them: the positive at
        // 0.62 sits among them on its class's curve, yet the model says present.
        let p = Observed::Positive;
        let n = Observed::Negative;
        let scored = [(p, 0.95), (p, 0.9), (p, 0.62), (p, 0.3), (n, 0.1), (n, 0.15), (n, 0.28)];
        let more = [(n, 0.35), (n, 0.6), (n, 0.65), (n, 0.7)];
        let labels: Vec<LabelScore> =
            scored.iter().chain(&more).enumerate().map(|(i, &(o, q))| label(i as u32, 0, o, q)).collect();
        let calibration = calibrate(&labels, 1);
        let found = most_suspect(&labels, &calibration, usize::MAX, |_| true);
        let wrong = |image| found.iter().find(|s| s.label.image == image && s.kind == SuspectKind::Wrong).unwrap();
        let ratio = 7.0 / 4.0;
        assert!(wrong(2).score > ratio * (1.0 - wrong(2).score), "the curve alone would relabel it: {found:?}");
        assert!(!is_flipped(wrong(2), &calibration[0]) && is_flipped(wrong(3), &calibration[0]), "{found:?}");
    }

    #[test]
    fn the_bounded_selection_keeps_the_head_of_the_full_order() {
        // Two classes of drawn labels, probabilities repeated so that scores tie and the tie-breaks decide.
        let labels: Vec<LabelScore> = drawn(600, [1.0, 0.5, -1.0])
            .into_iter()
            .enumerate()
            .map(|(i, (p, positive))| {
                let observed = if positive { Observed::Positive } else { Observed::Negative };
                label((i / 2) as u32, (i % 2) as u32, observed, (p * 20.0).round() / 20.0)
            })
            .collect();
        let calibration = calibrate(&labels, 2);
        let mut every: Vec<Suspect> = judged(&labels, &calibration).collect();
        every.sort_by(rank);
        assert_eq!(most_suspect(&labels, &calibration, usize::MAX, |_| true), every);
        for limit in [0, 1, 7, 100, 599, 600, 601] {
            assert_eq!(
                most_suspect(&labels, &calibration, limit, |_| true),
                every[..limit.min(every.len())],
                "{limit}"
            );
        }
        let wrong: Vec<Suspect> = every.iter().filter(|s| s.kind == SuspectKind::Wrong).take(9).copied().collect();
        assert_eq!(most_suspect(&labels, &calibration, 9, |s| s.kind == SuspectKind::Wrong), wrong);
        let flips: Vec<Suspect> =
            every.iter().filter(|s| is_flipped(s, &calibration[s.label.class as usize])).copied().collect();
        assert!(!flips.is_empty());
        assert_eq!(relabelled(&labels, &calibration), flips);
    }

    #[test]
    fn an_image_is_as_suspect_as_the_chance_the_model_disagrees_with_one_of_its_labels() {
        let labels = [
            label(0, 0, Observed::Positive, 0.8),
            label(0, 1, Observed::Negative, 0.5),
            label(1, 0, Observed::Positive, 1.0),
        ];
        let scores = image_suspicion(&labels, 2);
        assert!((scores[0] - (1.0 - 0.8 * 0.5)).abs() < 1e-6 && scores[1] == 0.0, "{scores:?}");
    }
}
