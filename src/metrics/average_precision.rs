//! Average precision as the ASL reference computes it: per class, sort
//! scores in descending order and average precision@i over the ranks i
//! of the positives.
//!
//! Tied scores form one group whose positives all take the precision at
//! the group's end, so the result does not depend on how a sort orders
//! ties (the reference's `argsort` leaves that to chance). Without ties
//! this is exactly the reference's value.

use super::scored::ScoredLabels;

/// AP in `0..=1` of one class's verified labels, `(score, positive)` in
/// any order, or `None` when none is positive. `keys` is scratch space.
pub fn class_average_precision(column: &[(f32, bool)], keys: &mut Vec<u64>) -> Option<f64> {
    keys.clear();
    keys.extend(column.iter().map(|&(score, positive)| descending_key(score) << 1 | u64::from(positive)));
    keys.sort_unstable();
    let mut precision_sum = 0.0;
    let (mut seen, mut positives) = (0usize, 0usize);
    let mut start = 0;
    while start < keys.len() {
        let score_key = keys[start] >> 1;
        let end = start + keys[start..].iter().take_while(|k| *k >> 1 == score_key).count();
        let group_positives = keys[start..end].iter().filter(|k| *k & 1 == 1).count();
        seen += end - start;
        positives += group_positives;
        precision_sum += group_positives as f64 * positives as f64 / seen as f64;
        start = end;
    }
    (positives > 0).then(|| precision_sum / positives as f64)
}

/// AP per class (`None` for classes without positives), as fractions.
pub fn per_class_average_precision(scored: &ScoredLabels) -> Vec<Option<f64>> {
    let mut keys = Vec::new();
    scored.by_class().iter().map(|column| class_average_precision(column, &mut keys)).collect()
}

/// Maps a finite f32 to a u64 whose ascending order is the scores'
/// descending order, so one integer sort ranks a class.
fn descending_key(score: f32) -> u64 {
    // +0.0 and -0.0 compare equal, so they must tie.
    let bits = if score == 0.0 { 0 } else { score.to_bits() };
    let ascending = if bits & 0x8000_0000 != 0 { !bits } else { bits | 0x8000_0000 };
    u64::from(!ascending)
}

#[cfg(test)]
mod tests {
    use super::descending_key;

    #[test]
    fn keys_sort_scores_in_descending_order() {
        let scores = [3.5f32, -0.0, 1e-30, -2.0, f32::MAX, 0.0, -f32::MAX, 0.25];
        let mut by_key = scores.to_vec();
        by_key.sort_by_key(|&s| descending_key(s));
        let mut by_value = scores.to_vec();
        by_value.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(
            by_key.iter().map(|s| s + 0.0).collect::<Vec<_>>(),
            by_value.iter().map(|s| s + 0.0).collect::<Vec<_>>()
        );
        assert_eq!(descending_key(0.0), descending_key(-0.0));
    }
}
