//! The one way to set up a run: from a resolved config to a ready trainer
//! (device, process group, data, network sized for the data, loaders,
//! restored state). `asl train` and `asl reproduce` both come through here.

use super::checkpoint::{read_checkpoint, resolve_checkpoint, TrainState, MODEL_FILE};
use super::config::TrainConfig;
use super::error::{Result, TrainError};
use super::lock::RunLock;
use super::observer::{Observer, TrainEvent};
use super::trainer::{Trainer, TrainerSetup};
use crate::atomic::write_bytes_atomically;
use crate::data::{DataError, Loader, SourceKind, Split, SplitData};
use crate::distributed::{GroupOptions, Launch, LostRankHandler, ProcessGroup};
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
    /// Let the model export write to stderr as it runs: its notes and the
    /// progress of a pretrained-weights download (rank 0 only).
    pub progress: bool,
    /// Told when a peer's heartbeat stopped while this rank waited on it
    /// (after the process group was aborted). The library does not end the
    /// process; the binary's handler does.
    pub on_lost_rank: Option<LostRankHandler>,
}

/// Joins the process group (if launched), loads the data, prepares the
/// network and returns the trainer, ready to [`run`](Trainer::run).
/// Reports what it does to `observer`. Only rank 0 writes to `run_dir`.
pub fn prepare(mut config: TrainConfig, options: RunOptions, observer: &mut dyn Observer) -> Result<Trainer> {
    let RunOptions { run_dir, resume, stop, launch, progress, on_lost_rank } = options;
    let device = rank_device(resolve_device(&config.device)?, launch.as_ref());
    if let Some(launch) = &launch {
        if config.data.threads == 0 {
            config.data.threads = launch.loader_threads();
        }
    }
    let group = match &launch {
        Some(launch) => {
            let options = GroupOptions {
                backend: config.distributed.backend(device)?,
                device,
                timeout: Duration::from_secs(config.distributed.timeout_s),
                heartbeat_timeout: Duration::from_secs(config.distributed.heartbeat_timeout_s),
                on_lost_rank,
            };
            Some(ProcessGroup::join(launch, &options)?)
        }
        None => None,
    };
    let (rank, world) = group.as_ref().map_or((0, 1), |g| (g.rank(), g.world_size()));
    let train = config.data.open_split(Split::Train)?;
    let val = config.data.open_split(Split::Val)?;
    if matches!(config.loss, LossConfig::SingleLabel(_)) {
        check_single_label(&train)?;
        check_single_label(&val)?;
    }
    let positives = match &train {
        SplitData::Files(dataset) => format!(", {:.2} positives per image", dataset.mean_positives()),
        SplitData::Shards(_) => String::new(),
    };
    let summary = format!(
        "data: {} train / {} val, {} classes{positives}; device {device:?}{}",
        train.describe(),
        val.describe(),
        train.num_classes(),
        if world > 1 { format!(", {world} processes") } else { String::new() }
    );
    observer.on_event(&TrainEvent::Notice(&summary));
    if train.class_names() != val.class_names() {
        return Err(TrainError::Data(DataError::Option {
            name: "data.val_path",
            message: "the validation split's classes differ from the training split's".into(),
        }));
    }
    for note in train.notes().iter().chain(val.notes()) {
        observer.on_event(&TrainEvent::Warning(note));
    }
    match &resume {
        None if resolve_checkpoint(&run_dir).is_ok() => return Err(TrainError::RunExists(run_dir)),
        Some(dir) => check_resumable(&config, dir, world)?,
        None => {}
    }
    let lock = if rank == 0 { Some(claim_run_dir(&run_dir, &config)?) } else { None };
    let network = match &resume {
        Some(dir) => Network::load(&dir.join(MODEL_FILE), device)?,
        None => {
            let placement =
                Placement { run_dir: &run_dir, launch: launch.as_ref(), group: group.as_ref(), device, progress };
            fresh_network(&config, &train, &placement, observer)?
        }
    };
    let train_loader = Loader::new(train, config.data.train_loader(config.seed, rank, world)?)?;
    let val_loader = Loader::new(val, config.data.val_loader(rank, world)?)?;
    Trainer::new(TrainerSetup { config, run_dir, lock, group, network, train_loader, val_loader, resume, stop })
}

