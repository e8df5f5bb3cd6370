//! The `model` section of a run's config.

use super::card::std_problem;
use super::weights::Weights;
use crate::config::{key_error, Validate};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which network to train and what of it to keep fixed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A TorchScript file exported by models/export.py, with its .json card beside it. null exports `timm`
    /// before training.
    pub path: Option<PathBuf>,
    /// timm model name to export when `path` is null (test_resnet has 0.4 M parameters, tresnet_l 53 M).
    pub timm: String,
    /// Head of that export: linear (timm's pooling and linear layer) or ml-decoder (ML-Decoder, Ridnik et
    /// al. 2021).
    pub head: HeadKind,
    /// ML-Decoder's embedding size D, for that export (768 in the paper).
    pub decoder_embedding: u32,
    /// ML-Decoder's query count K, at most the class count (100 in the paper).
    pub num_groups: u32,
    /// Pretrained weights for that export (unused with `path`): timm's hub syntax, hf-hub:<org>/<name>[@rev]
    /// (e.g. hf-hub:timm/tresnet_l.miil_in1k_448, downloaded once into the Hugging Face cache, HF_HOME /
    /// HF_HUB_CACHE), or a local file (a timm state dict, the ASL model zoo's format or an official
    /// ML-Decoder checkpoint). null starts from random weights; it is the default so that a config never
    /// reaches the network unasked, and the recipes name the paper's weights.
    #[schemars(with = "Option<String>")]
    pub weights: Option<Weights>,
    /// Allow a `weights` file that needs full unpickling. Unpickling can run any code the file holds, so
    /// only for files from a source you trust; safetensors and plain state dicts never need it.
    pub trust_pickle: bool,
    /// When to give the head a fresh start sized for the data: auto (when the class count differs, or the
    /// card's class names differ from the data's), always (finetuning to new labels with the same count),
    /// or never (a class count that differs is then an error).
    pub reset_head: ResetHead,
    /// Parameter-name prefixes to keep frozen.
    pub freeze: Vec<String>,
    /// Train only the head (the card's `classifier`): linear probing.
    pub freeze_backbone: bool,
    /// Per-channel mean inputs in [0, 1] are normalised with, (x - mean) / std; null takes it from the
    /// model card (timm's pretrained config). A card without mean and std needs this key and input_std.
    pub input_mean: Option<[f64; 3]>,
    /// Per-channel std for that normalisation; null takes it from the model card.
    pub input_std: Option<[f64; 3]>,
    /// Seed of the head's re-initialisation.
    pub head_seed: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HeadKind {
    Linear,
    MlDecoder,
}

impl HeadKind {
    /// models/export.py's `--head` value.
    pub fn export_name(self) -> &'static str {
        match self {
            HeadKind::Linear => "linear",
            HeadKind::MlDecoder => "ml-decoder",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResetHead {
    Auto,
    Always,
    Never,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            path: None,
            timm: "tresnet_l".into(),
            head: HeadKind::Linear,
            decoder_embedding: 768,
            num_groups: 100,
            weights: None,
            trust_pickle: false,
            reset_head: ResetHead::Auto,
            freeze: Vec::new(),
            freeze_backbone: false,
            input_mean: None,
            input_std: None,
            head_seed: 0,
        }
    }
}

impl Validate for ModelConfig {
    fn validate(&self) -> crate::config::Result<()> {
        if self.input_mean.is_some() != self.input_std.is_some() {
            return Err(key_error("model.input_mean", "input_mean and input_std are set together, or neither"));
        }
        if let Some(problem) = self.input_std.as_ref().and_then(std_problem) {
            return Err(key_error("model.input_std", problem));
        }
        if self.decoder_embedding == 0 || !self.decoder_embedding.is_multiple_of(8) {
            let message =
                format!("must be a positive multiple of 8 (the attention heads), got {}", self.decoder_embedding);
            return Err(key_error("model.decoder_embedding", message));
        }
        if self.num_groups == 0 {
            return Err(key_error("model.num_groups", "must be at least 1"));
        }
        match self.weights.as_ref().and_then(Weights::timm_model) {
            Some(holds) if self.path.is_none() && holds != self.timm => {
                let weights = self.weights.as_ref().map(Weights::to_string).unwrap_or_default();
                let message = format!(
                    "{weights} holds {holds} weights but model.timm is {}; set model.timm={holds}, or other weights",
                    self.timm
                );
                Err(key_error("model.weights", message))
            }
            _ => Ok(()),
        }
    }
}
