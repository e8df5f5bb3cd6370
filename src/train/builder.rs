//! The one way to set up a run: from a resolved config to a ready trainer
//! (device, process group, data, network sized for the data, loaders,
//! restored state). `asl train` and `asl reproduce` both come through here.

use super::checkpoint::{read_checkpoint, TrainState, MODEL_FILE};
use super::config::TrainConfig;
use super::error::{Result, TrainError};
use super::lock::RunLock;
use super::observer::{Observer, TrainEvent};
use super::trainer::{Trainer, TrainerSetup};
use crate::atomic::write_bytes_atomically;
use crate::data::{Dataset, Loader, Split};
use crate::distributed::{Launch, ProcessGroup};
use crate::loss::LossConfig;
use crate::model::{export_timm, resolve_device, ModelError, Network, ResetHead, TimmExport};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tch::Device;

/// Where a run lives, how it can be stopped, and where this process sits
/// in a multi-process launch.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The run directory: `config.yaml`, `checkpoints/`, `init/` (an exported model).
    pub run_dir: PathBuf,
    /// A checkpoint directory to continue from; without it, `run_dir` must hold no checkpoints yet.
    pub resume: Option<PathBuf>,
    /// Set to stop after the current optimizer step with a checkpoint.
    pub stop: Arc<AtomicBool>,
    /// This process's rank and its peers (torchrun's variables); `None` runs alone.
    pub launch: Option<Launch>,
}

/// Joins the process group (if launched), loads the data, prepares the
/// network and returns the trainer, ready to [`run`](Trainer::run).
/// Reports what it does to `observer`. Only rank 0 writes to `run_dir`.
pub fn prepare(mut config: TrainConfig, options: RunOptions, observer: &mut dyn Observer) -> Result<Trainer> {
    let RunOptions { run_dir, resume, stop, launch } = options;
    let device = rank_device(resolve_device(&config.device)?, launch.as_ref());
    if let Some(launch) = &launch {
        if config.data.threads == 0 {
            // The node's cores are shared by its processes.
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            config.data.threads = (cores / launch.local_world_size).max(1);
        }
    }
    let group = launch
        .as_ref()
        .map(|l| {
            let timeout = Duration::from_secs(config.distributed.timeout_s);
            ProcessGroup::join(l, config.distributed.backend(device), device, timeout)
        })
        .transpose()?;
    let (rank, world) = group.as_ref().map_or((0, 1), |g| (g.rank(), g.world_size()));
    let train = config.data.load_split(Split::Train)?;
    let val = config.data.load_split(Split::Val)?;
    if matches!(config.loss, LossConfig::SingleLabel(_)) {
        check_single_label(&train)?;
        check_single_label(&val)?;
    }
    let summary = format!(
        "data: {} train / {} val images, {} classes, {:.2} positives per image; device {device:?}{}",
        train.len(),
        val.len(),
        train.num_classes(),
        train.mean_positives(),
        if world > 1 { format!(", {world} processes") } else { String::new() }
    );
    observer.on_event(&TrainEvent::Notice(&summary));
    match &resume {
        None if run_dir.join("checkpoints").exists() => return Err(TrainError::RunExists(run_dir)),
        Some(dir) => check_resumable(&config, dir, world)?,
        None => {}
    }
    let lock = if rank == 0 { Some(claim_run_dir(&run_dir, &config)?) } else { None };
    let network = match &resume {
        Some(dir) => Network::load(&dir.join(MODEL_FILE), device)?,
        None => fresh_network(&config, &train, &run_dir, rank, device, observer)?,
    };
    let train_loader = Loader::new(Arc::new(train), config.data.train_loader(config.seed, rank, world)?)?;
    let val_loader = Loader::new(Arc::new(val), config.data.val_loader(rank, world)?)?;
    Trainer::new(TrainerSetup { config, run_dir, lock, group, network, train_loader, val_loader, resume, stop })
}

/// Each rank of a launch uses the GPU of its local rank.
fn rank_device(device: Device, launch: Option<&Launch>) -> Device {
    match (device, launch) {
        (Device::Cuda(_), Some(launch)) => Device::Cuda(launch.local_rank),
        _ => device,
    }
}

