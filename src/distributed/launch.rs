//! Where this process sits in a launch, from the variables torchrun (or
//! Slurm's srun) sets. With none of them set, there is no launch: one
//! process, no process group, and nothing changes.

use super::error::{DistError, Result};

/// One process of a multi-process run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    /// The rank among the processes of this node: its CUDA device.
    pub local_rank: usize,
    /// Processes on this node (for splitting the CPU cores among them).
    pub local_world_size: usize,
    /// The rendezvous store's host and port.
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already hosts the store there: every rank connects as a client.
    pub agent_store: bool,
    /// torchrun's restart count: keys of an earlier attempt are not reused.
    pub attempt: u32,
}

impl Launch {
    /// From this process's environment.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From `var`: torchrun's `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
    /// `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`; else Slurm's
    /// `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`,
    /// `SLURM_NTASKS_PER_NODE` with `MASTER_ADDR` (and `MASTER_PORT`, 29500
    /// by default) set by the job script. A Slurm job of one task is a plain run.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let number = |name: &'static str| -> Result<Option<usize>> {
            var(name).map(|v| v.trim().parse::<usize>().map_err(|_| DistError::Variable { name, value: v })).transpose()
        };
        let required = |name: &'static str| -> Result<String> {
            var(name).filter(|v| !v.trim().is_empty()).ok_or(DistError::MissingVariable(name))
        };
        let port = |value: Option<String>, default: Option<u16>| -> Result<u16> {
            match value {
                Some(v) => v.trim().parse().map_err(|_| DistError::Variable { name: "MASTER_PORT", value: v }),
                None => default.ok_or(DistError::MissingVariable("MASTER_PORT")),
            }
        };
        let (rank, world_size, local_rank, local_world_size, default_port) =
            match (number("RANK")?, number("WORLD_SIZE")?) {
                (Some(rank), Some(world)) => {
                    let local = number("LOCAL_RANK")?.unwrap_or(rank);
                    (rank, world, local, number("LOCAL_WORLD_SIZE")?.unwrap_or(world), None)
                }
                (Some(_), None) => return Err(DistError::MissingVariable("WORLD_SIZE")),
                (None, Some(_)) => return Err(DistError::MissingVariable("RANK")),
                (None, None) => match (number("SLURM_PROCID")?, number("SLURM_NTASKS")?) {
                    (Some(rank), Some(world)) if world > 1 => {
                        let local = number("SLURM_LOCALID")?.unwrap_or(0);
                        let per_node = var("SLURM_NTASKS_PER_NODE")
                            .and_then(|v| v.split('(').next().and_then(|n| n.trim().parse().ok()))
                            .unwrap_or(1);
                        (rank, world, local, per_node, Some(29500))
                    }
                    _ => return Ok(None),
                },
            };
        if world_size == 0 || rank >= world_size {
            return Err(DistError::Variable { name: "RANK", value: format!("{rank} of a world of {world_size}") });
        }
        Ok(Some(Self {
            rank,
            world_size,
            local_rank,
            local_world_size: local_world_size.max(1),
            master_addr: required("MASTER_ADDR")?,
            master_port: port(var("MASTER_PORT"), default_port)?,
            agent_store: var("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True"),
            attempt: number("TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0) as u32,
        }))
    }

    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// The CUDA device of this process: its local rank, wrapped around the
    /// devices it sees (under Slurm with one visible GPU per task, every
    /// task's device is 0).
    pub fn cuda_device(&self, visible: usize) -> usize {
        self.local_rank % visible.max(1)
    }

    /// Loader threads for this process: the CPUs it may run on when the
    /// launcher bound it to some of them (`srun --cpu-bind`, `taskset`,
    /// `numactl`, torchrun's `--numa-binding`), which are its own already;
    /// else an equal share of the node's among its local processes.
    pub fn loader_threads(&self) -> usize {
        // SAFETY: sysconf reads a system constant.
        let online = usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).unwrap_or(1);
        loader_threads(allowed_cpus().unwrap_or(online), online, self.local_world_size)
    }
}

/// How many CPUs this process's affinity mask allows.
fn allowed_cpus() -> Option<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled by sched_getaffinity for this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
            .then(|| libc::CPU_COUNT(&set) as usize)
    }
}

fn loader_threads(allowed: usize, online: usize, local_processes: usize) -> usize {
    let bound = allowed < online;
    if bound {
        allowed.max(1)
    } else {
        (allowed / local_processes.max(1)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(pairs: &[(&str, &str)]) -> Result<Option<Launch>> {
        let vars: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Launch::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn loader_threads_divide_the_node_unless_the_launcher_bound_the_process() {
        assert_eq!(loader_threads(64, 64, 8), 8, "unbound: a share of the node");
        assert_eq!(loader_threads(8, 64, 8), 8, "bound to 8 CPUs: all of them, not 8 / 8");
        assert_eq!(loader_threads(2, 2, 4), 1, "never none");
    }

    #[test]
    fn the_cuda_device_wraps_around_the_visible_ones() {
        let launch = Launch::from_vars(|name| {
            [("RANK", "5"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "5"), ("MASTER_ADDR", "n"), ("MASTER_PORT", "1")]
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
        .unwrap();
        assert_eq!((launch.cuda_device(8), launch.cuda_device(1), launch.cuda_device(2)), (5, 0, 1));
    }

    #[test]
    fn no_variables_no_launch() {
        assert_eq!(launch(&[]).unwrap(), None);
        assert_eq!(launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]).unwrap(), None);
    }

    #[test]
    fn torchrun_variables() {
        let vars = [
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ];
        let expected = Launch {
            rank: 3,
            world_size: 8,
            local_rank: 1,
            local_world_size: 2,
            master_addr: "node0".into(),
            master_port: 29400,
            agent_store: true,
            attempt: 2,
        };
        assert_eq!(launch(&vars).unwrap(), Some(expected));
    }

    #[test]
    fn slurm_variables_map_to_ranks() {
        let vars = [
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS_PER_NODE", "4(x2)"),
            ("MASTER_ADDR", "gpu-17"),
        ];
        let got = launch(&vars).unwrap().unwrap();
        assert_eq!((got.rank, got.world_size, got.local_rank, got.local_world_size), (5, 8, 1, 4));
        assert_eq!((got.master_addr.as_str(), got.master_port, got.agent_store), ("gpu-17", 29500, false));
    }

    #[test]
    fn bad_or_missing_variables_are_named() {
        let err = launch(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")]).unwrap_err().to_string();
        assert!(err.contains("MASTER_ADDR"), "{err}");
        let err = launch(&[("RANK", "x"), ("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(err.contains("RANK") && err.contains("`x`"), "{err}");
        let err = launch(&[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")]);
        assert!(err.unwrap_err().to_string().contains("2 of a world of 2"));
        assert!(launch(&[("WORLD_SIZE", "2")]).unwrap_err().to_string().contains("RANK"));
    }
}
