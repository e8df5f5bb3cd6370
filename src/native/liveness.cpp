// Heartbeats that tell a live, training rank from a lost or a stalled one,
// read by a watcher in one store round trip (a multiGet of every rank's
// key), and a TCPStore host for tests and benchmarks. Conventions as in
// guard.hpp.

#include "liveness.hpp"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>
#include <vector>

#include "guard.hpp"

namespace {

constexpr auto kBeat = std::chrono::milliseconds(250);

std::string heartbeat_key(int rank) { return "heartbeat/" + std::to_string(rank); }

void beat_loop(AslLiveness* liveness) {
  try {
    std::unique_lock<std::mutex> lock(liveness->mutex);
    while (!liveness->stopping) {
      lock.unlock();
      if (liveness->fail) throw std::runtime_error("it was made to fail (ASL_FAULT heartbeat-dies)");
      liveness->publish();
      lock.lock();
      liveness->wake.wait_for(lock, kBeat, [&] { return liveness->stopping; });
    }
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> guard(liveness->mutex);
    liveness->error = e.what();
    liveness->dead = true;
  }
}

}  // namespace

namespace asl_detail {

c10::intrusive_ptr<c10d::Store> connect_store(const std::string& host, int port, bool server, bool join, int world,
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

}  // namespace asl_detail

AslLiveness::~AslLiveness() {
  {
    std::lock_guard<std::mutex> guard(mutex);
    stopping = true;
  }
  wake.notify_all();
  if (thread.joinable()) thread.join();
}

void AslLiveness::publish() {
  auto value = std::to_string(++beats) + " " + std::to_string(progress.load()) + " " + std::to_string(step.load());
  beat_store->set(heartbeat_key(rank), std::vector<uint8_t>(value.begin(), value.end()));
  ++requests;
}

struct AslStoreServer {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

extern "C" {

// Connects two clients to the store at host:port (keys under `prefix`),
// publishes the first heartbeat before returning, so that a peer that has
// joined can always read it, then starts beating.
int asl_liveness_new(const char* host, int port, const char* prefix, int rank, int world, int timeout_s,
                     AslLiveness** out) {
  ASL_GUARD(
    auto liveness = std::make_unique<AslLiveness>();
    liveness->rank = rank;
    liveness->world = world;
    liveness->beat_store = asl_detail::connect_store(host, port, false, false, world, timeout_s, prefix);
    liveness->watch_store = asl_detail::connect_store(host, port, false, false, world, timeout_s, prefix);
    liveness->publish();
    liveness->thread = std::thread(beat_loop, liveness.get());
    *out = liveness.release();
  )
}

void asl_liveness_free(AslLiveness* liveness) {
  try {
    delete liveness;
  } catch (...) {
  }
}

// The main loop moved: one more unit of work, at optimizer step `step`
// (negative: the step is unchanged).
void asl_liveness_progress(AslLiveness* liveness, int64_t step) {
  ++liveness->progress;
  if (step >= 0) liveness->step = step;
}

// Every rank's heartbeat in one multiGet, through the watcher's client,
// which gives up after `timeout_ms` (the store's host is then gone or
// stopped). Each output holds `world` values.
int asl_liveness_read(AslLiveness* liveness, int timeout_ms, int64_t* beats, int64_t* progress, int64_t* steps) {
  ASL_GUARD(
    std::vector<std::string> keys;
    keys.reserve(liveness->world);
    for (int r = 0; r < liveness->world; ++r) keys.push_back(heartbeat_key(r));
    liveness->watch_store->setTimeout(std::chrono::milliseconds(timeout_ms));
    auto values = liveness->watch_store->multiGet(keys);
    ++liveness->requests;
    for (int r = 0; r < liveness->world; ++r) {
      std::istringstream text(std::string(values[r].begin(), values[r].end()));
      if (!(text >> beats[r] >> progress[r] >> steps[r])) {
        throw std::runtime_error("the heartbeat of rank " + std::to_string(r) + " is unreadable");
      }
    }
  )
}

// 1 when the beat thread has died, with its error copied into `message`
// (truncated to `capacity` bytes, NUL-terminated); 0 while it beats.
int asl_liveness_dead(AslLiveness* liveness, char* message, size_t capacity) {
  if (!liveness->dead) return 0;
  std::lock_guard<std::mutex> guard(liveness->mutex);
  if (capacity > 0) std::snprintf(message, capacity, "%s", liveness->error.c_str());
  return 1;
}

// Fault injection: the beat thread fails at its next beat.
void asl_liveness_fail(AslLiveness* liveness) { liveness->fail = true; }

int64_t asl_liveness_requests(AslLiveness* liveness) { return liveness->requests.load(); }

// A TCPStore host on 127.0.0.1 (port 0: any free one, written to `bound`),
// for tests and benchmarks of the watcher without a process group.
int asl_store_server_new(int port, int timeout_s, int* bound, AslStoreServer** out) {
  ASL_GUARD(
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(port);
    options.isServer = true;
    options.waitWorkers = false;
    options.multiTenant = true;
    options.timeout = std::chrono::seconds(timeout_s);
    auto server = std::make_unique<AslStoreServer>();
    server->store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", options);
    *bound = server->store->getPort();
    *out = server.release();
  )
}

void asl_store_server_free(AslStoreServer* server) {
  try {
    delete server;
  } catch (...) {
  }
}

}  // extern "C"
