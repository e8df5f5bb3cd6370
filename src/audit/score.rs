//! Which labels look wrong, from out-of-sample probabilities. A label is
//! read against its own class, not against one global threshold: each
//! class's calibration curve, fitted to that class's observed labels by
//! isotonic regression (pool-adjacent-violators), says what share of the
//! class's labels at a given probability are observed positive. That share,
//! q(p), is the label's score:
//!
//! - a label observed negative (or unknown) is `missing` with score q(p):
//!   among its class's labels that probable, the share that are positive;
//! - a label observed positive is `wrong` with score 1 − q(p). Unknown
//!   labels are never wrong.
//!
//! A class whose model is never very sure (a rare class, a hard one) is
//! then read on its own scale: a probability of 0.3 can be a typical
//! positive there and a clear negative elsewhere. Ties (a flat stretch of
//! the curve) go to the higher (or, for `wrong`, lower) raw probability.
//! An image's suspicion is the chance that the model disagrees with at
//! least one of its labels, `1 − Π(1 − s)` over its labels with `s` the
//! probability of the label's opposite (p for a negative, 1 − p for a
//! positive).

use serde::Serialize;

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

/// A class's calibration: its labels' counts and the isotonic curve from a
/// probability to the share of labels observed positive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassCalibration {
    pub positives: usize,
    pub negatives: usize,
    pub unknown: usize,
    /// The curve's steps: from each probability on (ascending), the share `q`.
    steps: Vec<(f32, f64)>,
}

