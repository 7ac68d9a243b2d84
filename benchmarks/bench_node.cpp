// The Node API end to end over QUIC on loopback, each workload also run through NATS 2.9
// (nats-server on 127.0.0.1 + libnats) in the same process and run: pub/sub 1 -> 1 across
// nodes (64 B; 64 B with QoS 1 acknowledgements; 64 KiB and 512 KiB payloads, MB/s), fan-out
// to 1,000 local subscriptions, 1 -> 10 nodes x 100 subscriptions, RPC sequential latency and
// RPC throughput at 100 and 4,096 in flight. benchmarks/report prints
// each libmacula row next to its NATS row. MACULA_BENCH_SCALE (default 1) scales the
// message counts (the report's --quick uses 0.05).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "macula/publisher.hpp"
#include "macula/rpc_client.hpp"
#include "macula/subscriber.hpp"
#include "macula/testing/local_mesh.hpp"
#include "dht/dht_discovery.hpp"
#include "nats_peer.hpp"
#include "node_workloads.hpp"
#include "node/node_core.hpp"

namespace {

using macula::bench::Clock;
using macula::bench::mesh_options;
using macula::bench::nats_counter;
using macula::bench::nats_echo;
using macula::bench::NatsPeer;
using macula::bench::seconds_since;
using macula::bench::wait_until;

std::size_t scaled(std::size_t n) {
  const char* s = std::getenv("MACULA_BENCH_SCALE");
  const double f = s ? std::atof(s) : 1.0;
  return std::max<std::size_t>(100, static_cast<std::size_t>(static_cast<double>(n) * f));
}



struct alignas(128) PaddedCounter {
  std::atomic<std::uint64_t> n{0};
};



// ---- 1 publisher -> 1 subscriber on another node, 64 B -------------------------------------
// Both sides pace by what arrived (a window of 20,000), so neither system's drop policy
// decides the figure; msgs/s is measured at the subscriber.
const std::size_t kWindow = std::getenv("MACULA_BENCH_WINDOW") ? std::strtoul(std::getenv("MACULA_BENCH_WINDOW"), nullptr, 10) : 20000;

// Arg 0: the handler on the worker pool (the default); 1: inline on the io thread
// (SubscribeOptions::inline_handler).
void MaculaPubSub1to1(benchmark::State& state) {
  macula::testing::LocalMesh mesh(mesh_options(2));
  std::atomic<std::uint64_t> got{0};
  macula::SubscribeOptions options{1 << 17};
  options.inline_handler = state.range(0) == 1;
  macula::Subscriber sub(mesh[1], "bench.x", [&](const macula::Message&) { got.fetch_add(1, std::memory_order_relaxed); },
                         options);
  mesh.settle();
  macula::Publisher pub(mesh[0]);
  const macula::Bytes payload(64, 7);
  const std::size_t n = scaled(1'000'000);
  for (auto _ : state) {
    got = 0;
    const auto t0 = Clock::now();
    for (std::size_t sent = 0; sent < n;) {
      if (sent - got.load(std::memory_order_relaxed) < kWindow) {
        if (!pub.publish("bench.x", payload)) ++sent;
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));  // 2 cores: do not spin
      }
    }
    if (!wait_until([&] { return got.load() >= n; }, std::chrono::seconds(5))) state.SkipWithError("messages lost");
    state.SetIterationTime(seconds_since(t0));
    state.SetItemsProcessed(state.items_processed() + static_cast<std::int64_t>(got.load()));
  }
  state.counters["dropped"] = static_cast<double>(mesh[0].stats().dropped);
}

