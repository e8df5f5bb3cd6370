//! The `model` section of a run's config.

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
    /// Local pretrained weights for that export (a timm state dict or the ASL model zoo's format); null
    /// starts from random weights.
    pub weights: Option<PathBuf>,
    /// Parameter-name prefixes to keep frozen.
    pub freeze: Vec<String>,
    /// Seed of the classifier re-initialisation when the class count differs from the data's.
    pub head_seed: i64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self { path: None, timm: "tresnet_l".into(), weights: None, freeze: Vec::new(), head_seed: 0 }
    }
}
