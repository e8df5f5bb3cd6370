//! The step stage: one batch (forward, loss, backward) and one optimizer
//! step (Adam, EMA, adaptive γ−, grad scaling), with the figures they leave
//! on the device. Nothing here waits for the device, except the reads of the
//! figures every `train.log_every` steps and, with adaptive γ−, of Δp every
//! step.

use super::amp::GradScaler;
use super::config::TrainConfig;
use super::data_parallel::DataParallel;
use super::error::{Result, TrainError};
use super::figures::{DeviceFigures, HostFigures};
use super::observer::StepLog;
use super::optimizer::{ScaledStep, StepHyper};
use super::schedule::OneCycle;
use super::Adam;
use crate::data::{Batch, Normalization};
use crate::loss::{batch_sums, AdaptiveAsymmetry, LossConfig, Objective};
use crate::model::{ModelEma, Network};
use tch::Kind;

/// Where a batch stands in the run, for seeding and for naming it in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchAt {
    /// 0-based.
    pub epoch: usize,
    pub batch: usize,
    pub rank: usize,
}

/// Everything a step changes: the network, its EMA, the optimizer and its
/// schedule, the loss and its γ− controller, the grad scaler, and the
/// step's figures on the device.
pub(super) struct Stepper {
    pub network: Network,
    /// The network's input normalisation, on its device.
    pub normalization: Normalization,
    pub ema: ModelEma,
    pub optimizer: Adam,
    pub schedule: OneCycle,
    pub objective: Objective,
    pub adaptive: Option<AdaptiveAsymmetry>,
    pub scaler: Option<GradScaler>,
    pub figures: DeviceFigures,
    /// Multiplies the loss before backward: the world size when the loss is
    /// a sum, since the Reducer averages gradients over the ranks and a
    /// summed loss over N × B/N images must give the gradient of B images.
    pub loss_scale: f64,
}

impl Stepper {
    pub fn amp(&self) -> bool {
        self.scaler.is_some()
    }

    /// Forward, loss and backward of one batch; false when every image of
    /// it was unreadable (nothing to learn from). The loss goes back even
    /// when it is not finite: under AMP the grad scaler then skips the
    /// step, whichever micro-batch of the group it came from; in fp32 the
    /// next read of the figures stops the run. `sync`: the batch ends its
    /// accumulation group, so its backward sums the gradients across ranks.
    pub fn train_batch(
        &mut self,
        config: &TrainConfig,
        batch: &Batch,
        at: BatchAt,
        sync: bool,
        parallel: Option<&mut DataParallel>,
    ) -> Result<bool> {
        if batch.is_empty() {
            if parallel.is_some() {
                return Err(TrainError::EmptyBatch { epoch: at.epoch + 1, batch: at.batch + 1 });
            }
            return Ok(false);
        }
        let device = self.network.device();
        let images = batch.images_tensor(device, &self.normalization)?;
        let targets = batch.targets_tensor(device)?;
        if let Some(parallel) = &parallel {
            parallel.before_forward(sync)?;
        }
        // Dropout and drop-path draw from the default generator: seeded per batch and rank for this pass
        // (a resumed run draws the same numbers, each rank its own), the caller's stream restored after.
        let seed = crate::ops::batch_seed(config.seed, at.rank, at.epoch, at.batch);
        let scope = crate::ops::ScopedSeed::enter(seed, device)?;
        let forward = crate::ops::with_cuda_autocast(self.amp(), || self.network.forward(&images));
        scope.restore()?;
        let logits = forward.map_err(|e| classify_error(e.into(), config, at))?.f_to_kind(Kind::Float)?;
        if let Some(parallel) = &parallel {
            parallel.after_forward(sync)?;
        }
        let loss = self.objective.training_loss(&logits, &targets)?;
        let sums = batch_sums(&logits.f_nan_to_num(0.0, None, None)?, &targets)?;
        self.figures.add_batch(&loss, &sums)?;
        let scaled = match &self.scaler {
            Some(scaler) => scaler.scale(&loss)?,
            None => loss,
        };
        let scaled = scaled.f_div_scalar(config.train.grad_accumulation as f64 / self.loss_scale)?;
        match (scaled.f_backward(), parallel) {
            (Ok(()), Some(parallel)) => parallel.after_backward()?,
            (Ok(()), None) => {}
            (Err(error), Some(parallel)) => return Err(parallel.backward_error(error)),
            (Err(error), None) => return Err(error.into()),
        }
        Ok(true)
    }

    /// Applies the accumulated gradients as optimizer step `step` (0-based)
    /// of the schedule (the fused kernel leaves everything as it was when
    /// the grad scaler found an overflow), then the EMA and γ−. Returns the
    /// step's hyper-parameters.
    pub fn optimizer_step(
        &mut self,
        config: &TrainConfig,
        step: usize,
        parallel: Option<&DataParallel>,
    ) -> Result<StepHyper> {
        let hyper = self.schedule.at(step);
        match &mut self.scaler {
            Some(scaler) => {
                let gradients = self.optimizer.gradients();
                let grad_scale = if config.optimizer.grad_clip_norm.is_some() {
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
            let stats = self.figures.read_last_stats(parallel)?;
            self.objective.set_gamma_neg(adaptive.update(&stats))?;
        }
        Ok(hyper)
    }

    /// Why `figures` stop the run, if they do: a non-finite fp32 loss, or
    /// too many steps in a row skipped by the grad scaler.
    pub fn failure(&self, config: &TrainConfig, figures: &HostFigures) -> Option<Failure> {
        if figures.non_finite > 0.0 && !self.amp() {
            return Some(Failure::NonFinite);
        }
        (figures.longest_skipped_in_a_row >= config.train.max_skipped_steps)
            .then_some(Failure::Diverged(figures.longest_skipped_in_a_row))
    }

    /// The step's figures for the observers.
    pub fn step_log(&self, config: &TrainConfig, at: StepAt, figures: &HostFigures) -> StepLog {
        let asymmetric = match &config.loss {
            LossConfig::Asymmetric(s) => Some(s),
            LossConfig::SingleLabel(_) => None,
        };
        let stats = &figures.last_stats;
        StepLog {
            step: at.step,
            loss: at.mean_loss,
            lr: at.hyper.lr,
            beta1: at.hyper.beta1,
            p_t_pos: stats.p_pos(),
            p_t_neg: stats.p_neg(),
            delta_p: stats.delta(),
            gamma_neg: self.objective.gamma_neg(),
            gamma_pos: asymmetric.map(|s| s.gamma_pos),
            clip: asymmetric.map(|s| s.clip),
            grad_scale: self.scaler.as_ref().map(GradScaler::scale_value),
            skipped_steps: figures.skipped_steps,
            images_per_second: at.images_per_second,
            data_wait_fraction: at.data_wait_fraction,
        }
    }
}

/// Why the figures stop a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    NonFinite,
    /// This many steps in a row skipped by the grad scaler.
    Diverged(usize),
}

/// What a step log reports besides the device's figures.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepAt {
    pub step: usize,
    pub hyper: StepHyper,
    pub mean_loss: f64,
    pub images_per_second: f64,
    pub data_wait_fraction: f64,
}

/// Names the run position in a failure; CUDA out-of-memory gets advice.
fn classify_error(error: TrainError, config: &TrainConfig, at: BatchAt) -> TrainError {
    let message = error.to_string();
    if message.contains("out of memory") {
        return TrainError::OutOfMemory {
            epoch: at.epoch + 1,
            batch: at.batch,
            batch_size: config.data.batch_size,
            message: message.lines().next().unwrap_or_default().to_string(),
        };
    }
    error
}
