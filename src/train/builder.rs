//! The one way to set up a run: from the user's config to a ready trainer
//! (the launch's plan, device, process group, data, network sized for the
//! data, loaders, restored state). `asl train` and `asl reproduce` both
//! come through here. The config is never rewritten: what the launch
//! resolves goes into the [`RunPlan`].

use super::checkpoint::{resolve_checkpoint, MODEL_FILE};
use super::config::TrainConfig;
use super::error::{Result, TrainError};
use super::faults::{FaultPlan, FaultPoint, SetupPhase};
use super::lock::RunLock;
use super::observer::{Observer, TrainEvent};
use super::placement::{exported, ExportRequest, Placement};
use super::plan::{RunPlan, PLAN_FILE};
use super::resumable::check_resumable;
use super::setup::{cancellable, check_stop, NewRunDir, PhaseWatch};
use super::trainer::{Trainer, TrainerSetup};
use crate::atomic::write_bytes_atomically;
use crate::data::{DataConfig, DataError, Loader, Split, SplitData};
use crate::distributed::{GroupOptions, Launch, LostRankHandler, ProcessGroup};
use crate::loss::LossConfig;
use crate::model::{resolve_device, ModelError, Network, ResetHead};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tch::Device;

/// Where a run lives, how it can be stopped, and where this process sits
/// in a multi-process launch.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The run directory: `config.yaml`, `plan.json`, `checkpoints/`, `init/` (an exported model).
    pub run_dir: PathBuf,
    /// A checkpoint directory to continue from; without it, `run_dir` must hold no checkpoints yet.
    pub resume: Option<PathBuf>,
    /// Set to stop: after the current optimizer step with a checkpoint, or
    /// during set-up at once, leaving nothing half-written.
    pub stop: Arc<AtomicBool>,
    /// This process's rank and its peers (torchrun's variables); `None` runs alone.
    pub launch: Option<Launch>,
    /// Let the model export write to stderr as it runs: its notes and the
    /// progress of a pretrained-weights download (rank 0 only).
    pub progress: bool,
    /// Told when a peer was lost or stalled while this rank waited on it
    /// (after the process group was aborted). The library does not end the
    /// process; the binary's handler does.
    pub on_lost_rank: Option<LostRankHandler>,
    /// Faults to inject (`ASL_FAULT`), for tests of how runs survive them.
    pub faults: FaultPlan,
}

/// Joins the process group (if launched), loads the data, prepares the
/// network and returns the trainer, ready to [`run`](Trainer::run).
/// Reports what it does to `observer`. Only rank 0 writes to `run_dir`.
/// A stop requested during set-up ends it with [`TrainError::Stopped`];
/// a run directory this call created is then removed again.
pub fn prepare(config: TrainConfig, options: RunOptions, observer: &mut dyn Observer) -> Result<Trainer> {
    let RunOptions { run_dir, resume, stop, launch, progress, on_lost_rank, faults } = options;
    let device = rank_device(resolve_device(&config.device)?, launch.as_ref());
    let backend = launch.as_ref().map(|_| config.distributed.backend(device)).transpose()?;
    let plan = RunPlan::resolve(&config, launch.as_ref(), device, backend);
    let group = match (&launch, backend) {
        (Some(launch), Some(backend)) => {
            let options = GroupOptions {
                backend,
                device,
                timeout: Duration::from_secs(config.distributed.timeout_s),
                heartbeat_timeout: Duration::from_secs(config.distributed.heartbeat_timeout_s),
                stall_timeout: Duration::from_secs(config.distributed.stall_timeout_s),
                on_lost_rank,
                scope: config.name.clone(),
            };
            let launch = launch.clone();
            let join = move || ProcessGroup::join(&launch, &options);
            Some(cancellable(&stop, "joining the process group", PhaseWatch::none(), join)??)
        }
        _ => None,
    };
    let rank = plan.rank;
    let liveness = || group.as_ref().map(ProcessGroup::liveness);
    let started = || faults.strike(FaultPoint::Setup(SetupPhase::Index), rank, liveness());
    let waiting = || liveness().iter().for_each(|l| l.record_progress(None));
    let watch = PhaseWatch { started: &started, waiting: &waiting };
    let (train, val) = cancellable(&stop, "building the index of the data", watch, open_splits(&config.data))??;
    describe_data(&train, &val, &plan, observer)?;
    if matches!(config.loss, LossConfig::SingleLabel(_)) {
        check_single_label(&train)?;
        check_single_label(&val)?;
    }
    if let Some(dir) = &resume {
        for note in check_resumable(&config, &plan, &train.fingerprint(), dir)? {
            observer.on_event(&TrainEvent::Notice(&note));
        }
    } else if resolve_checkpoint(&run_dir).is_ok() {
        return Err(TrainError::RunExists(run_dir));
    }
    check_stop(&stop, "opening the run")?;
    // Only rank 0 creates the run directory, so only it may take it back.
    let new_run = (rank == 0).then(|| NewRunDir::before_creating(&run_dir));
    let lock = if rank == 0 { Some(claim_run_dir(&run_dir, &config, &plan)?) } else { None };
    let stopped = |during| {
        let removed = new_run.as_ref().map_or(Ok(()), NewRunDir::remove);
        removed.map_err(|source| ModelError::Write { path: run_dir.clone(), source })?;
        Err(TrainError::Stopped { during })
    };
    let setup = Built { config, plan, run_dir: run_dir.clone(), lock, group, train, val, resume, stop, faults };
    match build(setup, device, progress, observer) {
        Err(TrainError::Stopped { during }) => stopped(during),
        Err(TrainError::Model(ModelError::Stopped { .. })) => stopped("the model export"),
        other => other,
    }
}

