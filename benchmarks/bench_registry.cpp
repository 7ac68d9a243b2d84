// ShardedRegistry lookups vs one mutex-protected map (the old single registry process), at
// 1 and 2 threads; ProviderSelector round robin vs walking a list to the n-th provider.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "macula/core/provider_selector.hpp"
#include "macula/core/sharded_registry.hpp"
#include "naive_baselines.hpp"

namespace {

constexpr std::size_t kEntries = 100'000;

const std::vector<std::string>& keys() {
  static const std::vector<std::string> k = [] {
    std::vector<std::string> v;
    for (std::size_t i = 0; i < kEntries; ++i) v.push_back("com.example.service" + std::to_string(i) + ".call");
    return v;
  }();
  return k;
}

const std::vector<std::uint32_t>& order() {
  static const std::vector<std::uint32_t> o = [] {
    std::vector<std::uint32_t> v(1 << 20);
    std::mt19937 rng(7);
    for (auto& x : v) x = rng() % kEntries;
    return v;
  }();
  return o;
}

struct Record {
  std::uint64_t node = 0;
  std::uint32_t port = 0;
};

macula::core::ShardedRegistry<std::string, Record>& sharded() {
  static auto* r = [] {
    auto* reg = new macula::core::ShardedRegistry<std::string, Record>();
    for (std::size_t i = 0; i < kEntries; ++i) (void)reg->insert_or_assign(keys()[i], Record{i, 9443});
    return reg;
  }();
  return *r;
}

struct MutexMap {
  std::mutex m;
  std::unordered_map<std::string, Record> map;
  bool get(const std::string& k, Record& out) {
    std::lock_guard lock(m);
    auto it = map.find(k);
    if (it == map.end()) return false;
    out = it->second;
    return true;
  }
};

MutexMap& single() {
  static auto* r = [] {
    auto* mm = new MutexMap();
    for (std::size_t i = 0; i < kEntries; ++i) mm->map.emplace(keys()[i], Record{i, 9443});
    return mm;
  }();
  return *r;
}

void ShardedLookup(benchmark::State& state) {
  auto& r = sharded();
  const auto& k = keys();
  const auto& o = order();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 104729;
  Record rec;
  for (auto _ : state) {
    r.visit(k[o[i++ & (o.size() - 1)]], [&](const Record& v) { rec = v; });
    benchmark::DoNotOptimize(rec);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void MutexMapLookup(benchmark::State& state) {
  auto& r = single();
  const auto& k = keys();
  const auto& o = order();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 104729;
  Record rec;
  for (auto _ : state) {
    r.get(k[o[i++ & (o.size() - 1)]], rec);
    benchmark::DoNotOptimize(rec);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

BENCHMARK(ShardedLookup)->UseRealTime()->Threads(1)->Threads(2);
BENCHMARK(MutexMapLookup)->UseRealTime()->Threads(1)->Threads(2);

void SelectorRoundRobin(benchmark::State& state) {
  std::vector<macula::core::ProviderInfo> p(static_cast<std::size_t>(state.range(0)));
  macula::core::ProviderSelector s(std::move(p));
  for (auto _ : state) benchmark::DoNotOptimize(s.select(macula::core::SelectionStrategy::round_robin));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void ListWalkRoundRobin(benchmark::State& state) {
  macula::bench::ListRoundRobin s(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(s.select());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

BENCHMARK(SelectorRoundRobin)->Arg(10)->Arg(100)->Arg(1000);
BENCHMARK(ListWalkRoundRobin)->Arg(10)->Arg(100)->Arg(1000);

}  // namespace

int main(int argc, char** argv) {
  // Build both tables before anything is timed, baseline first: where each lands in the heap
  // shifts a cache-miss-bound lookup by tens of ns, so the order is fixed, not left to
  // whichever benchmark happens to run first.
  (void)single();
  (void)sharded();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
