//! Arguments shared by `asl validate` and `asl infer`: which model, on which device.

use anyhow::{bail, Result};
use asl::model::{resolve_device, Network, EMA_FILE, MODEL_FILE};

/// The config a checkpoint directory holds beside its model (`asl train` writes it).
const CONFIG_FILE: &str = "config.yaml";
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ModelArgs {
    /// A TorchScript model (.pt, with its .json card beside it) or a checkpoint directory.
    #[arg(long)]
    pub model: PathBuf,
    /// With a checkpoint directory: use its EMA weights.
    #[arg(long)]
    pub ema: bool,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Input side S; defaults to the model card's input size.
    #[arg(long)]
    pub image_size: Option<u32>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
}

impl ModelArgs {
    /// The model file: `--model` itself, or `model.pt` / `ema.pt` inside a checkpoint directory.
    pub fn model_file(&self) -> Result<PathBuf> {
        if self.model.is_dir() {
            return Ok(self.model.join(if self.ema { EMA_FILE } else { MODEL_FILE }));
        }
        if self.ema {
            bail!("--ema needs a checkpoint directory, but {} is a file", self.model.display());
        }
        Ok(self.model.clone())
    }

    /// The config of the run the model was trained in, when `--model` is a
    /// checkpoint directory or a file inside one (`config.yaml` beside it).
    pub fn checkpoint_config(&self) -> Option<PathBuf> {
        let dir = if self.model.is_dir() { self.model.clone() } else { self.model.parent()?.to_path_buf() };
        Some(dir.join(CONFIG_FILE)).filter(|p| p.is_file())
    }

    /// Loads the network in eval mode and returns it with the input size to
    /// use and its number of classes.
    pub fn load(&self) -> Result<(Network, u32, usize)> {
        let device = resolve_device(&self.device)?;
        let mut network = Network::load(&self.model_file()?, device)?;
        let size = match self.image_size {
            Some(size) => size,
            None => u32::try_from(network.card().input_size)?,
        };
        let classes = network.check_input_size(i64::from(size))?;
        network.set_train(false)?;
        Ok((network, size, usize::try_from(classes)?))
    }
}
