//! `asl infer`: probabilities for new images, one JSON line per image.

use super::model_args::ModelArgs;
use anyhow::{bail, Context, Result};
use asl::data::{Dataset, Loader, LoaderConfig, Sample};
use asl::metrics::ClassThresholds;
use clap::Args;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::Kind;

const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "JPG", "PNG"];

#[derive(Args)]
pub struct InferArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Images, directories of images, or text files listing one image path per line.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Report labels with probability at least this. Without it, per-class thresholds saved by
    /// `asl validate --tune-thresholds` are used when present, else 0.5.
    #[arg(long, conflicts_with = "top_k")]
    threshold: Option<f32>,
    /// Report the k most probable labels instead.
    #[arg(long)]
    top_k: Option<usize>,
    /// Write JSON Lines here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// How labels are picked for each image.
enum Rule {
    TopK(usize),
    PerClass(Vec<f32>),
}

pub fn run(args: &InferArgs) -> Result<()> {
    let (network, size, classes) = args.model.load()?;
    let model_file = args.model.model_file()?;
    let names: Vec<String> = match network.card().class_names.clone() {
        Some(names) if names.len() == classes => names,
        _ => (0..classes).map(|i| i.to_string()).collect(),
    };
    let rule = match (args.top_k, args.threshold, ClassThresholds::load_beside(&model_file)?) {
        (Some(k), _, _) => Rule::TopK(k),
        (None, Some(t), _) => Rule::PerClass(vec![t; classes]),
        (None, None, Some(tuned)) if tuned.thresholds.len() == classes => Rule::PerClass(tuned.thresholds),
        (None, None, Some(tuned)) => bail!(
            "{} holds {} thresholds but {} has {classes} classes: it was tuned for another model. Tune it again \
             with `asl validate --tune-thresholds`, delete it, or pass --threshold",
            ClassThresholds::path_for(&model_file).display(),
            tuned.thresholds.len(),
            model_file.display()
        ),
        (None, None, None) => Rule::PerClass(vec![0.5; classes]),
    };
    let samples = collect_images(&args.inputs)?;
    let total = samples.len();
    let dataset = Arc::new(Dataset::from_samples(names.clone(), samples));
    let loader = Loader::new(Arc::clone(&dataset), LoaderConfig::evaluation(args.model.batch_size, size))?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let normalization = asl::evaluate::input_normalization(&network)?;
    let started = Instant::now();
    let mut scored = 0;
    for batch in loader.epoch(0, 0) {
        let batch = batch?;
        let mut lines: Vec<(usize, serde_json::Value)> =
            batch.skipped.iter().map(|s| (s.index, json!({"file": s.path, "error": s.reason}))).collect();
        if !batch.is_empty() {
            let images = batch.images_tensor(network.device(), &normalization)?;
            let logits =
                tch::no_grad(|| asl::ops::with_cuda_autocast(network.device().is_cuda(), || network.forward(&images)))?;
            let probabilities =
                Vec::<f32>::try_from(logits.to_kind(Kind::Float).sigmoid().to_device(tch::Device::Cpu).view([-1]))?;
            let k = probabilities.len() / batch.len();
            if k != names.len() {
                bail!("the model gives {k} outputs but its card lists {} classes", names.len());
            }
            for (row, &index) in batch.indices.iter().enumerate() {
                let labels = pick(&probabilities[row * k..(row + 1) * k], &names, &rule);
                lines.push((index, json!({"file": dataset.path(index), "labels": labels})));
            }
            scored += batch.len();
        }
        lines.sort_by_key(|(index, _)| *index);
        for (_, line) in lines {
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{scored} of {total} images scored in {seconds:.2}s: {:.1} images/s on {:?}",
        scored as f64 / seconds,
        network.device()
    );
    Ok(())
}

fn pick(probabilities: &[f32], names: &[String], rule: &Rule) -> Vec<serde_json::Value> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    let chosen: Vec<usize> = match rule {
        Rule::TopK(k) => order.into_iter().take(*k).collect(),
        Rule::PerClass(thresholds) => order.into_iter().filter(|&c| probabilities[c] >= thresholds[c]).collect(),
    };
    chosen.into_iter().map(|c| json!({"name": names[c], "probability": probabilities[c]})).collect()
}

/// Expands directories (sorted, images only) and list files.
fn collect_images(inputs: &[PathBuf]) -> Result<Vec<Sample>> {
    let mut paths = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let listing = std::fs::read_dir(input).with_context(|| format!("cannot list {}", input.display()))?;
            let mut found: Vec<PathBuf> = Vec::new();
            for entry in listing {
                let path = entry.with_context(|| format!("cannot list {}", input.display()))?.path();
                if path.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e)) {
                    found.push(path);
                }
            }
            found.sort();
            paths.extend(found);
        } else if input.extension().is_some_and(|e| e == "txt" || e == "lst") {
            let text = std::fs::read_to_string(input).with_context(|| format!("cannot read {}", input.display()))?;
            let base = input.parent().unwrap_or(Path::new("."));
            paths.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| base.join(l)));
        } else {
            paths.push(input.clone());
        }
    }
    if paths.is_empty() {
        bail!("no images found in {:?}", inputs);
    }
    Ok(paths.into_iter().map(|path| Sample { path, ..Sample::default() }).collect())
}
