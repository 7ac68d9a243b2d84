#include <catch2/catch.hpp>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "macula/core/sharded_registry.hpp"

using namespace std::chrono_literals;
using macula::errc;
using macula::core::ManualClock;
using macula::core::RegistryOptions;
template <class K, class V>
using Registry = macula::core::ShardedRegistry<K, V, std::hash<K>, std::equal_to<K>, ManualClock>;

TEST_CASE("registry: insert, get, replace, erase", "[registry]") {
  ManualClock::reset();
  Registry<std::string, int> r;
  CHECK(r.shard_count() == 16);
  CHECK_FALSE(r.insert_or_assign("math.add", 1));
  CHECK(r.get("math.add") == 1);
  CHECK_FALSE(r.insert_or_assign("math.add", 2));
  CHECK(r.get("math.add") == 2);
  CHECK(r.size() == 1);
  CHECK(r.erase("math.add"));
  CHECK_FALSE(r.get("math.add"));
  CHECK(r.size() == 0);
}

TEST_CASE("registry: maximum entry count is refused with a clear error", "[registry]") {
  ManualClock::reset();
  Registry<int, int> r(RegistryOptions{.shards = 4, .max_entries = 10});
  for (int i = 0; i < 10; ++i) REQUIRE_FALSE(r.insert_or_assign(i, i));
  const auto ec = r.insert_or_assign(99, 99);
  CHECK(ec == errc::registry_full);
  CHECK(ec.message().find("maximum") != std::string::npos);
  CHECK_FALSE(r.get(99));
  CHECK_FALSE(r.insert_or_assign(3, 33));  // replacing still works at the cap
  CHECK(r.update(100, [](std::optional<int>& v) { v = 1; }) == errc::registry_full);
  CHECK(r.size() == 10);
  r.erase(0);
  CHECK_FALSE(r.insert_or_assign(99, 99));
}

TEST_CASE("registry: TTL hides entries at once; the reaper deletes them with bounded work", "[registry][ttl]") {
  ManualClock::reset();
  Registry<int, int> r(RegistryOptions{.shards = 4, .max_entries = 10'000});
  for (int i = 0; i < 1000; ++i) REQUIRE_FALSE(r.insert_or_assign(i, i, i < 600 ? 1s : 0s));
  ManualClock::advance(2s);
  CHECK_FALSE(r.get(5));
  CHECK(r.get(700) == 700);
  CHECK(r.size() == 1000);  // not reaped yet
  const std::size_t first = r.reap(50);
  CHECK(first <= 50);
  std::size_t reaped = first, ticks = 1;
  while (reaped < 600 && ticks < 1000) {
    reaped += r.reap(50);
    ++ticks;
  }
  CHECK(reaped == 600);
  CHECK(ticks >= 1000 / 50);  // the budget really bounded each tick
  CHECK(r.size() == 400);
  int live = 0;
  r.for_each([&](int, int) { ++live; });
  CHECK(live == 400);
  // An expired key counts as absent for update() and can be recreated.
  REQUIRE_FALSE(r.insert_or_assign(5000, 1, 1s));
  ManualClock::advance(2s);
  CHECK_FALSE(r.update(5000, [](std::optional<int>& v) {
    CHECK_FALSE(v);
    v = 7;
  }));
  CHECK(r.get(5000) == 7);
}

TEST_CASE("registry: concurrent readers and writers", "[registry][concurrency]") {
  ManualClock::reset();
  Registry<int, std::vector<int>> r(RegistryOptions{.shards = 16, .max_entries = 100'000});
  for (int i = 0; i < 1000; ++i) REQUIRE_FALSE(r.insert_or_assign(i, std::vector<int>(4, i)));
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 200'000; ++i)
        r.visit(i % 1000, [&](const std::vector<int>& v) {
          for (int x : v)
            if (x != i % 1000) bad.fetch_add(1);
        });
    });
  ts.emplace_back([&] {
    for (int i = 0; i < 50'000; ++i) {
      (void)r.update(i % 1000, [&](std::optional<std::vector<int>>& v) { v->push_back(i % 1000); });
      (void)r.insert_or_assign(2000 + i % 100, {});
      r.erase(2000 + (i + 50) % 100);
    }
  });
  for (auto& t : ts) t.join();
  CHECK(bad.load() == 0);
  CHECK(r.get(7)->size() == 4 + 50);
}
