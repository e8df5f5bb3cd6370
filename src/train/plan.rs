//! What a launch resolves for a run, kept apart from the config. The
//! config is what the user wrote plus `--set`; it is saved as it is and is
//! what a restart compares. The plan is what this launch made of it and of
//! the machine: the processes, this one's place among them, its device and
//! backend, its loader threads. It is logged at start and saved beside the
//! config (`plan.json` in the run and in every checkpoint), so that a
//! restart on other machines, with other defaults resolved, is still the
//! same run. A changed plan is reported; the one change that cannot
//! continue a checkpoint taken mid-epoch, the number of processes, is
//! refused by name (`builder::check_resumable`).

use super::config::TrainConfig;
use crate::distributed::{Backend, Launch};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Device;

/// The plan's file, beside `config.yaml`.
pub const PLAN_FILE: &str = "plan.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPlan {
    /// Processes training together, and this one's rank.
    pub world_size: usize,
    pub rank: usize,
    /// This process's node and its place there.
    pub node: usize,
    pub local_rank: usize,
    pub local_world_size: usize,
    /// The device this process trains on (`cpu`, `cuda:1`).
    pub device: String,
    /// The collectives' backend among several processes.
    pub backend: Option<String>,
    /// Decode threads of this process's loaders: `data.threads` when set,
    /// else the CPUs its launcher gave it (or all of them when alone).
    pub loader_threads: usize,
    /// The launcher's restart count (torchrun, Slurm).
    pub attempt: u32,
}

impl RunPlan {
    /// The plan of this process for `config`, on `device`.
    pub fn resolve(config: &TrainConfig, launch: Option<&Launch>, device: Device, backend: Option<Backend>) -> Self {
        let loader_threads = match (config.data.threads, launch) {
            (0, Some(launch)) => launch.loader_threads(),
            (0, None) => std::thread::available_parallelism().map_or(1, usize::from),
            (threads, _) => threads,
        };
        let place = launch.map_or((1, 0, 0, 0, 1, 0), |l| {
            (l.world_size, l.rank, l.node, l.local_rank, l.local_world_size, l.attempt)
        });
        let (world_size, rank, node, local_rank, local_world_size, attempt) = place;
        Self {
            world_size,
            rank,
            node,
            local_rank,
            local_world_size,
            device: device_name(device),
            backend: backend.map(|b| format!("{b:?}").to_lowercase()),
            loader_threads,
            attempt,
        }
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        let processes = match self.world_size {
            1 => "1 process".to_string(),
            n => format!(
                "rank {} of {n} processes (node {}, local rank {} of {}), {}",
                self.rank,
                self.node,
                self.local_rank,
                self.local_world_size,
                self.backend.as_deref().unwrap_or("no backend")
            ),
        };
        let threads = if self.loader_threads == 1 {
            "1 loader thread".into()
        } else {
            format!("{} loader threads", self.loader_threads)
        };
        format!("plan: {processes}, {}, {threads}", self.device)
    }

    /// What differs from an earlier plan, each as `what: before → now`.
    pub fn changes_from(&self, before: &RunPlan) -> Vec<String> {
        let mut changes = Vec::new();
        let mut compare = |what: &str, a: String, b: String| {
            if a != b {
                changes.push(format!("{what}: {a} → {b}"));
            }
        };
        compare("processes", before.world_size.to_string(), self.world_size.to_string());
        compare("device", before.device.clone(), self.device.clone());
        compare("backend", format!("{:?}", before.backend), format!("{:?}", self.backend));
        compare("loader threads", before.loader_threads.to_string(), self.loader_threads.to_string());
        changes
    }

    /// The plan saved in a run or checkpoint directory, if it has one
    /// (checkpoints from before plans existed do not).
    pub fn read(dir: &Path) -> std::io::Result<Option<RunPlan>> {
        match std::fs::read_to_string(dir.join(PLAN_FILE)) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan always serialises")
    }
}

fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(index) => format!("cuda:{index}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
        Device::Cpu => "cpu".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(rank: usize, world: usize) -> Launch {
        Launch {
            rank,
            world_size: world,
            local_rank: rank,
            local_world_size: world,
            node: 0,
            master_addr: "127.0.0.1".into(),
            master_port: 1,
            agent_store: false,
            attempt: 0,
        }
    }

    #[test]
    fn the_config_keeps_its_threads_and_the_plan_resolves_them() {
        let config = TrainConfig::default();
        assert_eq!(config.data.threads, 0, "the default this test is about");
        let alone = RunPlan::resolve(&config, None, Device::Cpu, None);
        assert_eq!(alone.loader_threads, std::thread::available_parallelism().map_or(1, usize::from));
        let launched = RunPlan::resolve(&config, Some(&launch(1, 2)), Device::Cpu, Some(Backend::Gloo));
        assert_eq!(launched.loader_threads, launch(1, 2).loader_threads());
        assert_eq!((launched.rank, launched.world_size, launched.backend.as_deref()), (1, 2, Some("gloo")));
        assert_eq!(config.data.threads, 0, "resolving a plan leaves the config as the user wrote it");
        let pinned = TrainConfig { data: crate::data::DataConfig { threads: 3, ..config.data.clone() }, ..config };
        assert_eq!(RunPlan::resolve(&pinned, Some(&launch(0, 2)), Device::Cpu, None).loader_threads, 3);
    }

    #[test]
    fn changes_are_named_with_both_values() {
        let config = TrainConfig::default();
        let before = RunPlan::resolve(&config, Some(&launch(0, 2)), Device::Cpu, Some(Backend::Gloo));
        let mut now = before.clone();
        assert!(now.changes_from(&before).is_empty());
        now.loader_threads = before.loader_threads + 1;
        now.world_size = 4;
        let changes = now.changes_from(&before);
        assert_eq!(changes[0], "processes: 2 → 4");
        assert_eq!(changes[1], format!("loader threads: {} → {}", before.loader_threads, now.loader_threads));
    }
}
