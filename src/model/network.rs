//! A TorchScript classifier trained from Rust: loading on a device,
//! parameter groups for the optimizer, freezing, explicit train/eval
//! mode, classifier reset, and atomic saving.

use super::card::{card_path, ModelCard};
use super::error::{ModelError, Result};
use crate::atomic::{write_atomically, write_bytes_atomically};
use std::path::{Path, PathBuf};
use tch::{CModule, Device, Kind, Tensor};

/// Weight-decay group of a trainable parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamGroup {
    /// Weight matrices and convolution kernels: L2 decay applies.
    Decay,
    /// Biases and 1-D parameters (norm scales): no decay, as in the reference.
    NoDecay,
}

/// A trainable parameter; the tensor shares storage with the module.
#[derive(Debug)]
pub struct NamedParameter {
    pub name: String,
    pub tensor: Tensor,
    pub group: ParamGroup,
}

pub struct Network {
    module: CModule,
    path: PathBuf,
    device: Device,
    card: Option<ModelCard>,
    training: bool,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").field("path", &self.path).field("device", &self.device).finish_non_exhaustive()
    }
}

impl Network {
    /// Loads `path` (and the model card beside it, if any) onto `device`.
    /// The device is chosen here because moving a loaded module later
    /// would leave its buffers behind. Starts in eval mode.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::Missing(path.to_path_buf()));
        }
        let card = ModelCard::load_beside(path)?;
        let mut module = CModule::load_on_device(path, device)
            .map_err(|source| ModelError::NotTorchScript { path: path.to_path_buf(), source })?;
        module.f_set_eval()?;
        Ok(Self { module, path: path.to_path_buf(), device, card, training: false })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn card(&self) -> Option<&ModelCard> {
        self.card.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Name for messages: the card's model name, else the file name.
    pub fn name(&self) -> String {
        self.card.as_ref().map_or_else(|| self.path.display().to_string(), |c| c.model.clone())
    }

    /// Train mode (BatchNorm uses and updates batch statistics). TorchScript
    /// ignores `forward_t`'s flag, so the mode is always set explicitly.
    pub fn set_train(&mut self, train: bool) -> Result<()> {
        if train {
            self.module.f_set_train()?;
        } else {
            self.module.f_set_eval()?;
        }
        self.training = train;
        Ok(())
    }

    /// `[N, 3, S, S]` float images → `[N, K]` logits.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        plain_graph_execution();
        Ok(self.module.forward_ts(&[images])?)
    }

    /// Every tensor of the module's state: parameters, and the buffers the
    /// exporter re-registered as non-trainable parameters.
    pub fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self.module.named_parameters()?)
    }

    /// The parameters that require grad, grouped for weight decay.
    pub fn trainable_parameters(&self) -> Result<Vec<NamedParameter>> {
        Ok(self
            .named_tensors()?
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, tensor)| {
                let group =
                    if tensor.dim() <= 1 || name.ends_with(".bias") { ParamGroup::NoDecay } else { ParamGroup::Decay };
                NamedParameter { name, tensor, group }
            })
            .collect())
    }

    /// Stores every 4-D tensor (convolution kernels) channels-last, the
    /// layout cuDNN's fastest convolutions want (inputs arrive so already).
    /// Values are unchanged, and a saved module loads as before.
    pub fn to_channels_last(&mut self) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (_, mut tensor) in self.named_tensors()? {
                if tensor.dim() == 4 && !crate::ops::is_channels_last(&tensor) {
                    tensor.set_data(&crate::ops::channels_last(&tensor)?);
                }
            }
            Ok(())
        })
    }

    /// Stops training every parameter whose name starts with one of
    /// `prefixes`. Returns how many were frozen.
    pub fn freeze(&mut self, prefixes: &[String]) -> Result<usize> {
        let mut frozen = 0;
        for (name, tensor) in self.named_tensors()? {
            if tensor.requires_grad() && prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                let _ = tensor.f_set_requires_grad(false)?;
                frozen += 1;
            }
        }
        Ok(frozen)
    }

    /// Checks that `size`×`size` inputs pass through the network, so a
    /// wrong size fails at start-up rather than mid-epoch, and returns the
    /// number of outputs (classes) it gives.
    pub fn check_input_size(&mut self, size: i64) -> Result<i64> {
        let model = self.name();
        let multiple = self.card.as_ref().map_or(1, ModelCard::required_multiple);
        if size <= 0 || size % multiple != 0 {
            let reason = format!("the input size must be a positive multiple of {multiple}");
            return Err(ModelError::BadInputSize { model, size, reason });
        }
        let was_training = self.training;
        self.set_train(false)?;
        let probe = Tensor::f_zeros([1, 3, size, size], (Kind::Float, self.device))?;
        let result = tch::no_grad(|| self.forward(&probe));
        self.set_train(was_training)?;
        let output = result.map_err(|e| {
            let reason = e.to_string().lines().find(|l| !l.trim().is_empty()).unwrap_or_default().to_string();
            ModelError::BadInputSize { model: model.clone(), size, reason }
        })?;
        match output.size().as_slice() {
            [1, classes] => Ok(*classes),
            shape => {
                let reason = format!("its output has shape {shape:?}, not [batch, classes]");
                Err(ModelError::BadInputSize { model, size, reason })
            }
        }
    }

    /// Replaces the classifier with a fresh one for `classes` outputs,
    /// initialised as timm's `reset_classifier` does (nn.Linear default:
    /// U(±1/√F) for weight and bias). `class_names`, when given, go into
    /// the card. The classifier's names come from the model card.
    pub fn reset_head(&mut self, classes: i64, class_names: Option<Vec<String>>, seed: i64) -> Result<()> {
        if classes < 1 {
            return Err(ModelError::BadClassCount(classes));
        }
        let card = self.card.as_mut().ok_or_else(|| ModelError::NoClassifier(self.path.clone()))?;
        let tensors = self.module.named_parameters()?;
        let find = |name: &str| {
            tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone()).ok_or_else(|| {
                ModelError::ClassifierNotFound {
                    name: name.to_string(),
                    path: self.path.clone(),
                    examples: tensors.iter().rev().take(4).map(|(n, _)| n.clone()).collect(),
                }
            })
        };
        let mut weight = find(card.classifier.first().map_or("", String::as_str))?;
        let features = weight.size()[1];
        let bound = 1.0 / (features as f64).sqrt();
        tch::manual_seed(seed);
        tch::no_grad(|| -> Result<()> {
            let fresh =
                Tensor::f_empty([classes, features], (weight.kind(), self.device))?.f_uniform_(-bound, bound)?;
            weight.set_data(&fresh);
            for name in card.classifier.iter().skip(1) {
                let mut bias = find(name)?;
                let fresh = Tensor::f_empty([classes], (bias.kind(), self.device))?.f_uniform_(-bound, bound)?;
                bias.set_data(&fresh);
            }
            Ok(())
        })?;
        card.num_classes = classes;
        card.class_names = class_names;
        Ok(())
    }

    /// Records the class names in the card (written on save).
    pub fn set_class_names(&mut self, names: Vec<String>) {
        if let Some(card) = &mut self.card {
            card.class_names = (names.len() as i64 == card.num_classes).then_some(names);
        }
    }

    /// Saves the module as TorchScript (and its card beside it), each
    /// through a temporary file and a rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        save_module(&self.module, self.card.as_ref(), path)
    }

    /// A deep copy: the module saved to a temporary file and loaded again on
    /// the same device. Used for the EMA copy.
    pub fn duplicate(&self) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|source| ModelError::Write { path: std::env::temp_dir(), source })?;
        let path = dir.path().join("copy.pt");
        self.save(&path)?;
        let mut copy = Self::load(&path, self.device)?;
        copy.path = self.path.clone();
        copy.set_train(self.training)?;
        Ok(copy)
    }
}

