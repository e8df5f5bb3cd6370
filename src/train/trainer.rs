//! The training loop: one-cycle Adam over the loader's batches with EMA,
//! adaptive γ−, AMP on CUDA, per-epoch validation of the model and its
//! EMA, atomic checkpoints, and a clean stop on Ctrl-C. It reports through
//! an [`Observer`] and prints nothing itself.

use super::amp::GradScaler;
use super::checkpoint::{link_checkpoint, write_checkpoint, CheckpointParts, EpochRecord, TrainState};
use super::config::{AmpMode, TrainConfig};
use super::data_parallel::{DataParallel, StepFigures};
use super::error::{Result, TrainError};
use super::lock::RunLock;
use super::observer::{Observer, Phase, Scored, StepLog, TrainEvent};
use super::restore::restore;
use super::schedule::OneCycle;
use super::{Adam, StepHyper};
use crate::data::{Batch, Loader};
use crate::distributed::ProcessGroup;
use crate::evaluate::{evaluate, EvaluateEvent, Evaluation};
use crate::loss::{batch_stats, AdaptiveAsymmetry, LossConfig, Objective, ProbabilityStats};
use crate::model::{ModelEma, Network};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{Device, Kind};

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
    config: TrainConfig,
    run_dir: PathBuf,
    _lock: Option<RunLock>,
    parallel: Option<DataParallel>,
    /// Multiplies the loss before backward: the world size when the loss is
    /// a sum, since the Reducer averages gradients over the ranks and a
    /// summed loss over N × B/N images must give the gradient of B images.
    loss_scale: f64,
    network: Network,
    ema: ModelEma,
    optimizer: Adam,
    schedule: OneCycle,
    objective: Objective,
    adaptive: Option<AdaptiveAsymmetry>,
    scaler: Option<GradScaler>,
    train_loader: Loader,
    val_loader: Loader,
    state: TrainState,
    stop: Arc<AtomicBool>,
}

/// Running figures of the current epoch.
#[derive(Default)]
struct EpochMeter {
    images: usize,
    wait: Duration,
    compute: Duration,
    stats: ProbabilityStats,
    /// Statistics of the accumulation group's latest batch; `None` until
    /// one of its batches had images (and so gradients).
    group: Option<ProbabilityStats>,
    /// Sum and count of the group's finite batch losses.
    group_loss: (f64, f64),
}

