//! The console as a run observer: progress bars for training and
//! validation, warnings above them, and one summary line per epoch.

use asl::train::{Observer, Phase, Scored, TrainEvent};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Console {
    show_progress: bool,
    bar: ProgressBar,
}

impl Console {
    /// `show_progress: false` keeps the lines and hides the bars.
    pub fn new(show_progress: bool) -> Self {
        Self { show_progress, bar: ProgressBar::hidden() }
    }

    fn start_bar(&mut self, length: usize, prefix: String) {
        self.bar.finish_and_clear();
        self.bar = if self.show_progress { progress_bar(length as u64, prefix) } else { ProgressBar::hidden() };
    }

    /// A line above the bar (or plain, when there is none).
    fn line(&self, text: &str) {
        if self.bar.is_hidden() {
            println!("{text}");
        } else {
            self.bar.println(text);
        }
    }
}

/// A bar with a prefix, a message and an ETA.
pub fn progress_bar(length: u64, prefix: String) -> ProgressBar {
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
        .expect("a valid progress template")
        .progress_chars("=> ");
    ProgressBar::new(length).with_style(style).with_prefix(prefix)
}

pub fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{v:.2}"))
}

impl Observer for Console {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        match event {
            TrainEvent::Notice(text) => self.line(text),
            TrainEvent::Warning(text) => self.line(&format!("warning: {text}")),
            TrainEvent::EpochStarted { epoch, batches, start } => {
                self.start_bar(*batches, format!("epoch {epoch}"));
                self.bar.set_position(*start as u64);
            }
            TrainEvent::BatchTrained => self.bar.inc(1),
            TrainEvent::Step(log) => self.bar.set_message(format!(
                "loss {:.4} Δp {} γ- {:.3} {:.0} img/s",
                log.loss,
                cell(log.delta_p),
                log.gamma_neg,
                log.images_per_second
            )),
            TrainEvent::ImageSkipped { phase, skipped } => {
                let during = if *phase == Phase::Validation { " during validation" } else { "" };
                self.line(&format!("warning: skipped {}{during}: {}", skipped.path.display(), skipped.reason));
            }
            TrainEvent::ValidationStarted { scored, images } => {
                let prefix = if *scored == Scored::Ema { "validate EMA" } else { "validate" };
                self.start_bar(*images, prefix.into());
            }
            TrainEvent::ValidationProgress { images } => self.bar.inc(*images as u64),
            TrainEvent::EpochFinished { record, .. } => {
                self.bar.finish_and_clear();
                let scores = match &record.single_label {
                    Some(s) => format!(
                        "top-1 {:.2}  top-1(EMA) {}  top-5 {:.2}  macro-F1 {:.2}",
                        s.top1,
                        cell(s.top1_ema),
                        s.top5,
                        s.macro_f1
                    ),
                    None => format!(
                        "mAP {}  mAP(EMA) {}  CF1 {:.2}  OF1 {:.2}",
                        cell(record.map),
                        cell(record.map_ema),
                        record.cf1,
                        record.of1
                    ),
                };
                println!(
                    "epoch {:>3}  loss {:.4}  {scores}  Δp {}  γ- {:.3}  {:.0}s {:.1} img/s data-wait {:.1}%",
                    record.epoch,
                    record.train_loss,
                    cell(record.delta_p),
                    record.gamma_neg,
                    record.seconds,
                    record.images_per_second,
                    record.data_wait_fraction * 100.0
                );
            }
            TrainEvent::CheckpointWritten { .. } => {}
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
