//! Open Images at full scale, measured: wall time and peak RSS of each
//! piece, every one in a child process of its own so that the peaks do not
//! mix (`getrusage(RUSAGE_CHILDREN)` after each).
//!
//! Every child links libtorch, whose libraries alone make up part of each
//! peak: `step` at 80 classes shows that floor.
//!
//! 1. **Index.** A human-labels CSV of the real shape, generated once into
//!    `target/bench/openimages-index-<scale>/`: 9 M images × 6.7 rows
//!    (60 M), 19,000 MIDs of which 9,605 trainable, nine rows in ten naming
//!    a trainable one; loaded by the
//!    `openimages` source (the image folder is not read). Also at 1/10.
//! 2. **Validation.** A 125,436 × 9,605 split with 9 verified labels per
//!    image (the test split's density), random scores: the sparse scored
//!    labels and report, against the dense `[images, classes]` matrices of
//!    the path before (`MetricsAccumulator`).
//! 3. **Step.** The head and the loss of a step at 9,605 classes against 80:
//!    targets written from the compact labels, a linear layer on TResNet-L's
//!    2,432 features, ASL with unknowns weighted, forward and backward.
//! 4. **Audit scoring.** The labels an audit of Open Images' 1.74 M
//!    box-annotated training images keeps sparsely (6 verified and the best
//!    20 unverified per image, 601 classes, random probabilities): the
//!    per-class calibration, the 1,000 most suspect, the relabelled ones
//!    and the contact sheet's, against holding and sorting every label's
//!    suspect.
//!
//! `cargo bench --bench openimages_scale [-- index|validation|step|audit] [--scale 0.1]`

use asl::audit::score::{calibrate, most_suspect, relabelled, LabelScore, Observed, SuspectKind};
use asl::data::sources::{OpenImagesOptions, OpenImagesSplit};
use asl::data::{Dataset, Sample, Unlisted};
use asl::loss::{AsymmetricLoss, PartialLabels};
use asl::metrics::{MetricsAccumulator, MetricsReport, ScoredLabels, TOP_K};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[path = "support/child.rs"]
mod child;

const IMAGES: usize = 9_000_000;
const ROWS_PER_IMAGE: f64 = 6.7;
const MIDS: usize = 19_000;
const TRAINABLE: usize = 9_605;
const TEST_IMAGES: usize = 125_436;
const VERIFIED_PER_TEST_IMAGE: usize = 9;
const AUDIT_IMAGES: usize = 1_743_042;
const AUDIT_CLASSES: u32 = 601;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child(&args[i + 1], &args[i + 2..]);
    }
    // `cargo test --all-targets` runs this binary too, without `--bench`: minutes and 10 GB are for
    // benchmarking only.
    if !args.iter().any(|a| a == "--bench") {
        println!("benchmark skipped outside `cargo bench`");
        return;
    }
    let scale = args.iter().position(|a| a == "--scale").map_or(1.0, |i| args[i + 1].parse::<f64>().unwrap());
    let wanted = |name: &str| {
        !args.iter().any(|a| ["index", "validation", "step", "audit"].contains(&a.as_str()))
            || args.contains(&name.to_string())
    };
    if wanted("index") {
        for s in if args.contains(&"--scale".to_string()) { vec![scale] } else { vec![0.1, 1.0] } {
            let dir = generate_index(s);
            measure(&format!("index load, scale {s}"), "index", &[dir.display().to_string()]);
        }
    }
    if wanted("validation") {
        measure("validation, sparse (scored labels)", "sparse", &[]);
        measure("validation, dense [images, classes]", "dense", &[]);
    }
    if wanted("step") {
        for classes in [80, TRAINABLE] {
            measure(&format!("head + loss step, {classes} classes"), "step", &[classes.to_string()]);
        }
    }
    if wanted("audit") {
        measure("audit scoring, the 1,000 most suspect held", "audit", &["1000".into()]);
        measure("audit scoring, every label's suspect held and sorted", "audit", &[usize::MAX.to_string()]);
    }
}

