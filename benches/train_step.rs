//! One training step (forward + ASL + backward + Adam step) of `tresnet_m`
//! at 224 with batch 8 on CPU, in images per second.
//! `bench/train_step_baseline.py` does the same step in PyTorch eager mode
//! with the same weights. `make bench` exports the model to
//! target/bench/tresnet_m_224.pt first.
//!
//! Writes target/bench/asl_train_step.json: {id: nanoseconds per image}.

use asl::loss::AsymmetricLoss;
use asl::model::Network;
use asl::train::{Adam, OptimizerConfig, StepHyper};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 8;
const STEPS: usize = 3;

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
    let mut network = Network::load(&model, Device::Cpu).unwrap();
    network.set_train(true).unwrap();
    let mut optimizer = Adam::new(network.trainable_parameters().unwrap(), OptimizerConfig::default()).unwrap();
    let loss = AsymmetricLoss::asl();
    tch::manual_seed(0);
    let images = Tensor::rand([BATCH, 3, 224, 224], (Kind::Float, Device::Cpu));
    let targets = Tensor::rand([BATCH, 80], (Kind::Float, Device::Cpu)).lt(0.04).to_kind(Kind::Float);
    let mut step = || {
        optimizer.zero_grad().unwrap();
        let value = loss.forward(&network.forward(&images).unwrap(), &targets).unwrap();
        value.backward();
        optimizer.step(StepHyper { lr: 1e-4, beta1: 0.9 }, None).unwrap();
    };
    step();
    let started = Instant::now();
    for _ in 0..STEPS {
        step();
    }
    let ns = started.elapsed().as_nanos() as f64 / (STEPS as i64 * BATCH) as f64;
    println!("train_step/tresnet_m_224_b8: {:.2} images/s ({} torch threads)", 1e9 / ns, tch::get_num_threads());
    let out = root.join("target/bench/asl_train_step.json");
    std::fs::write(out, serde_json::json!({"train_step/tresnet_m_224_b8": ns}).to_string()).unwrap();
}
