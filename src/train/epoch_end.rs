//! The end of an epoch: validation of the model and its EMA, the epoch's
//! record, and checkpoints (rank 0 writes them).

use super::checkpoint::{EpochRecord, SingleLabelRecord};
use super::error::Result;
use super::observer::{Observer, Scored, TrainEvent};
use super::trainer::{EpochMeter, Trainer};
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
        let figures = self.read_figures(epoch)?;
        let train_loss = self.mean_loss(&figures);
        let group = self.parallel.as_ref().map(|p| p.group());
        let model = self.validator.run(&mut self.stepper.network, Scored::Model, group, observer)?;
        let ema = self.validator.run(self.stepper.ema.network_mut(), Scored::Ema, group, observer)?;
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
            gamma_neg: self.stepper.objective.gamma_neg(),
            seconds: elapsed.as_secs_f64(),
            images_per_second: images / meter.seconds(),
            data_wait_fraction: meter.wait_fraction(),
            skipped_train,
            skipped_val: model.skipped,
            skipped_steps: figures.skipped_steps,
            single_label: model.report.single_label.as_ref().map(|single| SingleLabelRecord {
                top1: single.top1,
                top5: single.top5,
                macro_f1: single.macro_f1,
                top1_ema: ema.report.single_label.as_ref().map(|e| e.top1),
            }),
        };
        observer.on_event(&TrainEvent::EpochFinished { record: &record, model: &model });
        let best_of_two = record.headline();
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
        self.stepper.figures.seed_loss(0.0)?;
        let last = self.checkpoint("last", epoch, observer)?;
        if improved && self.is_main() {
            let group = self.parallel.as_ref().map(|p| p.group());
            let best = self.checkpointer.link_best(&last, self.state.optimizer_step as u64, group)?;
            observer.on_event(&TrainEvent::CheckpointWritten { name: "best", path: &best });
        }
        Ok(())
    }
}
