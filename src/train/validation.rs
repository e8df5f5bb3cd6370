//! The evaluation stage: the model and its EMA scored on the validation
//! split after every epoch, each rank its share, gathered on rank 0.

use super::error::Result;
use super::observer::{Observer, Phase, Scored, TrainEvent};
use crate::data::Loader;
use crate::distributed::ProcessGroup;
use crate::evaluate::{evaluate, EvaluateEvent, EvaluateOptions, Evaluation};
use crate::model::Network;

pub(super) struct Validator {
    loader: Loader,
    options: EvaluateOptions,
}

impl Validator {
    pub fn new(loader: Loader, options: EvaluateOptions) -> Self {
        Self { loader, options }
    }

    /// Scores `network` (the model or its EMA, as `scored` says),
    /// reporting progress and, for the model, unreadable images (the EMA
    /// pass meets the same ones).
    pub fn run(
        &self,
        network: &mut Network,
        scored: Scored,
        group: Option<&ProcessGroup>,
        observer: &mut dyn Observer,
    ) -> Result<Evaluation> {
        observer.on_event(&TrainEvent::ValidationStarted { scored, images: self.loader.data().len() });
        let mut forward = |event: EvaluateEvent| match event {
            EvaluateEvent::Scored(images) => observer.on_event(&TrainEvent::ValidationProgress { images }),
            EvaluateEvent::Skipped(skipped) if scored == Scored::Model => {
                observer.on_event(&TrainEvent::ImageSkipped { phase: Phase::Validation, skipped })
            }
            EvaluateEvent::Skipped(_) => {}
        };
        Ok(evaluate(network, &self.loader, group, self.options, &mut forward)?)
    }
}
