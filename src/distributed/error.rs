#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("launch variable {0} is not set (torchrun sets it; under Slurm, export MASTER_ADDR from the job script)")]
    MissingVariable(&'static str),
    #[error("launch variable {name} is `{value}`, not a valid value")]
    Variable { name: &'static str, value: String },
    #[error("cannot join the process group at {address} as rank {rank}: {message}")]
    Join { rank: usize, address: String, message: String },
    #[error("{op} failed on rank {rank}: {lost}{message}")]
    Collective { rank: usize, op: &'static str, lost: String, message: String },
    #[error("gradient reduction failed on rank {rank}: {message}")]
    Reducer { rank: usize, message: String },
    #[error("the NCCL backend needs CUDA tensors, but the device is {0:?}; use distributed.backend: gloo on CPU")]
    NcclOnCpu(tch::Device),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = DistError> = std::result::Result<T, E>;
