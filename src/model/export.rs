//! Exporting timm models to TorchScript through `models/export.py`, run by
//! the project's python (timm and torch live there, not in this process).

use super::config::{HeadKind, ModelConfig};
use super::error::{ModelError, Result};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// What to export: the `model` section's timm model, head and weights
/// (random ones seeded), sized for the data.
#[derive(Debug, Clone, PartialEq)]
pub struct TimmExport<'a> {
    pub config: &'a ModelConfig,
    pub classes: usize,
    pub image_size: u32,
    pub seed: u64,
    /// Pass the exporter's messages and its download progress bar through
    /// to this process's stderr while it runs; otherwise they are kept
    /// for the error, and the progress bar is not drawn.
    pub progress: bool,
}

impl TimmExport<'_> {
    /// The file [`export_timm`] writes into `dir` (its card beside it).
    pub fn out(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.pt", self.config.timm))
    }
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
pub fn export_script() -> Result<PathBuf> {
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
    let out = request.out(dir);
    let python = python();
    let mut command = Command::new(&python);
    command.arg(&script).args(["--model", &config.timm, "--num-classes", &request.classes.to_string()]);
    command.args(["--img-size", &request.image_size.to_string(), "--seed", &request.seed.to_string(), "--out"]);
    command.arg(&out).args(["--head", config.head.export_name()]);
    if config.head == HeadKind::MlDecoder {
        command.args(["--decoder-embedding", &config.decoder_embedding.to_string()]);
        command.args(["--num-groups", &config.num_groups.to_string()]);
    }
    if let Some(weights) = &config.weights {
        command.arg("--weights").arg(weights.to_string());
    }
    if config.trust_pickle {
        command.arg("--trust-pickle");
    }
    if !request.progress {
        command.arg("--no-progress");
    } else if std::io::stderr().is_terminal() {
        // The exporter's stderr is our pipe, and huggingface_hub draws its bar only on a terminal unless
        // told otherwise (its TQDM_POSITION=-1 switch); ours is one, so the bar would be seen.
        command.env("TQDM_POSITION", "-1");
    }
    let failed = |message: String| ModelError::Export { model: config.timm.clone(), message };
    let (status, stderr) = run_teeing_stderr(&mut command, request.progress)
        .map_err(|e| failed(format!("cannot run {}: {e}", python.display())))?;
    if !status.success() {
        return Err(failed(format!(
            "{} {} exited with {status}: {}",
            python.display(),
            script.display(),
            reason(&stderr)
        )));
    }
    Ok(out)
}

/// Runs `command` with stdout discarded and stderr captured. With `show`,
/// stderr is also copied to this process's as it arrives, bytes rather
/// than lines since a progress bar redraws itself with `\r`; the
/// exporter's final `error: ` line is held back, as it returns in the error.
fn run_teeing_stderr(command: &mut Command, show: bool) -> std::io::Result<(ExitStatus, String)> {
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let mut pipe = child.stderr.take().expect("stderr is piped");
    let mut captured = Vec::new();
    let mut shown = 0;
    let mut buffer = [0u8; 4096];
    loop {
        let n = pipe.read(&mut buffer)?;
        captured.extend_from_slice(&buffer[..n]);
        if show {
            let end = if n == 0 {
                captured.len()
            } else {
                captured.iter().rposition(|&b| b == b'\n' || b == b'\r').map_or(shown, |i| i + 1)
            };
            let text: Vec<u8> = captured[shown..end.max(shown)]
                .split_inclusive(|&b| b == b'\n')
                .filter(|line| !line.starts_with(b"error: "))
                .flatten()
                .copied()
                .collect();
            // The terminal going away must not fail the export.
            let _ = std::io::stderr().write_all(&text);
            shown = end.max(shown);
        }
        if n == 0 {
            break;
        }
    }
    Ok((child.wait()?, String::from_utf8_lossy(&captured).into_owned()))
}

/// The exporter's own error (from its last `error: ` to the end), else its last line.
fn reason(stderr: &str) -> &str {
    match stderr.rfind("error: ") {
        Some(start) => stderr[start + "error: ".len()..].trim(),
        None => stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim(),
    }
}