impl Trainer {
    pub fn new(setup: TrainerSetup) -> Result<Self> {
        let TrainerSetup { config, run_dir, lock, group, mut network, train_loader, val_loader, resume, stop } = setup;
        network.freeze(&config.model.freeze)?;
        let parallel = group.map(|g| DataParallel::new(g, &network, config.distributed.bucket_mb)).transpose()?;
        let mut optimizer = Adam::new(network.trainable_parameters()?, config.optimizer)?;
        let steps_per_epoch = train_loader.batches_per_epoch().div_ceil(config.train.grad_accumulation);
        let steps_per_epoch = config.train.max_steps_per_epoch.map_or(steps_per_epoch, |m| m.min(steps_per_epoch));
        let schedule = OneCycle::new(config.schedule, steps_per_epoch * config.schedule.scheduled_epochs)?;
        let mut objective = Objective::new(&config.loss, train_loader.has_unknown_labels())?;
        let amp = match config.train.amp {
            AmpMode::Auto => network.device().is_cuda(),
            AmpMode::On => true,
            AmpMode::Off => false,
        };
        let mut scaler = if amp { Some(GradScaler::new(network.device())?) } else { None };
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
        Ok(Self {
            config,
            run_dir,
            _lock: lock,
            parallel,
            loss_scale,
            network,
            ema,
            optimizer,
            schedule,
            objective,
            adaptive,
            scaler,
            train_loader,
            val_loader,
            state,
            stop,
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

    /// Whether this process writes checkpoints (rank 0, or the only one).
    pub fn is_main(&self) -> bool {
        self.parallel.as_ref().is_none_or(|p| p.group().is_main())
    }

    fn world_size(&self) -> usize {
        self.parallel.as_ref().map_or(1, |p| p.group().world_size())
    }

    fn amp(&self) -> bool {
        self.scaler.is_some()
    }

    /// Trains from the current state to `train.epochs`.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<Outcome> {
        while self.state.epoch < self.config.train.epochs {
            let started = Instant::now();
            let epoch = self.state.epoch;
            let Some((train_loss, meter)) = self.train_epoch(epoch, observer)? else {
                let checkpoint = self.checkpoint("last", observer)?;
                return Ok(Outcome::Interrupted { checkpoint });
            };
            self.end_epoch(epoch, train_loss, &meter, started.elapsed(), observer)?;
        }
        Ok(Outcome::Finished {
            history: self.state.history.clone(),
            best_epoch: self.state.best_epoch,
            best_map: self.state.best_map,
        })
    }

    /// Runs the remaining batches of `epoch`: its mean loss and speed, or
    /// `None` when stopped early.
    fn train_epoch(&mut self, epoch: usize, observer: &mut dyn Observer) -> Result<Option<(f64, EpochMeter)>> {
        self.network.set_train(true)?;
        let accumulation = self.config.train.grad_accumulation;
        let limit = self.config.train.max_steps_per_epoch.map_or(usize::MAX, |m| m * accumulation);
        let batches = self.train_loader.batches_per_epoch().min(limit);
        let start = self.state.batch_in_epoch;
        observer.on_event(&TrainEvent::EpochStarted { epoch: epoch + 1, batches, start });
        let mut meter = EpochMeter::default();
        let mut iter = self.train_loader.epoch(epoch as u64, start);
        let mut waited_since = Instant::now();
        while self.state.batch_in_epoch < batches {
            let Some(batch) = iter.next() else { break };
            let batch = batch?;
            meter.wait += waited_since.elapsed();
            for skipped in &batch.skipped {
                observer.on_event(&TrainEvent::ImageSkipped { phase: Phase::Training, skipped });
            }
            self.state.epoch_skipped += batch.skipped.len();
            let computed = Instant::now();
            let position = self.state.batch_in_epoch;
            let last_of_group = (position + 1).is_multiple_of(accumulation) || position + 1 == batches;
            self.train_batch(&batch, epoch, last_of_group, &mut meter)?;
            let mut stop = false;
            if let (true, Some(stats)) = (last_of_group, meter.group.take()) {
                let (loss_sum, loss_count) = std::mem::take(&mut meter.group_loss);
                let local = StepFigures { stats, loss_sum, loss_count, stop: self.stop.load(Ordering::SeqCst) };
                let figures = match &self.parallel {
                    Some(parallel) => parallel.reduce(local)?,
                    None => local,
                };
                // Summed over ranks; a mean loss is the mean of the ranks' means.
                let per_global_batch = if self.objective.sums_over_batch() { 1.0 } else { self.world_size() as f64 };
                self.state.epoch_loss_sum += figures.loss_sum / per_global_batch;
                self.state.epoch_loss_count += loss_count as usize;
                self.optimizer_step(&figures.stats, &meter, epoch, observer)?;
                stop = figures.stop;
            }
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
        Ok(Some((self.state.epoch_loss_sum / self.state.epoch_loss_count.max(1) as f64, meter)))
    }

    /// Forward, loss and backward of one batch (nothing when every image of
    /// it was unreadable). A non-finite loss stops an fp32 run; under AMP it
    /// is back-propagated, so that the grad scaler sees the overflow and
    /// skips the step, whichever micro-batch of the group it came from.
    /// `sync`: the batch ends its accumulation group, so its backward sums
    /// the gradients across ranks.
    fn train_batch(&mut self, batch: &Batch, epoch: usize, sync: bool, meter: &mut EpochMeter) -> Result<()> {
        if batch.is_empty() {
            if self.parallel.is_some() {
                return Err(TrainError::EmptyBatch { epoch: epoch + 1, batch: self.state.batch_in_epoch + 1 });
            }
            return Ok(());
        }
        let device = self.network.device();
        let images = batch.images_tensor(device)?;
        let targets = batch.targets_tensor(device)?;
        // The global RNG (dropout, drop-path) is reseeded per batch so a resumed run draws the same numbers.
        tch::manual_seed(self.config.seed as i64 ^ ((epoch as i64) << 32) ^ self.state.batch_in_epoch as i64);
        let amp = self.amp();
        if let Some(parallel) = &self.parallel {
            parallel.before_forward(sync)?;
        }
        let forward = crate::model::with_cuda_autocast(amp, || self.network.forward(&images));
        let logits = forward.map_err(|e| self.classify_error(e.into(), epoch))?.f_to_kind(Kind::Float)?;
        if let Some(parallel) = &self.parallel {
            parallel.after_forward(sync)?;
        }
        let loss = self.objective.training_loss(&logits, &targets)?;
        let value = loss.f_double_value(&[])?;
        if !value.is_finite() && !amp {
            return Err(self.non_finite(value.to_string(), epoch));
        }
        let stats = batch_stats(&logits.f_nan_to_num(0.0, None, None)?, &targets)?;
        meter.stats.merge(&stats);
        meter.images += batch.len();
        meter.group = Some(stats);
        if value.is_finite() {
            meter.group_loss.0 += value;
            meter.group_loss.1 += 1.0;
        }
        let scaled = match &self.scaler {
            Some(scaler) => scaler.scale(&loss)?,
            None => loss.shallow_clone(),
        };
        let scaled = scaled.f_div_scalar(self.config.train.grad_accumulation as f64 / self.loss_scale)?;
        match (scaled.f_backward(), &self.parallel) {
            (Ok(()), Some(parallel)) => parallel.after_backward(),
            (Ok(()), None) => Ok(()),
            (Err(error), Some(parallel)) => Err(parallel.backward_error(error)),
            (Err(error), None) => Err(error.into()),
        }
    }

    /// Applies the accumulated gradients, unless the grad scaler found an
    /// overflow in them, then updates the EMA, γ− and the logs. `stats` are
    /// the group's last batch's. Too many skipped steps in a row stop the run.
    fn optimizer_step(
        &mut self,
        stats: &ProbabilityStats,
        meter: &EpochMeter,
        epoch: usize,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let hyper = self.schedule.at(self.state.optimizer_step);
        let mut apply = true;
        if let Some(scaler) = &mut self.scaler {
            let mut gradients = self.optimizer.gradients();
            apply = !scaler.unscale(&mut gradients)?;
            scaler.update()?;
        }
        if apply {
            self.optimizer.step(hyper)?;
            self.ema.update(&self.network)?;
            self.state.skipped_in_a_row = 0;
        } else {
            self.state.skipped_steps += 1;
            self.state.skipped_in_a_row += 1;
        }
        self.optimizer.zero_grad()?;
        if let Some(adaptive) = &mut self.adaptive {
            let gamma = adaptive.update(stats);
            self.objective.set_gamma_neg(gamma)?;
        }
        self.state.optimizer_step += 1;
        if self.state.optimizer_step.is_multiple_of(self.config.train.log_every) {
            observer.on_event(&TrainEvent::Step(&self.step_log(hyper, stats, meter)));
        }
        if self.state.skipped_in_a_row >= self.config.train.max_skipped_steps {
            return Err(self.diverged(epoch));
        }
        Ok(())
    }

    fn step_log(&self, hyper: StepHyper, stats: &ProbabilityStats, meter: &EpochMeter) -> StepLog {
        let asymmetric = match &self.config.loss {
            LossConfig::Asymmetric(s) => Some(s),
            LossConfig::SingleLabel(_) => None,
        };
        StepLog {
            step: self.state.optimizer_step,
            loss: self.state.epoch_loss_sum / self.state.epoch_loss_count.max(1) as f64,
            lr: hyper.lr,
            beta1: hyper.beta1,
            p_t_pos: stats.p_pos(),
            p_t_neg: stats.p_neg(),
            delta_p: stats.delta(),
            gamma_neg: self.objective.gamma_neg(),
            gamma_pos: asymmetric.map(|s| s.gamma_pos),
            clip: asymmetric.map(|s| s.clip),
            grad_scale: self.scaler.as_ref().map(GradScaler::scale_value),
            skipped_steps: self.state.skipped_steps,
            images_per_second: meter.images_per_second(),
            data_wait_fraction: meter.wait_fraction(),
        }
    }

    /// Names the run position in a failure; CUDA out-of-memory gets advice.
    fn classify_error(&self, error: TrainError, epoch: usize) -> TrainError {
        let message = error.to_string();
        if message.contains("out of memory") {
            return TrainError::OutOfMemory {
                epoch: epoch + 1,
                batch: self.state.batch_in_epoch,
                batch_size: self.config.data.batch_size,
                message: message.lines().next().unwrap_or_default().to_string(),
            };
        }
        error
    }

    fn non_finite(&self, value: String, epoch: usize) -> TrainError {
        TrainError::NonFiniteLoss {
            value,
            epoch: epoch + 1,
            batch: self.state.batch_in_epoch,
            step: self.state.optimizer_step,
            kept: self.kept_checkpoint(),
        }
    }

    fn diverged(&self, epoch: usize) -> TrainError {
        TrainError::Diverged {
            skipped: self.state.skipped_in_a_row,
            epoch: epoch + 1,
            batch: self.state.batch_in_epoch + 1,
            step: self.state.optimizer_step,
            kept: self.kept_checkpoint(),
        }
    }

    fn kept_checkpoint(&self) -> String {
        let last = self.run_dir.join("checkpoints").join("last");
        if last.exists() {
            format!("The last good checkpoint is kept at {}.", last.display())
        } else {
            "No checkpoint was written yet.".to_string()
        }
    }

    /// Validates model and EMA, records the epoch, writes checkpoints.
    fn end_epoch(
        &mut self,
        epoch: usize,
        train_loss: f64,
        meter: &EpochMeter,
        elapsed: Duration,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let model = self.validate(Scored::Model, observer)?;
        let ema = self.validate(Scored::Ema, observer)?;
        let (images, skipped_train) = match &self.parallel {
            Some(parallel) => {
                let sums = parallel.sum(&[meter.images as f64, self.state.epoch_skipped as f64])?;
                (sums[0], sums[1] as usize)
            }
            None => (meter.images as f64, self.state.epoch_skipped),
        };
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss,
            map: model.report.map(),
            map_ema: ema.report.map(),
            cf1: model.report.at_threshold.cf1,
            of1: model.report.at_threshold.of1,
            delta_p: model.stats.delta(),
            gamma_neg: self.objective.gamma_neg(),
            seconds: elapsed.as_secs_f64(),
            images_per_second: images / meter.seconds(),
            data_wait_fraction: meter.wait_fraction(),
            skipped_train,
            skipped_val: model.skipped,
            skipped_steps: self.state.skipped_steps,
        };
        observer.on_event(&TrainEvent::EpochFinished { record: &record, model: &model });
        let best_of_two = record.map.into_iter().chain(record.map_ema).reduce(f64::max);
        let improved = best_of_two.is_some_and(|m| self.state.best_map.is_none_or(|b| m > b));
        if improved {
            self.state.best_map = best_of_two;
            self.state.best_epoch = Some(epoch + 1);
        }
        self.state.history.push(record);
        self.state.epoch += 1;
        self.state.batch_in_epoch = 0;
        self.state.epoch_loss_sum = 0.0;
        self.state.epoch_loss_count = 0;
        self.state.epoch_skipped = 0;
        let last = self.checkpoint("last", observer)?;
        if improved && self.is_main() {
            let best = self.run_dir.join("checkpoints").join("best");
            link_checkpoint(&last, &best)?;
            observer.on_event(&TrainEvent::CheckpointWritten { name: "best", path: &best });
        }
        Ok(())
    }

    fn validate(&mut self, scored: Scored, observer: &mut dyn Observer) -> Result<Evaluation> {
        let images = self.val_loader.dataset().len();
        observer.on_event(&TrainEvent::ValidationStarted { scored, images });
        let (amp, threshold) = (self.amp(), self.config.train.threshold as f32);
        let network = match scored {
            Scored::Model => &mut self.network,
            Scored::Ema => self.ema.network_mut(),
        };
        let mut forward = |event: EvaluateEvent| match event {
            EvaluateEvent::Scored(images) => observer.on_event(&TrainEvent::ValidationProgress { images }),
            // The EMA pass meets the same unreadable images: reported once.
            EvaluateEvent::Skipped(skipped) if scored == Scored::Model => {
                observer.on_event(&TrainEvent::ImageSkipped { phase: Phase::Validation, skipped })
            }
            EvaluateEvent::Skipped(_) => {}
        };
        let group = self.parallel.as_ref().map(DataParallel::group);
        Ok(evaluate(network, &self.val_loader, group, amp, threshold, &mut forward)?)
    }

    /// Writes `checkpoints/<name>` and returns its path.
    fn checkpoint(&mut self, name: &str, observer: &mut dyn Observer) -> Result<PathBuf> {
        self.state.adaptive = self.adaptive;
        self.state.grad_scaler = self.scaler.as_ref().map(GradScaler::state);
        self.state.world_size = self.world_size();
        let dir = self.run_dir.join("checkpoints").join(name);
        if !self.is_main() {
            return Ok(dir);
        }
        let parts = CheckpointParts {
            network: &self.network,
            ema: &self.ema,
            optimizer: &self.optimizer,
            state: &self.state,
            config: &self.config,
        };
        write_checkpoint(&dir, &parts)?;
        observer.on_event(&TrainEvent::CheckpointWritten { name, path: &dir });
        Ok(dir)
    }
}

impl EpochMeter {
    fn seconds(&self) -> f64 {
        (self.wait + self.compute).as_secs_f64().max(1e-9)
    }

    fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds()
    }

    fn wait_fraction(&self) -> f64 {
        self.wait.as_secs_f64() / (self.wait + self.compute).as_secs_f64().max(1e-9)
    }
}
