//! One training step (forward + ASL + backward + Adam step) of `tresnet_m`
//! at 224 with batch 8 on CPU, in images per second, set up as `asl train`
//! sets it up: freed host memory kept for reuse, the default
//! `train.channels_last`, and a batch laid out NHWC as the loader builds it.
//! `bench/train_step_baseline.py` does the same step in PyTorch eager mode
//! with the same weights. `make bench` exports the model to
//! target/bench/tresnet_m_224.pt first.
//!
//! Writes target/bench/asl_train_step.json: {id: nanoseconds per image},
//! under the ids of both baselines (see bench/train_step_baseline.py).

use asl::loss::AsymmetricLoss;
use asl::model::Network;
use asl::train::{Adam, LoopConfig, OptimizerConfig, StepHyper};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 8;
/// Untimed steps first: the first two grow the heap to its steady size
/// (see src/host_memory.rs); a training run's thousands of steps do not.
const WARMUP: usize = 2;
const STEPS: usize = 10;

fn main() {
    // `cargo test --all-targets` runs bench mains too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark skipped outside `cargo bench`");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("target/bench/tresnet_m_224.pt");
    if !model.is_file() {
        eprintln!("SKIPPED: {} missing; `make bench` exports it", model.display());
        return;
    }
    asl::host_memory::keep_freed_memory();
    let mut network = Network::load(&model, Device::Cpu).unwrap();
    network.set_train(true).unwrap();
    let channels_last = LoopConfig::default().channels_last.enabled(Device::Cpu);
    if channels_last {
        network.to_channels_last().unwrap();
    }
    let mut optimizer = Adam::new(network.trainable_parameters().unwrap(), OptimizerConfig::default()).unwrap();
    let loss = AsymmetricLoss::asl();
    tch::manual_seed(0);
    let images = Tensor::rand([BATCH, 224, 224, 3], (Kind::Float, Device::Cpu)).permute([0, 3, 1, 2]);
    let targets = Tensor::rand([BATCH, 80], (Kind::Float, Device::Cpu)).lt(0.04).to_kind(Kind::Float);
    let mut step = || {
        optimizer.zero_grad().unwrap();
        // The trainer's entry point: its batches are valid by construction.
        let value = loss.forward_unchecked(&network.forward(&images).unwrap(), &targets, None).unwrap();
        value.backward();
        optimizer.step(StepHyper { lr: 1e-4, beta1: 0.9 }, None).unwrap();
    };
    for _ in 0..WARMUP {
        step();
    }
    let started = Instant::now();
    for _ in 0..STEPS {
        step();
    }
    let ns = started.elapsed().as_nanos() as f64 / (STEPS as i64 * BATCH) as f64;
    println!(
        "train_step/tresnet_m_224_b8: {:.2} images/s ({} torch threads, channels_last {channels_last})",
        1e9 / ns,
        tch::get_num_threads()
    );
    let out = root.join("target/bench/asl_train_step.json");
    // One figure against both baselines: eager as it comes, and eager with asl's settings.
    let figures =
        serde_json::json!({"train_step/tresnet_m_224_b8": ns, "train_step/tresnet_m_224_b8+same_settings": ns});
    std::fs::write(out, figures.to_string()).unwrap();
}
