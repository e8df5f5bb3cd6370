//! The training loop: one-cycle Adam over the loader's batches with EMA,
//! adaptive γ−, AMP on CUDA, per-epoch validation of the model and its
//! EMA, atomic checkpoints, and a clean stop on a signal. It reports
//! through an [`Observer`] and prints nothing itself. Each stage is a type
//! of its own holding what it uses: the step (`stepper.rs`), evaluation
//! (`validation.rs`), checkpointing (`checkpointing.rs`) and the ranks'
//! agreement on stopping (`agreement.rs`); the end of an epoch is
//! `epoch_end.rs`.

use super::agreement::StopAgreement;
use super::amp::GradScaler;
use super::checkpoint::{CheckpointParts, EpochRecord, TrainState};
use super::checkpointing::{gather_positions, Checkpointer};
use super::config::TrainConfig;
use super::data_parallel::{BroadcastBytes, DataParallel};
use super::error::{Result, TrainError};
use super::faults::{FaultPlan, FaultPoint};
use super::figures::{DeviceFigures, HostFigures};
use super::lock::RunLock;
use super::observer::{Observer, Phase, TrainEvent};
use super::plan::RunPlan;
use super::restore::restore;
use super::schedule::OneCycle;
use super::stepper::{BatchAt, Failure, StepAt, Stepper};
use super::validation::Validator;
use super::Adam;
use crate::data::stream::StreamPosition;
use crate::data::{Loader, SplitFingerprint};
use crate::distributed::{InFlight, ProcessGroup};
use crate::evaluate::{input_normalization, EvaluateOptions};
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
    /// What this launch resolved (processes, device, loader threads), saved beside the config.
    pub plan: RunPlan,
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
    /// Set (by a signal handler) to stop after the current step.
    pub stop: Arc<AtomicBool>,
    /// Faults to inject, for tests of how runs survive them; none by default.
    pub faults: FaultPlan,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished { history: Vec<EpochRecord>, best_epoch: Option<usize>, best_map: Option<f64> },
    Interrupted { checkpoint: PathBuf },
}

