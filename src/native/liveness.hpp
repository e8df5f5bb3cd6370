// A rank's liveness, apart from its process group so that a benchmark can
// simulate hundreds of ranks on one store: a thread that publishes the
// rank's heartbeat, and a second store client through which a watcher reads
// every rank's heartbeat in one round trip.

#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace asl_detail {

// A client (or, with `server`, the host) of the TCPStore at host:port, its
// keys under `prefix`. `join`: count this client among the `world` workers
// the server waits for, as every rank's main client does (Python's
// TCPStore); helper clients must not.
c10::intrusive_ptr<c10d::Store> connect_store(const std::string& host, int port, bool server, bool join, int world,
                                              int timeout_s, const std::string& prefix);

}  // namespace asl_detail

// Publishes `heartbeat/<rank>` = "<beats> <progress> <step>" every 250 ms
// from its own thread. `beats` proves the process lives; `progress` is
// bumped by the main loop at every unit of work (a batch, a validation
// batch, a checkpoint file) and `step` is its last optimizer step, so that a
// rank whose thread beats while its training does not move can be told from
// one that trains.
struct AslLiveness {
  c10::intrusive_ptr<c10d::Store> beat_store;
  c10::intrusive_ptr<c10d::Store> watch_store;
  int rank = 0;
  int world = 1;
  std::atomic<int64_t> beats{0};
  std::atomic<int64_t> progress{0};
  std::atomic<int64_t> step{0};
  // Store round trips made by both clients, for the watcher's benchmark.
  std::atomic<int64_t> requests{0};
  // Set to make the beat thread fail as a store error would (fault injection).
  std::atomic<bool> fail{false};
  std::atomic<bool> dead{false};
  std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  std::string error;
  std::thread thread;

  ~AslLiveness();
  // One heartbeat, now.
  void publish();
};

extern "C" int asl_liveness_new(const char* host, int port, const char* prefix, int rank, int world, int timeout_s,
                                AslLiveness** out);
