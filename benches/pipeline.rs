//! Data-pipeline throughput on the real COCO JPEGs of ../shared/data/coco-mini:
//! decode + squish-resize + Cutout + RandAugment into u8 batches and the
//! float NCHW tensor, at 224 and 448, with the loader's threads. Also a
//! single-thread breakdown by stage. `bench/pipeline_baseline.py` runs the
//! torchvision/PIL DataLoader equivalent; `bench/report.py` divides.
//!
//! Writes target/bench/asl_pipeline.json: {id: nanoseconds per image}.

use asl::data::sources::{CocoOptions, CocoSplit};
use asl::data::transform::{apply_op, decode_rgb_into, resize_into, AugmentConfig, DecodeBuffers, Resizer, OPS};
use asl::data::{sample_rng, Loader, LoaderConfig, Normalization, Stream};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::Device;

const EPOCHS: u64 = 3;
const THREADS: usize = 2;

fn main() {
    // `cargo test --all-targets` runs bench mains too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark skipped outside `cargo bench`");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/coco-mini");
    if !root.is_dir() {
        eprintln!("SKIPPED: pipeline bench needs {}", root.display());
        return;
    }
    let dataset = Arc::new(CocoSplit::find(&root, "train").unwrap().load(&CocoOptions::default()).unwrap());
    let mut results = BTreeMap::new();
    for size in [224u32, 448] {
        let config = LoaderConfig { batch_size: 32, image_size: size, threads: THREADS, ..LoaderConfig::default() };
        let loader = Loader::new(Arc::clone(&dataset), config).unwrap();
        let (mut images, started) = (0usize, Instant::now());
        for epoch in 0..EPOCHS {
            for batch in loader.epoch(epoch, 0) {
                let batch = batch.unwrap();
                let _tensor = batch.images_tensor(Device::Cpu, &Normalization::none()).unwrap();
                images += batch.len();
            }
        }
        let ns = started.elapsed().as_nanos() as f64 / images as f64;
        println!("pipeline/{size}: {:.1} images/s ({THREADS} threads)", 1e9 / ns);
        results.insert(format!("pipeline/{size}"), ns);
        for (stage, ns) in stage_breakdown(&(0..dataset.len()).map(|i| dataset.path(i)).collect::<Vec<_>>(), size) {
            println!("  {stage:<8} {:.2} ms/image (one thread)", ns / 1e6);
            results.insert(format!("stage/{size}/{stage}"), ns);
        }
        let costs = op_costs(&(0..dataset.len().min(32)).map(|i| dataset.path(i)).collect::<Vec<_>>(), size);
        let line: Vec<String> = costs.iter().map(|(op, ns)| format!("{op} {:.2}", ns / 1e6)).collect();
        println!("  RandAugment ops, ms/image when applied: {}", line.join(", "));
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/asl_pipeline.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, serde_json::to_string_pretty(&results).unwrap()).unwrap();
}

/// Mean single-thread time per image of each stage.
fn stage_breakdown(paths: &[PathBuf], size: u32) -> Vec<(&'static str, f64)> {
    let (mut decode, mut resize, mut augment, mut copy) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut resizer, mut buffers) = (Resizer::new(), DecodeBuffers::default());
    let (mut pixels, mut scratch) = (vec![0u8; (size * size * 3) as usize], Vec::new());
    let augment_config = AugmentConfig::default();
    for (i, path) in paths.iter().enumerate() {
        let t = Instant::now();
        let image = decode_rgb_into(path, &mut buffers).unwrap();
        decode += t.elapsed();
        let t = Instant::now();
        resize_into(image, size, &mut pixels, &mut resizer);
        resize += t.elapsed();
        let t = Instant::now();
        augment_config.apply(
            &mut pixels,
            size as usize,
            &mut scratch,
            &mut sample_rng(Stream::Augment, 0, 0, i as u64),
        );
        augment += t.elapsed();
        let t = Instant::now();
        let tensor = tch::Tensor::from_slice(&pixels).view([1, size as i64, size as i64, 3]);
        let _ = tensor.to_kind(tch::Kind::Float).divide_scalar(255.0).permute([0, 3, 1, 2]);
        copy += t.elapsed();
    }
    let per = |d: Duration| d.as_nanos() as f64 / paths.len() as f64;
    vec![("decode", per(decode)), ("resize", per(resize)), ("augment", per(augment)), ("tensor", per(copy))]
}

/// Single-thread time of each RandAugment operation (magnitude 9 of 30).
fn op_costs(paths: &[PathBuf], size: u32) -> Vec<(String, f64)> {
    let (mut resizer, mut buffers, mut scratch) = (Resizer::new(), DecodeBuffers::default(), Vec::new());
    let images: Vec<Vec<u8>> = paths
        .iter()
        .map(|path| {
            let mut pixels = vec![0u8; (size * size * 3) as usize];
            resize_into(decode_rgb_into(path, &mut buffers).unwrap(), size, &mut pixels, &mut resizer);
            pixels
        })
        .collect();
    OPS.iter()
        .map(|&op| {
            let mut working = images.clone();
            let started = Instant::now();
            for pixels in &mut working {
                apply_op(op, 0.3, 1.0, pixels, size as usize, &mut scratch);
            }
            (format!("{op:?}"), started.elapsed().as_nanos() as f64 / images.len() as f64)
        })
        .collect()
}
