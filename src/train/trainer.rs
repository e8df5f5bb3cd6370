//! The training loop: one-cycle Adam over the loader's batches with EMA,
//! adaptive γ−, AMP on CUDA, per-epoch validation of the model and its
//! EMA, atomic checkpoints, and a clean stop on Ctrl-C.

use super::amp::GradScaler;
use super::checkpoint::{write_checkpoint, CheckpointParts, EpochRecord, TrainState, EMA_FILE, OPTIMIZER_FILE};
use super::error::{Result, TrainError};
use super::evaluate::{evaluate, Evaluation};
use super::objective::{batch_stats, Objective};
use super::schedule::OneCycle;
use super::setup::check_single_label;
use super::{Adam, StepHyper};
use crate::config::{AmpMode, LossSection, TrainConfig};
use crate::data::{Batch, Loader};
use crate::loss::{AdaptiveAsymmetry, LossError, ProbabilityStats};
use crate::model::{ModelEma, Network};
use crate::monitor::Monitor;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{Device, Kind};

/// Everything a run needs, prepared by the caller.
pub struct TrainerSetup {
    pub config: TrainConfig,
    pub run_dir: PathBuf,
    /// The network to train, on its device, head already sized for the data.
    pub network: Network,
    pub train_loader: Loader,
    pub val_loader: Loader,
    /// A checkpoint directory to continue from.
    pub resume: Option<PathBuf>,
    /// Set (by a Ctrl-C handler) to stop after the current step.
    pub stop: Arc<AtomicBool>,
    pub show_progress: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished { history: Vec<EpochRecord>, best_epoch: Option<usize>, best_map: Option<f64> },
    Interrupted { checkpoint: PathBuf },
}

pub struct Trainer {
    config: TrainConfig,
    run_dir: PathBuf,
    network: Network,
    ema: ModelEma,
    optimizer: Adam,
    schedule: OneCycle,
    objective: Objective,
    adaptive: Option<AdaptiveAsymmetry>,
    scaler: Option<GradScaler>,
    train_loader: Loader,
    val_loader: Loader,
    monitor: Monitor,
    state: TrainState,
    stop: Arc<AtomicBool>,
    show_progress: bool,
}

/// Running figures of the current epoch.
#[derive(Default)]
struct EpochMeter {
    images: usize,
    wait: Duration,
    compute: Duration,
    stats: ProbabilityStats,
}

impl Trainer {
    pub fn new(setup: TrainerSetup) -> Result<Self> {
        let TrainerSetup { config, run_dir, mut network, train_loader, val_loader, resume, stop, show_progress } =
            setup;
        if matches!(config.loss, LossSection::SingleLabel(_)) {
            check_single_label(train_loader.dataset())?;
            check_single_label(val_loader.dataset())?;
        }
        network.freeze(&config.model.freeze)?;
        let mut optimizer = Adam::new(network.trainable_parameters()?, config.optimizer)?;
        let steps_per_epoch = train_loader.batches_per_epoch().div_ceil(config.train.grad_accumulation);
        let steps_per_epoch = config.train.max_steps_per_epoch.map_or(steps_per_epoch, |m| m.min(steps_per_epoch));
        let schedule = OneCycle::new(config.schedule, steps_per_epoch * config.schedule.scheduled_epochs);
        let mut objective = Objective::from_config(&config.loss)?;
        let amp = config.train.amp == AmpMode::Auto && network.device().is_cuda();
        let mut scaler = if amp { Some(GradScaler::new(network.device())?) } else { None };
        let (ema, state) = match &resume {
            Some(dir) => restore(dir, &network, &config, &mut optimizer, scaler.as_mut())?,
            None => (ModelEma::new(&network, config.train.ema_decay)?, TrainState::default()),
        };
        let adaptive = match (&config.loss, &state.adaptive) {
            (_, Some(saved)) => Some(*saved),
            (LossSection::Asymmetric(s), None) => {
                s.adaptive.map(|a| AdaptiveAsymmetry::new(a, s.gamma_neg)).transpose()?
            }
            _ => None,
        };
        if let Some(a) = &adaptive {
            objective.set_gamma_neg(a.gamma_neg())?;
        }
        let monitor = Monitor::new(&run_dir.join("tensorboard"))
            .map_err(|source| crate::model::ModelError::Write { path: run_dir.join("tensorboard"), source })?;
        Ok(Self {
            config,
            run_dir,
            network,
            ema,
            optimizer,
            schedule,
            objective,
            adaptive,
            scaler,
            train_loader,
            val_loader,
            monitor,
            state,
            stop,
            show_progress,
        })
    }
}

