//! A TorchScript classifier trained from Rust: loading on a device,
//! parameter groups for the optimizer, freezing, explicit train/eval
//! mode, classifier reset, and atomic saving.

use super::card::{card_path, std_problem, HeadLayout, ModelCard};
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
    /// Part of the head (the card's `classifier`), which may learn at its own rate.
    pub in_head: bool,
}

pub struct Network {
    module: CModule,
    path: PathBuf,
    device: Device,
    card: ModelCard,
    training: bool,
    /// Parameters frozen by `freeze` or `freeze_backbone`: unlike the
    /// module's buffers, they never change while training.
    frozen: Vec<String>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").field("path", &self.path).field("device", &self.device).finish_non_exhaustive()
    }
}

impl Network {
    /// Loads `path` and the model card beside it onto `device`.
    /// The device is chosen here because moving a loaded module later
    /// would leave its buffers behind. Starts in eval mode.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::Missing(path.to_path_buf()));
        }
        let mut module = CModule::load_on_device(path, device)
            .map_err(|source| ModelError::NotTorchScript { path: path.to_path_buf(), source })?;
        let card = ModelCard::load_beside(path)?;
        module.f_set_eval()?;
        Ok(Self { module, path: path.to_path_buf(), device, card, training: false, frozen: Vec::new() })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Name for messages: the card's model name.
    pub fn name(&self) -> String {
        self.card.model.clone()
    }

    /// The per-channel mean and std the network's inputs in [0, 1] are
    /// normalised with. A card without them is an error rather than a
    /// silent [0, 1]: most pretrained networks expect normalised inputs.
    pub fn input_normalization(&self) -> Result<([f64; 3], [f64; 3])> {
        match (self.card.mean, self.card.std) {
            (Some(mean), Some(std)) => Ok((mean, std)),
            _ => Err(ModelError::NoNormalization(self.path.clone())),
        }
    }

    /// Overrides the card's input normalisation (saved with the network).
    pub fn set_input_normalization(&mut self, mean: [f64; 3], std: [f64; 3]) -> Result<()> {
        if let Some(message) = std_problem(&std) {
            return Err(ModelError::BadCard { path: card_path(&self.path), message });
        }
        self.card.mean = Some(mean);
        self.card.std = Some(std);
        Ok(())
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

    /// Whether `name` is a parameter frozen by [`freeze`](Self::freeze) or
    /// [`freeze_backbone`](Self::freeze_backbone).
    pub fn is_frozen(&self, name: &str) -> bool {
        self.frozen.iter().any(|f| f == name)
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
                let in_head = self.card.classifier.contains(&name);
                NamedParameter { name, tensor, group, in_head }
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
        self.freeze_where(|name| prefixes.iter().any(|p| name.starts_with(p.as_str())))
    }

    /// Stops training everything but the head (the card's `classifier`).
    /// Returns how many were frozen.
    pub fn freeze_backbone(&mut self) -> Result<usize> {
        if self.card.classifier.is_empty() {
            return Err(ModelError::NoClassifier(self.path.clone()));
        }
        let head = self.card.classifier.clone();
        self.freeze_where(|name| !head.iter().any(|h| h == name))
    }

    fn freeze_where(&mut self, frozen: impl Fn(&str) -> bool) -> Result<usize> {
        let mut count = 0;
        for (name, tensor) in self.named_tensors()? {
            if tensor.requires_grad() && frozen(&name) {
                let _ = tensor.f_set_requires_grad(false)?;
                self.frozen.push(name);
                count += 1;
            }
        }
        Ok(count)
    }

    /// Checks that `size`×`size` inputs pass through the network, so a
    /// wrong size fails at start-up rather than mid-epoch, and returns the
    /// number of outputs (classes) it gives.
    pub fn check_input_size(&mut self, size: i64) -> Result<i64> {
        let model = self.name();
        if self.card.fixed_input_size && size != self.card.input_size {
            let reason = format!(
                "its card says its input size is fixed at {} (fixed_input_size); set data.image_size to {}",
                self.card.input_size, self.card.input_size
            );
            return Err(ModelError::BadInputSize { model, size, reason });
        }
        let multiple = self.card.required_multiple();
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

    /// Records that the network now works at `size`×`size` (a fully
    /// convolutional network finetuned at a new resolution), so that its
    /// saved card gives `asl validate` and `asl infer` that size.
    pub fn set_input_size(&mut self, size: i64) {
        self.card.input_size = size;
    }

    /// Gives the head a fresh start for `classes` outputs. A linear head is
    /// initialised as timm's `reset_classifier` does (nn.Linear's default,
    /// U(±1/√F) for weight and bias). ML-Decoder gets new queries (N(0, 1),
    /// as nn.Embedding), a new group FC (Xavier-normal weight, zero bias, as
    /// the paper's code) for K = min(max_groups, N) groups, and keeps its
    /// projection and decoder layer, which do not depend on the classes.
    /// `class_names`, when given, go into the card.
    pub fn reset_head(&mut self, classes: i64, class_names: Option<Vec<String>>, seed: i64) -> Result<()> {
        if classes < 1 {
            return Err(ModelError::BadClassCount(classes));
        }
        let layout = self.card.head_layout().ok_or_else(|| ModelError::NoClassifier(self.path.clone()))?;
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
        let options = |t: &Tensor| (t.kind(), self.device);
        // The caller's random stream is left as it was.
        let _seeded = crate::ops::ScopedSeed::enter(seed as u64, self.device)?;
        tch::no_grad(|| -> Result<()> {
            match &layout {
                HeadLayout::Linear { weight, bias } => {
                    let mut weight = find(weight)?;
                    let features = weight.size()[1];
                    let bound = 1.0 / (features as f64).sqrt();
                    weight
                        .set_data(&Tensor::f_empty([classes, features], options(&weight))?.f_uniform_(-bound, bound)?);
                    if let Some(bias) = bias {
                        let mut bias = find(bias)?;
                        bias.set_data(&Tensor::f_empty([classes], options(&bias))?.f_uniform_(-bound, bound)?);
                    }
                }
                HeadLayout::MlDecoder { queries, group_weight, group_bias, max_groups } => {
                    let (mut queries, mut weight, mut bias) = (find(queries)?, find(group_weight)?, find(group_bias)?);
                    let embedding = queries.size()[1];
                    let groups = classes.min(*max_groups).max(1);
                    let per_group = (classes + groups - 1) / groups;
                    queries.set_data(&Tensor::f_empty([groups, embedding], options(&queries))?.f_normal_(0.0, 1.0)?);
                    // Xavier-normal: fan_in = D·g and fan_out = K·g for a [K, D, g] tensor.
                    let std = (2.0 / ((embedding + groups) * per_group) as f64).sqrt();
                    let fresh =
                        Tensor::f_empty([groups, embedding, per_group], options(&weight))?.f_normal_(0.0, std)?;
                    weight.set_data(&fresh);
                    bias.set_data(&Tensor::f_zeros([classes], options(&bias))?);
                }
            }
            Ok(())
        })?;
        self.card.num_classes = classes;
        self.card.class_names = class_names;
        Ok(())
    }

    /// Records the class names in the card (written on save).
    pub fn set_class_names(&mut self, names: Vec<String>) {
        self.card.class_names = (names.len() as i64 == self.card.num_classes).then_some(names);
    }

    /// Saves the module as TorchScript (and its card beside it), each
    /// through a temporary file and a rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        save_module(&self.module, &self.card, path)
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
pub(crate) fn save_module(module: &CModule, card: &ModelCard, path: &Path) -> Result<()> {
    let write_error = |source| ModelError::Write { path: path.to_path_buf(), source };
    write_atomically(path, |tmp| module.save(tmp).map_err(std::io::Error::other)).map_err(write_error)?;
    let json = serde_json::to_vec_pretty(card).map_err(|e| write_error(std::io::Error::other(e)))?;
    let card_file = card_path(path);
    write_bytes_atomically(&card_file, &json).map_err(|source| ModelError::Write { path: card_file, source })
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