/// Runs `what` in a child and prints its own report with the child's peak RSS.
fn measure(label: &str, what: &str, args: &[String]) {
    let started = Instant::now();
    let args: Vec<&str> = std::iter::once(what).chain(args.iter().map(String::as_str)).collect();
    let (report, peak_mb) = child::run_child(&[], &args);
    let wall = started.elapsed().as_secs_f64();
    println!("{label}: {} (child wall {wall:.1} s, peak RSS {peak_mb:.0} MB)", report.trim());
}

fn child(what: &str, args: &[String]) {
    match what {
        "index" => load_index(Path::new(&args[0])),
        "sparse" => validation(false),
        "dense" => validation(true),
        "step" => step(args[0].parse().unwrap()),
        "audit" => audit_scoring(args[0].parse().unwrap()),
        other => panic!("unknown measurement {other}"),
    }
}

fn mid(i: usize) -> String {
    format!("/m/{i:07x}")
}

/// The CSV and class list at `scale`, written once.
fn generate_index(scale: f64) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench/openimages-index-{scale}"));
    let csv = dir.join("oidv6-train-annotations-human-imagelabels.csv");
    if csv.is_file() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let trainable: String = (0..TRAINABLE).map(|i| mid(i * 2) + "\n").collect();
    std::fs::write(dir.join("oidv6-classes-trainable.txt"), trainable).unwrap();
    let tmp = csv.with_extension("tmp");
    let mut out = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(&tmp).unwrap());
    writeln!(out, "ImageID,Source,LabelName,Confidence").unwrap();
    let images = (IMAGES as f64 * scale) as usize;
    for image in 0..images {
        let id = 0x1000_0000_0000_0000u64 + image as u64 * 7919;
        let rows = if rng.random::<f64>() < ROWS_PER_IMAGE.fract() { 7 } else { 6 };
        for _ in 0..rows {
            // Most human-verified rows name trainable classes (even MIDs here); one in ten does not.
            let class = if rng.random::<f64>() < 0.9 {
                2 * rng.random_range(0..TRAINABLE)
            } else {
                2 * rng.random_range(0..(MIDS - TRAINABLE)) + 1
            };
            let confidence = u8::from(rng.random::<f64>() < 0.7);
            writeln!(out, "{id:016x},verification,{},{confidence}", mid(class)).unwrap();
        }
    }
    out.flush().unwrap();
    drop(out);
    std::fs::rename(&tmp, &csv).unwrap();
    dir
}

fn load_index(dir: &Path) {
    let started = Instant::now();
    let split = OpenImagesSplit::find(dir, "train").unwrap();
    let options = OpenImagesOptions { skip_image_check: true, ..Default::default() };
    let (dataset, counts) = split.load(&options).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} images, {} labels kept, {} untrainable rows dropped in {seconds:.1} s; index {:.0} MB",
        dataset.len(),
        dataset.labels().total(),
        counts.untrainable_rows,
        dataset.heap_bytes() as f64 / 1e6
    );
}

/// A test-split-sized dataset: 9 verified labels per image, a third positive.
fn test_split(rng: &mut ChaCha8Rng) -> Dataset {
    let mut dataset = Dataset::new((0..TRAINABLE).map(|i| i.to_string()).collect(), Unlisted::Unknown, PathBuf::new());
    for image in 0..TEST_IMAGES {
        let mut sample = Sample { path: format!("{image}.jpg").into(), ..Sample::default() };
        for _ in 0..VERIFIED_PER_TEST_IMAGE {
            let class = rng.random_range(0..TRAINABLE as u32);
            if rng.random::<f64>() < 1.0 / 3.0 {
                sample.positives.push(class)
            } else {
                sample.negatives.push(class)
            }
        }
        dataset.push_sample(&sample);
    }
    dataset
}

