//! The JSON model card `models/export.py` writes beside each TorchScript file.

use super::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// timm model name, e.g. `tresnet_m`.
    pub model: String,
    /// Square input size S the network was exported for (or last trained at).
    pub input_size: i64,
    /// The network takes `input_size` inputs only (a ViT's position embeddings, say); a fully
    /// convolutional one, like TResNet, can be trained and used at other sizes.
    #[serde(default)]
    pub fixed_input_size: bool,
    pub num_features: i64,
    pub num_classes: i64,
    /// Parameter names of the head (the classifier): what `freeze_backbone`
    /// leaves trainable and `optimizer.head_lr_scale` applies to. For a
    /// linear head, weight first.
    pub classifier: Vec<String>,
    /// How the head is laid out, which decides how it is given a new class
    /// count; cards written before heads had kinds have none, and are linear.
    #[serde(default)]
    pub head: Option<HeadLayout>,
    /// Per-channel input mean and std of timm's pretrained config: the
    /// network sees `(x - mean) / std` for `x` in [0, 1].
    #[serde(default)]
    pub mean: Option<[f64; 3]>,
    #[serde(default)]
    pub std: Option<[f64; 3]>,
    #[serde(default)]
    pub class_names: Option<Vec<String>>,
    /// Buffers (BatchNorm statistics) re-registered as non-trainable
    /// parameters, so that tch can reach them for the EMA.
    #[serde(default)]
    pub state_as_parameters: Vec<String>,
    /// Where the exported weights came from; `None` for random weights
    /// and for cards written before the exporter recorded it.
    #[serde(default)]
    pub weights: Option<WeightsOrigin>,
    /// Anything else the exporter recorded (versions, feature shape).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The pretrained file an export started from, so that a trained model
/// can always say which weights it grew from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsOrigin {
    /// `model.weights` as given: `hf-hub:<org>/<name>` or absent for a local file.
    #[serde(default)]
    pub source: Option<String>,
    /// The Hugging Face repo, e.g. `timm/tresnet_l.miil_in1k_448`.
    #[serde(default)]
    pub hub_id: Option<String>,
    /// The snapshot's commit hash in that repo.
    #[serde(default)]
    pub revision: Option<String>,
    /// The file read: its name in the snapshot, or a local file's absolute path.
    pub file: String,
    /// SHA-256 of that file's bytes, hex.
    pub sha256: String,
    /// `[channels, height, width]` of the pretrained config (what the weights were trained at).
    #[serde(default)]
    pub pretrained_input_size: Option<Vec<i64>>,
}

impl std::fmt::Display for WeightsOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.hub_id, &self.revision) {
            (Some(hub), Some(revision)) => write!(f, "hf-hub:{hub} at revision {revision}, {}", self.file)?,
            _ => write!(f, "{}", self.file)?,
        }
        write!(f, " (sha256 {})", self.sha256)?;
        if let Some(size) = &self.pretrained_input_size {
            write!(f, ", pretrained at {size:?}")?;
        }
        Ok(())
    }
}

/// The head's tensors that depend on the class count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HeadLayout {
    /// Global pooling and `weight` [N, F] (+ `bias` [N]).
    Linear { weight: String, bias: Option<String> },
    /// ML-Decoder: K = min(max_groups, N) fixed `queries` [K, D], a group FC
    /// `group_weight` [K, D, ⌈N/K⌉] and `group_bias` [N]; the projection and
    /// the decoder layer do not depend on N.
    MlDecoder { queries: String, group_weight: String, group_bias: String, max_groups: i64 },
}

/// Why `std` cannot normalise inputs (a zero, negative or non-finite
/// channel would divide by it), or `None` when it can.
pub fn std_problem(std: &[f64; 3]) -> Option<String> {
    std.iter()
        .any(|s| !(s.is_finite() && *s > 0.0))
        .then(|| format!("every channel's std must be positive, got {std:?}"))
}

/// `model.pt` → `model.json`.
pub fn card_path(model_path: &Path) -> PathBuf {
    model_path.with_extension("json")
}

impl ModelCard {
    /// Reads the card beside `model_path`. Without one nothing says which
    /// parameters are the head or how inputs are scaled, so there is none
    /// is an error that says how to write one.
    pub fn load_beside(model_path: &Path) -> Result<Self> {
        let path = card_path(model_path);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ModelError::NoCard { model: model_path.to_path_buf(), card: path })
            }
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
        if let Some(problem) = card.std.as_ref().and_then(std_problem) {
            return bad(problem);
        }
        Ok(card)
    }

    /// The head's layout; a card without one has a linear head named by `classifier`.
    pub fn head_layout(&self) -> Option<HeadLayout> {
        self.head.clone().or_else(|| {
            let weight = self.classifier.first()?.clone();
            Some(HeadLayout::Linear { weight, bias: self.classifier.get(1).cloned() })
        })
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
