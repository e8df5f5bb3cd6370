//! Tar shards against loose image files, on the real COCO JPEGs of
//! ../shared/data/coco-mini, each measurement in a child process:
//!
//! 1. **Throughput.** The 208 training images as files (the COCO source)
//!    and packed into 8 MiB shards (3 of them), through the same loader
//!    settings: 224 px, batches of 32, 2 decode threads, the default
//!    augmentation, shards with 2 readers and a 1,000-sample shuffle buffer.
//!    Epochs alternate between the two, 8 each; time per image and the
//!    ratio shards ÷ files.
//! 2. **open() calls** of one epoch of each, counted by strace.
//! 3. **Peak RSS** of an epoch with `shuffle_buffer` at 1,000 and 10,000,
//!    over 20,800 samples (the 208 images 100 times, under new keys; the 10,000
//!    buffer fills after 9,000 draws, as it starts a tenth full), and of
//!    the files loader over the same images for reference.
//!
//! `cargo bench --bench shards [-- throughput|opens|rss]`; writes
//! target/bench/asl_shards.json.

use asl::data::pack::{pack_split, write_index, PackOptions};
use asl::data::sources::{CocoOptions, CocoSplit, Manifest};
use asl::data::{DataConfig, Dataset, Loader, LoaderConfig, Normalization, Sample, SourceKind, Split, SplitData};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tch::Device;

#[path = "support/child.rs"]
mod child;

const EPOCHS: usize = 8;
const REPEATS: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child_main(&args[i + 1..]);
    }
    // `cargo test --all-targets` runs bench mains too; only `cargo bench` passes --bench.
    if !args.iter().any(|a| a == "--bench") {
        println!("benchmark skipped outside `cargo bench`");
        return;
    }
    let coco = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/coco-mini");
    if !coco.is_dir() {
        eprintln!("SKIPPED: the shards bench needs {}", coco.display());
        return;
    }
    let wanted = |name: &str| {
        !args.iter().any(|a| ["throughput", "opens", "rss"].contains(&a.as_str())) || args.contains(&name.to_string())
    };
    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/shards");
    let shards = pack_once(&work.join("coco-mini"), &coco_train(&coco), 8 << 20);
    let mut results = BTreeMap::new();
    let (coco, shards) = (coco.display().to_string(), shards.display().to_string());
    if wanted("throughput") {
        let (report, _) = child::run_child(&[], &["throughput", &coco, &shards]);
        let figures: BTreeMap<String, f64> = serde_json::from_str(&report).unwrap();
        let ratio = figures["shards"] / figures["files"];
        println!(
            "throughput, 224 px, 2 threads: files {:.2} ms/image, shards {:.2} ms/image: shards ÷ files {ratio:.3}",
            figures["files"] / 1e6,
            figures["shards"] / 1e6
        );
        results.insert("throughput/files_ns_per_image".to_string(), figures["files"]);
        results.insert("throughput/shards_ns_per_image".to_string(), figures["shards"]);
        results.insert("throughput/ratio".to_string(), ratio);
    }
    if wanted("opens") {
        for (kind, path) in [("files", &coco), ("shards", &shards)] {
            let trace = work.join(format!("opens-{kind}.txt"));
            let trace_arg = trace.display().to_string();
            let strace = ["strace", "-f", "-qq", "-e", "trace=open,openat", "-o", &trace_arg];
            let (report, _) = child::run_child(&strace, &["epoch", kind, path, "1000"]);
            let log = std::fs::read_to_string(&trace).unwrap();
            let count = |ending: &str| log.lines().filter(|l| l.contains(ending) && !l.contains("ENOENT")).count();
            let (jpegs, tars, all) = (count(".jpg\""), count(".tar\""), log.lines().count());
            println!(
                "open() in one epoch of {kind} ({}): {jpegs} of .jpg, {tars} of .tar, {all} in all",
                report.trim()
            );
            results.insert(format!("opens/{kind}/jpg"), jpegs as f64);
            results.insert(format!("opens/{kind}/tar"), tars as f64);
        }
    }
    if wanted("rss") {
        let (list, repeated) = repeated_list(&work.join("repeated"), &coco_train(Path::new(&coco)));
        let shards = pack_once(&work.join("repeated-shards"), &repeated, 256 << 20).display().to_string();
        let list = list.display().to_string();
        let (_, files_mb) = child::run_child(&[], &["epoch", "list", &list, "0"]);
        println!("peak RSS, an epoch of {} images as files: {files_mb:.0} MB", repeated.len());
        results.insert("rss/files_mb".into(), files_mb);
        for buffer in ["1000", "10000"] {
            let (_, mb) = child::run_child(&[], &["epoch", "shards", &shards, buffer]);
            println!(
                "peak RSS, an epoch of {} samples from shards, shuffle_buffer {buffer}: {mb:.0} MB",
                repeated.len()
            );
            results.insert(format!("rss/shards_buffer_{buffer}_mb"), mb);
        }
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/asl_shards.json");
    std::fs::write(&out, serde_json::to_string_pretty(&results).unwrap()).unwrap();
}

