//! `asl reproduce`: the paper's loss comparison (Tables 2–3, Figures 4
//! and 9) at CPU scale: one small network trained on synthetic multi-label
//! data with ~20% of the positive training labels missing, once per loss
//! and seed, scored on the clean test split.

mod report;

use anyhow::{Context, Result};
use asl::data::sources::{write_synthetic, SynthConfig};
use asl::model::{export_timm, ExportWatch, ModelConfig, TimmExport};
use asl::train::{prepare, Observer, Outcome, RunOptions, TrainConfig, TrainEvent};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ReproduceArgs {
    /// Output directory: data/, runs/, results.md, results.csv, delta_p.{csv,png}, figure9.{csv,png}.
    #[arg(long, default_value = "runs/reproduce")]
    out: PathBuf,
    /// Seeds per loss (each its own initialisation and data order).
    #[arg(long, default_value_t = 3, value_parser = at_least_one::<u64>)]
    seeds: u64,
    /// Epochs per run.
    #[arg(long, default_value_t = 12, value_parser = at_least_one::<usize>)]
    epochs: usize,
    /// Synthetic training images.
    #[arg(long, default_value_t = 2000, value_parser = at_least_one::<usize>)]
    train_images: usize,
    /// Clean synthetic test images.
    #[arg(long, default_value_t = 500, value_parser = at_least_one::<usize>)]
    test_images: usize,
    /// Fraction of positive training labels removed, in [0, 1).
    #[arg(long, default_value_t = 0.2, value_parser = fraction)]
    drop_positive: f64,
    /// Δp targets of adaptive asymmetry, one row each (the paper's Table 3 uses 0 to 0.3).
    #[arg(long, value_delimiter = ',', default_value = "0.1", value_parser = delta_target)]
    adaptive_targets: Vec<f64>,
}

fn delta_target(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (-1.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("expected a probability gap in [-1, 1], got `{text}`")),
    }
}

fn at_least_one<T: std::str::FromStr + PartialOrd + From<u8>>(text: &str) -> Result<T, String> {
    match text.parse::<T>() {
        Ok(value) if value >= T::from(1) => Ok(value),
        _ => Err(format!("expected a whole number of at least 1, got `{text}`")),
    }
}

fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..1.0).contains(&value) => Ok(value),
        _ => Err(format!("expected a number in [0, 1), got `{text}`")),
    }
}

/// The fixed losses compared, as config overrides of `loss`.
const LOSSES: [(&str, &str); 5] = [
    ("CE", "{kind: asymmetric, gamma_neg: 0, gamma_pos: 0, clip: 0}"),
    ("focal γ=2", "{kind: asymmetric, gamma_neg: 2, gamma_pos: 2, clip: 0}"),
    ("AF γ−=4", "{kind: asymmetric, gamma_neg: 4, gamma_pos: 0, clip: 0}"),
    ("CE+PS m=0.05", "{kind: asymmetric, gamma_neg: 0, gamma_pos: 0, clip: 0.05}"),
    ("ASL 4/0/0.05", "{kind: asymmetric, gamma_neg: 4, gamma_pos: 0, clip: 0.05}"),
];

/// One row of the comparison.
struct Entry {
    name: String,
    loss: String,
    /// The Δp target, for adaptive rows.
    target: Option<f64>,
}

/// The fixed losses, then adaptive ASL at each target, starting from the
/// fixed ASL's γ− = 4 with the controller's defaults.
fn entries(targets: &[f64]) -> Vec<Entry> {
    let fixed =
        LOSSES.iter().map(|(name, loss)| Entry { name: name.to_string(), loss: loss.to_string(), target: None });
    let adaptive = targets.iter().map(|&t| Entry {
        name: format!("adaptive ASL Δp→{t}"),
        loss: format!("{{kind: asymmetric, gamma_neg: 4, gamma_pos: 0, clip: 0.05, adaptive: {{target_delta: {t}}}}}"),
        target: Some(t),
    });
    fixed.chain(adaptive).collect()
}

struct RunResult {
    map: f64,
    map_ema: f64,
    delta_p: f64,
    gamma_neg: f64,
    /// (step, Δp, γ−) at every logged step.
    series: Vec<(u64, f64, f64)>,
}

pub fn run(args: &ReproduceArgs) -> Result<()> {
    let data = args.out.join("data");
    let synth = SynthConfig {
        train_images: args.train_images,
        val_images: args.test_images,
        drop_positive: args.drop_positive,
        ..SynthConfig::default()
    };
    write_synthetic(&data, &synth).with_context(|| format!("writing {}", data.display()))?;
    let entries = entries(&args.adaptive_targets);
    let mut results: Vec<Vec<RunResult>> = entries.iter().map(|_| Vec::new()).collect();
    let network = ModelConfig { timm: "test_resnet".into(), ..ModelConfig::default() };
    for seed in 0..args.seeds {
        // One initialisation per seed, shared by every loss: a paired comparison.
        let request = TimmExport {
            config: &network,
            classes: synth.classes,
            image_size: synth.image_size,
            seed,
            progress: false,
        };
        let model = export_timm(&request, &args.out.join(format!("models/seed{seed}")), &ExportWatch::unwatched())?;
        for (i, entry) in entries.iter().enumerate() {
            println!("== {}, seed {seed}", entry.name);
            results[i].push(train_once(args, &data, &model, seed, i, &entry.loss)?);
        }
    }
    report::write(args, &entries, &results)
}

fn train_once(
    args: &ReproduceArgs,
    data: &Path,
    model: &Path,
    seed: u64,
    index: usize,
    loss: &str,
) -> Result<RunResult> {
    let overrides = [
        format!("name=loss{index}-seed{seed}"),
        format!("seed={seed}"),
        format!("data.path={}", serde_json::to_string(&data.display().to_string())?),
        format!("model.path={}", serde_json::to_string(&model.display().to_string())?),
        format!("train.epochs={}", args.epochs),
        format!("schedule.scheduled_epochs={}", args.epochs),
        format!("loss={loss}"),
        "device=cpu".to_string(),
    ];
    let config = TrainConfig::from_yaml(include_str!("../../../configs/demo.yaml"), "configs/demo.yaml", &overrides)?;
    let run_dir = args.out.join("runs").join(&config.name);
    let _ = std::fs::remove_dir_all(&run_dir);
    let mut recorder = SeriesRecorder::default();
    let mut trainer = prepare(config, RunOptions { run_dir, ..RunOptions::default() }, &mut recorder)?;
    let Outcome::Finished { history, .. } = trainer.run(&mut recorder)? else { anyhow::bail!("interrupted") };
    let last = history.last().context("no epoch ran")?;
    Ok(RunResult {
        map: last.map.unwrap_or(f64::NAN),
        map_ema: last.map_ema.unwrap_or(f64::NAN),
        delta_p: last.delta_p.unwrap_or(f64::NAN),
        gamma_neg: last.gamma_neg,
        series: recorder.series,
    })
}

/// Keeps Δp and γ− of every logged step (the paper's Figures 4 and 9).
#[derive(Default)]
struct SeriesRecorder {
    series: Vec<(u64, f64, f64)>,
}

impl Observer for SeriesRecorder {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        if let TrainEvent::Step(log) = event {
            if let Some(delta) = log.delta_p.filter(|d| d.is_finite()) {
                self.series.push((log.step as u64, delta, log.gamma_neg));
            }
        }
    }
}