// NATS 1 -> 1 (core NATS, at most once: default connection options, buffered publishes
// flushed when `window` messages are ahead of the subscriber and at the end): `n` payloads of
// `size` bytes; msgs/s and bytes/s at the subscriber.
void nats_one_to_one(benchmark::State& state, std::size_t size, std::size_t n, std::size_t window) {
  auto& peer = NatsPeer::instance();
  if (!peer.ok()) return state.SkipWithError("nats-server unavailable");
  natsConnection* pc = peer.connect();
  natsConnection* sc = peer.connect();
  std::atomic<std::uint64_t> got{0};
  natsSubscription* sub = nats_counter(sc, "bench.x", &got);
  natsConnection_Flush(sc);
  const std::string payload(size, 'x');
  for (auto _ : state) {
    got = 0;
    const auto t0 = Clock::now();
    for (std::size_t sent = 0; sent < n;) {
      if (sent - got.load(std::memory_order_relaxed) < window) {
        natsConnection_Publish(pc, "bench.x", payload.data(), static_cast<int>(payload.size()));
        ++sent;
      } else {
        natsConnection_Flush(pc);
        std::this_thread::sleep_for(std::chrono::microseconds(50));  // 2 cores: do not spin
      }
    }
    natsConnection_Flush(pc);
    if (!wait_until([&] { return got.load() >= n; }, std::chrono::seconds(5))) state.SkipWithError("messages lost");
    state.SetIterationTime(seconds_since(t0));
    state.SetItemsProcessed(state.items_processed() + static_cast<std::int64_t>(got.load()));
    state.SetBytesProcessed(state.bytes_processed() + static_cast<std::int64_t>(got.load() * size));
  }
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(pc);
  natsConnection_Destroy(sc);
}

void NatsPubSub1to1(benchmark::State& state) { nats_one_to_one(state, 64, scaled(1'000'000), kWindow); }

// ---- 1 -> 1 across nodes with a completion per publish: QoS 1, large payloads --------------
// Every publish is an async_publish whose completion counts; at most `window` messages are
// ahead of both the completions and the subscriber, so neither the node's default bounds
// (publish queue 65,536 messages / 64 MiB, QoS 1 in flight 100,000 / 64 MiB: async_publish
// fails with queue_full past them) nor the subscription's queue (131,072) decides the
// figure. An iteration ends when every completion arrived and the subscriber received all;
// msgs/s and bytes/s at the subscriber.
void macula_async_one_to_one(benchmark::State& state, macula::PublisherOptions options, macula::Qos qos, std::size_t size,
                             std::size_t n, std::size_t window) {
  // Declared before the mesh so that they outlive it: completions still pending when an
  // error ends the run complete (cancelled) during the mesh's stop().
  std::atomic<std::uint64_t> got{0}, done{0}, failed{0};
  macula::testing::LocalMesh mesh(mesh_options(2));
  macula::Subscriber sub(mesh[1], "bench.x", [&](const macula::Message&) { got.fetch_add(1, std::memory_order_relaxed); },
                         macula::SubscribeOptions{1 << 17});
  mesh.settle();
  macula::Publisher pub(mesh[0], std::move(options));
  const macula::Bytes payload(size, 7);
  for (auto _ : state) {
    got = 0;
    done = 0;
    const auto t0 = Clock::now();
    for (std::size_t sent = 0; sent < n; ++sent) {
      if (!wait_until([&] {
            return sent - std::min(done.load(std::memory_order_relaxed), got.load(std::memory_order_relaxed)) < window;
          }))
        return state.SkipWithError("publishes stalled");
      pub.async_publish("bench.x", payload, qos, [&](std::error_code ec) {
        if (ec) failed.fetch_add(1);
        done.fetch_add(1, std::memory_order_relaxed);
      });
    }
    if (!wait_until([&] { return done.load() >= n && got.load() >= n; })) return state.SkipWithError("messages lost");
    state.SetIterationTime(seconds_since(t0));
    state.SetItemsProcessed(state.items_processed() + static_cast<std::int64_t>(got.load()));
    state.SetBytesProcessed(state.bytes_processed() + static_cast<std::int64_t>(got.load() * size));
  }
  state.counters["dropped"] = static_cast<double>(mesh[0].stats().dropped + mesh[1].stats().dropped);
  state.counters["failed"] = static_cast<double>(failed.load());
}