impl Trainer {
    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn state(&self) -> &TrainState {
        &self.state
    }

    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    fn amp(&self) -> bool {
        self.scaler.is_some()
    }

    /// Trains from the current state to `train.epochs`.
    pub fn run(&mut self) -> Result<Outcome> {
        while self.state.epoch < self.config.train.epochs {
            let started = Instant::now();
            let epoch = self.state.epoch;
            let Some((train_loss, meter)) = self.train_epoch(epoch)? else {
                let checkpoint = self.checkpoint("last")?;
                return Ok(Outcome::Interrupted { checkpoint });
            };
            let record = self.end_epoch(epoch, train_loss, &meter, started.elapsed())?;
            println!(
                "epoch {:>3}  loss {:.4}  mAP {}  mAP(EMA) {}  CF1 {:.2}  OF1 {:.2}  Δp {}  γ- {:.3}  {:.0}s {:.1} img/s data-wait {:.1}%",
                epoch + 1,
                record.train_loss,
                format_option(record.map),
                format_option(record.map_ema),
                record.cf1,
                record.of1,
                format_option(record.delta_p),
                record.gamma_neg,
                record.seconds,
                record.images_per_second,
                record.data_wait_fraction * 100.0
            );
        }
        self.monitor.flush();
        Ok(Outcome::Finished {
            history: self.state.history.clone(),
            best_epoch: self.state.best_epoch,
            best_map: self.state.best_map,
        })
    }

    /// Runs the remaining batches of `epoch`: its mean loss and speed, or
    /// `None` when stopped early.
    fn train_epoch(&mut self, epoch: usize) -> Result<Option<(f64, EpochMeter)>> {
        self.network.set_train(true)?;
        let accumulation = self.config.train.grad_accumulation;
        let limit = self.config.train.max_steps_per_epoch.map_or(usize::MAX, |m| m * accumulation);
        let batches = self.train_loader.batches_per_epoch().min(limit);
        let progress = self.progress_bar(batches as u64, &format!("epoch {}", epoch + 1));
        progress.set_position(self.state.batch_in_epoch as u64);
        let mut meter = EpochMeter::default();
        let mut iter = self.train_loader.epoch(epoch as u64, self.state.batch_in_epoch);
        let mut waited_since = Instant::now();
        while self.state.batch_in_epoch < batches {
            let Some(batch) = iter.next() else { break };
            let batch = batch?;
            meter.wait += waited_since.elapsed();
            for skipped in &batch.skipped {
                progress.println(format!("warning: skipped {}: {}", skipped.path.display(), skipped.reason));
            }
            let computed = Instant::now();
            let position = self.state.batch_in_epoch;
            let last_of_group = (position + 1) % accumulation == 0 || position + 1 == batches;
            self.train_batch(&batch, epoch, last_of_group, &mut meter)?;
            meter.compute += computed.elapsed();
            self.state.batch_in_epoch += 1;
            progress.inc(1);
            progress.set_message(self.progress_message(&meter));
            waited_since = Instant::now();
            if last_of_group && self.stop.load(Ordering::SeqCst) {
                progress.abandon_with_message("interrupted: writing checkpoint");
                return Ok(None);
            }
        }
        progress.finish_and_clear();
        if iter.skipped() > 0 {
            println!("epoch {}: {} unreadable images skipped", epoch + 1, iter.skipped());
        }
        Ok(Some((self.state.epoch_loss_sum / self.state.epoch_loss_count.max(1) as f64, meter)))
    }