/// Creates the run directory, takes its lock and writes the resolved config.
fn claim_run_dir(run_dir: &Path, config: &TrainConfig) -> Result<RunLock> {
    std::fs::create_dir_all(run_dir).map_err(write_error(run_dir))?;
    let lock = RunLock::acquire(run_dir)?;
    let yaml = config.to_yaml();
    write_bytes_atomically(&run_dir.join("config.yaml"), yaml.as_bytes()).map_err(write_error(run_dir))?;
    Ok(lock)
}

/// A run stopped mid-epoch continues exactly only with the same batches:
/// the keys that lay out an epoch, and the number of processes, must keep
/// their saved values.
fn check_resumable(config: &TrainConfig, checkpoint: &Path, world: usize) -> Result<()> {
    let (state, saved): (TrainState, TrainConfig) = read_checkpoint(checkpoint)?;
    if state.batch_in_epoch == 0 {
        return Ok(());
    }
    let layout = |c: &TrainConfig, world: usize| {
        [
            ("data.batch_size", c.data.batch_size.to_string()),
            ("data.drop_last", c.data.drop_last.to_string()),
            ("train.grad_accumulation", c.train.grad_accumulation.to_string()),
            ("train.max_steps_per_epoch", format!("{:?}", c.train.max_steps_per_epoch)),
            ("seed", c.seed.to_string()),
            ("the number of processes", world.to_string()),
        ]
    };
    for ((key, before), (_, after)) in layout(&saved, state.world_size.max(1)).into_iter().zip(layout(config, world)) {
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
    rank: usize,
    device: Device,
    observer: &mut dyn Observer,
) -> Result<Network> {
    let mut network = match &config.model.path {
        Some(path) => Network::load(path, device)?,
        None => exported(config, train, run_dir, rank, device, observer)?,
    };
    network.check_input_size(i64::from(config.data.image_size))?;
    let classes = train.num_classes() as i64;
    let card = network.card();
    let reason = match (card.num_classes != classes, &card.class_names) {
        (true, _) => Some(format!("it has {} classes and the data {classes}", card.num_classes)),
        (false, Some(names)) if *names != train.class_names => Some("its class names differ from the data's".into()),
        (false, _) => None,
    };
    let reset = match (config.model.reset_head, &reason) {
        (ResetHead::Always, _) => Some(reason.unwrap_or_else(|| "model.reset_head is always".into())),
        (ResetHead::Auto, Some(reason)) => Some(reason.clone()),
        (ResetHead::Never, Some(reason)) if card.num_classes != classes => {
            return Err(TrainError::HeadMismatch { model: network.name(), reason: reason.clone() })
        }
        _ => None,
    };
    if let Some(reason) = reset {
        let notice = format!("resetting the head of {} for {classes} classes: {reason}", network.name());
        observer.on_event(&TrainEvent::Notice(&notice));
        network.reset_head(classes, Some(train.class_names.clone()), config.model.head_seed)?;
    } else {
        network.set_class_names(train.class_names.clone());
    }
    Ok(network)
}

/// `model.timm` exported for the data and loaded. Rank 0 exports into the
/// run; other ranks export the same seeded weights to a scratch directory
/// (rank 0's are broadcast to them in any case).
fn exported(
    config: &TrainConfig,
    train: &Dataset,
    run_dir: &Path,
    rank: usize,
    device: Device,
    observer: &mut dyn Observer,
) -> Result<Network> {
    let request = TimmExport {
        config: &config.model,
        classes: train.num_classes(),
        image_size: config.data.image_size,
        seed: config.seed,
    };
    let scratch = if rank == 0 { None } else { Some(tempfile::tempdir().map_err(write_error(run_dir))?) };
    let dir = scratch.as_ref().map_or_else(|| run_dir.join("init"), |s| s.path().to_path_buf());
    let path = export_timm(&request, &dir)?;
    observer.on_event(&TrainEvent::Notice(&format!("exported {} to {}", config.model.timm, path.display())));
    Ok(Network::load(&path, device)?)
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Write { path: path.to_path_buf(), source }
}

/// Single-label training needs exactly one positive per image.
fn check_single_label(dataset: &Dataset) -> Result<()> {
    match dataset.samples.iter().find(|s| s.positives.len() != 1) {
        Some(s) => Err(TrainError::NotSingleLabel { path: s.path.clone(), count: s.positives.len() }),
        None => Ok(()),
    }
}
