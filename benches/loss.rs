//! Loss forward + backward (the trainer's unchecked entry point) at the sizes of COCO ([128, 80]) and Open Images
//! ([64, 9605]), on the CPU and, when one is present, on CUDA (ids ending
//! in `_cuda`). `bench/loss_baseline.py` times timm's
//! `AsymmetricLossMultiLabel` on the same sizes; `bench/report.py` divides.

use asl::loss::AsymmetricLoss;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

fn loss_forward_backward(c: &mut Criterion) {
    let mut group = c.benchmark_group("loss_fwd_bwd");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    let loss = AsymmetricLoss::asl();
    let devices = std::iter::once(Device::Cpu).chain(tch::Cuda::is_available().then_some(Device::Cuda(0)));
    for device in devices {
        let suffix = if device.is_cuda() { "_cuda" } else { "" };
        for (batch, classes) in [(128i64, 80i64), (64, 9605)] {
            tch::manual_seed(0);
            let logits = (Tensor::randn([batch, classes], (Kind::Float, device)) * 3.0).set_requires_grad(true);
            let targets = Tensor::rand([batch, classes], (Kind::Float, device)).lt(0.04).to_kind(Kind::Float);
            group.bench_function(BenchmarkId::from_parameter(format!("{batch}x{classes}{suffix}")), |b| {
                b.iter(|| {
                    loss.forward_unchecked(&logits, &targets, None).unwrap().backward();
                    // CUDA kernels run asynchronously: time them to completion.
                    if let Device::Cuda(index) = device {
                        tch::Cuda::synchronize(index as i64);
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, loss_forward_backward);
criterion_main!(benches);
