//! One batch (forward, loss, backward) and one optimizer step. Nothing
//! here waits for the device, except the reads of the figures every
//! `train.log_every` steps and, with adaptive γ−, of Δp every step.

use super::error::{Result, TrainError};
use super::figures::HostFigures;
use super::observer::{Observer, StepLog, TrainEvent};
use super::optimizer::{ScaledStep, StepHyper};
use super::trainer::{EpochMeter, Trainer};
use super::GradScaler;
use crate::data::Batch;
use crate::loss::{batch_sums, LossConfig};
use std::sync::atomic::Ordering;
use tch::Kind;

impl Trainer {
    /// Forward, loss and backward of one batch (nothing when every image of
    /// it was unreadable). The loss goes back even when it is not finite:
    /// under AMP the grad scaler then skips the step, whichever micro-batch
    /// of the group it came from; in fp32 the next read of the figures
    /// stops the run. `sync`: the batch ends its accumulation group, so its
    /// backward sums the gradients across ranks.
    pub(super) fn train_batch(
        &mut self,
        batch: &Batch,
        epoch: usize,
        sync: bool,
        meter: &mut EpochMeter,
    ) -> Result<()> {
        if batch.is_empty() {
            if self.parallel.is_some() {
                return Err(TrainError::EmptyBatch { epoch: epoch + 1, batch: self.state.batch_in_epoch + 1 });
            }
            return Ok(());
        }
        let device = self.network.device();
        let images = batch.images_tensor(device, &self.normalization)?;
        let targets = batch.targets_tensor(device)?;
        if let Some(parallel) = &self.parallel {
            parallel.before_forward(sync)?;
        }
        // Dropout and drop-path draw from the default generator: seeded per batch and rank for this pass
        // (a resumed run draws the same numbers, each rank its own), the caller's stream restored after.
        let rank = self.parallel.as_ref().map_or(0, |p| p.group().rank());
        let seed = crate::ops::batch_seed(self.config.seed, rank, epoch, self.state.batch_in_epoch);
        let scope = crate::ops::ScopedSeed::enter(seed, device)?;
        let forward = crate::ops::with_cuda_autocast(self.amp(), || self.network.forward(&images));
        drop(scope);
        let logits = forward.map_err(|e| self.classify_error(e.into(), epoch))?.f_to_kind(Kind::Float)?;
        if let Some(parallel) = &self.parallel {
            parallel.after_forward(sync)?;
        }
        let loss = self.objective.training_loss(&logits, &targets)?;
        let sums = batch_sums(&logits.f_nan_to_num(0.0, None, None)?, &targets)?;
        self.figures.add_batch(&loss, &sums)?;
        self.state.epoch_loss_count += 1;
        meter.images += batch.len();
        meter.group_has_gradients = true;
        let scaled = match &self.scaler {
            Some(scaler) => scaler.scale(&loss)?,
            None => loss,
        };
        let scaled = scaled.f_div_scalar(self.config.train.grad_accumulation as f64 / self.loss_scale)?;
        match (scaled.f_backward(), &mut self.parallel) {
            (Ok(()), Some(parallel)) => parallel.after_backward(),
            (Ok(()), None) => Ok(()),
            (Err(error), Some(parallel)) => Err(parallel.backward_error(error)),
            (Err(error), None) => Err(error.into()),
        }
    }