/// The set-up so far, once the data and the run directory are there.
struct Built {
    config: TrainConfig,
    plan: RunPlan,
    run_dir: PathBuf,
    lock: Option<RunLock>,
    group: Option<ProcessGroup>,
    train: SplitData,
    val: SplitData,
    resume: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    faults: FaultPlan,
}

/// The network and the loaders, then the trainer.
fn build(setup: Built, device: Device, progress: bool, observer: &mut dyn Observer) -> Result<Trainer> {
    let Built { config, plan, run_dir, lock, group, train, val, resume, stop, faults } = setup;
    let network = match &resume {
        Some(dir) => Network::load(&dir.join(MODEL_FILE), device)?,
        None => {
            let placement = Placement {
                run_dir: &run_dir,
                plan: &plan,
                group: group.as_ref(),
                device,
                progress,
                stop: &stop,
                faults: &faults,
            };
            fresh_network(&config, &train, &placement, observer)?
        }
    };
    check_stop(&stop, "loading the network")?;
    let (rank, world) = (plan.rank, plan.world_size);
    let mut train_loader = config.data.train_loader(config.seed, rank, world)?;
    let mut val_loader = config.data.val_loader(rank, world)?;
    train_loader.threads = plan.loader_threads;
    val_loader.threads = plan.loader_threads;
    let train_loader = Loader::new(train, train_loader)?;
    let val_loader = Loader::new(val, val_loader)?;
    Trainer::new(TrainerSetup {
        config,
        plan,
        run_dir,
        lock,
        group,
        network,
        train_loader,
        val_loader,
        resume,
        stop,
        faults,
    })
}

/// The training and validation splits, opened on a set-up thread.
fn open_splits(data: &DataConfig) -> impl FnOnce() -> Result<(SplitData, SplitData)> + Send + 'static {
    let data = data.clone();
    move || Ok((data.open_split(Split::Train)?, data.open_split(Split::Val)?))
}

/// Logs the data and the plan, and checks that the splits go together.
fn describe_data(train: &SplitData, val: &SplitData, plan: &RunPlan, observer: &mut dyn Observer) -> Result<()> {
    let positives = match train {
        SplitData::Files(dataset) => format!(", {:.2} positives per image", dataset.mean_positives()),
        SplitData::Shards(_) => String::new(),
    };
    let processes = if plan.world_size > 1 { format!(", {} processes", plan.world_size) } else { String::new() };
    let summary = format!(
        "data: {} train / {} val, {} classes{positives}; device {}{processes}",
        train.describe(),
        val.describe(),
        train.num_classes(),
        plan.device,
    );
    observer.on_event(&TrainEvent::Notice(&summary));
    observer.on_event(&TrainEvent::Notice(&plan.describe()));
    if train.class_names() != val.class_names() {
        return Err(TrainError::Data(DataError::Option {
            name: "data.val_path",
            message: "the validation split's classes differ from the training split's".into(),
        }));
    }
    for note in train.notes().iter().chain(val.notes()) {
        observer.on_event(&TrainEvent::Warning(note));
    }
    Ok(())
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

/// Creates the run directory, takes its lock and writes the config as the
/// user gave it and, beside it, the launch's plan.
fn claim_run_dir(run_dir: &Path, config: &TrainConfig, plan: &RunPlan) -> Result<RunLock> {
    std::fs::create_dir_all(run_dir).map_err(write_error(run_dir))?;
    let lock = RunLock::acquire(run_dir)?;
    let yaml = config.to_yaml();
    write_bytes_atomically(&run_dir.join("config.yaml"), yaml.as_bytes()).map_err(write_error(run_dir))?;
    write_bytes_atomically(&run_dir.join(PLAN_FILE), plan.to_json().as_bytes()).map_err(write_error(run_dir))?;
    Ok(lock)
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
        None => {
            let request =
                ExportRequest { model: &config.model, train, image_size: config.data.image_size, seed: config.seed };
            exported(&request, placement, observer)?
        }
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
