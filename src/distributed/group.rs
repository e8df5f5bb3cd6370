//! A c10d process group (Gloo or NCCL) and the collectives training uses,
//! on tch tensors. A failed collective is reported with the ranks that
//! stopped beating: a killed rank is named, not waited for.

use super::error::{DistError, Result};
use super::launch::Launch;
use super::watch::{InFlight, LostRankHandler, WatchSetup, Watcher};
use crate::native::{self as ffi, AslGroup};
use std::ffi::CString;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tch::{Device, Tensor};

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// CPU tensors, over TCP.
    Gloo,
    /// CUDA tensors, over NVLink, PCIe or InfiniBand.
    Nccl,
}

/// How long a survivor waits, after a failed collective, to see which
/// heartbeats stopped (the native layer beats every 250 ms).
const LOST_RANK_WAIT: Duration = Duration::from_millis(1500);

/// How to join a group and watch it.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub backend: Backend,
    /// This rank's CUDA device under NCCL.
    pub device: Device,
    /// How long a rendezvous or a collective may wait.
    pub timeout: Duration,
    /// How long a peer's heartbeat may stay silent while this rank waits on it before it is taken as lost.
    pub heartbeat_timeout: Duration,
    /// Told after the group was aborted for a lost peer.
    pub on_lost_rank: Option<LostRankHandler>,
}

pub struct ProcessGroup {
    raw: *mut AslGroup,
    rank: usize,
    world_size: usize,
    backend: Backend,
    in_flight: Arc<AtomicUsize>,
    /// Joined on drop, before the group is freed.
    watcher: Option<Watcher>,
}

impl ProcessGroup {
    /// Joins the group `launch` describes: rendezvous through the TCPStore
    /// at `MASTER_ADDR:MASTER_PORT` (hosted by torchrun's agent, or else by
    /// rank 0), then the backend's own connections, and starts watching
    /// the peers' heartbeats. Fails after the timeout if peers do not come.
    pub fn join(launch: &Launch, options: &GroupOptions) -> Result<Self> {
        let GroupOptions { backend, device, timeout, .. } = *options;
        let address = format!("{}:{}", launch.master_addr, launch.master_port);
        let join_error = |message: String| DistError::Join { rank: launch.rank, address: address.clone(), message };
        let device_index = match (backend, device) {
            (Backend::Nccl, Device::Cuda(index)) => index as i32,
            (Backend::Nccl, other) => return Err(DistError::NcclOnCpu(other)),
            (Backend::Gloo, _) => -1,
        };
        let host = CString::new(launch.master_addr.as_str()).map_err(|e| join_error(e.to_string()))?;
        let prefix = CString::new(format!("asl/attempt_{}", launch.attempt)).expect("no NUL in the prefix");
        let timeout_s = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
        let mut raw = std::ptr::null_mut();
        // SAFETY: the strings outlive the call; `raw` is written on success only.
        let status = unsafe {
            ffi::asl_group_new(
                backend as i32,
                host.as_ptr(),
                i32::from(launch.master_port),
                i32::from(launch.is_main() && !launch.agent_store),
                prefix.as_ptr(),
                launch.rank as i32,
                launch.world_size as i32,
                device_index,
                timeout_s,
                &mut raw,
            )
        };
        if status != 0 {
            return Err(join_error(ffi::last_error()));
        }
        let in_flight = Arc::new(AtomicUsize::new(0));
        let watch = WatchSetup {
            rank: launch.rank,
            world: launch.world_size,
            rank0_hosts_store: !launch.agent_store,
            timeout: options.heartbeat_timeout,
            in_flight: Arc::clone(&in_flight),
            handler: options.on_lost_rank.clone(),
        };
        let watcher = Some(Watcher::start(raw, watch));
        Ok(Self { raw, rank: launch.rank, world_size: launch.world_size, backend, in_flight, watcher })
    }

    /// Marks this rank as waiting on its peers until the guard drops: a
    /// peer whose heartbeat stops meanwhile is named and the group aborted.
    pub fn in_flight(&self) -> InFlight {
        InFlight::enter(&self.in_flight)
    }

    /// Bytes this rank has put into broadcasts since it joined.
    pub fn bytes_broadcast(&self) -> u64 {
        // SAFETY: the group is live.
        unsafe { ffi::asl_broadcast_bytes(self.raw) }.max(0) as u64
    }

    /// Asks every rank to stop after optimizer step `step`, unless a rank
    /// asked first; returns the step all ranks stop after.
    pub fn propose_stop(&self, step: u64) -> Result<u64> {
        let mut agreed = -1i64;
        // SAFETY: the group is live; `agreed` is written on success.
        let status = unsafe { ffi::asl_stop_propose(self.raw, step as i64, &mut agreed) };
        self.check("the stop request", status)?;
        Ok(agreed.max(0) as u64)
    }

    /// The step every rank stops after, once any rank has asked (one store
    /// round trip, no device work).
    pub fn agreed_stop(&self) -> Result<Option<u64>> {
        let mut agreed = -1i64;
        // SAFETY: as for `propose_stop`.
        let status = unsafe { ffi::asl_stop_agreed(self.raw, &mut agreed) };
        self.check("the stop request", status)?;
        Ok(u64::try_from(agreed).ok())
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where tensors for this group's collectives live: the CPU under Gloo,
    /// `compute` (a GPU) under NCCL.
    pub fn tensor_device(&self, compute: Device) -> Device {
        match self.backend {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => compute,
        }
    }

    /// Whether this rank owns side effects: checkpoints, logs, the console.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    pub(super) fn raw(&self) -> *mut AslGroup {
        self.raw
    }