fn coco_train(coco: &Path) -> Dataset {
    CocoSplit::find(coco, "train").unwrap().load(&CocoOptions::default()).unwrap()
}

/// `dataset` packed as the train split into `dir`, unless already there.
fn pack_once(dir: &Path, dataset: &Dataset, shard_bytes: u64) -> PathBuf {
    if !dir.join("manifest.json").is_file() {
        let _ = std::fs::remove_dir_all(dir);
        let options = PackOptions { shard_bytes, resize: None, strict: true };
        let mut manifest = Manifest { unlisted: dataset.unlisted, ..Manifest::default() };
        manifest.splits.insert("train".into(), pack_split(dataset, "train", dir, &options, &mut |_| {}).unwrap());
        write_index(dir, &dataset.class_names, &manifest).unwrap();
    }
    dir.to_path_buf()
}

/// The images of `dataset` `REPEATS` times under new names (symbolic
/// links), and a list file of them with their labels.
fn repeated_list(dir: &Path, dataset: &Dataset) -> (PathBuf, Dataset) {
    std::fs::create_dir_all(dir).unwrap();
    let mut samples = Vec::new();
    let mut rows = String::from("path,labels\n");
    for copy in 0..REPEATS {
        for index in 0..dataset.len() {
            let sample = dataset.sample(index);
            let link = dir.join(format!("r{copy:02}_{}", sample.path.file_name().unwrap().to_string_lossy()));
            if !link.exists() {
                std::os::unix::fs::symlink(&sample.path, &link).unwrap();
            }
            let names: Vec<&str> = sample.positives.iter().map(|&c| dataset.class_names[c as usize].as_str()).collect();
            rows.push_str(&format!("{},{}\n", link.file_name().unwrap().to_string_lossy(), names.join(" ")));
            samples.push(Sample { path: link, ..sample });
        }
    }
    let list = dir.join("list.csv");
    std::fs::write(&list, rows).unwrap();
    (list, Dataset::from_samples(dataset.class_names.clone(), samples))
}

fn loader(data: SplitData, shuffle_buffer: usize) -> Loader {
    let config = LoaderConfig {
        batch_size: 32,
        image_size: 224,
        threads: 2,
        readers: 2,
        shuffle_buffer,
        ..LoaderConfig::default()
    };
    Loader::new(data, config).unwrap()
}

fn open(kind: &str, path: &str) -> SplitData {
    let source = match kind {
        "files" => SourceKind::Coco,
        "list" => SourceKind::List,
        _ => SourceKind::Shards,
    };
    let config = DataConfig { source, path: Some(path.into()), ..DataConfig::default() };
    config.open_split(Split::Train).unwrap()
}

/// Runs one epoch; the images it delivered and the time it took.
fn run_epoch(loader: &Loader, epoch: u64) -> (usize, Duration) {
    let (started, mut images) = (Instant::now(), 0);
    for batch in loader.epoch(epoch, 0) {
        let batch = batch.unwrap();
        let _tensor = batch.images_tensor(Device::Cpu, &Normalization::none()).unwrap();
        images += batch.len();
    }
    (images, started.elapsed())
}

fn child_main(args: &[String]) {
    // As `asl` itself runs.
    let _memory = asl::host_memory::keep_freed_memory();
    match args[0].as_str() {
        "throughput" => {
            let files = loader(open("files", &args[1]), 1000);
            let shards = loader(open("shards", &args[2]), 1000);
            let mut totals = [(0usize, Duration::ZERO); 2];
            for epoch in 0..EPOCHS as u64 {
                for (total, loader) in totals.iter_mut().zip([&files, &shards]) {
                    let (images, time) = run_epoch(loader, epoch);
                    *total = (total.0 + images, total.1 + time);
                }
            }
            let ns = |(images, time): (usize, Duration)| time.as_nanos() as f64 / images as f64;
            let figures = BTreeMap::from([("files", ns(totals[0])), ("shards", ns(totals[1]))]);
            println!("{}", serde_json::to_string(&figures).unwrap());
        }
        "epoch" => {
            let (images, time) = run_epoch(&loader(open(&args[1], &args[2]), args[3].parse().unwrap()), 0);
            println!("{images} images in {:.1} s", time.as_secs_f64());
        }
        other => panic!("unknown measurement {other}"),
    }
}
