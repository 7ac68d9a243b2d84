// Kademlia lookups in the simulated network (virtual time, 5-15 ms one-way latency): hops,
// messages and virtual latency per FIND_VALUE at 1,000 and 10,000 nodes. Baseline: the same
// lookups run sequentially (alpha = 1), as the old system's lookups did.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <random>
#include <vector>

#include "dht/simulation.hpp"

namespace {

using macula::dht::SimConfig;
using macula::dht::SimNetwork;

void Lookups(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  SimConfig config;
  config.seed = 5;
  config.lookup.alpha = static_cast<std::size_t>(state.range(1));
  SimNetwork net(config);
  std::mt19937_64 rng(6);
  for (std::size_t i = 0; i < n; ++i) net.add_node(i == 0 ? std::nullopt : std::optional<std::size_t>(rng() % i));
  for (std::size_t i = 0; i < n; ++i) net.refresh(i);
  std::vector<macula::NodeId> keys;
  for (std::size_t i = 0; i < 100; ++i) {
    keys.push_back(net.random_id());
    net.store_value(i, keys.back(), {1});
  }
  std::vector<double> hops, messages, ms;
  std::size_t found = 0;
  for (auto _ : state) {
    const auto s = net.find_value(rng() % n, keys[rng() % keys.size()]);
    found += s.found;
    hops.push_back(s.hops);
    messages.push_back(static_cast<double>(s.messages));
    ms.push_back(std::chrono::duration<double, std::milli>(s.duration).count());
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  state.counters["median_hops"] = median(hops);
  state.counters["max_hops"] = hops.empty() ? 0 : *std::max_element(hops.begin(), hops.end());
  state.counters["median_messages"] = median(messages);
  state.counters["median_virtual_ms"] = median(ms);
  state.counters["success"] = static_cast<double>(found) / static_cast<double>(state.iterations());
}

}  // namespace

BENCHMARK(Lookups)->Args({1000, 3})->Args({1000, 1})->Iterations(2000)->Unit(benchmark::kMicrosecond);
BENCHMARK(Lookups)->Args({10000, 3})->Args({10000, 1})->Iterations(2000)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
