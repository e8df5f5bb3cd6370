//! Adam (L2 weight decay added to the gradient, as the ASL reference
//! trains) and AdamW (decoupled decay), over tensors we own so that the
//! moments can be checkpointed: tch's optimizers cannot save their state.
//!
//! Each step is libtorch's fused kernel (`torch.optim.Adam(fused=True)`):
//! one launch per weight-decay group and learning rate (head and backbone)
//! for the whole network, where a per-tensor update costs a dozen small
//! operations per parameter. Under
//! AMP the kernel unscales the gradients itself and leaves everything as it
//! was when the grad scaler found an overflow, without the host looking.

use crate::config::{in_unit, key_error, Validate};
use crate::model::{NamedParameter, ParamGroup};
use crate::ops::{fused_adam, AdamStep, AdamTensors};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// L2 decay coupled into the gradient (`torch.optim.Adam(weight_decay=…)`).
    Adam,
    /// Decoupled decay (`torch.optim.AdamW`).
    AdamW,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// adam (L2 decay coupled into the gradient, as the reference) or adamw (decoupled).
    pub kind: OptimizerKind,
    /// On weights only; biases and 1-D parameters get none, as in the reference.
    pub weight_decay: f64,
    /// β2; β1 comes from the schedule each step (OneCycle cycles it).
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Clip the global gradient L2 norm to this value; null disables.
    pub grad_clip_norm: Option<f64>,
    /// The head's learning rate as a multiple of the backbone's (the card's `classifier` is the head):
    /// above 1 lets a fresh head catch up with a pretrained backbone.
    pub head_lr_scale: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adam,
            weight_decay: 1e-4,
            beta2: 0.999,
            eps: 1e-8,
            grad_clip_norm: None,
            head_lr_scale: 1.0,
        }
    }
}

impl Validate for OptimizerConfig {
    fn validate(&self) -> crate::config::Result<()> {
        in_unit("optimizer.beta2", self.beta2)?;
        if !(self.head_lr_scale.is_finite() && self.head_lr_scale >= 0.0) {
            return Err(key_error("optimizer.head_lr_scale", format!("must be >= 0, got {}", self.head_lr_scale)));
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return Err(key_error("optimizer.weight_decay", format!("must be >= 0, got {}", self.weight_decay)));
        }
        Ok(())
    }
}

/// Learning rate and β1 of one step, from the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepHyper {
    pub lr: f64,
    pub beta1: f64,
}

struct Slot {
    param: NamedParameter,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// This parameter's step count, a 0-dim float tensor on its device, as the fused kernel wants it.
    step: Tensor,
}

pub struct Adam {
    config: OptimizerConfig,
    slots: Vec<Slot>,
}