    /// Every tensor becomes the sum of its copies on all ranks, in place.
    /// They travel as one buffer, so they must share a dtype and a device
    /// (CPU under Gloo, CUDA under NCCL).
    pub fn allreduce_sum(&self, tensors: &[&Tensor]) -> Result<()> {
        let handles = ffi::handles(tensors.iter().copied());
        // SAFETY: the handles point to live tensors for the duration of the call.
        let status = unsafe { ffi::asl_allreduce_sum(self.raw, handles.as_ptr(), handles.len()) };
        self.check("allreduce", status)
    }

    /// Every tensor becomes rank `root`'s, in place.
    pub fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<()> {
        let handles = ffi::handles(tensors.iter().copied());
        // SAFETY: as for `allreduce_sum`.
        let status = unsafe { ffi::asl_broadcast(self.raw, handles.as_ptr(), handles.len(), root as i32) };
        self.check("broadcast", status)
    }

    /// Every rank's `input` into `output` on rank `root`, rank after rank
    /// along the first dimension (`output` holds world × `input`'s rows
    /// there, and is not touched elsewhere). The inputs must have the same
    /// shape on every rank.
    pub fn gather(&self, input: &Tensor, output: &Tensor, root: usize) -> Result<()> {
        // SAFETY: both handles point to live tensors for the duration of the call.
        let status = unsafe { ffi::asl_gather(self.raw, ffi::handle(input), ffi::handle(output), root as i32) };
        self.check("gather", status)
    }

    /// Every rank's `bytes` on rank 0, in rank order (`None` elsewhere):
    /// the lengths are summed first, then each share is padded to the
    /// longest, as c10d's gather wants equal sizes. `device` is where the
    /// compute runs (the transfer uses [`tensor_device`](Self::tensor_device)).
    pub fn gather_bytes(&self, bytes: &[u8], device: Device) -> Result<Option<Vec<Vec<u8>>>> {
        let on_group = self.tensor_device(device);
        let lengths = Tensor::f_zeros([self.world_size as i64], (tch::Kind::Int64, on_group))?;
        let _ = lengths.f_narrow(0, self.rank as i64, 1)?.f_fill_(bytes.len() as i64)?;
        self.allreduce_sum(&[&lengths])?;
        let lengths = Vec::<i64>::try_from(lengths.f_to_device(Device::Cpu)?)?;
        let longest = lengths.iter().copied().max().unwrap_or(0).max(1);
        let mut padded = bytes.to_vec();
        padded.resize(longest as usize, 0);
        let input = Tensor::f_from_slice(&padded)?.f_to_device(on_group)?;
        let output = Tensor::f_zeros([longest * self.world_size as i64], (tch::Kind::Uint8, on_group))?;
        self.gather(&input, &output, 0)?;
        if !self.is_main() {
            return Ok(None);
        }
        let all = Vec::<u8>::try_from(output.f_to_device(Device::Cpu)?)?;
        let shares = all.chunks(longest as usize).zip(&lengths).map(|(share, &len)| share[..len as usize].to_vec());
        Ok(Some(shares.collect()))
    }

    /// Returns when every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: the group is live.
        let status = unsafe { ffi::asl_barrier(self.raw) };
        self.check("barrier", status)
    }

    pub(super) fn check(&self, op: &'static str, status: i32) -> Result<()> {
        match status {
            0 => Ok(()),
            _ => Err(self.failure(op, ffi::last_error())),
        }
    }

    /// The error of a failed collective (here, or inside backward's
    /// gradient reduction), naming the ranks that stopped beating, or rank
    /// 0 when the store it hosts is gone.
    pub fn failure(&self, op: &'static str, message: String) -> DistError {
        let mut lost = vec![0i32; self.world_size];
        let wait = LOST_RANK_WAIT.as_millis() as i32;
        // SAFETY: `lost` has one slot per rank.
        let found = unsafe { ffi::asl_lost_ranks(self.raw, wait, lost.as_mut_ptr()) } == 0;
        let lost: Vec<usize> = lost.iter().enumerate().filter(|(_, &l)| l != 0).map(|(r, _)| r).collect();
        let lost = match (found, lost.as_slice()) {
            (false, _) if self.rank != 0 => "lost rank 0 (the host of the rendezvous store no longer answers). ".into(),
            (true, []) | (false, _) => String::new(),
            (true, ranks) => {
                let names: Vec<String> = ranks.iter().map(usize::to_string).collect();
                format!("lost rank {} (its heartbeat stopped). ", names.join(", "))
            }
        };
        DistError::Collective { rank: self.rank, op, lost, message }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        drop(self.watcher.take());
        // SAFETY: `raw` came from `asl_group_new` and is freed once, after its watcher stopped.
        unsafe { ffi::asl_group_free(self.raw) }
    }
}

/// Whether this build can create NCCL groups (its CUDA headers were present).
pub fn nccl_compiled() -> bool {
    // SAFETY: reads a constant.
    unsafe { ffi::asl_nccl_compiled() != 0 }
}