// QoS 1, 64 B: each completion is the subscribing node's acknowledgement (QoS 1's default
// congestion is block); at most half the default publish queue in flight. The report compares
// it with NatsPubSub1to1 (core NATS has no per-message acknowledgement: at most once,
// publishes buffered and flushed at its window of 20,000), the QoS 0 row's baseline too.
const std::size_t kQos1Window = 32768;

void MaculaPubSubQos1(benchmark::State& state) {
  macula_async_one_to_one(state, macula::PublisherOptions{}, macula::Qos::at_least_once, 64, scaled(200'000), kQos1Window);
}

// Large payloads (range(0) bytes), QoS 0 with congestion block (nothing dropped; a
// completion once the link accepted the message): 256 MiB per iteration, at most 16 MiB
// ahead of the subscriber, the same for NATS (default max_payload 1 MiB).
constexpr std::size_t kLargeBytes = std::size_t{256} << 20, kLargeWindowBytes = std::size_t{16} << 20;

void MaculaPubSubLarge(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  macula::PublisherOptions options;
  options.congestion = macula::CongestionControl::block;  // QoS 0's default is drop
  macula_async_one_to_one(state, std::move(options), macula::Qos::at_most_once, size, scaled(kLargeBytes / size),
                          std::max<std::size_t>(1, kLargeWindowBytes / size));
}

void NatsPubSubLarge(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  nats_one_to_one(state, size, scaled(kLargeBytes / size), std::max<std::size_t>(1, kLargeWindowBytes / size));
}

// ---- fan-out ------------------------------------------------------------------------------
// 1,000 subscriptions with mixed patterns that all match "fan.room.t"; publishes go in bursts
// of `burst` and the next burst waits for every delivery of the last (no queue overflows).
const char* const kMaculaPatterns[] = {"fan.room.t", "fan.*.t", "fan.#", "#", "*.room.*", "fan.**", "fan.room.*"};
const char* const kNatsPatterns[] = {"fan.room.t", "fan.*.t", "fan.>", ">", "*.room.*", "fan.room.>", "fan.room.*"};

void MaculaFanout(benchmark::State& state) {
  const std::size_t nodes = static_cast<std::size_t>(state.range(0));  // 1: local; else 1 + subscriber nodes
  const std::size_t subs_per_node = nodes == 1 ? 1000 : 1000 / (nodes - 1);
  macula::testing::LocalMesh mesh(mesh_options(nodes));
  std::vector<std::unique_ptr<PaddedCounter>> counters;
  std::vector<macula::Subscriber> subs;
  for (std::size_t node = nodes == 1 ? 0 : 1; node < nodes; ++node)
    for (std::size_t i = 0; i < subs_per_node; ++i) {
      counters.push_back(std::make_unique<PaddedCounter>());
      auto* c = counters.back().get();
      subs.emplace_back(mesh[node], kMaculaPatterns[i % 7],
                        [c](const macula::Message&) { c->n.fetch_add(1, std::memory_order_relaxed); },
                        macula::SubscribeOptions{4096});
    }
  mesh.settle();
  auto delivered = [&] {
    std::uint64_t s = 0;
    for (auto& c : counters) s += c->n.load(std::memory_order_relaxed);
    return s;
  };
  macula::Publisher pub(mesh[0]);
  const macula::Bytes payload(64, 7);
  const std::size_t publishes = scaled(nodes == 1 ? 10'000 : 5'000), burst = 3000;  // below the 4,096-message subscription queues: no overflow
  const std::uint64_t fan = counters.size();
  for (auto _ : state) {
    const std::uint64_t base = delivered();
    const auto t0 = Clock::now();
    for (std::size_t sent = 0; sent < publishes;) {
      for (std::size_t k = 0; k < burst && sent < publishes; ++k)
        if (!pub.publish("fan.room.t", payload)) ++sent;
      if (!wait_until([&] { return delivered() - base >= sent * fan; }, std::chrono::seconds(10)))
        return state.SkipWithError("deliveries lost");
    }
    state.SetIterationTime(seconds_since(t0));
    state.SetItemsProcessed(state.items_processed() + static_cast<std::int64_t>(publishes * fan));
  }
  state.counters["publishes_per_s"] = benchmark::Counter(static_cast<double>(publishes) * static_cast<double>(state.iterations()),
                                                         benchmark::Counter::kIsRate);
}

void NatsFanout(benchmark::State& state) {
  auto& peer = NatsPeer::instance();
  if (!peer.ok()) return state.SkipWithError("nats-server unavailable");
  constexpr std::size_t kConns = 10, kSubs = 1000;
  std::vector<natsConnection*> conns;
  for (std::size_t i = 0; i < kConns; ++i) conns.push_back(peer.connect(false, true));
  natsConnection* pc = peer.connect();
  std::vector<std::unique_ptr<PaddedCounter>> counters;
  std::vector<natsSubscription*> subs;
  for (std::size_t i = 0; i < kSubs; ++i) {
    counters.push_back(std::make_unique<PaddedCounter>());
    natsSubscription* s = nullptr;
    natsConnection_Subscribe(&s, conns[i % kConns], kNatsPatterns[i % 7], [](natsConnection*, natsSubscription*, natsMsg* m, void* c) {
      static_cast<PaddedCounter*>(c)->n.fetch_add(1, std::memory_order_relaxed);
      natsMsg_Destroy(m);
    }, counters.back().get());
    natsSubscription_SetPendingLimits(s, -1, -1);
    subs.push_back(s);
  }
  for (auto* c : conns) natsConnection_Flush(c);
  auto delivered = [&] {
    std::uint64_t s = 0;
    for (auto& c : counters) s += c->n.load(std::memory_order_relaxed);
    return s;
  };
  const std::string payload(64, 'x');
  const std::size_t publishes = scaled(10'000), burst = 3000;  // below the 4,096-message subscription queues: no overflow
  for (auto _ : state) {
    const std::uint64_t base = delivered();
    const auto t0 = Clock::now();
    for (std::size_t sent = 0; sent < publishes;) {
      for (std::size_t k = 0; k < burst && sent < publishes; ++k, ++sent)
        natsConnection_Publish(pc, "fan.room.t", payload.data(), static_cast<int>(payload.size()));
      natsConnection_Flush(pc);
      if (!wait_until([&] { return delivered() - base >= sent * kSubs; }, std::chrono::seconds(10)))
        return state.SkipWithError("deliveries lost");
    }
    state.SetIterationTime(seconds_since(t0));
    state.SetItemsProcessed(state.items_processed() + static_cast<std::int64_t>(publishes * kSubs));
  }
  for (auto* s : subs) natsSubscription_Destroy(s);
  for (auto* c : conns) natsConnection_Destroy(c);
  natsConnection_Destroy(pc);
}

// ---- RPC ----------------------------------------------------------------------------------
void report_latencies(benchmark::State& state, std::vector<double>& us) {
  if (us.empty()) return;
  std::sort(us.begin(), us.end());
  state.counters["p50_us"] = us[us.size() / 2];
  state.counters["p99_us"] = us[us.size() * 99 / 100];
}

// The echo procedure; range(1) = 1 advertises it with an inline handler (on the io thread).
macula::Advertisement advertise_echo(macula::Node& node, const benchmark::State& state) {
  macula::AdvertiseOptions o;
  o.inline_handler = state.range(1) == 1;
  return node.advertise("bench.echo", [](macula::Bytes a, macula::RpcResponder r) { r.reply(std::move(a)); }, o);
}

// range(0) = 2: caller and provider on two nodes (the Node issue's row); 1: the provider is
// the calling node itself (no network: the thread hand-overs alone, for the latency breakdown).
// range(1): the handler on the worker pool (0) or inline (1).
void MaculaRpcSequential(benchmark::State& state) {
  const std::size_t nodes = static_cast<std::size_t>(state.range(0));
  macula::testing::LocalMesh mesh(mesh_options(nodes, 1));
  auto echo = advertise_echo(mesh[nodes - 1], state);
  mesh.settle();
  macula::RpcClient client(mesh[0]);
  const macula::Bytes payload(64, 7);
  const std::size_t n = scaled(20'000);
  std::vector<double> us;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < n; ++i) {
      const auto c0 = Clock::now();
      std::error_code ec;
      client.call("bench.echo", payload, ec);
      if (ec) return state.SkipWithError("call failed");
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - c0).count());
    }
    state.SetIterationTime(seconds_since(t0));
    state.SetItemsProcessed(state.items_processed() + static_cast<std::int64_t>(n));
  }
  report_latencies(state, us);
}