#[derive(Debug, thiserror::Error)]
pub enum OptimizerError {
    #[error("optimizer state {path} does not match the model: {message}")]
    StateMismatch { path: String, message: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// What the grad scaler hands the step under AMP.
pub struct ScaledStep<'a> {
    /// The scale the gradients still carry, divided out inside the kernel;
    /// `None` when they were unscaled already (for clipping).
    pub grad_scale: Option<&'a Tensor>,
    /// Non-zero when the gradients hold an inf or NaN: the step changes nothing.
    pub found_inf: &'a Tensor,
}

impl Adam {
    pub fn new(params: Vec<NamedParameter>, config: OptimizerConfig) -> Result<Self, OptimizerError> {
        let slots = params
            .into_iter()
            .map(|param| {
                let zeros = tch::no_grad(|| param.tensor.f_zeros_like())?;
                let step = Tensor::f_zeros([], (Kind::Float, param.tensor.device()))?;
                Ok(Slot { exp_avg: zeros.f_zeros_like()?, exp_avg_sq: zeros, step, param })
            })
            .collect::<Result<_, OptimizerError>>()?;
        Ok(Self { config, slots })
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Sets every gradient to zero (in place, so autograd keeps accumulating into it).
    pub fn zero_grad(&mut self) -> Result<(), OptimizerError> {
        for slot in &self.slots {
            let mut grad = slot.param.tensor.grad();
            if grad.defined() {
                let _ = grad.f_zero_()?;
            }
        }
        Ok(())
    }

    /// The gradients that exist, in parameter order.
    pub fn gradients(&self) -> Vec<Tensor> {
        self.slots.iter().map(|s| s.param.tensor.grad()).filter(Tensor::defined).collect()
    }

    /// One update; `scaled` under AMP. Parameters without a gradient (frozen,
    /// unused) are left out. Gradient clipping, when configured, expects
    /// unscaled gradients, and reads nothing back to the host.
    pub fn step(&mut self, hyper: StepHyper, scaled: Option<ScaledStep>) -> Result<(), OptimizerError> {
        if let Some(max_norm) = self.config.grad_clip_norm {
            clip_grad_norm(&self.gradients(), max_norm)?;
        }
        let OptimizerConfig { kind, weight_decay, beta2, eps, head_lr_scale, .. } = self.config;
        let groups = [(ParamGroup::Decay, weight_decay), (ParamGroup::NoDecay, 0.0)];
        for ((group, decay), in_head) in groups.into_iter().flat_map(|g| [(g, false), (g, true)]) {
            let slots: Vec<&Slot> = self
                .slots
                .iter()
                .filter(|s| s.param.group == group && s.param.in_head == in_head && s.param.tensor.grad().defined())
                .collect();
            if slots.is_empty() {
                continue;
            }
            let list = |pick: fn(&Slot) -> Tensor| slots.iter().map(|&s| pick(s)).collect::<Vec<_>>();
            let (params, grads) = (list(|s| s.param.tensor.shallow_clone()), list(|s| s.param.tensor.grad()));
            let (exp_avgs, exp_avg_sqs) = (list(|s| s.exp_avg.shallow_clone()), list(|s| s.exp_avg_sq.shallow_clone()));
            let steps = list(|s| s.step.shallow_clone());
            let tensors = AdamTensors {
                params: &params,
                grads: &grads,
                exp_avgs: &exp_avgs,
                exp_avg_sqs: &exp_avg_sqs,
                steps: &steps,
            };
            let step = AdamStep {
                lr: if in_head { hyper.lr * head_lr_scale } else { hyper.lr },
                beta1: hyper.beta1,
                beta2,
                weight_decay: decay,
                eps,
                decoupled: kind == OptimizerKind::AdamW,
            };
            let (grad_scale, found_inf) = scaled.as_ref().map_or((None, None), |s| (s.grad_scale, Some(s.found_inf)));
            tch::no_grad(|| fused_adam(&tensors, step, grad_scale, found_inf))?;
        }
        Ok(())
    }

    /// Steps taken (read from the device: for checkpoints, not the step path).
    pub fn steps_taken(&self) -> Result<u64, OptimizerError> {
        match self.slots.first() {
            Some(slot) => Ok(slot.step.f_double_value(&[])?.round() as u64),
            None => Ok(0),
        }
    }

    /// Writes the moments and the step count (one tensor file).
    pub fn save(&self, path: &Path) -> Result<(), OptimizerError> {
        let mut named: Vec<(String, Tensor)> = self
            .slots
            .iter()
            .flat_map(|s| {
                [
                    (format!("exp_avg/{}", s.param.name), s.exp_avg.shallow_clone()),
                    (format!("exp_avg_sq/{}", s.param.name), s.exp_avg_sq.shallow_clone()),
                ]
            })
            .collect();
        named.push(("step".to_string(), Tensor::from_slice(&[self.steps_taken()? as i64])));
        Ok(Tensor::save_multi(&named, path)?)
    }

    /// Restores what [`save`](Self::save) wrote, onto the parameters' device.
    pub fn load(&mut self, path: &Path, device: Device) -> Result<(), OptimizerError> {
        let mismatch = |message: String| OptimizerError::StateMismatch { path: path.display().to_string(), message };
        let mut saved: std::collections::HashMap<String, Tensor> =
            Tensor::load_multi_with_device(path, device)?.into_iter().collect();
        let step = saved.remove("step").ok_or_else(|| mismatch("no `step` entry".into()))?;
        let step = step.f_int64_value(&[0])?;
        if step < 0 {
            return Err(mismatch(format!("the step count is {step}")));
        }
        tch::no_grad(|| -> Result<(), OptimizerError> {
            for slot in &mut self.slots {
                for (prefix, target) in [("exp_avg", &mut slot.exp_avg), ("exp_avg_sq", &mut slot.exp_avg_sq)] {
                    let key = format!("{prefix}/{}", slot.param.name);
                    let value = saved.remove(&key).ok_or_else(|| mismatch(format!("no state for `{key}`")))?;
                    if value.size() != target.size() {
                        return Err(mismatch(format!(
                            "`{key}` has shape {:?}, expected {:?}",
                            value.size(),
                            target.size()
                        )));
                    }
                    target.f_copy_(&value)?;
                }
                let _ = slot.step.f_fill_(step as f64)?;
            }
            Ok(())
        })?;
        if let Some(extra) = saved.keys().next() {
            return Err(mismatch(format!("state for `{extra}`, which the model does not have")));
        }
        Ok(())
    }
}

/// Scales `gradients` so their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`), on the device: the factor
/// `min(1, max_norm / (norm + 1e-6))` is never read back to the host.
pub fn clip_grad_norm(gradients: &[Tensor], max_norm: f64) -> Result<(), OptimizerError> {
    if gradients.is_empty() {
        return Ok(());
    }
    let norm = crate::ops::total_norm(gradients)?;
    let factor = norm.f_add_scalar(1e-6)?.f_reciprocal()?.f_mul_scalar(max_norm)?.f_clamp_max(1.0)?;
    tch::no_grad(|| crate::ops::foreach_mul(gradients, &factor.f_to_device(gradients[0].device())?))?;
    Ok(())
}
