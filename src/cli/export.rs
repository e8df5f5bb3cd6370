//! `asl export`: the built-in `models/export.py` run by the project's
//! python, so that converting a checkpoint needs neither a venv path nor
//! the checkout. The flags are the
//! script's own, passed through untouched (`asl export --help` shows them).

use anyhow::{bail, Context, Result};
use asl::model::{export_script, python};
use clap::Args;
use std::ffi::OsString;
use std::process::Command;

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct ExportArgs {
    /// models/export.py's arguments, e.g. --model tresnet_l --num-classes 80 --img-size 448 --out m.pt
    /// --weights hf-hub:timm/tresnet_l.miil_in1k_448.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<OsString>,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let (_scripts, script) = export_script()?;
    let python = python();
    let status = Command::new(&python)
        .arg(&script)
        .args(&args.args)
        .env("ASL_EXPORT_PROG", "asl export")
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !status.success() {
        // The script has printed its own error.
        bail!("{} models/export.py exited with {status}", python.display());
    }
    Ok(())
}
