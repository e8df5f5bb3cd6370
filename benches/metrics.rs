//! mAP over COCO val2014's size, 40,137 images × 80 classes, and the full
//! report (mAP + threshold + top-3). Baseline: the reference's numpy mAP
//! in `bench/loss_baseline.py`.

use asl::metrics::{MeanAveragePrecision, MetricsReport, ScoreMatrix, ScoredLabels, TOP_K};
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

fn coco_val_sized() -> (Vec<f32>, Vec<f32>) {
    tch::manual_seed(0);
    let targets = Tensor::rand([40_137, 80], (Kind::Float, Device::Cpu)).lt(0.036).to_kind(Kind::Float);
    let scores = (Tensor::randn([40_137, 80], (Kind::Float, Device::Cpu)) + &targets * 2.0 - 2.0).sigmoid();
    let to_vec = |t: Tensor| Vec::<f32>::try_from(t.view([-1])).unwrap();
    (to_vec(scores), to_vec(targets))
}

fn metrics(c: &mut Criterion) {
    let (scores, targets) = coco_val_sized();
    let matrix = ScoreMatrix::new(&scores, &targets, 80).unwrap();
    let scored = ScoredLabels::from_matrix(&matrix, TOP_K);
    let mut group = c.benchmark_group("metrics");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.bench_function("map_40137x80", |b| b.iter(|| MeanAveragePrecision::compute(&scored)));
    group.bench_function("report_40137x80", |b| b.iter(|| MetricsReport::compute(&scored, 0.8).unwrap()));
    group.finish();
}

criterion_group!(benches, metrics);
criterion_main!(benches);
