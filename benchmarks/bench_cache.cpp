// ConcurrentCache vs the old list-based LRU and the textbook mutex+map+list LRU.
// Hit-get: every key looked up is present. Put: keys drawn from twice the capacity, so in
// steady state half the puts insert (and evict) and half replace.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include "macula/core/concurrent_cache.hpp"
#include "naive_baselines.hpp"

namespace {

using Key = std::uint64_t;
using Value = std::uint64_t;
using Cache = macula::core::ConcurrentCache<Key, Value>;

// Random key order prepared up front so the timed loop measures the cache, not the RNG.
const std::vector<Key>& key_stream(std::size_t space) {
  static std::mutex m;
  static std::map<std::size_t, std::unique_ptr<std::vector<Key>>> streams;
  std::lock_guard lock(m);
  auto& s = streams[space];
  if (!s) {
    s = std::make_unique<std::vector<Key>>(1 << 20);
    std::mt19937_64 rng(space);
    for (auto& k : *s) k = rng() % space;
  }
  return *s;
}

template <class C>
C& filled(std::size_t n) {
  static std::mutex m;
  static std::map<std::size_t, std::unique_ptr<C>> made;
  std::lock_guard lock(m);
  auto& c = made[n];
  if (!c) {
    if constexpr (std::is_same_v<C, Cache>) {
      c = std::make_unique<C>(macula::core::CacheOptions{.capacity = n});
    } else {
      c = std::make_unique<C>(n);
    }
    for (Key k = 0; k < n; ++k) {
      if constexpr (requires { c->put_new(k, k); }) {
        c->put_new(k, k);
      } else {
        c->put(k, k);
      }
    }
  }
  return *c;
}

template <class C>
void HitGet(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  C& cache = filled<C>(n);
  const auto& keys = key_stream(n);
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    auto v = cache.get(keys[i++ & (keys.size() - 1)]);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

template <class C>
void Put(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  C& cache = filled<C>(n);
  const auto& keys = key_stream(2 * n);
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    const Key k = keys[i++ & (keys.size() - 1)];
    cache.put(k, k);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

using ListLru = macula::bench::ListLru<Key, Value>;
using MutexLru = macula::bench::MutexMapLru<Key, Value>;

#define MACULA_CACHE_SIZES ->Arg(1000)->Arg(100'000)->Arg(1'000'000)->UseRealTime()->Threads(1)->Threads(2)

BENCHMARK_TEMPLATE(HitGet, Cache) MACULA_CACHE_SIZES;
BENCHMARK_TEMPLATE(HitGet, MutexLru) MACULA_CACHE_SIZES;
BENCHMARK_TEMPLATE(Put, Cache) MACULA_CACHE_SIZES;
BENCHMARK_TEMPLATE(Put, MutexLru) MACULA_CACHE_SIZES;
// The list LRU walks on average half the list per operation: at 1M entries that is ~ms per
// call, so each figure still takes only a few hundred iterations.
BENCHMARK_TEMPLATE(HitGet, ListLru) MACULA_CACHE_SIZES;
BENCHMARK_TEMPLATE(Put, ListLru) MACULA_CACHE_SIZES;

}  // namespace

BENCHMARK_MAIN();
