//! Exporting timm models through `models/export.py` with the project's python.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// `$ASL_PYTHON`, else `.venv/bin/python` when present, else `python3`.
pub fn python() -> PathBuf {
    std::env::var_os("ASL_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        let venv = PathBuf::from(".venv/bin/python");
        if venv.exists() {
            venv
        } else {
            PathBuf::from("python3")
        }
    })
}

/// Exports `model` (random weights, or `weights`) for `classes` at `size`
/// into `dir/<model>.pt` and returns that path.
pub fn export_with_timm(
    model: &str,
    weights: Option<&Path>,
    classes: usize,
    size: u32,
    seed: u64,
    dir: &Path,
) -> Result<PathBuf> {
    let script = Path::new("models/export.py");
    if !script.is_file() {
        bail!("model.path is not set and models/export.py is not in the current directory; run from the asl checkout or set model.path");
    }
    let out = dir.join(format!("{model}.pt"));
    let python = python();
    let mut command = std::process::Command::new(&python);
    command.arg(script).args(["--model", model, "--num-classes", &classes.to_string()]);
    command.args(["--img-size", &size.to_string(), "--seed", &seed.to_string(), "--out"]).arg(&out);
    if let Some(weights) = weights {
        command.arg("--weights").arg(weights);
    }
    println!("exporting {model} with {}", python.display());
    let status = command.status().with_context(|| format!("cannot run {}", python.display()))?;
    if !status.success() {
        bail!("models/export.py failed for {model} ({status})");
    }
    Ok(out)
}