fn validation(dense: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let dataset = test_split(&mut rng);
    let started = Instant::now();
    let (mut scores, mut targets) = (vec![0f32; TRAINABLE], vec![0f32; TRAINABLE]);
    let mut sparse = ScoredLabels::new(TRAINABLE, TOP_K);
    let mut accumulator = MetricsAccumulator::new();
    for image in 0..dataset.len() {
        scores.iter_mut().for_each(|s| *s = rng.random::<f32>());
        dataset.write_targets(image, &mut targets);
        if dense {
            accumulator.update_slices(&scores, &targets, TRAINABLE).unwrap();
        } else {
            sparse.push_row(image as u32, &scores, &targets).unwrap();
        }
    }
    let report =
        if dense { accumulator.compute(0.8).unwrap().unwrap() } else { MetricsReport::compute(&sparse, 0.8).unwrap() };
    println!(
        "mAP {:.3} over {} images in {:.1} s",
        report.map().unwrap(),
        report.images,
        started.elapsed().as_secs_f64()
    );
}

fn step(classes: usize) {
    tch::set_num_threads(2);
    let (batch, features) = (56i64, 2432i64);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut dataset = Dataset::new((0..classes).map(|i| i.to_string()).collect(), Unlisted::Unknown, PathBuf::new());
    for image in 0..batch {
        let mut sample = Sample { path: format!("{image}.jpg").into(), ..Sample::default() };
        for _ in 0..7 {
            let class = rng.random_range(0..classes as u32);
            if rng.random::<f64>() < 0.7 {
                sample.positives.push(class)
            } else {
                sample.negatives.push(class)
            }
        }
        dataset.push_sample(&sample);
    }
    let weight = (Tensor::randn([classes as i64, features], (Kind::Float, Device::Cpu)) * 0.01).set_requires_grad(true);
    let inputs = Tensor::randn([batch, features], (Kind::Float, Device::Cpu));
    let loss = AsymmetricLoss::asl().with_gamma_neg(7.0).unwrap();
    let mut targets = vec![0f32; batch as usize * classes];
    let mut times = Vec::new();
    for round in 0..25 {
        let started = Instant::now();
        for (row, chunk) in targets.chunks_mut(classes).enumerate() {
            dataset.write_targets(row, chunk);
        }
        let states = Tensor::from_slice(&targets).view([batch, classes as i64]);
        let partial = PartialLabels::from_states_unchecked(&states, 0.5).unwrap();
        let logits = inputs.matmul(&weight.transpose(0, 1));
        let value = loss.forward_unchecked(&logits, &partial.targets, Some(&partial.weights)).unwrap();
        value.backward();
        let _ = weight.grad().zero_();
        if round >= 5 {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    println!("median {:.2} ms per step (batch {batch}, 20 timed after 5)", times[times.len() / 2]);
}

/// An audit's scoring of its sparse rows, the `limit` most suspect kept.
fn audit_scoring(limit: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut labels = Vec::with_capacity(AUDIT_IMAGES * 26);
    for image in 0..AUDIT_IMAGES as u32 {
        for verified in 0..26 {
            let class = rng.random_range(0..AUDIT_CLASSES);
            let u: f32 = rng.random();
            let (observed, probability) = match (verified < 6, rng.random::<f64>() < 0.5) {
                (true, true) => (Observed::Positive, u.sqrt()),
                (true, false) => (Observed::Negative, u * u),
                (false, _) => (Observed::Unknown, u * u * u),
            };
            labels.push(LabelScore { image, class, observed, probability });
        }
    }
    let started = Instant::now();
    let calibration = calibrate(&labels, AUDIT_CLASSES as usize);
    let calibrated = started.elapsed().as_secs_f64();
    let listed = most_suspect(&labels, &calibration, limit, |_| true);
    let flipped = relabelled(&labels, &calibration);
    let shown = [SuspectKind::Missing, SuspectKind::Wrong]
        .map(|kind| most_suspect(&labels, &calibration, 60, |s| s.kind == kind));
    println!(
        "{} labels: calibrated in {calibrated:.1} s, {} listed, {} relabelled, {} shown in {:.1} s in all",
        labels.len(),
        listed.len().min(1000),
        flipped.len(),
        shown[0].len() + shown[1].len(),
        started.elapsed().as_secs_f64()
    );
}