    fn train_batch(&mut self, batch: &Batch, epoch: usize, step_now: bool, meter: &mut EpochMeter) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let device = self.network.device();
        let images = batch.images_tensor(device)?;
        let targets = batch.targets_tensor(device)?;
        // The global RNG (dropout, drop-path) is reseeded per batch so a resumed run draws the same numbers.
        tch::manual_seed(self.config.seed as i64 ^ ((epoch as i64) << 32) ^ self.state.batch_in_epoch as i64);
        let amp = self.amp();
        let forward = crate::model::with_cuda_autocast(amp, || self.network.forward(&images));
        let logits = forward.map_err(|e| self.classify_error(e.into(), epoch))?.f_to_kind(Kind::Float)?;
        let loss = match self.objective.loss(&logits, &targets) {
            Err(TrainError::Loss(LossError::NonFiniteLogit { value, .. })) if !amp => {
                return Err(self.non_finite(value.to_string(), epoch));
            }
            Err(TrainError::Loss(LossError::NonFiniteLogit { .. })) => None,
            other => Some(other?),
        };
        let stats = batch_stats(&logits.f_nan_to_num(0.0, None, None)?, &targets)?;
        meter.stats.merge(&stats);
        meter.images += batch.len();
        if let Some(loss) = &loss {
            let value = loss.f_double_value(&[])?;
            if !value.is_finite() && !amp {
                return Err(self.non_finite(value.to_string(), epoch));
            }
            self.state.epoch_loss_sum += value;
            self.state.epoch_loss_count += 1;
            let scaled = match &self.scaler {
                Some(scaler) => scaler.scale(loss)?,
                None => loss.shallow_clone(),
            };
            scaled.f_div_scalar(self.config.train.grad_accumulation as f64)?.f_backward()?;
        }
        if step_now {
            self.optimizer_step(loss.is_some(), &stats, meter)?;
        }
        Ok(())
    }

    /// Applies the accumulated gradients (unless AMP found an overflow),
    /// then updates the EMA, γ− and the logs.
    fn optimizer_step(&mut self, have_gradients: bool, stats: &ProbabilityStats, meter: &EpochMeter) -> Result<()> {
        let hyper = self.schedule.at(self.state.optimizer_step);
        let mut apply = have_gradients;
        if let Some(scaler) = &mut self.scaler {
            let mut gradients = self.optimizer.gradients();
            apply &= !scaler.unscale(&mut gradients)?;
            scaler.update()?;
        }
        if apply {
            self.optimizer.step(hyper)?;
            self.ema.update(&self.network)?;
        }
        self.optimizer.zero_grad()?;
        if let Some(adaptive) = &mut self.adaptive {
            let gamma = adaptive.update(stats);
            self.objective.set_gamma_neg(gamma)?;
        }
        self.state.optimizer_step += 1;
        if self.state.optimizer_step % self.config.train.log_every == 0 {
            self.log_step(hyper, stats, meter);
        }
        Ok(())
    }

    fn log_step(&mut self, hyper: StepHyper, stats: &ProbabilityStats, meter: &EpochMeter) {
        let step = self.state.optimizer_step as u64;
        let loss = self.state.epoch_loss_sum / self.state.epoch_loss_count.max(1) as f64;
        let m = &mut self.monitor;
        m.scalar("train/loss", loss, step);
        m.scalar("train/lr", hyper.lr, step);
        m.scalar("train/beta1", hyper.beta1, step);
        for (tag, value) in
            [("asl/p_t_pos", stats.p_pos()), ("asl/p_t_neg", stats.p_neg()), ("asl/delta_p", stats.delta())]
        {
            if let Some(v) = value {
                m.scalar(tag, v, step);
            }
        }
        if let LossSection::Asymmetric(s) = &self.config.loss {
            m.scalar("asl/gamma_neg", self.objective.gamma_neg(), step);
            m.scalar("asl/gamma_pos", s.gamma_pos, step);
            m.scalar("asl/clip", s.clip, step);
        }
        if let Some(scaler) = &self.scaler {
            m.scalar("train/grad_scale", scaler.scale_value(), step);
        }
        m.scalar("speed/images_per_second", meter.images_per_second(), step);
        m.scalar("speed/data_wait_fraction", meter.wait_fraction(), step);
    }
}

impl EpochMeter {
    fn images_per_second(&self) -> f64 {
        self.images as f64 / (self.wait + self.compute).as_secs_f64().max(1e-9)
    }

    fn wait_fraction(&self) -> f64 {
        self.wait.as_secs_f64() / (self.wait + self.compute).as_secs_f64().max(1e-9)
    }
}

impl Trainer {
    fn progress_bar(&self, length: u64, prefix: &str) -> ProgressBar {
        if !self.show_progress {
            return ProgressBar::hidden();
        }
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("a valid progress template")
            .progress_chars("=> ");
        ProgressBar::new(length).with_style(style).with_prefix(prefix.to_string())
    }

    fn progress_message(&self, meter: &EpochMeter) -> String {
        let loss = self.state.epoch_loss_sum / self.state.epoch_loss_count.max(1) as f64;
        let delta = format_option(meter.stats.delta());
        let gamma = self.objective.gamma_neg();
        format!("loss {loss:.4} Δp {delta} γ- {gamma:.3} {:.0} img/s", meter.images_per_second())
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
        let last = self.run_dir.join("checkpoints").join("last");
        let kept = if last.exists() {
            format!("The last good checkpoint is kept at {}.", last.display())
        } else {
            "No checkpoint was written yet.".to_string()
        };
        TrainError::NonFiniteLoss {
            value,
            epoch: epoch + 1,
            batch: self.state.batch_in_epoch,
            step: self.state.optimizer_step,
            kept,
        }
    }

