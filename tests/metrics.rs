//! Metrics on examples worked out by hand (see the comments for the arithmetic).

use asl::metrics::{
    MeanAveragePrecision, MetricsAccumulator, MetricsError, MetricsReport, ScoreMatrix, ScoredLabels, Selection,
    ThresholdMetrics, TOP_K,
};
use tch::Tensor;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Column-major helper: `columns[c][r]` becomes row-major `[r * classes + c]`.
fn row_major(columns: &[&[f32]]) -> Vec<f32> {
    let rows = columns[0].len();
    (0..rows).flat_map(|r| columns.iter().map(move |c| c[r])).collect()
}

/// The verified labels of `matrix`, each row's best `k` classes kept for the top-k metrics.
fn scored(matrix: &ScoreMatrix, k: usize) -> ScoredLabels {
    ScoredLabels::from_matrix(matrix, k)
}

#[test]
fn average_precision_without_ties() {
    // Ranked: + - + - +  → precision at positives 1/1, 2/3, 3/5 → AP = (1 + 2/3 + 3/5) / 3.
    let scores = [0.9, 0.8, 0.7, 0.6, 0.5];
    let targets = [1.0, 0.0, 1.0, 0.0, 1.0];
    let matrix = ScoreMatrix::new(&scores, &targets, 1).unwrap();
    let map = MeanAveragePrecision::compute(&scored(&matrix, TOP_K));
    assert!(close(map.map.unwrap(), 100.0 * (1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 3.0), "{map:?}");
}

#[test]
fn tied_scores_share_the_precision_at_the_end_of_their_group() {
    // 0.9 (-), then {0.5 (+), 0.5 (-)} tied, then 0.1 (+).
    // The tied positive gets precision 1/3 whatever the order, the last 2/4 → AP = (1/3 + 1/2) / 2.
    let expected = 100.0 * (1.0 / 3.0 + 0.5) / 2.0;
    for (scores, targets) in [
        ([0.9f32, 0.5, 0.5, 0.1], [0.0f32, 1.0, 0.0, 1.0]),
        ([0.9, 0.5, 0.5, 0.1], [0.0, 0.0, 1.0, 1.0]),
        ([0.1, 0.5, 0.9, 0.5], [1.0, 0.0, 0.0, 1.0]),
    ] {
        let matrix = ScoreMatrix::new(&scores, &targets, 1).unwrap();
        let ap = MeanAveragePrecision::compute(&scored(&matrix, TOP_K)).map.unwrap();
        assert!(close(ap, expected), "{ap} vs {expected}");
    }
}

#[test]
fn classes_without_positives_are_excluded_and_counted() {
    // Class 0: ranked + - → AP 1. Class 1: no positive, excluded. Class 2: ranked - + → AP 1/2.
    let scores = row_major(&[&[0.9, 0.1], &[0.3, 0.4], &[0.8, 0.2]]);
    let targets = row_major(&[&[1.0, 0.0], &[0.0, 0.0], &[0.0, 1.0]]);
    let matrix = ScoreMatrix::new(&scores, &targets, 3).unwrap();
    let map = MeanAveragePrecision::compute(&scored(&matrix, TOP_K));
    assert_eq!(map.classes_without_positives, 1);
    assert_eq!(map.per_class, vec![Some(100.0), None, Some(50.0)]);
    assert!(close(map.map.unwrap(), 75.0));
}

#[test]
fn unknown_labels_are_left_out_of_average_precision() {
    // Unknown (-1) at the top rank: without it the class ranks + - + → AP (1 + 2/3) / 2.
    let scores = [0.95, 0.9, 0.8, 0.7];
    let targets = [-1.0, 1.0, 0.0, 1.0];
    let matrix = ScoreMatrix::new(&scores, &targets, 1).unwrap();
    assert!(close(
        MeanAveragePrecision::compute(&scored(&matrix, TOP_K)).map.unwrap(),
        100.0 * (1.0 + 2.0 / 3.0) / 2.0
    ));
}

/// 3 images × 3 classes.
///   image 0: scores [0.9, 0.2, 0.85]  targets [1, 0, 0]
///   image 1: scores [0.1, 0.95, 0.7]  targets [0, 1, 1]
///   image 2: scores [0.8, 0.3, 0.81]  targets [1, 1, 0]
fn three_by_three() -> (Vec<f32>, Vec<f32>) {
    (vec![0.9, 0.2, 0.85, 0.1, 0.95, 0.7, 0.8, 0.3, 0.81], vec![1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
}

#[test]
fn threshold_metrics_by_hand() {
    // @0.8 predicted: image 0 {0, 2}, image 1 {1}, image 2 {0, 2}.
    // class 0: TP 2 / predicted 2 / positives 2; class 1: 1/1/2; class 2: 0/2/1.
    // CP = (1 + 1 + 0)/3, CR = (1 + 1/2 + 0)/3, OP = 3/5, OR = 3/5.
    let (scores, targets) = three_by_three();
    let matrix = ScoreMatrix::new(&scores, &targets, 3).unwrap();
    let m = ThresholdMetrics::compute(&scored(&matrix, TOP_K), Selection::Threshold(0.8)).unwrap();
    let (cp, cr) = (200.0 / 3.0, 50.0);
    assert!(close(m.cp, cp) && close(m.cr, cr), "{m:?}");
    assert!(close(m.cf1, 2.0 * cp * cr / (cp + cr)));
    assert!(close(m.op, 60.0) && close(m.or, 60.0) && close(m.of1, 60.0), "{m:?}");
}

#[test]
fn top_k_metrics_by_hand() {
    // top-1 predicted: image 0 {0}, image 1 {1}, image 2 {2}.
    // class 0: 1/1/2; class 1: 1/1/2; class 2: 0/1/1 → CP 2/3, CR 1/3, OP 2/3, OR 2/5.
    let (scores, targets) = three_by_three();
    let matrix = ScoreMatrix::new(&scores, &targets, 3).unwrap();
    let m = ThresholdMetrics::compute(&scored(&matrix, 1), Selection::TopK(1)).unwrap();
    assert!(close(m.cp, 200.0 / 3.0) && close(m.cr, 100.0 / 3.0), "{m:?}");
    assert!(close(m.cf1, 2.0 * (200.0 / 3.0) * (100.0 / 3.0) / 100.0));
    assert!(close(m.op, 200.0 / 3.0) && close(m.or, 40.0) && close(m.of1, 50.0), "{m:?}");
    // top-3 of 3 classes predicts everything: recall 100, precision = positives / labels.
    let all = ThresholdMetrics::compute(&scored(&matrix, 3), Selection::TopK(3)).unwrap();
    assert!(close(all.or, 100.0) && close(all.op, 500.0 / 9.0), "{all:?}");
    // A row that kept more classes (single-label runs keep 5 for top-5) gives the same top-1,
    // and asking for more than it kept is refused, naming both.
    let wide = scored(&matrix, 3);
    assert_eq!(ThresholdMetrics::compute(&wide, Selection::TopK(1)).unwrap(), m);
    let refused = ThresholdMetrics::compute(&scored(&matrix, 2), Selection::TopK(3)).unwrap_err().to_string();
    assert!(refused.contains("at most the 2 best classes") && refused.contains("k = 3"), "{refused}");
}

#[test]
fn tensor_and_slice_paths_agree_and_accumulate_batches() {
    let (scores, targets) = three_by_three();
    let matrix = ScoreMatrix::new(&scores, &targets, 3).unwrap();
    let direct = MetricsReport::compute(&scored(&matrix, TOP_K), 0.8).unwrap();
    let mut acc = MetricsAccumulator::new();
    for rows in [0..1usize, 1..3] {
        let s = Tensor::from_slice(&scores[rows.start * 3..rows.end * 3]).view([-1, 3]);
        let t = Tensor::from_slice(&targets[rows.start * 3..rows.end * 3]).view([-1, 3]);
        acc.update(&s, &t).unwrap();
    }
    assert_eq!(acc.images(), 3);
    assert_eq!(acc.compute(0.8).unwrap().unwrap(), direct);
    assert_eq!(acc.into_rows(), (scores, targets));
    assert!(MetricsAccumulator::new().compute(0.8).unwrap().is_none());
}

#[test]
fn bad_inputs_name_the_fault() {
    let err = ScoreMatrix::new(&[0.1, f32::NAN], &[0.0, 1.0], 2).unwrap_err();
    assert_eq!(err.to_string(), "score at [0, 1] is NaN, not a finite number");
    let err = ScoreMatrix::new(&[0.1, 0.2], &[0.0, 2.0], 1).unwrap_err();
    assert_eq!(err.to_string(), "target at [1, 0] is 2; expected 1 (positive), 0 (negative) or -1 (unknown, ignored)");
    assert!(matches!(ScoreMatrix::new(&[0.1, 0.2, 0.3], &[0.0; 3], 2), Err(MetricsError::LengthMismatch { .. })));
    let mut acc = MetricsAccumulator::new();
    acc.update_slices(&[0.1, 0.2], &[0.0, 1.0], 2).unwrap();
    let err = acc.update_slices(&[0.1, 0.2, 0.3], &[0.0, 1.0, 0.0], 3).unwrap_err();
    assert_eq!(err.to_string(), "batch has 3 classes but earlier batches had 2");
}

#[test]
fn report_prints_the_excluded_class_count() {
    let scores = row_major(&[&[0.9, 0.1], &[0.3, 0.4]]);
    let targets = row_major(&[&[1.0, 0.0], &[0.0, 0.0]]);
    let report = MetricsReport::compute(&scored(&ScoreMatrix::new(&scores, &targets, 2).unwrap(), TOP_K), 0.5).unwrap();
    let text = report.to_string();
    assert!(text.starts_with("mAP 100.00 over 2 images, 2 classes (1 without positives, excluded)"), "{text}");
    assert!(text.contains("top-2"), "{text}");
}
