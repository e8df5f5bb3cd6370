//! Adam (L2 weight decay added to the gradient, as the ASL reference
//! trains) and AdamW (decoupled decay), over tensors we own so that the
//! moments can be checkpointed: tch's optimizers cannot save their state.
//!
//! The update is PyTorch's `torch.optim.Adam` step, term for term, with
//! the same bias corrections, so a run resumed from saved moments
//! continues exactly.

use crate::config::{in_unit, key_error, Validate};
use crate::model::{NamedParameter, ParamGroup};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Tensor};

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
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self { kind: OptimizerKind::Adam, weight_decay: 1e-4, beta2: 0.999, eps: 1e-8, grad_clip_norm: None }
    }
}

impl Validate for OptimizerConfig {
    fn validate(&self) -> crate::config::Result<()> {
        in_unit("optimizer.beta2", self.beta2)?;
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
}

pub struct Adam {
    config: OptimizerConfig,
    slots: Vec<Slot>,
    step: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OptimizerError {
    #[error("optimizer state {path} does not match the model: {message}")]
    StateMismatch { path: String, message: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl Adam {
    pub fn new(params: Vec<NamedParameter>, config: OptimizerConfig) -> Result<Self, OptimizerError> {
        let slots = params
            .into_iter()
            .map(|param| {
                let zeros = tch::no_grad(|| param.tensor.f_zeros_like())?;
                Ok(Slot { exp_avg: zeros.f_zeros_like()?, exp_avg_sq: zeros, param })
            })
            .collect::<Result<_, OptimizerError>>()?;
        Ok(Self { config, slots, step: 0 })
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

    /// One update. Parameters without a gradient (frozen, unused) are skipped.
    pub fn step(&mut self, hyper: StepHyper) -> Result<(), OptimizerError> {
        if let Some(max_norm) = self.config.grad_clip_norm {
            clip_grad_norm(&self.gradients(), max_norm)?;
        }
        self.step += 1;
        let OptimizerConfig { kind, weight_decay, beta2, eps, .. } = self.config;
        // Beyond i32::MAX steps both powers are 0 anyway.
        let exponent = i32::try_from(self.step).unwrap_or(i32::MAX);
        let bias_correction1 = 1.0 - hyper.beta1.powi(exponent);
        let bias_correction2_sqrt = (1.0 - beta2.powi(exponent)).sqrt();
        let step_size = hyper.lr / bias_correction1;
        tch::no_grad(|| -> Result<(), OptimizerError> {
            for slot in &mut self.slots {
                let grad = slot.param.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let decay = if slot.param.group == ParamGroup::Decay { weight_decay } else { 0.0 };
                let param = &mut slot.param.tensor;
                let grad = match kind {
                    OptimizerKind::Adam if decay != 0.0 => grad.f_add(&param.f_mul_scalar(decay)?)?,
                    OptimizerKind::AdamW if decay != 0.0 => {
                        let _ = param.f_mul_scalar_(1.0 - hyper.lr * decay)?;
                        grad
                    }
                    _ => grad,
                };
                let _ = slot.exp_avg.f_lerp_(&grad, 1.0 - hyper.beta1)?;
                let _ = slot.exp_avg_sq.f_mul_scalar_(beta2)?.f_addcmul_(&grad, &grad.f_mul_scalar(1.0 - beta2)?)?;
                let denom = slot.exp_avg_sq.f_sqrt()?.f_div_scalar(bias_correction2_sqrt)?.f_add_scalar(eps)?;
                let _ = param.f_addcdiv_(&slot.exp_avg.f_mul_scalar(-step_size)?, &denom)?;
            }
            Ok(())
        })
    }

    /// Writes the moments (one tensor file) and the step count (`<path>.json`).
    pub fn save(&self, path: &Path) -> Result<(), OptimizerError> {
        let named: Vec<(String, &Tensor)> = self
            .slots
            .iter()
            .flat_map(|s| {
                [
                    (format!("exp_avg/{}", s.param.name), &s.exp_avg),
                    (format!("exp_avg_sq/{}", s.param.name), &s.exp_avg_sq),
                ]
            })
            .collect();
        let step = Tensor::from_slice(&[self.step as i64]);
        let mut all: Vec<(String, &Tensor)> = named;
        all.push(("step".to_string(), &step));
        Ok(Tensor::save_multi(&all, path)?)
    }

    /// Restores what [`save`](Self::save) wrote, onto the parameters' device.
    pub fn load(&mut self, path: &Path, device: Device) -> Result<(), OptimizerError> {
        let mismatch = |message: String| OptimizerError::StateMismatch { path: path.display().to_string(), message };
        let mut saved: std::collections::HashMap<String, Tensor> =
            Tensor::load_multi_with_device(path, device)?.into_iter().collect();
        let step = saved.remove("step").ok_or_else(|| mismatch("no `step` entry".into()))?;
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
            }
            Ok(())
        })?;
        if let Some(extra) = saved.keys().next() {
            return Err(mismatch(format!("state for `{extra}`, which the model does not have")));
        }
        let step = step.f_int64_value(&[0])?;
        self.step = u64::try_from(step).map_err(|_| mismatch(format!("the step count is {step}")))?;
        Ok(())
    }
}

/// Scales `gradients` so their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_grad_norm(gradients: &[Tensor], max_norm: f64) -> Result<f64, OptimizerError> {
    if gradients.is_empty() {
        return Ok(0.0);
    }
    let norms: Vec<Tensor> = gradients.iter().map(|g| g.f_norm()).collect::<Result<_, _>>()?;
    let total = Tensor::f_stack(&norms, 0)?.f_norm()?.f_double_value(&[])?;
    let factor = max_norm / (total + 1e-6);
    if factor < 1.0 {
        for g in gradients {
            let _ = g.shallow_clone().f_mul_scalar_(factor)?;
        }
    }
    Ok(total)
}
