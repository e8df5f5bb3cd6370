//! Running the pinned `.venv` python from tests: exporting timm models and
//! checking Rust outputs against PyTorch's.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `$ASL_PYTHON`, else the project's `.venv/bin/python` (`make test` creates it).
pub fn python() -> PathBuf {
    std::env::var_os("ASL_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

pub fn run_python(args: &[&str]) -> String {
    let output = Command::new(python())
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); run `make venv` first", python().display()));
    assert!(
        output.status.success(),
        "python {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Exports a randomly initialised timm model with `models/export.py`.
pub fn export_model(model: &str, classes: usize, size: usize, out: &Path) {
    export_model_with(model, classes, size, out, &[]);
}

/// [`export_model`] with more `models/export.py` arguments (`--head ml-decoder`).
pub fn export_model_with(model: &str, classes: usize, size: usize, out: &Path, extra: &[&str]) {
    let (classes, size) = (classes.to_string(), size.to_string());
    let mut args = vec!["models/export.py", "--model", model, "--num-classes", &classes, "--img-size", &size];
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    run_python(&args);
}

/// Runs `model` on `input` (`[n, c, h, w]`, row-major f32) in Python and returns its flat output.
pub fn python_forward(model: &Path, input: &[f32], shape: [usize; 4], dir: &Path) -> Vec<f32> {
    let input_path = dir.join("input.f32");
    let output_path = dir.join("output.f32");
    std::fs::write(&input_path, input.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let shape: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
    let mut args = vec!["tests/support/torchscript_forward.py", model.to_str().unwrap(), input_path.to_str().unwrap()];
    args.extend(shape.iter().map(String::as_str));
    args.push(output_path.to_str().unwrap());
    run_python(&args);
    std::fs::read(&output_path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}