/// Each rank of a launch uses the GPU of its local rank, among those it sees.
fn rank_device(device: Device, launch: Option<&Launch>) -> Device {
    match (device, launch) {
        (Device::Cuda(_), Some(launch)) => {
            let visible = usize::try_from(tch::Cuda::device_count()).unwrap_or(1);
            Device::Cuda(launch.cuda_device(visible))
        }
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
        let mut keys = vec![
            ("data.batch_size", c.data.batch_size.to_string()),
            ("data.drop_last", c.data.drop_last.to_string()),
            ("train.grad_accumulation", c.train.grad_accumulation.to_string()),
            ("train.max_steps_per_epoch", format!("{:?}", c.train.max_steps_per_epoch)),
            ("seed", c.seed.to_string()),
            ("the number of processes", world.to_string()),
        ];
        if c.data.source == SourceKind::Shards {
            keys.push(("data.readers", c.data.readers.to_string()));
            keys.push(("data.shuffle_buffer", c.data.shuffle_buffer.to_string()));
        }
        keys
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

/// Where a fresh network is made: the run, this process's place in a
/// launch, its device, and whether the export may show its progress.
struct Placement<'a> {
    run_dir: &'a Path,
    launch: Option<&'a Launch>,
    group: Option<&'a ProcessGroup>,
    device: Device,
    progress: bool,
}

/// The configured file, or a fresh export of `model.timm`, checked against
/// the input size, its classifier sized to the dataset.
fn fresh_network(
    config: &TrainConfig,
    train: &SplitData,
    placement: &Placement,
    observer: &mut dyn Observer,
) -> Result<Network> {
    let mut network = match &config.model.path {
        Some(path) => Network::load(path, placement.device)?,
        None => exported(config, train, placement, observer)?,
    };
    network.check_input_size(i64::from(config.data.image_size))?;
    network.set_input_size(i64::from(config.data.image_size));
    let classes = train.num_classes() as i64;
    let card = network.card();
    let reason = match (card.num_classes != classes, &card.class_names) {
        (true, _) => Some(format!("it has {} classes and the data {classes}", card.num_classes)),
        (false, Some(names)) if names != train.class_names() => Some("its class names differ from the data's".into()),
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
        network.reset_head(classes, Some(train.class_names().to_vec()), config.model.head_seed)?;
    } else {
        network.set_class_names(train.class_names().to_vec());
    }
    Ok(network)
}

/// `model.timm` exported for the data and loaded. One process per node
/// exports (its local rank 0) while the others wait: into the run's
/// `init/` on rank 0's node, into a scratch directory on the others (whose
/// weights rank 0's replace anyway, by broadcast). Ranks are taken to be
/// numbered node by node, as torchrun and Slurm's block layout do.
fn exported(
    config: &TrainConfig,
    train: &SplitData,
    placement: &Placement,
    observer: &mut dyn Observer,
) -> Result<Network> {
    let Placement { run_dir, launch, group, device, progress } = *placement;
    let (rank, local_rank) = launch.map_or((0, 0), |l| (l.rank, l.local_rank));
    let request = TimmExport {
        config: &config.model,
        classes: train.num_classes(),
        image_size: config.data.image_size,
        seed: config.seed,
        progress: progress && rank == 0,
    };
    let first_of_node = rank - local_rank;
    let dir = match launch {
        Some(l) if first_of_node != 0 => std::env::temp_dir()
            .join(format!("asl-init-{}-{}-{}-node{first_of_node}", l.master_addr, l.master_port, l.attempt)),
        _ => run_dir.join("init"),
    };
    let path = request.out(&dir);
    if local_rank == 0 {
        if let Some(weights) = &config.model.weights {
            observer.on_event(&TrainEvent::Notice(&format!("exporting {} with weights {weights}", config.model.timm)));
        }
        export_timm(&request, &dir)?;
    }
    let wait_for_the_node = |group: &ProcessGroup| {
        let _waiting = group.in_flight();
        group.barrier()
    };
    group.map(wait_for_the_node).transpose()?;
    let network = Network::load(&path, device)?;
    if let Some(group) = group {
        // A barrier is every rank's or none's. Once every local rank has loaded the export, a node's
        // first process removes its scratch copy.
        wait_for_the_node(group)?;
        if local_rank == 0 && first_of_node != 0 {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let origin = network.card().weights.as_ref().map_or_else(|| "random weights".to_string(), |w| w.to_string());
    observer.on_event(&TrainEvent::Notice(&format!(
        "exported {} to {} from {origin}",
        config.model.timm,
        path.display()
    )));
    Ok(network)
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Write { path: path.to_path_buf(), source }
}

/// Single-label training needs exactly one positive per image, checked up
/// front; shards cannot be checked without reading them, so they are refused.
fn check_single_label(data: &SplitData) -> Result<()> {
    let SplitData::Files(dataset) = data else {
        let message = "single-label training checks every image's labels up front, which shards would have to be \
                       read for; train single-label data from its image files"
            .into();
        return Err(TrainError::Data(DataError::Option { name: "data.source", message }));
    };
    let count = |i: usize| dataset.labels().positives(i).count();
    match (0..dataset.len()).find(|&i| count(i) != 1) {
        Some(i) => Err(TrainError::NotSingleLabel { path: dataset.path(i), count: count(i) }),
        None => Ok(()),
    }
}