/// Writes `module` to `path` and `card` to the `.json` beside it, atomically.
pub(crate) fn save_module(module: &CModule, card: Option<&ModelCard>, path: &Path) -> Result<()> {
    let write_error = |source| ModelError::Write { path: path.to_path_buf(), source };
    write_atomically(path, |tmp| module.save(tmp).map_err(std::io::Error::other)).map_err(write_error)?;
    if let Some(card) = card {
        let json = serde_json::to_vec_pretty(card).map_err(|e| write_error(std::io::Error::other(e)))?;
        let card_file = card_path(path);
        write_bytes_atomically(&card_file, &json).map_err(|source| ModelError::Write { path: card_file, source })?;
    }
    Ok(())
}

/// Runs TorchScript graphs op by op, as PyTorch eager would. The graph
/// executor's optimisations (profiling, differentiable subgraphs, fusion)
/// cost more than they give on a training step: on an H200 with tresnet_l at
/// 448, batch 56, AMP, they raised peak GPU memory from 14,921 to 22,347 MiB, cut
/// the timed epoch from 292 to 252 images/s, and made the first epoch take
/// 25 s instead of 7 s.
/// The setting is per thread, so every forward makes sure of it.
fn plain_graph_execution() {
    tch::jit::set_graph_executor_optimize(false);
}
