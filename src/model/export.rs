//! Exporting timm models to TorchScript through `models/export.py`, run by
//! the project's python (timm and torch live there, not in this process).

use super::config::{HeadKind, ModelConfig};
use super::error::{ModelError, Result};
use std::path::{Path, PathBuf};

/// What to export: the `model` section's timm model, head and weights
/// (random ones seeded), sized for the data.
#[derive(Debug, Clone, PartialEq)]
pub struct TimmExport<'a> {
    pub config: &'a ModelConfig,
    pub classes: usize,
    pub image_size: u32,
    pub seed: u64,
}

/// The python that has torch and timm: `$ASL_PYTHON`, else `.venv/bin/python`
/// of the current directory or of this checkout, else `python3`.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("ASL_PYTHON") {
        return PathBuf::from(python);
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"));
    [PathBuf::from(".venv/bin/python"), checkout.join(".venv/bin/python")]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// `models/export.py` of the current directory, else of this checkout.
fn export_script() -> Result<PathBuf> {
    let candidates =
        [PathBuf::from("models/export.py"), Path::new(env!("CARGO_MANIFEST_DIR")).join("models/export.py")];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| ModelError::Export {
        model: String::new(),
        message: format!(
            "models/export.py is in neither the current directory nor {}; set model.path to an exported file",
            env!("CARGO_MANIFEST_DIR")
        ),
    })
}

/// Exports `request` into `dir/<model>.pt` (with its card) and returns that path.
pub fn export_timm(request: &TimmExport, dir: &Path) -> Result<PathBuf> {
    let script = export_script()?;
    let config = request.config;
    let out = dir.join(format!("{}.pt", config.timm));
    let python = python();
    let mut command = std::process::Command::new(&python);
    command.arg(&script).args(["--model", &config.timm, "--num-classes", &request.classes.to_string()]);
    command.args(["--img-size", &request.image_size.to_string(), "--seed", &request.seed.to_string(), "--out"]);
    command.arg(&out).args(["--head", config.head.export_name()]);
    if config.head == HeadKind::MlDecoder {
        command.args(["--decoder-embedding", &config.decoder_embedding.to_string()]);
        command.args(["--num-groups", &config.num_groups.to_string()]);
    }
    if let Some(weights) = &config.weights {
        command.arg("--weights").arg(weights);
    }
    let failed = |message: String| ModelError::Export { model: config.timm.clone(), message };
    let output = command.output().map_err(|e| failed(format!("cannot run {}: {e}", python.display())))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        return Err(failed(format!("{} {} exited with {}: {last}", python.display(), script.display(), output.status)));
    }
    Ok(out)
}
