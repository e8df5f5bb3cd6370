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
    /// This process's node: torchrun's `GROUP_RANK` or Slurm's `SLURM_NODEID`,
    /// so that any placement of ranks on nodes (cyclic, uneven) is right;
    /// without either, `rank / local_world_size` (ranks numbered node by node).
    pub node: usize,
    /// The rendezvous store's host and port.
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already hosts the store there: every rank connects as a client.
    pub agent_store: bool,
    /// torchrun's or Slurm's restart count: keys of an earlier attempt are
    /// not reused, and a restarted run continues from its last checkpoint.
    pub attempt: u32,
}

/// How many times the launcher has restarted this job: torchrun's
/// `TORCHELASTIC_RESTART_COUNT` or Slurm's `SLURM_RESTART_COUNT` (a requeued
/// job), 0 for a first start. Read for one process too, since a requeued
/// one-task Slurm job is a plain run that must still continue.
pub fn restart_count(var: impl Fn(&str) -> Option<String>) -> Result<u32> {
    let mut count = 0;
    for name in ["TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT"] {
        if let Some(value) = var(name) {
            let parsed = value.trim().parse::<u32>().map_err(|_| DistError::Variable { name, value })?;
            count = count.max(parsed);
        }
    }
    Ok(count)
}

impl Launch {
    /// From this process's environment.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From `var`: torchrun's `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
    /// `LOCAL_WORLD_SIZE`, `GROUP_RANK`, `MASTER_ADDR`, `MASTER_PORT`; else
    /// Slurm's `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`,
    /// `SLURM_NODEID`, `SLURM_NTASKS_PER_NODE` with `MASTER_ADDR` (and
    /// `MASTER_PORT`, 29500 by default) set by the job script. A Slurm job of
    /// one task is a plain run.
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
        let (rank, world_size, local_rank, local_world_size, node, default_port) =
            match (number("RANK")?, number("WORLD_SIZE")?) {
                (Some(rank), Some(world)) => {
                    let local = number("LOCAL_RANK")?.unwrap_or(rank);
                    let local_world = number("LOCAL_WORLD_SIZE")?.unwrap_or(world).max(1);
                    let node = number("GROUP_RANK")?.unwrap_or(rank / local_world);
                    (rank, world, local, local_world, node, None)
                }
                (Some(_), None) => return Err(DistError::MissingVariable("WORLD_SIZE")),
                (None, Some(_)) => return Err(DistError::MissingVariable("RANK")),
                (None, None) => match (number("SLURM_PROCID")?, number("SLURM_NTASKS")?) {
                    (Some(rank), Some(world)) if world > 1 => {
                        let local = number("SLURM_LOCALID")?.unwrap_or(0);
                        let spec = var("SLURM_TASKS_PER_NODE").or_else(|| var("SLURM_NTASKS_PER_NODE"));
                        let first_node = spec.as_deref().and_then(|s| tasks_on_node(s, 0)).unwrap_or(1);
                        let node = number("SLURM_NODEID")?.unwrap_or(rank / first_node.max(1));
                        let here = spec.as_deref().and_then(|s| tasks_on_node(s, node)).unwrap_or(first_node);
                        (rank, world, local, here, node, Some(29500))
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
            node,
            master_addr: required("MASTER_ADDR")?,
            master_port: port(var("MASTER_PORT"), default_port)?,
            agent_store: var("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True"),
            attempt: restart_count(&var)?,
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

/// Tasks on node `node` by Slurm's compressed count, `2(x3),1` for three
/// nodes of 2 tasks then one of 1 (uneven placements included).
fn tasks_on_node(spec: &str, node: usize) -> Option<usize> {
    let mut counts = Vec::new();
    for part in spec.split(',') {
        let (count, repeat) = match part.split_once("(x") {
            Some((count, repeat)) => (count, repeat.trim_end_matches(')').trim().parse().ok()?),
            None => (part, 1),
        };
        let count: usize = count.trim().parse().ok()?;
        counts.extend(std::iter::repeat_n(count, repeat));
    }
    counts.get(node).copied()
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
            ("GROUP_RANK", "1"),
        ];
        let expected = Launch {
            rank: 3,
            world_size: 8,
            local_rank: 1,
            local_world_size: 2,
            node: 1,
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
        assert_eq!((got.node, got.attempt), (1, 0), "block layout without SLURM_NODEID: 5 / 4");
    }

    #[test]
    fn a_cyclic_placement_takes_the_node_from_the_launcher_not_from_the_rank() {
        // srun --distribution=cyclic over 2 nodes: ranks 0 and 2 on node 0, ranks 1 and 3 on node 1.
        for (rank, node, local) in [(0, 0, 0), (1, 1, 0), (2, 0, 1), (3, 1, 1)] {
            let (rank, node, local) = (rank.to_string(), node.to_string(), local.to_string());
            let vars = [
                ("SLURM_PROCID", rank.as_str()),
                ("SLURM_NTASKS", "4"),
                ("SLURM_LOCALID", local.as_str()),
                ("SLURM_NODEID", node.as_str()),
                ("SLURM_NTASKS_PER_NODE", "2(x2)"),
                ("MASTER_ADDR", "n0"),
            ];
            let got = launch(&vars).unwrap().unwrap();
            assert_eq!((got.node.to_string(), got.local_rank.to_string()), (node, local), "rank {rank}");
        }
    }

    #[test]
    fn slurm_task_counts_expand_per_node_even_when_uneven() {
        assert_eq!(
            (0..5).map(|n| tasks_on_node("2(x3),1", n)).collect::<Vec<_>>(),
            [Some(2), Some(2), Some(2), Some(1), None]
        );
        assert_eq!(tasks_on_node("4", 0), Some(4));
        assert_eq!(tasks_on_node("x", 0), None);
    }

    #[test]
    fn a_requeued_slurm_job_counts_as_a_restart_even_alone() {
        let vars: HashMap<&str, &str> =
            [("SLURM_RESTART_COUNT", "1"), ("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")].into_iter().collect();
        let var = |name: &str| vars.get(name).map(|v| v.to_string());
        assert_eq!(Launch::from_vars(var).unwrap(), None, "one task is a plain run");
        assert_eq!(restart_count(var).unwrap(), 1);
        assert_eq!(restart_count(|_| None).unwrap(), 0);
        let bad = restart_count(|name| (name == "SLURM_RESTART_COUNT").then(|| "x".to_string()));
        assert!(bad.unwrap_err().to_string().contains("SLURM_RESTART_COUNT"));
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
