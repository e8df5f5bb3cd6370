// The c10d half of asl's native layer: process groups (Gloo on CPU, NCCL on
// CUDA) over a TCPStore rendezvous, coalesced collectives on tch tensors,
// libtorch's own DDP Reducer, each rank's heartbeat (liveness.cpp), an abort
// for a group whose peer is gone, and a stop agreed through the store.
//
// Conventions in guard.hpp. Tensors arrive as tch's handles, `at::Tensor*`,
// and are copied shallowly (same TensorImpl), so in-place collectives change
// tch's tensors.

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#ifdef ASL_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <ATen/ATen.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "guard.hpp"
#include "liveness.hpp"

namespace {
thread_local std::string last_error;
}  // namespace

namespace asl_detail {
void set_last_error(const std::string& message) { last_error = message; }
}  // namespace asl_detail

namespace {

constexpr int kGloo = 0;
constexpr int kNccl = 1;

// A stop step's key counts the ranks that reached it in its low 32 bits and
// the ranks asked to stop there above them.
constexpr int64_t kStopFlag = int64_t(1) << 32;

std::string stop_key(int64_t step) { return "stop/" + std::to_string(step); }

std::vector<at::Tensor> shallow(at::Tensor** tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*tensors[i]);
  return out;
}

int64_t bytes_of(const std::vector<at::Tensor>& tensors) {
  int64_t bytes = 0;
  for (const auto& t : tensors) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  return bytes;
}

}  // namespace

struct AslGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank = 0;
  int world = 1;
  // Created before the backend, whose rendezvous then proves every rank's first heartbeat is in the store.
  std::unique_ptr<AslLiveness> liveness;
  // Bytes this rank has sent into broadcasts, for checking what a step costs.
  std::atomic<int64_t> broadcast_bytes{0};
  // The first step this group agreed on stopping at (-1 before any).
  int64_t stop_first = -1;
};

struct AslReducer {
  std::shared_ptr<c10d::Reducer> reducer;
};

extern "C" {

const char* asl_last_error() { return last_error.c_str(); }

int asl_nccl_compiled() {
#ifdef ASL_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// `server`: whether this process hosts the store (rank 0 without torchrun's
// agent store). `device`: the CUDA ordinal for NCCL, ignored for Gloo.
int asl_group_new(int backend, const char* host, int port, int server, const char* prefix, int rank, int world,
                  int device, int timeout_s, AslGroup** out) {
  ASL_GUARD(
    auto group = std::make_unique<AslGroup>();
    group->rank = rank;
    group->world = world;
    group->store = asl_detail::connect_store(host, port, server != 0, true, world, timeout_s, prefix);
    AslLiveness* liveness = nullptr;
    if (asl_liveness_new(host, port, prefix, rank, world, timeout_s, &liveness) != 0) {
      throw std::runtime_error("cannot start the heartbeat: " + last_error);
    }
    group->liveness.reset(liveness);
    group->group = c10::make_intrusive<c10d::ProcessGroup>(group->store, rank, world);
    auto timeout = std::chrono::milliseconds(std::chrono::seconds(timeout_s));
    if (backend == kGloo) {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      group->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(group->store, rank, world, options);
      group->group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::GLOO, group->backend);
      group->group->setDefaultBackend(c10d::ProcessGroup::GLOO);
    } else if (backend == kNccl) {
#ifdef ASL_WITH_NCCL
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(group->store, rank, world, options);
      // Binding the device creates the communicator now, not at the first collective.
      nccl->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
      group->backend = nccl;
      group->group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::NCCL, group->backend);
      group->group->setDefaultBackend(c10d::ProcessGroup::NCCL);
#else
      throw std::runtime_error("this asl was built without NCCL (its CUDA headers were missing at build time)");
#endif
    } else {
      throw std::invalid_argument("unknown backend " + std::to_string(backend));
    }
    *out = group.release();
  )
}

void asl_group_free(AslGroup* group) {
  try {
    delete group;
  } catch (...) {
  }
}

// In place: every tensor becomes the sum of its copies on all ranks. Several
// tensors travel as one flat buffer (they must share a dtype and device).
int asl_allreduce_sum(AslGroup* group, at::Tensor** tensors, size_t n) {
  ASL_GUARD(
    auto parts = shallow(tensors, n);
    if (parts.empty()) return 0;
    if (parts.size() == 1 && parts[0].is_contiguous()) {
      std::vector<at::Tensor> buffer{parts[0]};
      group->backend->allreduce(buffer)->wait();
      return 0;
    }
    std::vector<at::Tensor> flat;
    std::vector<int64_t> sizes;
    for (auto& t : parts) {
      flat.push_back(t.reshape({-1}));
      sizes.push_back(t.numel());
    }
    std::vector<at::Tensor> buffer{at::cat(flat)};
    group->backend->allreduce(buffer)->wait();
    auto outs = buffer[0].split_with_sizes(sizes);
    for (size_t i = 0; i < parts.size(); ++i) parts[i].copy_(outs[i].view_as(parts[i]));
  )
}

// In place: every tensor becomes rank `root`'s.
int asl_broadcast(AslGroup* group, at::Tensor** tensors, size_t n, int root) {
  ASL_GUARD(
    if (n == 0) return 0;
    auto parts = shallow(tensors, n);
    group->broadcast_bytes += bytes_of(parts);
    c10d::broadcast_coalesced(group->group, parts, 256u << 20, root);
  )
}

int64_t asl_broadcast_bytes(AslGroup* group) { return group->broadcast_bytes.load(); }

