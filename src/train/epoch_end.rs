//! The end of an epoch: validation of the model and its EMA, the epoch's
//! record, and checkpoints (rank 0 writes them).

use super::checkpoint::{link_checkpoint, write_checkpoint, CheckpointParts, EpochRecord};
use super::data_parallel::DataParallel;
use super::error::{Result, TrainError};
use super::observer::{Observer, Phase, Scored, TrainEvent};
use super::trainer::{EpochMeter, Trainer};
use super::GradScaler;
use crate::data::stream::StreamPosition;
use crate::evaluate::{evaluate, EvaluateEvent, EvaluateOptions, Evaluation};
use std::path::PathBuf;
use std::time::Duration;

impl Trainer {
    /// Validates model and EMA, records the epoch, writes checkpoints.
    pub(super) fn end_epoch(
        &mut self,
        epoch: usize,
        meter: &EpochMeter,
        elapsed: Duration,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let waiting_on_peers = self.in_flight();
        let figures = self.checked_figures(epoch)?;
        let train_loss = self.mean_loss(&figures);
        let model = self.validate(Scored::Model, observer)?;
        let ema = self.validate(Scored::Ema, observer)?;
        let (images, skipped_train) = match &self.parallel {
            Some(parallel) => {
                let sums = parallel.sum(&[meter.images as f64, self.state.epoch_skipped as f64])?;
                (sums[0], sums[1] as usize)
            }
            None => (meter.images as f64, self.state.epoch_skipped),
        };
        drop(waiting_on_peers);
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
            skipped_steps: figures.skipped_steps,
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
        self.state.epoch_loss_count = 0;
        self.state.epoch_skipped = 0;
        self.figures.seed_loss(0.0)?;
        let last = self.checkpoint("last", epoch, observer)?;
        if improved && self.is_main() {
            let best = self.run_dir.join("checkpoints").join("best");
            link_checkpoint(&last, &best)?;
            observer.on_event(&TrainEvent::CheckpointWritten { name: "best", path: &best });
        }
        Ok(())
    }

    fn validate(&mut self, scored: Scored, observer: &mut dyn Observer) -> Result<Evaluation> {
        let images = self.val_loader.data().len();
        observer.on_event(&TrainEvent::ValidationStarted { scored, images });
        let options = EvaluateOptions {
            amp: self.amp(),
            threshold: self.config.train.threshold as f32,
            unknowns: self.config.data.unknown_in_validation,
        };
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
        Ok(evaluate(network, &self.val_loader, group, options, &mut forward)?)
    }

    /// Writes `checkpoints/<name>` (on rank 0) and returns its path. The
    /// figures are read first: a diverged or non-finite run is never saved.
    pub(super) fn checkpoint(&mut self, name: &str, epoch: usize, observer: &mut dyn Observer) -> Result<PathBuf> {
        let waiting_on_peers = self.in_flight();
        let figures = self.checked_figures(epoch)?;
        drop(waiting_on_peers);
        self.state.epoch_loss_sum = figures.loss_sum;
        self.state.adaptive = self.adaptive;
        self.state.grad_scaler = self.scaler.as_ref().map(GradScaler::state);
        self.state.world_size = self.world_size();
        self.state.stream = self.stream_positions()?;
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

    /// Every rank's stream position, on rank 0, when training from shards
    /// stopped mid-epoch; nothing otherwise (an epoch starts afresh).
    fn stream_positions(&self) -> Result<Vec<StreamPosition>> {
        let own = match (&self.stream_position, self.state.batch_in_epoch) {
            (Some(position), 1..) => position,
            _ => return Ok(Vec::new()),
        };
        let Some(parallel) = &self.parallel else {
            return Ok(vec![own.clone()]);
        };
        let bytes = serde_json::to_vec(own).map_err(|e| TrainError::StreamPosition(e.to_string()))?;
        let shares = parallel.group().gather_bytes(&bytes, self.network.device())?.unwrap_or_default();
        shares
            .iter()
            .map(|share| serde_json::from_slice(share).map_err(|e| TrainError::StreamPosition(e.to_string())))
            .collect()
    }
}