void NatsRpcSequential(benchmark::State& state) {
  auto& peer = NatsPeer::instance();
  if (!peer.ok()) return state.SkipWithError("nats-server unavailable");
  natsConnection* server = peer.connect(true);
  natsConnection* client = peer.connect(true);
  natsSubscription* sub = nats_echo(server, "bench.echo");
  natsConnection_Flush(server);
  const std::string payload(64, 'x');
  const std::size_t n = scaled(20'000);
  std::vector<double> us;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < n; ++i) {
      const auto c0 = Clock::now();
      natsMsg* reply = nullptr;
      if (natsConnection_Request(&reply, client, "bench.echo", payload.data(), static_cast<int>(payload.size()), 5000) !=
          NATS_OK)
        return state.SkipWithError("request failed");
      natsMsg_Destroy(reply);
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - c0).count());
    }
    state.SetIterationTime(seconds_since(t0));
    state.SetItemsProcessed(state.items_processed() + static_cast<std::int64_t>(n));
  }
  report_latencies(state, us);
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(server);
  natsConnection_Destroy(client);
}

void MaculaRpcInFlight(benchmark::State& state) {
  const std::size_t window = static_cast<std::size_t>(state.range(0));
  macula::testing::LocalMesh mesh(mesh_options(2, 1));
  auto echo = advertise_echo(mesh[1], state);
  mesh.settle();
  macula::RpcClient client(mesh[0]);
  const macula::Bytes payload(64, 7);
  const std::size_t n = scaled(200'000);
  std::atomic<std::uint64_t> done{0}, failed{0};
  for (auto _ : state) {
    done = 0;
    const auto t0 = Clock::now();
    for (std::size_t issued = 0; issued < n;) {
      if (issued - done.load(std::memory_order_relaxed) < window) {
        client.async_call("bench.echo", payload, [&](std::error_code ec, macula::Bytes) {
          if (ec) failed.fetch_add(1);
          done.fetch_add(1, std::memory_order_relaxed);
        });
        ++issued;
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    }
    if (!wait_until([&] { return done.load() >= n; })) return state.SkipWithError("calls lost");
    state.SetIterationTime(seconds_since(t0));
    state.SetItemsProcessed(state.items_processed() + static_cast<std::int64_t>(n));
  }
  state.counters["failed"] = static_cast<double>(failed.load());
}

void NatsRpcInFlight(benchmark::State& state) {
  auto& peer = NatsPeer::instance();
  if (!peer.ok()) return state.SkipWithError("nats-server unavailable");
  const std::size_t window = static_cast<std::size_t>(state.range(0));
  natsConnection* server = peer.connect();
  natsConnection* client = peer.connect();
  natsSubscription* responder = nats_echo(server, "bench.echo");
  std::atomic<std::uint64_t> done{0};
  natsSubscription* inbox = nats_counter(client, "_INBOX.bench", &done);
  natsConnection_Flush(server);
  natsConnection_Flush(client);
  const std::string payload(64, 'x');
  const std::size_t n = scaled(200'000);
  for (auto _ : state) {
    done = 0;
    const auto t0 = Clock::now();
    for (std::size_t issued = 0; issued < n;) {
      if (issued - done.load(std::memory_order_relaxed) < window) {
        natsConnection_PublishRequest(client, "bench.echo", "_INBOX.bench", payload.data(), static_cast<int>(payload.size()));
        ++issued;
      } else {
        natsConnection_Flush(client);
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    }
    natsConnection_Flush(client);
    if (!wait_until([&] { return done.load() >= n; })) return state.SkipWithError("replies lost");
    state.SetIterationTime(seconds_since(t0));
    state.SetItemsProcessed(state.items_processed() + static_cast<std::int64_t>(n));
  }
  natsSubscription_Destroy(responder);
  natsSubscription_Destroy(inbox);
  natsConnection_Destroy(server);
  natsConnection_Destroy(client);
}

// ---- DHT lookups on a 10-node loopback mesh ------------------------------------------------
// 10 nodes, each linked only to node 0 (bootstrap); node 7 advertises a procedure; node 2
// runs sequential FIND_VALUEs for its provider key (no cache): latency and lookups/s over
// real QUIC (DHT requests on pooled connections).
void MaculaDhtLookup(benchmark::State& state) {
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  std::thread loop([&] { io.run(); });
  macula::NodeOptions o;
  o.realm = "bench.dht";
  o.dht = true;
  o.worker_threads = 1;
  std::vector<std::unique_ptr<macula::Node>> nodes;
  nodes.push_back(std::make_unique<macula::Node>(io, o));
  nodes[0]->start();
  o.bootstrap = {nodes[0]->local_address()};
  for (int i = 1; i < 10; ++i) {
    nodes.push_back(std::make_unique<macula::Node>(io, o));
    nodes.back()->start();
  }
  wait_until([&] {
    for (auto& n : nodes)
      if (n->stats().links == 0) return false;
    return true;
  });
  auto adv = nodes[7]->advertise("bench.found", [](macula::Bytes a, macula::RpcResponder r) { r.reply(std::move(a)); });
  const macula::NodeId key = macula::dht::procedure_key("bench.dht", "bench.found");
  auto lookup = [&] {
    std::promise<std::size_t> p;
    macula::node::TestHooks::find_value(*nodes[2], key, [&](std::error_code, std::size_t n) { p.set_value(n); });
    return p.get_future().get();
  };
  wait_until([&] { return lookup() > 0; }, std::chrono::seconds(10));
  const std::size_t n = scaled(2'000);
  std::vector<double> us;
  std::size_t found = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < n; ++i) {
      const auto c0 = Clock::now();
      found += lookup() > 0;
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - c0).count());
    }
    state.SetIterationTime(seconds_since(t0));
    state.SetItemsProcessed(state.items_processed() + static_cast<std::int64_t>(n));
  }
  report_latencies(state, us);
  state.counters["success"] = static_cast<double>(found) / static_cast<double>(us.size());
  for (auto& node : nodes) node->stop();
  work.reset();
  io.stop();
  loop.join();
}

}  // namespace

