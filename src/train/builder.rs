//! The one way to set up a run: from a resolved config to a ready trainer
//! (device, data, network sized for the data, loaders, restored state).
//! `asl train` and `asl reproduce` both come through here.

use super::checkpoint::{read_checkpoint, TrainState, MODEL_FILE};
use super::config::TrainConfig;
use super::error::{Result, TrainError};
use super::lock::RunLock;
use super::observer::{Observer, TrainEvent};
use super::trainer::{Trainer, TrainerSetup};
use crate::atomic::write_bytes_atomically;
use crate::data::{Dataset, Loader, Split};
use crate::loss::LossConfig;
use crate::model::{export_timm, resolve_device, ModelError, Network, TimmExport};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tch::Device;

/// Where a run lives and how it can be stopped.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The run directory: `config.yaml`, `checkpoints/`, `init/` (an exported model).
    pub run_dir: PathBuf,
    /// A checkpoint directory to continue from; without it, `run_dir` must hold no checkpoints yet.
    pub resume: Option<PathBuf>,
    /// Set to stop after the current optimizer step with a checkpoint.
    pub stop: Arc<AtomicBool>,
}

/// Loads the data, prepares the network and returns the trainer, ready to
/// [`run`](Trainer::run). Reports what it does to `observer`.
pub fn prepare(config: TrainConfig, options: RunOptions, observer: &mut dyn Observer) -> Result<Trainer> {
    let RunOptions { run_dir, resume, stop } = options;
    let device = resolve_device(&config.device)?;
    let train = config.data.load_split(Split::Train)?;
    let val = config.data.load_split(Split::Val)?;
    if matches!(config.loss, LossConfig::SingleLabel(_)) {
        check_single_label(&train)?;
        check_single_label(&val)?;
    }
    let summary = format!(
        "data: {} train / {} val images, {} classes, {:.2} positives per image; device {device:?}",
        train.len(),
        val.len(),
        train.num_classes(),
        train.mean_positives()
    );
    observer.on_event(&TrainEvent::Notice(&summary));
    let write_error = |source| ModelError::Write { path: run_dir.clone(), source };
    std::fs::create_dir_all(&run_dir).map_err(write_error)?;
    let lock = RunLock::acquire(&run_dir)?;
    match &resume {
        None if run_dir.join("checkpoints").exists() => return Err(TrainError::RunExists(run_dir)),
        Some(dir) => check_resumable(&config, dir)?,
        None => {}
    }
    write_bytes_atomically(&run_dir.join("config.yaml"), config.to_yaml().as_bytes()).map_err(write_error)?;
    let network = match &resume {
        Some(dir) => Network::load(&dir.join(MODEL_FILE), device)?,
        None => fresh_network(&config, &train, &run_dir, device, observer)?,
    };
    let train_loader = Loader::new(Arc::new(train), config.data.train_loader(config.seed))?;
    let val_loader = Loader::new(Arc::new(val), config.data.val_loader())?;
    Trainer::new(TrainerSetup { config, run_dir, lock, network, train_loader, val_loader, resume, stop })
}

/// A run stopped mid-epoch continues exactly only with the same batches:
/// the keys that lay out an epoch must keep their saved values.
fn check_resumable(config: &TrainConfig, checkpoint: &Path) -> Result<()> {
    let (state, saved): (TrainState, TrainConfig) = read_checkpoint(checkpoint)?;
    if state.batch_in_epoch == 0 {
        return Ok(());
    }
    let layout = |c: &TrainConfig| {
        [
            ("data.batch_size", c.data.batch_size.to_string()),
            ("data.drop_last", c.data.drop_last.to_string()),
            ("train.grad_accumulation", c.train.grad_accumulation.to_string()),
            ("train.max_steps_per_epoch", format!("{:?}", c.train.max_steps_per_epoch)),
            ("seed", c.seed.to_string()),
        ]
    };
    for ((key, before), (_, after)) in layout(&saved).into_iter().zip(layout(config)) {
        if before != after {
            return Err(TrainError::MidEpochChange {
                key,
                before,
                after,
                epoch: state.epoch + 1,
                batch: state.batch_in_epoch,
            });
        }
    }
    Ok(())
}

/// The configured file, or a fresh export of `model.timm`, checked against
/// the input size, its classifier sized to the dataset.
fn fresh_network(
    config: &TrainConfig,
    train: &Dataset,
    run_dir: &Path,
    device: Device,
    observer: &mut dyn Observer,
) -> Result<Network> {
    let path = match &config.model.path {
        Some(path) => path.clone(),
        None => {
            let request = TimmExport {
                model: &config.model.timm,
                weights: config.model.weights.as_deref(),
                classes: train.num_classes(),
                image_size: config.data.image_size,
                seed: config.seed,
            };
            let path = export_timm(&request, &run_dir.join("init"))?;
            observer.on_event(&TrainEvent::Notice(&format!("exported {} to {}", request.model, path.display())));
            path
        }
    };
    let mut network = Network::load(&path, device)?;
    network.check_input_size(i64::from(config.data.image_size))?;
    let classes = train.num_classes() as i64;
    if network.card().is_some_and(|c| c.num_classes != classes) {
        let notice = format!("resetting the classifier of {} to {classes} classes", network.name());
        observer.on_event(&TrainEvent::Notice(&notice));
        network.reset_head(classes, Some(train.class_names.clone()), config.model.head_seed)?;
    } else {
        network.set_class_names(train.class_names.clone());
    }
    Ok(network)
}

/// Single-label training needs exactly one positive per image.
fn check_single_label(dataset: &Dataset) -> Result<()> {
    match dataset.samples.iter().find(|s| s.positives.len() != 1) {
        Some(s) => Err(TrainError::NotSingleLabel { path: s.path.clone(), count: s.positives.len() }),
        None => Ok(()),
    }
}
