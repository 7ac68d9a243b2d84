// Heap allocations per message, end to end: every malloc-family call in the process is counted
// (both nodes, every thread, and what ngtcp2, nghttp3 and GnuTLS allocate underneath), in the
// steady state after a warm-up, divided by the messages or calls that completed. The baseline
// is libnats doing the same workload in the same run: its client side only, since nats-server's
// own allocations happen in another process. An executable of its own, because the counting
// (one shared atomic per allocation) would slow the timed rows of bench_node.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>

#include <malloc.h>

#include "macula/publisher.hpp"
#include "macula/rpc_client.hpp"
#include "macula/subscriber.hpp"
#include "macula/testing/local_mesh.hpp"
#include "nats_peer.hpp"
#include "node_workloads.hpp"

// ---- the counting allocator ------------------------------------------------------------------
// glibc's own entry points, under the names it exports for exactly this kind of wrapper. The
// definitions below interpose the process-wide malloc family (the executable's symbols win over
// libc's for every shared library too), so allocations by C libraries count, not only
// operator new (which libstdc++ implements with malloc).
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace {
std::atomic<std::uint64_t> g_allocations{0};
inline void count() { g_allocations.fetch_add(1, std::memory_order_relaxed); }
}  // namespace

extern "C" {
void* malloc(std::size_t n) noexcept {
  count();
  return __libc_malloc(n);
}
void* calloc(std::size_t k, std::size_t n) noexcept {
  count();
  return __libc_calloc(k, n);
}
void* realloc(void* p, std::size_t n) noexcept {
  count();
  return __libc_realloc(p, n);
}
void free(void* p) noexcept { __libc_free(p); }
void* memalign(std::size_t a, std::size_t n) noexcept {
  count();
  return __libc_memalign(a, n);
}
void* aligned_alloc(std::size_t a, std::size_t n) noexcept {
  count();
  return __libc_memalign(a, n);
}
int posix_memalign(void** out, std::size_t a, std::size_t n) noexcept {
  if (a < sizeof(void*) || (a & (a - 1)) != 0) return EINVAL;
  count();
  void* p = __libc_memalign(a, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
}

namespace {

using macula::bench::Clock;
using macula::bench::mesh_options;
using macula::bench::nats_counter;
using macula::bench::nats_echo;
using macula::bench::NatsPeer;
using macula::bench::seconds_since;
using macula::bench::wait_until;




constexpr std::size_t kWarmup = 20'000;
constexpr std::size_t kWindow = 5'000;

// Counts what `work(n)` allocates per unit, after `work(kWarmup)` grew every buffer and pool.
template <class Work>
void count_per_unit(benchmark::State& state, std::size_t n, Work&& work) {
  if (!work(kWarmup)) return state.SkipWithError("warm-up did not complete");
  for (auto _ : state) {
    const std::uint64_t a0 = g_allocations.load();
    const auto t0 = Clock::now();
    if (!work(n)) return state.SkipWithError("did not complete");
    state.SetIterationTime(seconds_since(t0));
    state.counters["allocs_per_msg"] = static_cast<double>(g_allocations.load() - a0) / static_cast<double>(n);
    state.SetItemsProcessed(static_cast<std::int64_t>(n));
  }
}

// ---- QoS 0 publish, 64 B, node 0 -> a subscriber on node 1 ------------------------------------
// range(0): the handler on the worker pool (0) or inline (1).
void MaculaAllocsPublish(benchmark::State& state) {
  macula::testing::LocalMesh mesh(mesh_options(2, 2));
  std::atomic<std::uint64_t> got{0};
  macula::SubscribeOptions options{1 << 16};
  options.inline_handler = state.range(0) == 1;
  macula::Subscriber sub(mesh[1], "bench.x", [&](const macula::Message&) { got.fetch_add(1, std::memory_order_relaxed); },
                         options);
  mesh.settle();
  macula::Publisher pub(mesh[0]);
  const macula::Bytes payload(64, 7);
  count_per_unit(state, 200'000, [&](std::size_t n) {
    got = 0;
    const std::uint64_t dropped = pub.dropped();
    const auto until = Clock::now() + std::chrono::seconds(30);
    for (std::size_t sent = 0; sent < n;) {
      if (sent - got.load(std::memory_order_relaxed) < kWindow) {
        if (!pub.publish("bench.x", payload)) ++sent;
      } else if (pub.dropped() != dropped || Clock::now() > until) {
        return false;  // a drop would leave the window closed for ever
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    return wait_until([&] { return got.load() >= n; });
  });
}

void NatsAllocsPublish(benchmark::State& state) {
  auto& peer = NatsPeer::instance();
  if (!peer.ok()) return state.SkipWithError("nats-server unavailable");
  natsConnection* pc = peer.connect();
  natsConnection* sc = peer.connect();
  std::atomic<std::uint64_t> got{0};
  natsSubscription* sub = nats_counter(sc, "bench.x", &got);
  natsConnection_Flush(sc);
  const std::string payload(64, 'x');
  count_per_unit(state, 200'000, [&](std::size_t n) {
    got = 0;
    for (std::size_t sent = 0; sent < n;) {
      if (sent - got.load(std::memory_order_relaxed) < kWindow) {
        natsConnection_Publish(pc, "bench.x", payload.data(), static_cast<int>(payload.size()));
        ++sent;
      } else {
        natsConnection_Flush(pc);
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    natsConnection_Flush(pc);
    return wait_until([&] { return got.load() >= n; });
  });
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(sc);
  natsConnection_Destroy(pc);
}

// ---- RPC, 64 B echo, 100 in flight, node 0 -> a procedure on node 1 ---------------------------
void MaculaAllocsRpc(benchmark::State& state) {
  macula::testing::LocalMesh mesh(mesh_options(2, 1));
  macula::AdvertiseOptions o;
  o.inline_handler = state.range(0) == 1;
  auto echo = mesh[1].advertise("bench.echo", [](macula::Bytes a, macula::RpcResponder r) { r.reply(std::move(a)); }, o);
  mesh.settle();
  macula::RpcClient client(mesh[0]);
  const macula::Bytes payload(64, 7);
  std::atomic<std::uint64_t> done{0}, failed{0};
  count_per_unit(state, 100'000, [&](std::size_t n) {
    done = 0;
    for (std::size_t issued = 0; issued < n;) {
      if (issued - done.load(std::memory_order_relaxed) < 100) {
        client.async_call("bench.echo", payload, [&](std::error_code ec, macula::Bytes) {
          if (ec) failed.fetch_add(1);
          done.fetch_add(1, std::memory_order_relaxed);
        });
        ++issued;
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    }
    return wait_until([&] { return done.load() >= n; }) && failed.load() == 0;
  });
}

void NatsAllocsRpc(benchmark::State& state) {
  auto& peer = NatsPeer::instance();
  if (!peer.ok()) return state.SkipWithError("nats-server unavailable");
  natsConnection* server = peer.connect();
  natsConnection* client = peer.connect();
  natsSubscription* responder = nats_echo(server, "bench.echo");
  std::atomic<std::uint64_t> done{0};
  natsSubscription* inbox = nats_counter(client, "_INBOX.bench", &done);
  natsConnection_Flush(server);
  natsConnection_Flush(client);
  const std::string payload(64, 'x');
  count_per_unit(state, 100'000, [&](std::size_t n) {
    done = 0;
    for (std::size_t issued = 0; issued < n;) {
      if (issued - done.load(std::memory_order_relaxed) < 100) {
        natsConnection_PublishRequest(client, "bench.echo", "_INBOX.bench", payload.data(), static_cast<int>(payload.size()));
        ++issued;
      } else {
        natsConnection_Flush(client);
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    }
    natsConnection_Flush(client);
    return wait_until([&] { return done.load() >= n; });
  });
  natsSubscription_Destroy(responder);
  natsSubscription_Destroy(inbox);
  natsConnection_Destroy(server);
  natsConnection_Destroy(client);
}

}  // namespace

BENCHMARK(MaculaAllocsPublish)->Arg(0)->Arg(1)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(NatsAllocsPublish)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(MaculaAllocsRpc)->Arg(0)->Arg(1)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(NatsAllocsRpc)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
