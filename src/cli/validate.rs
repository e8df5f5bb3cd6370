//! `asl validate`: the paper's metrics of a model on a labelled split.

use super::data_args::{recipe_data, Source};
use super::model_args::ModelArgs;
use anyhow::{Context, Result};
use asl::data::sources::{load_list, ListOptions};
use asl::data::{DataConfig, Loader, LoaderConfig, SourceKind, Split, SplitData};
use asl::evaluate::{evaluate, EvaluateEvent, EvaluateOptions};
use asl::metrics::{tune_thresholds, ClassThresholds, MetricsReport, ScoredLabels};
use asl::report::{validation_page, ValidationPage};
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
    /// Take the data options (source, split, label policies) from a training config. Without it, a
    /// checkpoint directory's own config gives them (the run's data, read as it was trained on).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data's layout; overrides the config's (default: the checkpoint's, else coco).
    #[arg(long, value_enum)]
    source: Option<Source>,
    /// Split to score (COCO: val → val2017 or val2014; VOC: test; Open Images: validation or test; shards:
    /// `<split>-*.tar`); overrides the config's validation split (default: the checkpoint's, else val).
    #[arg(long)]
    split: Option<String>,
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
    /// Single-label data: also top-1, top-5 and macro-F1 (the default for a checkpoint of a run with
    /// `loss: single_label`).
    #[arg(long)]
    single_label: bool,
    /// Write the exact u8 NHWC input batches the network saw (raw bytes), for cross-checks.
    #[arg(long)]
    save_inputs: Option<PathBuf>,
    /// Also write an offline HTML report here: per-class AP, PR curves of the worst and best classes, the
    /// per-class thresholds, the worst false positives and negatives, and the run's Δp and γ− by epoch.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Serialize)]
struct ClassRow<'a> {
    class: &'a str,
    ap: Option<f64>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    model: String,
    /// The data options and where each came from, as the header printed them.
    data: &'a str,
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
    let (mut network, size, classes) = args.model.load()?;
    let (data, origins) = data_section(args, size)?;
    println!("{origins}");
    let split = open_validation(&data, network.card().class_names.as_deref(), classes)?;
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
    let single_label = args.single_label || args.model.checkpoint_config().is_some_and(|c| trained_single_label(&c));
    let options =
        EvaluateOptions { amp, threshold: args.threshold, unknowns: data.unknown_in_validation, single_label };
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
        let json =
            JsonReport { model, data: &origins, report, per_class: rows, scores: scores_json(&evaluation.scored) };
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.report {
        write_report(args, path, &origins, &evaluation, &split)?;
        println!("report written to {}", path.display());
    }
    if args.tune_thresholds {
        let tuned = tune_thresholds(&evaluation.scored, split.class_names().to_vec(), args.threshold);
        let path = ClassThresholds::path_for(&args.model.model_file()?);
        tuned.save(&path).with_context(|| format!("cannot write {}", path.display()))?;
        println!("per-class thresholds written to {} (asl infer uses them)", path.display());
    }
    Ok(())
}

/// The data options and, for the header, where each came from: `--config`,
/// else the checkpoint's own config, else the defaults; `--source` and
/// `--split` over them.
fn data_section(args: &ValidateArgs, size: u32) -> Result<(DataConfig, String)> {
    let checkpoint_config = args.model.checkpoint_config();
    let (mut data, from) = match (&args.config, &checkpoint_config) {
        (Some(path), _) => (recipe_data(path)?, format!("--config {}", path.display())),
        (None, Some(path)) => (recipe_data(path)?, format!("the checkpoint's {}", path.display())),
        (None, None) => (DataConfig::default(), "the default".to_string()),
    };
    let source_from = match args.source {
        Some(source) => {
            data.source = source.into();
            "--source".to_string()
        }
        None => from.clone(),
    };
    let split_from = match &args.split {
        Some(split) => {
            data.val_split = split.clone();
            "--split".to_string()
        }
        None => from,
    };
    data.path = Some(args.data.clone());
    data.val_path = Some(args.data.clone());
    data.image_size = size;
    let size_from = if args.model.image_size.is_some() { "--image-size" } else { "the model card" };
    let origins = format!(
        "data: source {} ({source_from}), split {} ({split_from}), image size {size} ({size_from})",
        format!("{:?}", data.source).to_lowercase(),
        data.val_split
    );
    Ok((data, origins))
}

/// The split to score, in the model's class order. A list names its classes
/// only by the labels it happens to hold, so it is read in the order the
/// model card records; any other source must match the card, or at least
/// the model's class count, or the scores would be read against the wrong
/// classes.
fn open_validation(data: &DataConfig, card_classes: Option<&[String]>, classes: usize) -> Result<SplitData> {
    let split: SplitData = match (data.source, card_classes, &data.val_path) {
        (SourceKind::List, Some(names), Some(list)) => {
            let options = ListOptions {
                label_separator: data.label_separator,
                classes: Some(names.to_vec()),
                unlisted: data.unlisted,
            };
            load_list(list, &options)?.into()
        }
        _ => data.open_split(Split::Val)?,
    };
    let found = split.class_names();
    if let Some(names) = card_classes.filter(|names| *names != found) {
        let differ = names.iter().zip(found).position(|(a, b)| a != b).unwrap_or(names.len().min(found.len()));
        anyhow::bail!(
            "the model's classes are not this data's: the model card lists {} classes, the data {}; they first \
             differ at class {differ} ({:?} in the model, {:?} in the data)",
            names.len(),
            found.len(),
            names.get(differ).map_or("none", String::as_str),
            found.get(differ).map_or("none", String::as_str)
        );
    }
    if found.len() != classes {
        anyhow::bail!("the model scores {classes} classes but the data has {}", found.len());
    }
    Ok(split)
}

/// The `--report` page of `evaluation`.
fn write_report(
    args: &ValidateArgs,
    path: &std::path::Path,
    origins: &str,
    evaluation: &asl::evaluate::Evaluation,
    split: &SplitData,
) -> Result<()> {
    let state = args.model.checkpoint_config().and_then(|c| c.parent().map(|d| d.join("state.json")));
    let history = state.and_then(|s| asl::train::checkpoint::read_checkpoint(s.parent()?).ok()).map(|(s, _)| s.history);
    let image_name = |index: u32| match split {
        SplitData::Files(dataset) => Some(dataset.path(index as usize).display().to_string()),
        SplitData::Shards(_) => None,
    };
    let model = args.model.model_file()?.display().to_string();
    let page = ValidationPage {
        model: &model,
        data: origins,
        report: &evaluation.report,
        scored: &evaluation.scored,
        class_names: split.class_names(),
        image_name: &image_name,
        history: history.as_deref().unwrap_or_default(),
    };
    let html = validation_page(&page).map_err(anyhow::Error::msg)?;
    asl::atomic::write_bytes_atomically(path, html.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Whether the run whose config is at `path` trained with the single-label loss.
fn trained_single_label(path: &std::path::Path) -> bool {
    let loss = asl::config::read_yaml(path).ok().and_then(|c| c.get("loss").and_then(|l| l.get("kind")).cloned());
    loss.as_ref().and_then(|k| k.as_str()) == Some("single_label")
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
