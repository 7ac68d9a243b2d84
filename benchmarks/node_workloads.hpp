// What the Node-level benchmarks (bench_node, bench_allocs) share: the clock helpers, the mesh
// they run on, and the NATS subscriptions their baselines use.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <thread>

#include <nats/nats.h>

#include "macula/testing/local_mesh.hpp"

namespace macula::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

/// Polls `p` (every 20 us: two cores, a spinning waiter would steal one) until it holds or
/// `limit` passes.
template <class Pred>
bool wait_until(Pred p, std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto until = Clock::now() + limit;
  while (!p()) {
    if (Clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  return true;
}

/// `nodes` linked nodes in realm bench.realm. io_threads: pub/sub runs each node's strand on
/// its own thread (2); RPC round trips are faster with both nodes on one io thread (1): fewer
/// wake-ups on a 2-core machine (measured). MACULA_BENCH_IO / MACULA_BENCH_WORKERS override
/// both for experiments.
inline macula::testing::LocalMeshOptions mesh_options(std::size_t nodes, std::size_t io_threads = 2) {
  macula::testing::LocalMeshOptions o;
  o.size = nodes;
  o.io_threads = std::getenv("MACULA_BENCH_IO") ? std::strtoul(std::getenv("MACULA_BENCH_IO"), nullptr, 10) : io_threads;
  o.node.realm = "bench.realm";
  o.node.worker_threads =
      std::getenv("MACULA_BENCH_WORKERS") ? std::strtoul(std::getenv("MACULA_BENCH_WORKERS"), nullptr, 10) : 2;
  return o;
}

/// A NATS subscription counting what arrives on `subject` into `counter`.
inline natsSubscription* nats_counter(natsConnection* conn, const char* subject, std::atomic<std::uint64_t>* counter) {
  natsSubscription* sub = nullptr;
  natsConnection_Subscribe(&sub, conn, subject, [](natsConnection*, natsSubscription*, natsMsg* m, void* c) {
      static_cast<std::atomic<std::uint64_t>*>(c)->fetch_add(1, std::memory_order_relaxed);
      natsMsg_Destroy(m);
    }, counter);
  natsSubscription_SetPendingLimits(sub, -1, -1);
  return sub;
}

/// A NATS subscription answering each request on `subject` with its own payload.
inline natsSubscription* nats_echo(natsConnection* conn, const char* subject) {
  natsSubscription* sub = nullptr;
  natsConnection_Subscribe(&sub, conn, subject, [](natsConnection* nc, natsSubscription*, natsMsg* m, void*) {
      natsConnection_Publish(nc, natsMsg_GetReply(m), natsMsg_GetData(m), natsMsg_GetDataLength(m));
      natsMsg_Destroy(m);
    }, nullptr);
  natsSubscription_SetPendingLimits(sub, -1, -1);
  return sub;
}

}  // namespace macula::bench
