#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "macula/core/concurrent_cache.hpp"

using namespace std::chrono_literals;
using macula::core::CacheOptions;
using macula::core::ManualClock;
template <class K, class V>
using TestCache = macula::core::ConcurrentCache<K, V, std::hash<K>, std::equal_to<K>, ManualClock>;

TEST_CASE("cache: get, put, erase, stats", "[cache]") {
  ManualClock::reset();
  TestCache<int, std::string> c(CacheOptions{.capacity = 100, .shards = 4});
  CHECK_FALSE(c.get(1));
  c.put(1, "one");
  c.put(2, "two");
  CHECK(c.get(1) == "one");
  c.put(1, "uno");
  CHECK(c.get(1) == "uno");
  CHECK(c.erase(2));
  CHECK_FALSE(c.erase(2));
  const auto s = c.stats();
  CHECK(s.hits == 2);
  CHECK(s.misses == 1);
  CHECK(s.size == 1);
}

TEST_CASE("cache: per-entry TTL expires lazily and by bounded sweep", "[cache][ttl]") {
  ManualClock::reset();
  TestCache<int, int> c(CacheOptions{.capacity = 1000, .shards = 4, .default_ttl = 10s});
  c.put(1, 1);          // default 10 s
  c.put(2, 2, 1s);      // explicit 1 s
  for (int k = 100; k < 400; ++k) c.put(k, k, 2s);
  ManualClock::advance(1500ms);
  CHECK_FALSE(c.get(2));  // lazily expired on read
  CHECK(c.get(1) == 1);
  CHECK(c.stats().expirations == 1);
  ManualClock::advance(1s);
  // A sweep examines at most the budget: 40 slots cannot remove all 300 expired entries.
  const std::size_t first = c.sweep(40);
  CHECK(first <= 40);
  std::size_t total = first;
  for (int i = 0; i < 100 && total < 300; ++i) total += c.sweep(40);
  CHECK(total == 300);
  CHECK(c.size() == 1);
  ManualClock::advance(10s);
  CHECK_FALSE(c.get(1));
}

TEST_CASE("cache: capacity is a hard bound and CLOCK keeps referenced entries", "[cache][evict]") {
  ManualClock::reset();
  TestCache<int, int> c(CacheOptions{.capacity = 64, .shards = 1});
  REQUIRE(c.capacity() == 64);
  for (int k = 0; k < 64; ++k) c.put(k, k);
  // Touch the first half: they get their second chance.
  for (int k = 0; k < 32; ++k) CHECK(c.get(k));
  for (int k = 1000; k < 1032; ++k) c.put(k, k);
  CHECK(c.size() == 64);
  CHECK(c.stats().evictions == 32);
  for (int k = 0; k < 32; ++k) CHECK(c.get(k));       // hot entries survived
  for (int k = 32; k < 64; ++k) CHECK_FALSE(c.get(k));  // cold ones went
  for (int k = 0; k < 10'000; ++k) c.put(k + 5000, k);
  CHECK(c.size() == 64);
}

TEST_CASE("cache: update is an atomic read-modify-write", "[cache]") {
  ManualClock::reset();
  TestCache<std::string, int> c(CacheOptions{.capacity = 1000});
  c.update("n", [](std::optional<int>& v) { v = v.value_or(0) + 1; });
  c.update("n", [](std::optional<int>& v) { v = v.value_or(0) + 1; });
  CHECK(c.get("n") == 2);
  c.update("n", [](std::optional<int>& v) { v.reset(); });
  CHECK_FALSE(c.get("n"));
  c.update("m", [](std::optional<int>&) {});  // leaving it empty creates nothing
  CHECK(c.size() == 0);

  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 10'000; ++i) c.update("ctr", [](std::optional<int>& v) { v = v.value_or(0) + 1; });
    });
  for (auto& t : ts) t.join();
  CHECK(c.get("ctr") == 40'000);
}

TEST_CASE("cache: multi-threaded stress with non-trivial values and TTLs expiring mid-run", "[cache][stress]") {
  ManualClock::reset();
  using Value = std::shared_ptr<const std::string>;
  TestCache<std::string, Value> c(CacheOptions{.capacity = 2000, .shards = 8});
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> bad{0}, ops{0};
  auto worker = [&](unsigned seed) {
    std::mt19937 rng(seed);
    for (int i = 0; i < 100'000; ++i) {
      const std::string key = "k" + std::to_string(rng() % 5000);
      switch (rng() % 6) {
        case 0:
        case 1:
          c.put(key, std::make_shared<const std::string>(key), std::chrono::milliseconds(1 + rng() % 50));
          break;
        case 2:
          if (auto v = c.get(key); v && **v != key) bad.fetch_add(1);  // never a torn or foreign value
          break;
        case 3:
          c.visit(key, [&](const Value& v) { if (*v != key) bad.fetch_add(1); });
          break;
        case 4:
          c.erase(key);
          break;
        default:
          c.update(key, [&](std::optional<Value>& v) { if (!v) v = std::make_shared<const std::string>(key); });
      }
      ops.fetch_add(1, std::memory_order_relaxed);
    }
  };
  std::thread ticker([&] {
    while (!stop.load()) {
      ManualClock::advance(1ms);
      c.sweep(256);
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < 4; ++t) ts.emplace_back(worker, t + 1);
  for (auto& t : ts) t.join();
  stop = true;
  ticker.join();
  const auto s = c.stats();
  CHECK(bad.load() == 0);
  CHECK(ops.load() == 400'000);
  CHECK(s.size <= c.capacity());
  CHECK(s.expirations > 0);
  CHECK(s.hits > 0);
}
