//! Exporting timm models to TorchScript through `models/export.py`, run by
//! the project's python (timm and torch live there, not in this process).
//! The exporter and its modules are built into the binary and written to a
//! private directory for each run, so that `asl` works from any directory
//! and always runs the exporter it was built with.

use super::config::{HeadKind, ModelConfig};
use super::error::{ModelError, Result};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `models/export.py` and the modules it imports, as built in.
const SCRIPTS: [(&str, &str); 3] = [
    ("export.py", include_str!("../../models/export.py")),
    ("hub.py", include_str!("../../models/hub.py")),
    ("ml_decoder.py", include_str!("../../models/ml_decoder.py")),
];

/// How long an exporter asked to stop may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a running exporter is checked on.
const POLL: Duration = Duration::from_millis(50);

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

/// How an export is watched while it runs.
pub struct ExportWatch<'a> {
    /// Set to stop the export: the exporter is asked to stop (SIGTERM),
    /// killed after a grace period, and what it left half-written removed.
    pub stop: &'a AtomicBool,
    /// Called once the exporter runs.
    pub started: &'a dyn Fn(),
    /// Called every 50 ms while it runs (the heartbeat's progress: an export is work).
    pub running: &'a dyn Fn(),
}

impl ExportWatch<'static> {
    /// Nothing stops the export, and nobody is told how it goes.
    pub fn unwatched() -> Self {
        static NEVER: AtomicBool = AtomicBool::new(false);
        Self { stop: &NEVER, started: &|| {}, running: &|| {} }
    }
}

/// The python that has torch and timm: `$ASL_PYTHON`, else the
/// `.venv/bin/python` of the checkout this binary lies in (`target/release`
/// of it), of the current directory, or of the checkout it was built in,
/// else `python3`.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("ASL_PYTHON") {
        return PathBuf::from(python);
    }
    let installed = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().skip(1).map(|dir| dir.join(".venv/bin/python")).find(|p| p.exists()));
    let others = [PathBuf::from(".venv/bin/python"), Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")];
    installed.or_else(|| others.into_iter().find(|p| p.exists())).unwrap_or_else(|| PathBuf::from("python3"))
}

/// The built-in exporter, written into a private directory (mode 0700)
/// that lives as long as the returned guard.
pub fn export_script() -> Result<(tempfile::TempDir, PathBuf)> {
    let failed = |e: std::io::Error| ModelError::Export {
        model: String::new(),
        message: format!("cannot write the built-in exporter to {}: {e}", std::env::temp_dir().display()),
    };
    let dir = crate::atomic::private_dir("asl-export-").map_err(failed)?;
    for (name, text) in SCRIPTS {
        std::fs::write(dir.path().join(name), text).map_err(failed)?;
    }
    let script = dir.path().join(SCRIPTS[0].0);
    Ok((dir, script))
}

/// Exports `request` into `dir/<model>.pt` (with its card) and returns
/// that path; a stop request ends it early with [`ModelError::Stopped`],
/// leaving no partial file.
pub fn export_timm(request: &TimmExport, dir: &Path, watch: &ExportWatch) -> Result<PathBuf> {
    let (_scripts, script) = export_script()?;
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
    let existed = dir.exists();
    let ran = run_teeing_stderr(&mut command, request.progress, watch)
        .map_err(|e| failed(format!("cannot run {}: {e}", python.display())))?;
    let (status, stderr) = match ran {
        Ran::Exited(status, stderr) => (status, stderr),
        Ran::Stopped => {
            remove_partial_export(dir, &config.timm, existed);
            return Err(ModelError::Stopped { model: config.timm.clone() });
        }
    };
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

/// How an exporter run ended.
enum Ran {
    Exited(ExitStatus, String),
    /// Asked to stop, and gone.
    Stopped,
}

/// Runs `command` with stdout discarded and stderr captured, until it
/// exits or `watch.stop` is set. With `show`, stderr is also copied to this
/// process's as it arrives, bytes rather than lines since a progress bar
/// redraws itself with `\r`; the exporter's final `error: ` line is held
/// back, as it returns in the error.
fn run_teeing_stderr(command: &mut Command, show: bool, watch: &ExportWatch) -> std::io::Result<Ran> {
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let pipe = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || tee(pipe, show));
    (watch.started)();
    loop {
        if let Some(status) = child.try_wait()? {
            let captured = reader.join().unwrap_or_default();
            return Ok(Ran::Exited(status, captured));
        }
        if watch.stop.load(Ordering::SeqCst) {
            stop_child(&mut child)?;
            return Ok(Ran::Stopped);
        }
        (watch.running)();
        std::thread::sleep(POLL);
    }
}

/// Asks the exporter to stop (its SIGTERM handler removes its temporary
/// files and any download it began), and kills it after the grace period.
fn stop_child(child: &mut Child) -> std::io::Result<()> {
    // SAFETY: signals the child this process spawned and has not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_GRACE;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            break;
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// What a stopped exporter may have left in `dir`: its temporary model
/// and card files, and `dir` itself when this export created it.
fn remove_partial_export(dir: &Path, model: &str, existed: bool) {
    let card_tmp = format!("{model}.json.tmp");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pt.tmp") || name == card_tmp {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    if !existed {
        // Only removes an empty directory: a finished export is never taken back.
        let _ = std::fs::remove_dir(dir);
    }
}

/// Reads `pipe` to its end, copying it to stderr as it comes with `show`.
fn tee(mut pipe: impl Read, show: bool) -> String {
    let mut captured = Vec::new();
    let mut shown = 0;
    let mut buffer = [0u8; 4096];
    loop {
        let n = pipe.read(&mut buffer).unwrap_or(0);
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
    String::from_utf8_lossy(&captured).into_owned()
}

/// The exporter's own error (from its last `error: ` to the end), else its last line.
fn reason(stderr: &str) -> &str {
    match stderr.rfind("error: ") {
        Some(start) => stderr[start + "error: ".len()..].trim(),
        None => stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_exporter_is_the_checkouts_and_sits_in_a_private_directory() {
        let (dir, script) = export_script().unwrap();
        for (name, _) in SCRIPTS {
            let ours = std::fs::read(dir.path().join(name)).unwrap();
            let checkout = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(name)).unwrap();
            assert_eq!(ours, checkout, "{name}");
        }
        assert_eq!(script, dir.path().join("export.py"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
