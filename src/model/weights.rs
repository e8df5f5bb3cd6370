//! Where an export's pretrained weights come from: timm's hub syntax,
//! `hf-hub:<org>/<name>[@<revision>]`, or a local file. The hub reference
//! is resolved by `models/hub.py` (huggingface_hub, the standard cache);
//! Rust only parses it, so that a wrong reference stops at the config.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

const HUB_PREFIX: &str = "hf-hub:";

/// `model.weights`: a hub reference or a local file, written in YAML as one string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Weights {
    /// `hf-hub:timm/tresnet_l.miil_in1k_448`: a Hugging Face repo (`org/name`), at `revision` or its `main`.
    Hub { repo: String, revision: Option<String> },
    /// A timm state dict, an ASL model-zoo checkpoint or an official ML-Decoder checkpoint.
    File(PathBuf),
}

impl Weights {
    /// For a timm-hosted tag (`timm/<model>.<tag>`), the timm model it holds weights for.
    pub fn timm_model(&self) -> Option<&str> {
        match self {
            Weights::Hub { repo, .. } => repo.strip_prefix("timm/").map(|name| name.split('.').next().unwrap_or(name)),
            Weights::File(_) => None,
        }
    }
}

impl TryFrom<String> for Weights {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let Some(reference) = text.strip_prefix(HUB_PREFIX) else {
            return if text.is_empty() {
                Err("is empty; use null for random weights".into())
            } else {
                Ok(Weights::File(text.into()))
            };
        };
        let (repo, revision) = match reference.split_once('@') {
            Some((repo, revision)) if !revision.is_empty() => (repo, Some(revision.to_string())),
            Some(_) => return Err(format!("`{text}` names no revision after `@`")),
            None => (reference, None),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "`{text}` is not a hub reference: expected {HUB_PREFIX}<org>/<name>[@<revision>], e.g. \
                 {HUB_PREFIX}timm/tresnet_l.miil_in1k_448"
            ));
        }
        Ok(Weights::Hub { repo: repo.to_string(), revision })
    }
}

impl From<Weights> for String {
    fn from(weights: Weights) -> String {
        weights.to_string()
    }
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Weights::Hub { repo, revision: None } => write!(f, "{HUB_PREFIX}{repo}"),
            Weights::Hub { repo, revision: Some(revision) } => write!(f, "{HUB_PREFIX}{repo}@{revision}"),
            Weights::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Weights, String> {
        Weights::try_from(text.to_string())
    }

    #[test]
    fn hub_references_and_files_round_trip_through_their_text() {
        for text in
            ["hf-hub:timm/tresnet_l.miil_in1k_448", "hf-hub:me/my-model@0123abc", "/data/w.pth", "w.safetensors"]
        {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
        let hub = parse("hf-hub:timm/tresnet_v2_l.miil_in21k@main").unwrap();
        assert_eq!(hub, Weights::Hub { repo: "timm/tresnet_v2_l.miil_in21k".into(), revision: Some("main".into()) });
        assert_eq!(hub.timm_model(), Some("tresnet_v2_l"));
        assert_eq!(parse("hf-hub:me/model").unwrap().timm_model(), None);
        assert_eq!(parse("timm.pth").unwrap(), Weights::File("timm.pth".into()));
    }

    #[test]
    fn malformed_hub_references_are_refused_with_the_expected_form() {
        for text in ["hf-hub:tresnet_l", "hf-hub:timm/", "hf-hub:a/b/c", "hf-hub:timm/x@"] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(text), "{err}");
        }
        assert!(parse("hf-hub:tresnet_l").unwrap_err().contains("hf-hub:<org>/<name>[@<revision>]"));
        assert!(parse("").is_err());
    }
}
