//! Choosing the device a run or an evaluation uses.

use super::error::{ModelError, Result};
use tch::Device;

/// `auto` (CUDA 0 when available), `cpu`, `cuda` or `cuda:N`.
pub fn resolve_device(name: &str) -> Result<Device> {
    let error = |message: String| ModelError::Device { name: name.to_string(), message };
    let device = match name {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => return resolve_device("cuda:0"),
        other => {
            let index = other.strip_prefix("cuda:").and_then(|i| i.parse::<usize>().ok());
            let index = index.ok_or_else(|| error("expected auto, cpu, cuda or cuda:N".into()))?;
            let available = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
            if index >= available {
                return Err(error(format!("{available} CUDA devices are available")));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_device_it_cannot_use() {
        assert_eq!(resolve_device("cpu").unwrap(), Device::Cpu);
        let err = resolve_device("gpu").unwrap_err().to_string();
        assert_eq!(err, "cannot use device `gpu`: expected auto, cpu, cuda or cuda:N");
        let err = resolve_device("cuda:99").unwrap_err().to_string();
        assert!(
            err.starts_with("cannot use device `cuda:99`: ") && err.ends_with("CUDA devices are available"),
            "{err}"
        );
    }
}
