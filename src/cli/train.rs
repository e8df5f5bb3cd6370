//! `asl train`: resolve the config, data and model, then run the trainer.

use super::export::export_with_timm;
use anyhow::{bail, Context, Result};
use asl::config::TrainConfig;
use asl::data::{Dataset, Loader};
use asl::model::Network;
use asl::train::checkpoint::{read_checkpoint, resolve_checkpoint, EpochRecord, MODEL_FILE};
use asl::train::{
    load_split, resolve_device, train_loader_config, val_loader_config, Outcome, Split, Trainer, TrainerSetup,
};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::Device;

#[derive(Args)]
pub struct TrainArgs {
    /// Recipe file (configs/*.yaml). Not needed with --resume, which uses the checkpoint's config.
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Dataset root (COCO, VOC) or list file; overrides data.path.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Override a config key, e.g. --set train.epochs=2 --set loss.gamma_neg=2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue from a checkpoint directory or a run directory (its checkpoints/last).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Where run directories are created.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Hide progress bars (summary lines are still printed).
    #[arg(long)]
    no_progress: bool,
    /// Stop at the first unreadable image instead of skipping it (data.strict).
    #[arg(long)]
    strict: bool,
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let (config, resume) = resolve_config(args)?;
    let device = resolve_device(&config.device)?;
    let train = load_split(&config.data, Split::Train).context("loading the training split")?;
    let val = load_split(&config.data, Split::Val).context("loading the validation split")?;
    println!(
        "data: {} train / {} val images, {} classes, {:.2} positives per image; device {device:?}",
        train.len(),
        val.len(),
        train.num_classes(),
        train.mean_positives()
    );
    let run_dir = args.runs.join(&config.name);
    if resume.is_none() && run_dir.join("checkpoints").exists() {
        bail!(
            "{} already holds checkpoints; continue it with --resume {} or pick another --set name=...",
            run_dir.display(),
            run_dir.display()
        );
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    std::fs::write(run_dir.join("config.yaml"), config.to_yaml())?;
    let network = prepare_network(&config, &train, &run_dir, resume.as_deref(), device)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        eprintln!("\nCtrl-C: finishing the current step and writing a checkpoint (press again to abort)");
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    })?;
    let setup = TrainerSetup {
        train_loader: Loader::new(Arc::new(train), train_loader_config(&config))?,
        val_loader: Loader::new(Arc::new(val), val_loader_config(&config))?,
        config,
        run_dir: run_dir.clone(),
        network,
        resume,
        stop,
        show_progress: !args.no_progress,
    };
    match Trainer::new(setup)?.run()? {
        Outcome::Finished { history, best_epoch, best_map } => {
            print_table(&history, best_epoch, best_map);
            println!("checkpoints in {}; TensorBoard: make tensorboard", run_dir.join("checkpoints").display());
        }
        Outcome::Interrupted { checkpoint } => {
            println!(
                "stopped; checkpoint written to {}. Continue with: asl train --resume {}",
                checkpoint.display(),
                run_dir.display()
            );
        }
    }
    Ok(())
}

fn resolve_config(args: &TrainArgs) -> Result<(TrainConfig, Option<PathBuf>)> {
    if let Some(resume) = &args.resume {
        let dir = resolve_checkpoint(resume)?;
        let (_, saved) = read_checkpoint(&dir)?;
        let mut overrides = args.overrides.clone();
        if args.strict {
            overrides.push("data.strict=true".into());
        }
        let config = TrainConfig::from_yaml(&saved.to_yaml(), "the checkpoint's config", &overrides)?;
        return Ok((config, Some(dir)));
    }
    let path = args.config.as_ref().expect("clap requires --config without --resume");
    let mut overrides = args.overrides.clone();
    if args.strict {
        overrides.push("data.strict=true".into());
    }
    if let Some(data) = &args.data {
        overrides.push(format!("data.path={}", serde_json::to_string(&data.display().to_string())?));
    }
    Ok((TrainConfig::load(path, &overrides)?, None))
}

/// The network to train: the checkpoint's, the configured file, or a fresh
/// export of `model.timm`; its classifier sized to the dataset.
fn prepare_network(
    config: &TrainConfig,
    train: &Dataset,
    run_dir: &Path,
    resume: Option<&Path>,
    device: Device,
) -> Result<Network> {
    if let Some(dir) = resume {
        return Ok(Network::load(&dir.join(MODEL_FILE), device)?);
    }
    let path = match &config.model.path {
        Some(path) => path.clone(),
        None => export_with_timm(
            &config.model.timm,
            config.model.weights.as_deref(),
            train.num_classes(),
            config.data.image_size,
            config.seed,
            &run_dir.join("init"),
        )?,
    };
    let mut network = Network::load(&path, device)?;
    network.check_input_size(config.data.image_size as i64)?;
    let classes = train.num_classes() as i64;
    if network.card().is_some_and(|c| c.num_classes != classes) {
        println!("resetting the classifier of {} to {classes} classes", network.name());
        network.reset_head(classes, Some(train.class_names.clone()), config.model.head_seed)?;
    } else {
        network.set_class_names(train.class_names.clone());
    }
    Ok(network)
}

fn print_table(history: &[EpochRecord], best_epoch: Option<usize>, best_map: Option<f64>) {
    let cell = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}"));
    println!(
        "\n{:>5} {:>9} {:>7} {:>9} {:>7} {:>7} {:>7} {:>7}",
        "epoch", "loss", "mAP", "mAP(EMA)", "CF1", "OF1", "Δp", "γ-"
    );
    for r in history {
        let marker = if Some(r.epoch) == best_epoch { " *" } else { "" };
        println!(
            "{:>5} {:>9.4} {:>7} {:>9} {:>7.2} {:>7.2} {:>7} {:>7.3}{marker}",
            r.epoch,
            r.train_loss,
            cell(r.map),
            cell(r.map_ema),
            r.cf1,
            r.of1,
            cell(r.delta_p),
            r.gamma_neg
        );
    }
    println!("best mAP {} at epoch {} (* above)", cell(best_map), best_epoch.map_or("-".into(), |e| e.to_string()));
}
