//! The training loop: one-cycle Adam over the loader's batches with EMA,
//! adaptive γ−, AMP on CUDA, per-epoch validation of the model and its
//! EMA, atomic checkpoints, and a clean stop on Ctrl-C. It reports through
//! an [`Observer`] and prints nothing itself. One step: `step.rs`; the end
//! of an epoch: `epoch_end.rs`.

use super::amp::GradScaler;
use super::checkpoint::{EpochRecord, TrainState};
use super::config::TrainConfig;
use super::data_parallel::{BroadcastBytes, DataParallel};
use super::error::Result;
use super::figures::DeviceFigures;
use super::lock::RunLock;
use super::observer::{Observer, Phase, TrainEvent};
use super::restore::restore;
use super::schedule::OneCycle;
use super::Adam;
use crate::data::stream::StreamPosition;
use crate::data::{Loader, Normalization};
use crate::distributed::{InFlight, ProcessGroup};
use crate::evaluate::input_normalization;
use crate::loss::{AdaptiveAsymmetry, LossConfig, Objective};
use crate::model::{ModelEma, Network};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::Device;

/// Everything a run needs, prepared by [`super::prepare`].
pub struct TrainerSetup {
    pub config: TrainConfig,
    pub run_dir: PathBuf,
    /// The run directory's lock, held while the trainer lives (rank 0's only).
    pub lock: Option<RunLock>,
    /// This process's group when several train together.
    pub group: Option<ProcessGroup>,
    /// The network to train, on its device, head already sized for the data.
    pub network: Network,
    pub train_loader: Loader,
    pub val_loader: Loader,
    /// A checkpoint directory to continue from.
    pub resume: Option<PathBuf>,
    /// Set (by a Ctrl-C handler) to stop after the current step.
    pub stop: Arc<AtomicBool>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished { history: Vec<EpochRecord>, best_epoch: Option<usize>, best_map: Option<f64> },
    Interrupted { checkpoint: PathBuf },
}

pub struct Trainer {
    pub(super) config: TrainConfig,
    pub(super) run_dir: PathBuf,
    _lock: Option<RunLock>,
    pub(super) parallel: Option<DataParallel>,
    /// Multiplies the loss before backward: the world size when the loss is
    /// a sum, since the Reducer averages gradients over the ranks and a
    /// summed loss over N × B/N images must give the gradient of B images.
    pub(super) loss_scale: f64,
    pub(super) network: Network,
    /// The network's input normalisation, on its device.
    pub(super) normalization: Normalization,
    pub(super) ema: ModelEma,
    pub(super) optimizer: Adam,
    pub(super) schedule: OneCycle,
    pub(super) objective: Objective,
    pub(super) adaptive: Option<AdaptiveAsymmetry>,
    pub(super) scaler: Option<GradScaler>,
    pub(super) figures: DeviceFigures,
    pub(super) train_loader: Loader,
    pub(super) val_loader: Loader,
    pub(super) state: TrainState,
    /// Shards: where this rank's epoch stands after the last batch trained.
    pub(super) stream_position: Option<StreamPosition>,
    pub(super) stop: Arc<AtomicBool>,
    /// TF32 as the caller had it, restored on drop.
    tf32_before: bool,
}

impl Drop for Trainer {
    fn drop(&mut self) {
        let _ = crate::ops::set_tf32(self.tf32_before);
    }
}

/// Timing and counts of the current epoch (its loss and Δp sums stay on
/// the device, in [`DeviceFigures`]).
#[derive(Default)]
pub(super) struct EpochMeter {
    pub images: usize,
    pub wait: Duration,
    pub compute: Duration,
    /// Whether the current accumulation group has had a batch with images (and so gradients).
    pub group_has_gradients: bool,
}

