//! The JSON model card `models/export.py` writes beside each TorchScript file.

use super::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// timm model name, e.g. `tresnet_m`.
    pub model: String,
    /// Square input size S the network was exported for.
    pub input_size: i64,
    pub num_features: i64,
    pub num_classes: i64,
    /// Parameter names of the final classifier, weight first.
    pub classifier: Vec<String>,
    #[serde(default)]
    pub class_names: Option<Vec<String>>,
    /// Buffers (BatchNorm statistics) re-registered as non-trainable
    /// parameters, so that tch can reach them for the EMA.
    #[serde(default)]
    pub state_as_parameters: Vec<String>,
    /// Anything else the exporter recorded (versions, feature shape).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `model.pt` → `model.json`.
pub fn card_path(model_path: &Path) -> PathBuf {
    model_path.with_extension("json")
}

impl ModelCard {
    /// Reads the card beside `model_path`; `None` when there is none.
    pub fn load_beside(model_path: &Path) -> Result<Option<Self>> {
        let path = card_path(model_path);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ModelError::BadCard { path, message: e.to_string() }),
        };
        let card: Self = serde_json::from_str(&text)
            .map_err(|e| ModelError::BadCard { path: path.clone(), message: e.to_string() })?;
        let bad = |message: String| Err(ModelError::BadCard { path: path.clone(), message });
        if card.num_classes < 1 {
            return bad(format!("num_classes is {}; a classifier has at least one class", card.num_classes));
        }
        if !(1..=i64::from(u16::MAX)).contains(&card.input_size) {
            return bad(format!("input_size is {}; expected 1 to {}", card.input_size, u16::MAX));
        }
        if let Some(names) = &card.class_names {
            if names.len() as i64 != card.num_classes {
                return bad(format!("{} class names for {} classes", names.len(), card.num_classes));
            }
        }
        Ok(Some(card))
    }

    /// TResNet's space-to-depth stem and four stride-2 stages need S % 32 == 0.
    pub fn required_multiple(&self) -> i64 {
        if self.model.starts_with("tresnet") {
            32
        } else {
            1
        }
    }
}