pub struct Trainer {
    pub(super) config: TrainConfig,
    pub(super) state: TrainState,
    pub(super) train_loader: Loader,
    pub(super) validator: Validator,
    pub(super) stepper: Stepper,
    pub(super) checkpointer: Checkpointer,
    pub(super) parallel: Option<DataParallel>,
    agreement: StopAgreement,
    faults: FaultPlan,
    /// Which samples the training split holds, saved in checkpoints.
    fingerprint: SplitFingerprint,
    /// Shards: where this rank's epoch stands after the last batch trained.
    stream_position: Option<StreamPosition>,
    /// Optimizer steps this process has taken (not the run's).
    steps_taken: u64,
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
        let TrainerSetup {
            config,
            plan,
            run_dir,
            lock,
            group,
            mut network,
            train_loader,
            val_loader,
            resume,
            stop,
            faults,
        } = setup;
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
        let stepper = Stepper {
            network,
            normalization,
            ema,
            optimizer,
            schedule,
            objective,
            adaptive,
            scaler,
            figures,
            loss_scale,
        };
        let options = EvaluateOptions {
            amp: stepper.amp(),
            threshold: config.train.threshold as f32,
            unknowns: config.data.unknown_in_validation,
            single_label: matches!(config.loss, LossConfig::SingleLabel(_)),
        };
        let fingerprint = train_loader.data().fingerprint();
        Ok(Self {
            checkpointer: Checkpointer::new(run_dir, lock, plan, faults.clone()),
            config,
            state,
            train_loader,
            validator: Validator::new(val_loader, options),
            stepper,
            parallel,
            agreement: StopAgreement::new(stop),
            faults,
            fingerprint,
            stream_position: None,
            steps_taken: 0,
            tf32_before,
        })
    }

    pub fn network(&self) -> &Network {
        &self.stepper.network
    }

    pub fn ema(&self) -> &ModelEma {
        &self.stepper.ema
    }

    pub fn optimizer(&self) -> &Adam {
        &self.stepper.optimizer
    }

    pub fn state(&self) -> &TrainState {
        &self.state
    }

    pub fn plan(&self) -> &RunPlan {
        &self.checkpointer.plan
    }

    pub fn run_dir(&self) -> &Path {
        self.checkpointer.run_dir()
    }

    pub fn device(&self) -> Device {
        self.stepper.network.device()
    }

    /// How many times training has waited to read figures back from the
    /// device: every `train.log_every` steps, at epoch ends and checkpoints,
    /// and every step with adaptive γ− (which needs Δp).
    pub fn host_reads(&self) -> u64 {
        self.stepper.figures.reads()
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

    pub(super) fn group(&self) -> Option<&ProcessGroup> {
        self.parallel.as_ref().map(DataParallel::group)
    }

    pub(super) fn world_size(&self) -> usize {
        self.group().map_or(1, ProcessGroup::world_size)
    }

    pub(super) fn rank(&self) -> usize {
        self.group().map_or(0, ProcessGroup::rank)
    }

    /// Marks this rank as waiting on its peers (a step, a gathering) until
    /// dropped, so that a peer that is lost or stalls meanwhile is named.
    /// Never around checkpoint writing: a peer that finished may exit then.
    pub(super) fn in_flight(&self) -> Option<InFlight> {
        self.group().map(ProcessGroup::in_flight)
    }

    /// Tells the peers' watchers that this rank's training moved.
    fn record_progress(&self) {
        if let Some(group) = self.group() {
            group.record_progress(Some(self.state.optimizer_step as u64));
        }
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
        self.stepper.network.set_train(true)?;
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
            let at = BatchAt { epoch, batch: position, rank: self.rank() };
            if self.stepper.train_batch(&self.config, &batch, at, last_of_group, self.parallel.as_mut())? {
                self.state.epoch_loss_count += 1;
                meter.images += batch.len();
                meter.group_has_gradients = true;
            }
            self.stream_position = batch.resume.take();
            let mut stop = false;
            if last_of_group && std::mem::take(&mut meter.group_has_gradients) {
                stop = self.optimizer_step(epoch, &meter, observer)?;
            }
            drop(waiting_on_peers);
            meter.compute += computed.elapsed();
            self.state.batch_in_epoch += 1;
            self.record_progress();
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

    /// One optimizer step, then the faults planned for it and the ranks'
    /// agreement on stopping, then (every `train.log_every` steps) the
    /// figures. Returns whether to stop.
    fn optimizer_step(&mut self, epoch: usize, meter: &EpochMeter, observer: &mut dyn Observer) -> Result<bool> {
        let hyper = self.stepper.optimizer_step(&self.config, self.state.optimizer_step, self.parallel.as_ref())?;
        self.state.optimizer_step += 1;
        self.steps_taken += 1;
        let step = self.state.optimizer_step as u64;
        self.record_progress();
        let point = FaultPoint::Step { step, taken: self.steps_taken };
        self.faults.strike(point, self.rank(), self.group().map(ProcessGroup::liveness));
        let stop = self.agreement.after_step(step, self.group())?;
        if self.state.optimizer_step.is_multiple_of(self.config.train.log_every) {
            // Logged before it is checked: the step that stops the run is on the record too.
            let figures = self.read_unchecked()?;
            let at = StepAt {
                step: self.state.optimizer_step,
                hyper,
                mean_loss: self.mean_loss(&figures),
                images_per_second: meter.images_per_second(),
                data_wait_fraction: meter.wait_fraction(),
            };
            observer.on_event(&TrainEvent::Step(&self.stepper.step_log(&self.config, at, &figures)));
            self.check(&figures, epoch)?;
        }
        Ok(stop)
    }

    /// The figures, read and checked (a non-finite fp32 loss or too many
    /// skipped steps in a row stop the run here).
    pub(super) fn read_figures(&mut self, epoch: usize) -> Result<HostFigures> {
        let figures = self.read_unchecked()?;
        self.check(&figures, epoch)?;
        Ok(figures)
    }

    /// The figures as the ranks' sums; the skip counters are kept in the state.
    fn read_unchecked(&mut self) -> Result<HostFigures> {
        let figures = self.stepper.figures.read_all(self.parallel.as_ref())?;
        self.state.skipped_steps = figures.skipped_steps;
        self.state.skipped_in_a_row = figures.skipped_in_a_row;
        Ok(figures)
    }

    /// The error that stops the run when `figures` do, naming where it stands.
    fn check(&self, figures: &HostFigures, epoch: usize) -> Result<()> {
        let Some(failure) = self.stepper.failure(&self.config, figures) else { return Ok(()) };
        let (epoch, batch, step) = (epoch + 1, self.state.batch_in_epoch + 1, self.state.optimizer_step);
        let kept = self.kept_checkpoint();
        Err(match failure {
            Failure::NonFinite => {
                TrainError::NonFiniteLoss { value: "NaN or infinite".into(), epoch, batch, step, kept }
            }
            Failure::Diverged(skipped) => TrainError::Diverged { skipped, epoch, batch, step, kept },
        })
    }

    /// The epoch's mean loss so far: per global batch, over the finite ones.
    pub(super) fn mean_loss(&self, figures: &HostFigures) -> f64 {
        let world = self.world_size() as f64;
        let batches = self.state.epoch_loss_count as f64 - figures.non_finite / world;
        let per_global_batch = if self.stepper.objective.sums_over_batch() { 1.0 } else { world };
        figures.loss_sum / per_global_batch / batches.max(1.0)
    }

    fn kept_checkpoint(&self) -> String {
        let last = self.checkpointer.dir("last");
        if last.exists() {
            format!("The last good checkpoint is kept at {}.", last.display())
        } else {
            "No checkpoint was written yet.".to_string()
        }
    }

    /// Writes `checkpoints/<name>` (on rank 0) and returns its path. The
    /// figures are read first: a diverged or non-finite run is never saved.
    pub(super) fn checkpoint(&mut self, name: &str, epoch: usize, observer: &mut dyn Observer) -> Result<PathBuf> {
        let waiting_on_peers = self.in_flight();
        let figures = self.read_figures(epoch)?;
        self.state.stream = gather_positions(
            self.stream_position.as_ref(),
            self.state.batch_in_epoch > 0,
            self.parallel.as_ref(),
            self.device(),
        )?;
        drop(waiting_on_peers);
        self.state.epoch_loss_sum = figures.loss_sum;
        self.state.adaptive = self.stepper.adaptive;
        self.state.grad_scaler = self.stepper.scaler.as_ref().map(GradScaler::state);
        self.state.world_size = self.world_size();
        self.state.data = Some(self.fingerprint.clone());
        if !self.is_main() {
            return Ok(self.checkpointer.dir(name));
        }
        let parts = CheckpointParts {
            network: &self.stepper.network,
            ema: &self.stepper.ema,
            optimizer: &self.stepper.optimizer,
            state: &self.state,
            config: &self.config,
        };
        let group = self.parallel.as_ref().map(DataParallel::group);
        let dir = self.checkpointer.write(name, &parts, self.state.optimizer_step as u64, group)?;
        observer.on_event(&TrainEvent::CheckpointWritten { name, path: &dir });
        Ok(dir)
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