impl Trainer {
    pub fn new(setup: TrainerSetup) -> Result<Self> {
        let TrainerSetup { config, run_dir, lock, group, mut network, train_loader, val_loader, resume, stop } = setup;
        let device = network.device();
        if let (Some(mean), Some(std)) = (config.model.input_mean, config.model.input_std) {
            network.set_input_normalization(mean, std)?;
        }
        let normalization = input_normalization(&network)?;
        network.freeze(&config.model.freeze)?;
        if config.model.freeze_backbone {
            network.freeze_backbone()?;
        }
        if config.train.channels_last.enabled(device) {
            network.to_channels_last()?;
        }
        // Process-wide; put back as it was when the trainer is dropped.
        let tf32_before = crate::ops::tf32_enabled();
        if device.is_cuda() {
            crate::ops::set_tf32(config.train.tf32)?;
        }
        let parallel = group.map(|g| DataParallel::new(g, &network, config.distributed.bucket_mb)).transpose()?;
        let mut optimizer = Adam::new(network.trainable_parameters()?, config.optimizer)?;
        let steps_per_epoch = train_loader.batches_per_epoch().div_ceil(config.train.grad_accumulation);
        let steps_per_epoch = config.train.max_steps_per_epoch.map_or(steps_per_epoch, |m| m.min(steps_per_epoch));
        let schedule = OneCycle::new(config.schedule, steps_per_epoch * config.schedule.scheduled_epochs)?;
        let mut objective = Objective::new(&config.loss, train_loader.has_unknown_labels())?;
        let mut scaler = if config.train.amp.enabled(device) { Some(GradScaler::new(device)?) } else { None };
        let (ema, state) = match &resume {
            Some(dir) => restore(dir, &network, &config, &mut optimizer, scaler.as_mut())?,
            None => (ModelEma::new(&network, config.train.ema_decay)?, TrainState::default()),
        };
        let adaptive = match (&config.loss, &state.adaptive) {
            (_, Some(saved)) => Some(*saved),
            (LossConfig::Asymmetric(s), None) => {
                s.adaptive.map(|a| AdaptiveAsymmetry::new(a, s.gamma_neg)).transpose()?
            }
            _ => None,
        };
        if let Some(a) = &adaptive {
            objective.set_gamma_neg(a.gamma_neg())?;
        }
        let world = parallel.as_ref().map_or(1, |p| p.group().world_size());
        let loss_scale = if objective.sums_over_batch() { world as f64 } else { 1.0 };
        let mut figures = DeviceFigures::new(device, state.skipped_steps, state.skipped_in_a_row)?;
        if parallel.as_ref().is_none_or(|p| p.group().is_main()) {
            // A run stopped mid-epoch goes on from its saved loss sum (held once, by rank 0).
            figures.seed_loss(state.epoch_loss_sum)?;
        }
        Ok(Self {
            config,
            run_dir,
            _lock: lock,
            parallel,
            loss_scale,
            network,
            normalization,
            ema,
            optimizer,
            schedule,
            objective,
            adaptive,
            scaler,
            figures,
            train_loader,
            val_loader,
            state,
            stream_position: None,
            stop,
            tf32_before,
        })
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn ema(&self) -> &ModelEma {
        &self.ema
    }

    pub fn optimizer(&self) -> &Adam {
        &self.optimizer
    }

    pub fn state(&self) -> &TrainState {
        &self.state
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn device(&self) -> Device {
        self.network.device()
    }

    /// How many times training has waited to read figures back from the
    /// device: every `train.log_every` steps, at epoch ends and checkpoints,
    /// and every step with adaptive γ− (which needs Δp).
    pub fn host_reads(&self) -> u64 {
        self.figures.reads()
    }

    /// What this rank's broadcasts of weights and buffers cost, as the
    /// native layer counted them; `None` when alone.
    pub fn broadcast_bytes(&self) -> Option<BroadcastBytes> {
        self.parallel.as_ref().map(DataParallel::broadcast_bytes)
    }

    /// Whether this process writes checkpoints (rank 0, or the only one).
    pub fn is_main(&self) -> bool {
        self.parallel.as_ref().is_none_or(|p| p.group().is_main())
    }

    pub(super) fn world_size(&self) -> usize {
        self.parallel.as_ref().map_or(1, |p| p.group().world_size())
    }

    pub(super) fn rank(&self) -> usize {
        self.parallel.as_ref().map_or(0, |p| p.group().rank())
    }

    pub(super) fn amp(&self) -> bool {
        self.scaler.is_some()
    }

    /// Marks this rank as waiting on its peers (a step, a gathering) until
    /// dropped, so that a peer whose heartbeat stops meanwhile is named.
    /// Never around checkpoint writing: a peer that finished may exit then.
    pub(super) fn in_flight(&self) -> Option<InFlight> {
        self.parallel.as_ref().map(|p| p.group().in_flight())
    }

    /// Trains from the current state to `train.epochs`.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<Outcome> {
        while self.state.epoch < self.config.train.epochs {
            let started = Instant::now();
            let epoch = self.state.epoch;
            let Some(meter) = self.train_epoch(epoch, observer)? else {
                let step = self.state.optimizer_step;
                observer.on_event(&TrainEvent::Notice(&format!("stop requested: stopping after step {step}")));
                let checkpoint = self.checkpoint("last", epoch, observer)?;
                return Ok(Outcome::Interrupted { checkpoint });
            };
            self.end_epoch(epoch, &meter, started.elapsed(), observer)?;
        }
        Ok(Outcome::Finished {
            history: self.state.history.clone(),
            best_epoch: self.state.best_epoch,
            best_map: self.state.best_map,
        })
    }

    /// Runs the remaining batches of `epoch`: its timings, or `None` when stopped early.
    fn train_epoch(&mut self, epoch: usize, observer: &mut dyn Observer) -> Result<Option<EpochMeter>> {
        self.network.set_train(true)?;
        let accumulation = self.config.train.grad_accumulation;
        let limit = self.config.train.max_steps_per_epoch.map_or(usize::MAX, |m| m * accumulation);
        let batches = self.train_loader.batches_per_epoch().min(limit);
        let start = self.state.batch_in_epoch;
        observer.on_event(&TrainEvent::EpochStarted { epoch: epoch + 1, batches, start });
        let mut meter = EpochMeter::default();
        let saved = self.state.stream.get(self.rank()).filter(|_| start > 0);
        let mut iter = self.train_loader.resume_epoch(epoch as u64, start, saved);
        let mut waited_since = Instant::now();
        while self.state.batch_in_epoch < batches {
            let Some(batch) = iter.next() else { break };
            let mut batch = batch?;
            meter.wait += waited_since.elapsed();
            for skipped in &batch.skipped {
                observer.on_event(&TrainEvent::ImageSkipped { phase: Phase::Training, skipped });
            }
            self.state.epoch_skipped += batch.skipped.len();
            let computed = Instant::now();
            let position = self.state.batch_in_epoch;
            let last_of_group = (position + 1).is_multiple_of(accumulation) || position + 1 == batches;
            let waiting_on_peers = self.in_flight();
            self.train_batch(&batch, epoch, last_of_group, &mut meter)?;
            self.stream_position = batch.resume.take();
            let mut stop = false;
            if last_of_group && std::mem::take(&mut meter.group_has_gradients) {
                stop = self.optimizer_step(epoch, &meter, observer)?;
            }
            drop(waiting_on_peers);
            meter.compute += computed.elapsed();
            self.state.batch_in_epoch += 1;
            observer.on_event(&TrainEvent::BatchTrained);
            waited_since = Instant::now();
            if stop {
                return Ok(None);
            }
        }
        if self.state.epoch_skipped > 0 {
            let message = format!("epoch {}: {} unreadable images skipped", epoch + 1, self.state.epoch_skipped);
            observer.on_event(&TrainEvent::Warning(&message));
        }
        Ok(Some(meter))
    }
}

impl EpochMeter {
    pub(super) fn seconds(&self) -> f64 {
        (self.wait + self.compute).as_secs_f64().max(1e-9)
    }

    pub(super) fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds()
    }

    pub(super) fn wait_fraction(&self) -> f64 {
        self.wait.as_secs_f64() / self.seconds()
    }
}
