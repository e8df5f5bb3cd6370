//! `asl reproduce`: the paper's loss comparison (Tables 2–3, Figure 4) at
//! CPU scale: one small network trained on synthetic multi-label data with
//! ~20% of the positive training labels missing, once per loss and seed,
//! scored on the clean test split.

use anyhow::{Context, Result};
use asl::curves::{plot_curves, Curve, CurveSet, PlotLabels};
use asl::data::sources::{write_synthetic, SynthConfig};
use asl::model::{export_timm, TimmExport};
use asl::train::{prepare, Observer, Outcome, RunOptions, TrainConfig, TrainEvent};
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ReproduceArgs {
    /// Output directory: data/, runs/, results.md, results.csv, delta_p.png.
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

/// The compared losses as config overrides of `loss`.
const LOSSES: [(&str, &str); 6] = [
    ("CE", "{kind: asymmetric, gamma_neg: 0, gamma_pos: 0, clip: 0}"),
    ("focal γ=2", "{kind: asymmetric, gamma_neg: 2, gamma_pos: 2, clip: 0}"),
    ("AF γ−=4", "{kind: asymmetric, gamma_neg: 4, gamma_pos: 0, clip: 0}"),
    ("CE+PS m=0.05", "{kind: asymmetric, gamma_neg: 0, gamma_pos: 0, clip: 0.05}"),
    ("ASL 4/0/0.05", "{kind: asymmetric, gamma_neg: 4, gamma_pos: 0, clip: 0.05}"),
    (
        "adaptive ASL Δp→0.1",
        "{kind: asymmetric, gamma_neg: 0, gamma_pos: 0, clip: 0.05, adaptive: {target_delta: 0.1, lambda: 0.05}}",
    ),
];

struct RunResult {
    map: f64,
    map_ema: f64,
    delta_p: f64,
    delta_series: Vec<(u64, f64)>,
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
    let mut results: Vec<Vec<RunResult>> = (0..LOSSES.len()).map(|_| Vec::new()).collect();
    for seed in 0..args.seeds {
        // One initialisation per seed, shared by every loss: a paired comparison.
        let request = TimmExport {
            model: "test_resnet",
            weights: None,
            classes: synth.classes,
            image_size: synth.image_size,
            seed,
        };
        let model = export_timm(&request, &args.out.join(format!("models/seed{seed}")))?;
        for (i, (name, loss)) in LOSSES.iter().enumerate() {
            println!("== {name}, seed {seed}");
            results[i].push(train_once(args, &data, &model, seed, i, loss)?);
        }
    }
    write_report(args, &results)
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
    let config = TrainConfig::from_yaml(include_str!("../../configs/demo.yaml"), "configs/demo.yaml", &overrides)?;
    let run_dir = args.out.join("runs").join(&config.name);
    let _ = std::fs::remove_dir_all(&run_dir);
    let mut recorder = DeltaRecorder::default();
    let mut trainer = prepare(config, RunOptions { run_dir, ..RunOptions::default() }, &mut recorder)?;
    let Outcome::Finished { history, .. } = trainer.run(&mut recorder)? else { anyhow::bail!("interrupted") };
    let last = history.last().context("no epoch ran")?;
    Ok(RunResult {
        map: last.map.unwrap_or(f64::NAN),
        map_ema: last.map_ema.unwrap_or(f64::NAN),
        delta_p: last.delta_p.unwrap_or(f64::NAN),
        delta_series: recorder.series,
    })
}

/// Keeps the Δp of every logged step (the paper's Figure 4).
#[derive(Default)]
struct DeltaRecorder {
    series: Vec<(u64, f64)>,
}

impl Observer for DeltaRecorder {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        if let TrainEvent::Step(log) = event {
            if let Some(delta) = log.delta_p.filter(|d| d.is_finite()) {
                self.series.push((log.step as u64, delta));
            }
        }
    }
}

fn mean_std(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count() as f64;
    let mean = values.clone().sum::<f64>() / n;
    let var = if n > 1.0 { values.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

fn write_report(args: &ReproduceArgs, results: &[Vec<RunResult>]) -> Result<()> {
    let mut md = format!(
        "Test mAP after {} epochs, {} seeds (mean ± std), test_resnet at 64 px, {} train images with {:.0}% of positive labels dropped, {} clean test images.\n\n| loss | mAP | mAP (EMA) | final Δp (test) |\n|---|---|---|---|\n",
        args.epochs,
        args.seeds,
        args.train_images,
        100.0 * args.drop_positive,
        args.test_images
    );
    let mut csv = String::from("loss,seed,map,map_ema,delta_p\n");
    for ((name, _), runs) in LOSSES.iter().zip(results) {
        let (m, s) = mean_std(runs.iter().map(|r| r.map));
        let (me, se) = mean_std(runs.iter().map(|r| r.map_ema));
        let (d, _) = mean_std(runs.iter().map(|r| r.delta_p));
        writeln!(md, "| {name} | {m:.2} ± {s:.2} | {me:.2} ± {se:.2} | {d:.3} |")?;
        for (seed, r) in runs.iter().enumerate() {
            writeln!(csv, "{name},{seed},{},{},{}", r.map, r.map_ema, r.delta_p)?;
        }
    }
    std::fs::write(args.out.join("results.md"), &md)?;
    std::fs::write(args.out.join("results.csv"), csv)?;
    // Figure 4: Δp against training step for CE, focal and ASL (seed 0).
    let picked = [0usize, 1, 4];
    let x: Vec<f64> = results[0][0].delta_series.iter().map(|(s, _)| *s as f64).collect();
    let curves = picked
        .iter()
        .map(|&i| Curve {
            name: LOSSES[i].0.to_string(),
            values: results[i][0].delta_series.iter().map(|(_, v)| *v).collect(),
        })
        .collect();
    let set = CurveSet { x_name: "step".into(), x, curves };
    std::fs::write(args.out.join("delta_p.csv"), set.to_csv())?;
    let labels =
        PlotLabels {
            title: "Figure 4: probability gap during training", x: "optimizer step", y: "Δp = p_t+ − p_t−"
        };
    plot_curves(&set, &labels, &args.out.join("delta_p.png"))?;
    println!("\n{md}\nwritten to {}", args.out.display());
    Ok(())
}