impl ClassCalibration {
    /// The share of the class's labels observed positive at probability `p`.
    pub fn share(&self, p: f32) -> f64 {
        let at = self.steps.partition_point(|&(start, _)| start <= p);
        match at {
            0 => self.steps.first().map_or(0.0, |s| s.1),
            n => self.steps[n - 1].1,
        }
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
        .map(|(mut column, unknown)| {
            let positives = column.iter().filter(|(_, y)| *y).count();
            let negatives = column.len() - positives;
            column.sort_by(|a, b| a.0.total_cmp(&b.0));
            ClassCalibration { positives, negatives, unknown, steps: isotonic(&column) }
        })
        .collect()
}

/// Pool-adjacent-violators over `(p, positive)` sorted by p: the
/// non-decreasing step function closest to the labels in squared error, as
/// its steps `(first p, share)`. Equal probabilities are pooled first, and
/// neighbouring blocks of equal share are one step.
fn isotonic(sorted: &[(f32, bool)]) -> Vec<(f32, f64)> {
    // Blocks of (first p, positives, count).
    let mut blocks: Vec<(f32, f64, f64)> = Vec::new();
    for &(p, positive) in sorted {
        let y = f64::from(u8::from(positive));
        match blocks.last_mut() {
            Some(last) if last.0 == p => (last.1, last.2) = (last.1 + y, last.2 + 1.0),
            _ => blocks.push((p, y, 1.0)),
        }
        while blocks.len() > 1 {
            let (b, a) = (blocks[blocks.len() - 1], blocks[blocks.len() - 2]);
            if a.1 / a.2 < b.1 / b.2 {
                break;
            }
            blocks.pop();
            let merged = blocks.last_mut().expect("two blocks were there");
            (merged.1, merged.2) = (merged.1 + b.1, merged.2 + b.2);
        }
    }
    blocks.into_iter().map(|(p, positives, count)| (p, positives / count)).collect()
}

/// The score of one label against its class, and what it would be suspected of.
pub fn judge(label: &LabelScore, calibration: &ClassCalibration) -> (f64, SuspectKind) {
    let share = calibration.share(label.probability);
    match label.observed {
        Observed::Positive => (1.0 - share, SuspectKind::Wrong),
        Observed::Negative | Observed::Unknown => (share, SuspectKind::Missing),
    }
}

/// Every label with a positive score, most suspect first: by score, then
/// by how far its raw probability leans the suspected way, then image and class.
pub fn suspects(labels: &[LabelScore], calibration: &[ClassCalibration]) -> Vec<Suspect> {
    let mut found: Vec<Suspect> = labels
        .iter()
        .map(|label| {
            let (score, kind) = judge(label, &calibration[label.class as usize]);
            Suspect { label: *label, score, kind }
        })
        .filter(|s| s.score > 0.0)
        .collect();
    let lean = |s: &Suspect| match s.kind {
        SuspectKind::Missing => s.label.probability,
        SuspectKind::Wrong => 1.0 - s.label.probability,
    };
    found.sort_by(|a, b| {
        (b.score.total_cmp(&a.score))
            .then(lean(b).total_cmp(&lean(a)))
            .then(a.label.image.cmp(&b.label.image))
            .then(a.label.class.cmp(&b.label.class))
    });
    found
}

/// The suspects [`is_flipped`] relabels, per class.
pub fn flipped(suspects: &[Suspect], calibration: &[ClassCalibration]) -> Vec<usize> {
    let mut counts = vec![0; calibration.len()];
    for suspect in suspects.iter().filter(|s| is_flipped(s, &calibration[s.label.class as usize])) {
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

    #[test]
    fn pool_adjacent_violators_fits_a_non_decreasing_step_function() {
        // Labels by probability: 0 1 0 | 1 1 → blocks [0], [1 0] pooled to 0.5, [1 1].
        let steps = isotonic(&[(0.1, false), (0.2, true), (0.3, false), (0.4, true), (0.5, true)]);
        assert_eq!(steps, vec![(0.1, 0.0), (0.2, 0.5), (0.4, 1.0)]);
        // Equal probabilities are one block; a violator pools all the way back.
        assert_eq!(isotonic(&[(0.2, true), (0.2, false), (0.3, false)]), vec![(0.2, 1.0 / 3.0)]);
        let calibration = ClassCalibration { positives: 3, negatives: 2, unknown: 0, steps };
        assert_eq!((calibration.share(0.0), calibration.share(0.25), calibration.share(0.9)), (0.0, 0.5, 1.0));
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
        let found = suspects(&labels, &calibration);
        // Image 3's class 1 at 0.31 sits among its class's positives: suspect, though class 0's negative at 0.4
        // has the higher raw probability and is a plain negative of its class.
        let missing = |image, class| {
            found.iter().any(|s| (s.label.image, s.label.class, s.kind) == (image, class, SuspectKind::Missing))
        };
        assert!(missing(3, 1), "{found:?}");
        assert!(found.iter().all(|s| s.label.class == 1), "class 0 has no suspect: {found:?}");
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
        let found = suspects(&labels, &calibration);
        assert_eq!((found[0].label.image, found[0].kind), (2, SuspectKind::Wrong), "{found:?}");
        let flipped = flipped(&found, &calibration);
        assert_eq!(flipped, [1], "{found:?}");
        assert!((calibration[0].noise_rate(flipped[0]) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn a_positive_the_model_still_believes_is_not_relabelled() {
        // Negatives scored high (0.6 to 0.7), as a strong negative focus leaves them: the positive at
        // 0.62 sits among them on its class's curve, yet the model says present. By hand: the curve
        // pools 0.3 to 0.7 into one step of 2 positives in 6, so both positives there score 2/3,
        // above (7 negatives / 4 positives) × 1/3.
        let p = Observed::Positive;
        let n = Observed::Negative;
        let scored = [(p, 0.95), (p, 0.9), (p, 0.62), (p, 0.3), (n, 0.1), (n, 0.15), (n, 0.28)];
        let more = [(n, 0.35), (n, 0.6), (n, 0.65), (n, 0.7)];
        let labels: Vec<LabelScore> =
            scored.iter().chain(&more).enumerate().map(|(i, &(o, q))| label(i as u32, 0, o, q)).collect();
        let calibration = calibrate(&labels, 1);
        let found = suspects(&labels, &calibration);
        let wrong = |image| found.iter().find(|s| s.label.image == image && s.kind == SuspectKind::Wrong).unwrap();
        assert!((wrong(2).score - 2.0 / 3.0).abs() < 1e-12 && (wrong(3).score - 2.0 / 3.0).abs() < 1e-12);
        assert!(!is_flipped(wrong(2), &calibration[0]) && is_flipped(wrong(3), &calibration[0]), "{found:?}");
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
