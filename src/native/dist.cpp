// The c10d half of asl's native layer: process groups (Gloo on CPU, NCCL on
// CUDA) over a TCPStore rendezvous, coalesced collectives on tch tensors,
// libtorch's own DDP Reducer, a heartbeat that tells which rank is lost, an
// abort for a group whose peer is gone, and a stop request agreed through
// the store.
//
// Every entry point is `extern "C"`, returns 0 on success and -1 on failure
// (the message is then in `asl_last_error()`, per thread), and catches every
// exception: one crossing the C boundary would abort the process. Tensors
// arrive as tch's handles, `at::Tensor*`, and are copied shallowly (same
// TensorImpl), so in-place collectives change tch's tensors.

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
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace {
thread_local std::string last_error;
}  // namespace

namespace asl_detail {
void set_last_error(const std::string& message) { last_error = message; }
}  // namespace asl_detail

namespace {

#define ASL_GUARD(...)                                   \
  try {                                                  \
    __VA_ARGS__                                          \
  } catch (const c10::Error& e) {                        \
    last_error = e.what_without_backtrace();             \
    return -1;                                           \
  } catch (const std::exception& e) {                    \
    last_error = e.what();                               \
    return -1;                                           \
  } catch (...) {                                        \
    last_error = "unknown C++ exception";                \
    return -1;                                           \
  }                                                      \
  return 0;

constexpr int kGloo = 0;
constexpr int kNccl = 1;
constexpr auto kBeat = std::chrono::milliseconds(250);

std::vector<at::Tensor> shallow(at::Tensor** tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*tensors[i]);
  return out;
}

std::string heartbeat_key(int rank) { return "heartbeat/" + std::to_string(rank); }

// The stop protocol's keys: the agreed step (written once), then a counter
// that readers poll in one round trip and that is raised only after it.
const char* const kStopStep = "stop/step";
const char* const kStopRequested = "stop/requested";

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
  // A second store client, so the heartbeat never waits behind a collective's store traffic.
  c10::intrusive_ptr<c10d::Store> beat_store;
  // A third, for the watcher of the heartbeats, with its own (short) timeout.
  c10::intrusive_ptr<c10d::Store> watch_store;
  std::thread beat;
  std::atomic<bool> stop{false};
  // Bytes this rank has sent into broadcasts, for checking what a step costs.
  std::atomic<int64_t> broadcast_bytes{0};

  ~AslGroup() {
    stop = true;
    if (beat.joinable()) beat.join();
  }
};

struct AslReducer {
  std::shared_ptr<c10d::Reducer> reducer;
};

namespace {

// `join`: count this client among the `world` workers the server waits for
// (every rank's main client does, as Python's TCPStore; the heartbeat's
// second client must not).
c10::intrusive_ptr<c10d::Store> connect(const std::string& host, int port, bool server, bool join, int world,
                                        int timeout_s, const std::string& prefix) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(port);
  options.isServer = server;
  options.numWorkers = world;
  options.waitWorkers = join;
  options.multiTenant = true;
  options.timeout = std::chrono::seconds(timeout_s);
  auto tcp = c10::make_intrusive<c10d::TCPStore>(host, options);
  return c10::make_intrusive<c10d::PrefixStore>(prefix, tcp);
}

void beat_loop(AslGroup* group) {
  try {
    auto key = heartbeat_key(group->rank);
    while (!group->stop) {
      group->beat_store->add(key, 1);
      std::this_thread::sleep_for(kBeat);
    }
  } catch (...) {
    // The store is gone (its host died): the next collective reports it.
  }
}

}  // namespace

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
    group->store = connect(host, port, server != 0, true, world, timeout_s, prefix);
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
    group->beat_store = connect(host, port, false, false, world, timeout_s, prefix);
    group->watch_store = connect(host, port, false, false, world, timeout_s, prefix);
    group->beat = std::thread(beat_loop, group.get());
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

// Every rank's heartbeat counter, read through the watcher's client, which
// gives up after `timeout_ms` (the store's host is then gone or stopped).
int asl_heartbeats(AslGroup* group, int timeout_ms, int64_t* counts) {
  ASL_GUARD(
    group->watch_store->setTimeout(std::chrono::milliseconds(timeout_ms));
    for (int r = 0; r < group->world; ++r) counts[r] = group->watch_store->add(heartbeat_key(r), 0);
  )
}

// Aborts the group's communicators (NCCL: ncclCommAbort, which frees a host
// or a kernel that waits for a lost peer; Gloo has nothing to abort).
int asl_group_abort(AslGroup* group) { ASL_GUARD(group->group->abort();) }

// Proposes to stop after optimizer step `step`; the first proposal among the
// ranks wins. `agreed` receives the step all ranks stop after.
int asl_stop_propose(AslGroup* group, int64_t step, int64_t* agreed) {
  ASL_GUARD(
    auto proposal = std::to_string(step);
    auto stored = group->store->compareSet(kStopStep, "", proposal);
    group->store->add(kStopRequested, 1);
    *agreed = std::stoll(stored);
  )
}

// The agreed stop step, or -1 while no rank has asked: one store round trip.
int asl_stop_agreed(AslGroup* group, int64_t* agreed) {
  ASL_GUARD(
    *agreed = -1;
    if (group->store->add(kStopRequested, 0) > 0) {
      auto value = group->store->get(kStopStep);
      *agreed = std::stoll(std::string(value.begin(), value.end()));
    }
  )
}

int asl_barrier(AslGroup* group) { ASL_GUARD(group->backend->barrier()->wait();) }

// Which ranks stopped beating: every rank's heartbeat counter is read, then
// read again after `wait_ms`; `lost[r]` is 1 where it did not move. Fails
// when the store itself is unreachable (rank 0, its host, is gone).
int asl_lost_ranks(AslGroup* group, int wait_ms, int* lost) {
  ASL_GUARD(
    std::vector<int64_t> before(group->world);
    for (int r = 0; r < group->world; ++r) before[r] = group->beat_store->add(heartbeat_key(r), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    for (int r = 0; r < group->world; ++r) lost[r] = group->beat_store->add(heartbeat_key(r), 0) == before[r];
  )
}

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
