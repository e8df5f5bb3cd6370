//! Turning a config into datasets and a device.

use crate::config::{ConfigError, DataSection, SourceKind, TrainConfig};
use crate::data::sources::{load_list, load_voc, CocoOptions, CocoSplit, ListOptions};
use crate::data::{DataError, Dataset, LoaderConfig};
use tch::Device;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

/// Loads the train or validation split that `data` describes.
pub fn load_split(data: &DataSection, split: Split) -> Result<Dataset, DataError> {
    let root = data.path.as_ref().ok_or_else(|| DataError::Option {
        name: "data.path",
        message: "no dataset given: pass --data PATH or set data.path".into(),
    })?;
    let name = if split == Split::Train { &data.train_split } else { &data.val_split };
    let dataset = match data.source {
        SourceKind::Coco => CocoSplit::find(root, name)?
            .load(&CocoOptions { drop_unannotated: data.drop_unannotated, crowd: data.crowd })?,
        SourceKind::Voc => load_voc(root, name, data.difficult)?,
        SourceKind::List => {
            let options = ListOptions { label_separator: data.label_separator, classes: None };
            let train = load_list(root, &options)?;
            match (split, &data.val_path) {
                (Split::Train, _) => train,
                (Split::Val, Some(val)) => {
                    load_list(val, &ListOptions { classes: Some(train.class_names), ..options })?
                }
                (Split::Val, None) => {
                    return Err(DataError::Option {
                        name: "data.val_path",
                        message: "a list dataset needs a validation list".into(),
                    })
                }
            }
        }
    };
    if dataset.is_empty() {
        return Err(DataError::Empty(root.clone()));
    }
    Ok(dataset)
}

/// Single-label training needs exactly one positive per image.
pub fn check_single_label(dataset: &Dataset) -> Result<(), super::TrainError> {
    match dataset.samples.iter().find(|s| s.positives.len() != 1) {
        Some(s) => Err(super::TrainError::NotSingleLabel { path: s.path.clone(), count: s.positives.len() }),
        None => Ok(()),
    }
}

/// `auto` (CUDA 0 when available), `cpu`, `cuda` or `cuda:N`.
pub fn resolve_device(name: &str) -> Result<Device, ConfigError> {
    let error = |message: String| ConfigError::Key { key: "device".into(), message };
    let device = match name {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => return resolve_device("cuda:0"),
        other => {
            let index = other.strip_prefix("cuda:").and_then(|i| i.parse::<usize>().ok());
            let index = index.ok_or_else(|| error(format!("`{other}` is not auto, cpu, cuda or cuda:N")))?;
            let available = tch::Cuda::device_count() as usize;
            if index >= available {
                return Err(error(format!("`{other}` requested but {available} CUDA devices are available")));
            }
            Device::Cuda(index)
        }
    };
    if device.is_cuda() {
        // Every batch is N×3×S×S, so cuDNN's per-shape autotuning is paid once and then reused.
        tch::Cuda::cudnn_set_benchmark(true);
    }
    Ok(device)
}

/// The training loader settings a config describes (shuffled, augmented).
pub fn train_loader_config(config: &TrainConfig) -> LoaderConfig {
    let d = &config.data;
    LoaderConfig {
        batch_size: d.batch_size,
        image_size: d.image_size,
        shuffle: true,
        drop_last: d.drop_last,
        augment: d.augment,
        prefetch: d.prefetch,
        threads: d.threads,
        strict: d.strict,
        seed: config.seed,
    }
}

/// The validation loader settings (dataset order, no augmentation).
pub fn val_loader_config(config: &TrainConfig) -> LoaderConfig {
    let d = &config.data;
    let batch = d.val_batch_size.unwrap_or(d.batch_size);
    LoaderConfig {
        prefetch: d.prefetch,
        threads: d.threads,
        strict: d.strict,
        ..LoaderConfig::evaluation(batch, d.image_size)
    }
}
