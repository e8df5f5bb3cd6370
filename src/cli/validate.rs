//! `asl validate`: the paper's metrics of a model on a labelled split.

use super::data_args::{recipe_data, Source};
use super::model_args::ModelArgs;
use anyhow::{Context, Result};
use asl::data::{DataConfig, Loader, LoaderConfig, Split};
use asl::evaluate::{evaluate, EvaluateEvent, EvaluateOptions};
use asl::metrics::{tune_thresholds, ClassThresholds, MetricsReport, ScoredLabels};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Dataset root (COCO, VOC), the list to score, or the shards (a directory, pattern or list of them).
    #[arg(long)]
    data: PathBuf,
    /// Take the data options (source, split, policies) from a training config.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Source::Coco)]
    source: Source,
    /// Split to score (COCO: val → val2017 or val2014; VOC: test; Open Images: validation or test; shards:
    /// `<split>-*.tar`).
    #[arg(long, default_value = "val")]
    split: String,
    /// Threshold of CP, CR, CF1, OP, OR and OF1.
    #[arg(long, default_value_t = 0.8)]
    threshold: f32,
    /// Also write everything as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Choose per-class thresholds that maximise F1 and save them beside the model.
    #[arg(long)]
    tune_thresholds: bool,
    /// Stop at the first unreadable image instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Write the exact u8 NHWC input batches the network saw (raw bytes), for cross-checks.
    #[arg(long)]
    save_inputs: Option<PathBuf>,
}

#[derive(Serialize)]
struct ClassRow<'a> {
    class: &'a str,
    ap: Option<f64>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    model: String,
    #[serde(flatten)]
    report: &'a MetricsReport,
    per_class: Vec<ClassRow<'a>>,
    /// Per scored image, in scoring order: its dataset index and the probability of each verified label.
    scores: Vec<ImageScores>,
}

#[derive(Serialize)]
struct ImageScores {
    image: u32,
    /// `[class, probability]` for each label the image has verified.
    labels: Vec<(u32, f32)>,
}

fn scores_json(scored: &ScoredLabels) -> Vec<ImageScores> {
    let mut images: Vec<ImageScores> =
        scored.images().iter().map(|&image| ImageScores { image, labels: Vec::new() }).collect();
    for label in scored.labels() {
        images[label.row as usize].labels.push((label.class, label.score));
    }
    images
}

pub fn run(args: &ValidateArgs) -> Result<()> {
    let (mut network, size, _) = args.model.load()?;
    let data = data_section(args, size)?;
    let split = data.open_split(Split::Val)?;
    let config = LoaderConfig {
        threads: data.threads,
        strict: args.strict,
        ..LoaderConfig::evaluation(args.model.batch_size, size)
    };
    let loader = Loader::new(split.clone(), config)?;
    if let Some(path) = &args.save_inputs {
        save_inputs(&loader, path)?;
    }
    let progress = ProgressBar::new(split.len() as u64)
        .with_style(ProgressStyle::with_template("validate [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")?);
    let started = Instant::now();
    let amp = network.device().is_cuda();
    let mut on_event = |event: EvaluateEvent| match event {
        EvaluateEvent::Scored(images) => progress.inc(images as u64),
        EvaluateEvent::Skipped(s) => progress.println(format!("warning: skipped {}: {}", s.path.display(), s.reason)),
    };
    let options = EvaluateOptions { amp, threshold: args.threshold, unknowns: data.unknown_in_validation };
    let evaluation = evaluate(&mut network, &loader, None, options, &mut on_event)?;
    progress.finish_and_clear();
    let report = &evaluation.report;
    println!(
        "{} on {} ({:.1}s)\n{report}",
        args.model.model_file()?.display(),
        args.data.display(),
        started.elapsed().as_secs_f64()
    );
    if evaluation.skipped > 0 {
        println!("{} unreadable images were skipped", evaluation.skipped);
    }
    let mut rows: Vec<ClassRow> = split
        .class_names()
        .iter()
        .zip(&report.average_precision.per_class)
        .map(|(c, ap)| ClassRow { class: c, ap: *ap })
        .collect();
    rows.sort_by(|a, b| b.ap.unwrap_or(-1.0).total_cmp(&a.ap.unwrap_or(-1.0)));
    println!("\n{:<28} {:>7}", "class", "AP");
    for row in &rows {
        println!("{:<28} {:>7}", row.class, row.ap.map_or("n/a (no positives)".into(), |v| format!("{v:.2}")));
    }
    if let Some(path) = &args.json {
        let model = args.model.model_file()?.display().to_string();
        let json = JsonReport { model, report, per_class: rows, scores: scores_json(&evaluation.scored) };
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.tune_thresholds {
        let tuned = tune_thresholds(&evaluation.scored, split.class_names().to_vec(), args.threshold);
        let path = ClassThresholds::path_for(&args.model.model_file()?);
        tuned.save(&path).with_context(|| format!("cannot write {}", path.display()))?;
        println!("per-class thresholds written to {} (asl infer uses them)", path.display());
    }
    Ok(())
}

fn data_section(args: &ValidateArgs, size: u32) -> Result<DataConfig> {
    let mut data = match &args.config {
        Some(path) => recipe_data(path)?,
        None => DataConfig { source: args.source.into(), ..DataConfig::default() },
    };
    data.path = Some(args.data.clone());
    data.val_path = Some(args.data.clone());
    data.val_split = args.split.clone();
    data.image_size = size;
    Ok(data)
}

/// Writes every evaluation batch's u8 NHWC pixels, in order, to one file.
fn save_inputs(loader: &Loader, path: &PathBuf) -> Result<()> {
    let mut bytes = Vec::new();
    for batch in loader.epoch(0, 0) {
        let batch = batch?;
        let size = loader.config().image_size as usize;
        bytes.extend_from_slice(&batch.images[..batch.len() * size * size * 3]);
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