BENCHMARK(MaculaDhtLookup)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(MaculaPubSub1to1)->Arg(0)->Arg(1)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);
BENCHMARK(NatsPubSub1to1)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);
BENCHMARK(MaculaPubSubQos1)->UseManualTime()->Iterations(2)->Unit(benchmark::kMillisecond);
BENCHMARK(MaculaPubSubLarge)->Arg(65536)->Arg(524288)->UseManualTime()->Iterations(2)->Unit(benchmark::kMillisecond);
BENCHMARK(NatsPubSubLarge)->Arg(65536)->Arg(524288)->UseManualTime()->Iterations(2)->Unit(benchmark::kMillisecond);
BENCHMARK(MaculaFanout)->Arg(1)->Arg(11)->UseManualTime()->Iterations(2)->Unit(benchmark::kMillisecond);
BENCHMARK(NatsFanout)->UseManualTime()->Iterations(2)->Unit(benchmark::kMillisecond);
BENCHMARK(MaculaRpcSequential)->Args({2, 0})->Args({1, 0})->Args({2, 1})->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(NatsRpcSequential)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(MaculaRpcInFlight)->Args({100, 0})->Args({4096, 0})->Args({100, 1})->Args({4096, 1})->UseManualTime()->Iterations(2)->Unit(benchmark::kMillisecond);
BENCHMARK(NatsRpcInFlight)->Arg(100)->Arg(4096)->UseManualTime()->Iterations(2)->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  nats_Close();
  return 0;
}