// Every rank's `input` (the same shape on every rank) into `output` on
// `root`, rank after rank along the first dimension; `output` is ignored
// elsewhere. Nobody but the root receives anything.
int asl_gather(AslGroup* group, at::Tensor* input, at::Tensor* output, int root) {
  ASL_GUARD(
    std::vector<at::Tensor> inputs{*input};
    std::vector<std::vector<at::Tensor>> outputs;
    if (group->rank == root) outputs.push_back(output->chunk(group->world, 0));
    c10d::GatherOptions options;
    options.rootRank = root;
    group->backend->gather(outputs, inputs, options)->wait();
  )
}

// Aborts the group's communicators (NCCL: ncclCommAbort, which frees a host
// or a kernel that waits for a lost peer; Gloo has nothing to abort).
int asl_group_abort(AslGroup* group) { ASL_GUARD(group->group->abort();) }

// Whether every rank stops after optimizer step `step`: each rank adds its
// request to the step's key, then reads the previous step's, waiting until
// every rank has added to it. A request made at step k therefore stops every
// rank after step k + 1, however far a host runs ahead of its device (or of
// the other hosts): no rank passes its check of step k + 1 before every rank
// has made its check of step k. Two round trips a step; the first call only
// contributes. Rank 0 deletes the keys no rank reads any more.
int asl_stop_agree(AslGroup* group, int64_t step, int requested, int* stop) {
  ASL_GUARD(
    *stop = 0;
    auto& store = group->store;
    auto key = stop_key(step);
    int64_t total = store->add(key, 1 + (requested ? kStopFlag : 0));
    if ((total & (kStopFlag - 1)) == group->world) store->set(key + "/all", std::vector<uint8_t>{'1'});
    if (group->stop_first < 0) {
      group->stop_first = step;
      return 0;
    }
    auto previous = stop_key(step - 1);
    int64_t verdict = store->add(previous, 0);
    if ((verdict & (kStopFlag - 1)) < group->world) {
      store->wait({previous + "/all"});
      verdict = store->add(previous, 0);
    }
    *stop = verdict >= kStopFlag ? 1 : 0;
    if (group->rank == 0 && step - 3 >= group->stop_first) {
      store->deleteKey(stop_key(step - 3));
      store->deleteKey(stop_key(step - 3) + "/all");
    }
  )
}

// This rank's heartbeat, owned by the group.
AslLiveness* asl_group_liveness(AslGroup* group) { return group->liveness.get(); }

// A value for the other ranks, under the group's prefix.
int asl_store_set(AslGroup* group, const char* key, const uint8_t* value, size_t length) {
  ASL_GUARD(group->store->set(key, std::vector<uint8_t>(value, value + length));)
}

// The value at `key`, once some rank has set it (waiting up to the store's
// timeout), into `out` (`capacity` bytes); its length goes to `length`.
int asl_store_get(AslGroup* group, const char* key, uint8_t* out, size_t capacity, size_t* length) {
  ASL_GUARD(
    auto value = group->store->get(key);
    if (value.size() > capacity) {
      throw std::length_error(std::string("store value ") + key + " holds " + std::to_string(value.size()) +
                              " bytes, more than " + std::to_string(capacity));
    }
    std::copy(value.begin(), value.end(), out);
    *length = value.size();
  )
}

int asl_barrier(AslGroup* group) { ASL_GUARD(group->backend->barrier()->wait();) }

// libtorch's DDP Reducer over `params` (all must require grad), bucketed as
// torch/nn/parallel/distributed.py does: a 1 MiB first bucket, then
// `bucket_mb`, in reverse order of the parameters (gradients become ready
// roughly in reverse), with gradients as views into the buckets.
int asl_reducer_new(AslGroup* group, at::Tensor** params, size_t n, int64_t bucket_mb, AslReducer** out) {
  ASL_GUARD(
    auto parameters = shallow(params, n);
    for (size_t i = 0; i < n; ++i) {
      if (!parameters[i].requires_grad()) {
        throw std::invalid_argument("parameter " + std::to_string(i) + " does not require grad");
      }
    }
    size_t bucket_bytes = static_cast<size_t>(bucket_mb) << 20;
    auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(
        parameters, {size_t(1) << 20, bucket_bytes}, std::vector<bool>(n, false));
    std::reverse(buckets.begin(), buckets.end());
    std::vector<int64_t> caps(limits.rbegin(), limits.rend());
    auto reducer = std::make_shared<c10d::Reducer>(
        parameters, buckets, group->group, std::vector<bool>(n, false), static_cast<int64_t>(bucket_bytes),
        /*find_unused_parameters=*/false, /*gradient_as_bucket_view=*/true,
        std::unordered_map<size_t, std::string>{}, /*first_bucket_bytes_cap=*/int64_t(1) << 20,
        /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false, caps);
    *out = new AslReducer{reducer};
  )
}

int asl_reducer_prepare_forward(AslReducer* reducer) { ASL_GUARD(reducer->reducer->prepare_for_forward();) }

// Arms the reducer for the next backward: its gradients are then reduced as
// they become ready. Not called on the micro-batches of an accumulation
// group but the last, which then accumulate locally, as DDP's no_sync().
int asl_reducer_prepare_backward(AslReducer* reducer) { ASL_GUARD(reducer->reducer->prepare_for_backward({});) }

void asl_reducer_free(AslReducer* reducer) {
  try {
    delete reducer;
  } catch (...) {
  }
}

}  // extern "C"
