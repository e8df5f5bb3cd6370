//! A c10d process group (Gloo or NCCL) and the collectives training uses,
//! on tch tensors, with the stop agreement and small values shared through
//! the rendezvous store. Every collective marks this rank as waiting on its
//! peers, so the watcher names a peer that is lost or stalled meanwhile; a
//! failed collective is reported with the ranks that stopped beating.

use super::error::{DistError, Result};
use super::launch::Launch;
use super::liveness::Liveness;
use super::watch::{InFlight, LostRankHandler, StoreAddress, WatchSetup, Watcher};
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
    /// How long a peer may beat without its training moving, while this rank waits on it, before it is
    /// named as stalled.
    pub stall_timeout: Duration,
    /// Told after the group was aborted for a lost peer.
    pub on_lost_rank: Option<LostRankHandler>,
    /// Keeps this group's store keys apart from another group's of the same
    /// launch and attempt (the run's name: an audit trains one run per fold).
    pub scope: String,
}

pub struct ProcessGroup {
    raw: *mut AslGroup,
    rank: usize,
    world_size: usize,
    backend: Backend,
    in_flight: Arc<AtomicUsize>,
    liveness: Arc<Liveness>,
    store: StoreAddress,
    /// Joined on drop, before the group is freed.
    watcher: Option<Watcher>,
}

// SAFETY: c10d's process groups and stores may be used from any thread; a group is moved to the thread that
// uses it (a set-up thread joins it and hands it over), never shared, and its watcher has its own handle.
unsafe impl Send for ProcessGroup {}

/// The group's pointer, used by the watcher thread only while the group lives (it is joined first).
struct GroupPointer(*mut AslGroup);
// SAFETY: the watcher only calls the group's abort, which is safe from another thread; the thread is
// joined before the group is freed.
unsafe impl Send for GroupPointer {}

/// The longest value [`ProcessGroup::store_get`] reads.
const STORE_VALUE_LIMIT: usize = 64 << 10;

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
        let prefix = format!("asl/attempt_{}/{}", launch.attempt, options.scope);
        let prefix = CString::new(prefix).map_err(|e| join_error(format!("the group's scope: {e}")))?;
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
        // SAFETY: the group is live; its heartbeat lives as long as it does.
        let liveness = Arc::new(Liveness::borrowed(unsafe { ffi::asl_group_liveness(raw) }, launch.world_size));
        let store = StoreAddress {
            address,
            host: if launch.agent_store {
                format!("torchrun's agent on {}", launch.master_addr)
            } else {
                format!("rank 0, on {}", launch.master_addr)
            },
        };
        let watch = WatchSetup {
            rank: launch.rank,
            world: launch.world_size,
            heartbeat_timeout: options.heartbeat_timeout,
            stall_timeout: options.stall_timeout,
            store: store.clone(),
            in_flight: Arc::clone(&in_flight),
        };
        let (group, handler) = (GroupPointer(raw), options.on_lost_rank.clone());
        let on_lost = Box::new(move |lost| {
            let group = &group;
            // SAFETY: the group outlives the watcher thread. A failed abort leaves the handler to end the wait.
            let _ = unsafe { ffi::asl_group_abort(group.0) };
            if let Some(handler) = &handler {
                (handler.0)(&lost);
            }
        });
        let watcher = Some(Watcher::start(Arc::clone(&liveness), watch, on_lost));
        Ok(Self { raw, rank: launch.rank, world_size: launch.world_size, backend, in_flight, liveness, store, watcher })
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

    /// The main loop moved (a batch, a validation batch, a checkpoint
    /// file), at optimizer step `step` (`None`: the same step as before):
    /// what the peers' watchers read as progress.
    pub fn record_progress(&self, step: Option<u64>) {
        self.liveness.record_progress(step);
    }

    /// This rank's heartbeat.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Whether every rank stops after optimizer step `step`, given whether
    /// this rank was asked to: a request at step k stops every rank after
    /// step k + 1. Sound however far a host runs ahead of its device: a rank
    /// cannot pass step k + 1 before every rank has checked step k (the
    /// native layer, `asl_stop_agree`). Call it at every optimizer step,
    /// with consecutive steps.
    pub fn agree_stop(&self, step: u64, requested: bool) -> Result<bool> {
        let _waiting = self.in_flight();
        let mut stop = 0;
        // SAFETY: the group is live; `stop` is written on success.
        let status = unsafe { ffi::asl_stop_agree(self.raw, step as i64, i32::from(requested), &mut stop) };
        self.check("the stop agreement", status)?;
        Ok(stop != 0)
    }

    /// Shares `value` under `key` with the other ranks (through the store).
    pub fn store_set(&self, key: &str, value: &[u8]) -> Result<()> {
        let key = CString::new(key).expect("store keys have no NUL");
        // SAFETY: both buffers outlive the call.
        let status = unsafe { ffi::asl_store_set(self.raw, key.as_ptr(), value.as_ptr(), value.len()) };
        self.check("a store write", status)
    }

    /// The value some rank set under `key`, waiting for it up to `distributed.timeout_s`.
    pub fn store_get(&self, key: &str) -> Result<Vec<u8>> {
        let _waiting = self.in_flight();
        let name = CString::new(key).expect("store keys have no NUL");
        let (mut value, mut length) = (vec![0u8; STORE_VALUE_LIMIT], 0);
        // SAFETY: `value` holds `STORE_VALUE_LIMIT` bytes; `length` is written on success.
        let status =
            unsafe { ffi::asl_store_get(self.raw, name.as_ptr(), value.as_mut_ptr(), value.len(), &mut length) };
        self.check("a store read", status)?;
        value.truncate(length);
        Ok(value)
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
        let _waiting = self.in_flight();
        let handles = ffi::handles(tensors.iter().copied());
        // SAFETY: the handles point to live tensors for the duration of the call.
        let status = unsafe { ffi::asl_allreduce_sum(self.raw, handles.as_ptr(), handles.len()) };
        self.check("allreduce", status)
    }

    /// Every tensor becomes rank `root`'s, in place.
    pub fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<()> {
        let _waiting = self.in_flight();
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
        let _waiting = self.in_flight();
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
        let _waiting = self.in_flight();
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
    /// gradient reduction), naming the ranks whose beats stopped (read
    /// twice, [`LOST_RANK_WAIT`] apart), or the store when it is gone.
    pub fn failure(&self, op: &'static str, message: String) -> DistError {
        let reading = || self.liveness.read(LOST_RANK_WAIT);
        let lost = match reading().and_then(|before| {
            std::thread::sleep(LOST_RANK_WAIT);
            reading().map(|after| (before, after))
        }) {
            Err(error) => format!(
                "the rendezvous store at {} (hosted by {}) no longer answers: {error}. ",
                self.store.address, self.store.host
            ),
            Ok((before, after)) => {
                let silent: Vec<String> = (0..self.world_size)
                    .filter(|&r| r != self.rank && before[r].beats == after[r].beats)
                    .map(|r| r.to_string())
                    .collect();
                match silent.as_slice() {
                    [] => String::new(),
                    ranks => format!("lost rank {} (its heartbeat stopped). ", ranks.join(", ")),
                }
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