    /// Applies the accumulated gradients (the fused kernel leaves everything
    /// as it was when the grad scaler found an overflow), then the EMA, γ−
    /// and, every `train.log_every` steps, the figures. Returns whether to
    /// stop (a signal, agreed among ranks at every step).
    pub(super) fn optimizer_step(
        &mut self,
        epoch: usize,
        meter: &EpochMeter,
        observer: &mut dyn Observer,
    ) -> Result<bool> {
        let hyper = self.schedule.at(self.state.optimizer_step);
        match &mut self.scaler {
            Some(scaler) => {
                let gradients = self.optimizer.gradients();
                let grad_scale = if self.config.optimizer.grad_clip_norm.is_some() {
                    // Clipping needs the true gradients: unscale first.
                    scaler.unscale(&gradients)?;
                    None
                } else {
                    scaler.check(&gradients)?;
                    Some(scaler.scale_tensor())
                };
                let found_inf = scaler.found_inf();
                self.optimizer.step(hyper, Some(ScaledStep { grad_scale, found_inf }))?;
                self.ema.update(&self.network, Some(found_inf))?;
                self.figures.count_skip(found_inf)?;
                scaler.update()?;
            }
            None => {
                self.optimizer.step(hyper, None)?;
                self.ema.update(&self.network, None)?;
            }
        }
        self.optimizer.zero_grad()?;
        if let Some(adaptive) = &mut self.adaptive {
            let stats = self.figures.read_last_stats(self.parallel.as_ref())?;
            self.objective.set_gamma_neg(adaptive.update(&stats))?;
        }
        self.state.optimizer_step += 1;
        let requested = self.stop.load(Ordering::SeqCst);
        let step = self.state.optimizer_step as u64;
        let stop = match &mut self.parallel {
            Some(parallel) => parallel.stop_after(step, requested)?,
            None => requested,
        };
        if self.state.optimizer_step.is_multiple_of(self.config.train.log_every) {
            let figures = self.read_figures()?;
            observer.on_event(&TrainEvent::Step(&self.step_log(hyper, &figures, meter)));
            self.check(&figures, epoch)?;
        }
        Ok(stop)
    }

    /// The figures, read and checked: a non-finite fp32 loss or too many
    /// skipped steps in a row stop the run here.
    pub(super) fn checked_figures(&mut self, epoch: usize) -> Result<HostFigures> {
        let figures = self.read_figures()?;
        self.check(&figures, epoch)?;
        Ok(figures)
    }

    fn read_figures(&mut self) -> Result<HostFigures> {
        let figures = self.figures.read_all(self.parallel.as_ref())?;
        self.state.skipped_steps = figures.skipped_steps;
        self.state.skipped_in_a_row = figures.skipped_in_a_row;
        Ok(figures)
    }

    fn check(&self, figures: &HostFigures, epoch: usize) -> Result<()> {
        if figures.non_finite > 0.0 && !self.amp() {
            return Err(self.non_finite(epoch));
        }
        if figures.longest_skipped_in_a_row >= self.config.train.max_skipped_steps {
            return Err(self.diverged(epoch, figures.longest_skipped_in_a_row));
        }
        Ok(())
    }

    /// The epoch's mean loss so far: per global batch, over the finite ones.
    pub(super) fn mean_loss(&self, figures: &HostFigures) -> f64 {
        let world = self.world_size() as f64;
        let batches = self.state.epoch_loss_count as f64 - figures.non_finite / world;
        let per_global_batch = if self.objective.sums_over_batch() { 1.0 } else { world };
        figures.loss_sum / per_global_batch / batches.max(1.0)
    }

    fn step_log(&self, hyper: StepHyper, figures: &HostFigures, meter: &EpochMeter) -> StepLog {
        let asymmetric = match &self.config.loss {
            LossConfig::Asymmetric(s) => Some(s),
            LossConfig::SingleLabel(_) => None,
        };
        let stats = &figures.last_stats;
        StepLog {
            step: self.state.optimizer_step,
            loss: self.mean_loss(figures),
            lr: hyper.lr,
            beta1: hyper.beta1,
            p_t_pos: stats.p_pos(),
            p_t_neg: stats.p_neg(),
            delta_p: stats.delta(),
            gamma_neg: self.objective.gamma_neg(),
            gamma_pos: asymmetric.map(|s| s.gamma_pos),
            clip: asymmetric.map(|s| s.clip),
            grad_scale: self.scaler.as_ref().map(GradScaler::scale_value),
            skipped_steps: figures.skipped_steps,
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

    fn non_finite(&self, epoch: usize) -> TrainError {
        TrainError::NonFiniteLoss {
            value: "NaN or infinite".into(),
            epoch: epoch + 1,
            batch: self.state.batch_in_epoch + 1,
            step: self.state.optimizer_step,
            kept: self.kept_checkpoint(),
        }
    }

    fn diverged(&self, epoch: usize, skipped: usize) -> TrainError {
        TrainError::Diverged {
            skipped,
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
}