    /// Validates model and EMA, records the epoch, writes checkpoints.
    fn end_epoch(
        &mut self,
        epoch: usize,
        train_loss: f64,
        meter: &EpochMeter,
        elapsed: Duration,
    ) -> Result<EpochRecord> {
        let (model, ema) = self.validate_both()?;
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
            images_per_second: meter.images_per_second(),
            data_wait_fraction: meter.wait_fraction(),
        };
        self.log_epoch(&record, &model);
        let best_of_two = record.map.into_iter().chain(record.map_ema).reduce(f64::max);
        let improved = best_of_two.is_some_and(|m| self.state.best_map.is_none_or(|b| m > b));
        if improved {
            self.state.best_map = best_of_two;
            self.state.best_epoch = Some(epoch + 1);
        }
        self.state.history.push(record.clone());
        self.state.epoch += 1;
        self.state.batch_in_epoch = 0;
        self.state.epoch_loss_sum = 0.0;
        self.state.epoch_loss_count = 0;
        self.checkpoint("last")?;
        if improved {
            self.checkpoint("best")?;
        }
        Ok(record)
    }

    fn validate_both(&mut self) -> Result<(Evaluation, Evaluation)> {
        let images = self.val_loader.dataset().len() as u64;
        let (amp, threshold) = (self.amp(), self.config.train.threshold);
        let progress = self.progress_bar(images, "validate");
        let model = evaluate(&mut self.network, &self.val_loader, amp, threshold, &progress)?;
        progress.set_position(0);
        progress.set_prefix("validate EMA");
        let ema = evaluate(self.ema.network_mut(), &self.val_loader, amp, threshold, &progress)?;
        progress.finish_and_clear();
        Ok((model, ema))
    }

    fn log_epoch(&mut self, record: &EpochRecord, model: &Evaluation) {
        let epoch = record.epoch as u64;
        let m = &mut self.monitor;
        if let Some(map) = record.map {
            m.scalar("val/mAP", map, epoch);
        }
        if let Some(map) = record.map_ema {
            m.scalar("val/mAP_ema", map, epoch);
        }
        let t = &model.report.at_threshold;
        for (tag, value) in [("CP", t.cp), ("CR", t.cr), ("CF1", t.cf1), ("OP", t.op), ("OR", t.or), ("OF1", t.of1)] {
            m.scalar(&format!("val/{tag}"), value, epoch);
        }
        if let Some(delta) = model.stats.delta() {
            m.scalar("val/delta_p", delta, epoch);
        }
        let classes = self.val_loader.dataset().num_classes();
        let (mut positives, mut negatives) = (Vec::new(), Vec::new());
        for (row, &index) in model.indices.iter().enumerate() {
            let mut targets = vec![0.0; classes];
            self.val_loader.dataset().write_targets(index, &mut targets);
            for (c, &t) in targets.iter().enumerate() {
                let p = model.probabilities[row * classes + c];
                match t {
                    1.0 => positives.push(p),
                    0.0 => negatives.push(p),
                    _ => {}
                }
            }
        }
        m.probability_histogram("val/p_positive", &positives, epoch);
        m.probability_histogram("val/p_negative", &negatives, epoch);
        m.flush();
    }

    /// Writes `checkpoints/<name>` and returns its path.
    fn checkpoint(&mut self, name: &str) -> Result<PathBuf> {
        self.state.adaptive = self.adaptive;
        self.state.grad_scaler = self.scaler.as_ref().map(GradScaler::state);
        let dir = self.run_dir.join("checkpoints").join(name);
        let parts = CheckpointParts {
            network: &self.network,
            ema: &self.ema,
            optimizer: &self.optimizer,
            state: &self.state,
            config: &self.config,
        };
        write_checkpoint(&dir, &parts)?;
        Ok(dir)
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn device(&self) -> Device {
        self.network.device()
    }
}

/// The EMA, state, optimizer moments and scaler of a checkpoint directory.
fn restore(
    dir: &Path,
    network: &Network,
    config: &TrainConfig,
    optimizer: &mut Adam,
    scaler: Option<&mut GradScaler>,
) -> Result<(ModelEma, TrainState)> {
    let state = super::checkpoint::read_checkpoint(dir)?.0;
    optimizer.load(&dir.join(OPTIMIZER_FILE), network.device())?;
    let ema = ModelEma::from_network(Network::load(&dir.join(EMA_FILE), network.device())?, config.train.ema_decay)?;
    if let (Some(scaler), Some((scale, tracker))) = (scaler, state.grad_scaler) {
        scaler.restore(scale, tracker)?;
    }
    Ok((ema, state))
}

fn format_option(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{v:.2}"))
}
