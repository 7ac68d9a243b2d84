// hello_mesh: the README demo.
//
// Until the Node API lands (QUIC transport + pub/sub + RPC), this walks through the core
// building blocks a node is made of, printing what happens: subscriptions matched by a
// pattern trie, procedures in a sharded registry with round-robin failover, a TTL cache,
// a bounded delivery queue, and the Prometheus metrics a node exports.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "macula/core/bounded_queue.hpp"
#include "macula/core/concurrent_cache.hpp"
#include "macula/core/pattern_trie.hpp"
#include "macula/core/provider_selector.hpp"
#include "macula/core/sharded_registry.hpp"
#include "macula/names.hpp"
#include "macula/observe/metrics_registry.hpp"

int main() {
  using namespace macula;
  using namespace std::chrono_literals;
  observe::MetricsRegistry metrics;
  auto& published = metrics.counter("macula_messages_published_total", "Messages published.");
  auto& delivered = metrics.counter("macula_messages_delivered_total", "Messages delivered to subscribers.");

  std::printf("== realm\n");
  const std::string realm = normalize_realm("  Macula.Default ");
  std::printf("realm \"  Macula.Default \" normalizes to \"%s\"\n", realm.c_str());

  std::printf("\n== pub/sub matching (pattern trie)\n");
  const std::vector<std::pair<std::string, core::SubscriberId>> subs = {
      {"sensors.#.temp", 1}, {"sensors.*.humidity", 2}, {"sensors.#", 3}, {"alerts.**", 4}};
  core::PatternTrie trie;
  for (const auto& [pattern, id] : subs) {
    (void)trie.add(pattern, id);
    std::printf("subscriber %llu subscribes to %s\n", static_cast<unsigned long long>(id), pattern.c_str());
  }
  core::BoundedQueue<std::string> inbox(4, core::OverflowPolicy::drop_oldest);
  for (const char* topic : {"sensors.temp", "sensors.kitchen.humidity", "sensors.floor1.room2.temp", "alerts.fire"}) {
    published.inc();
    const auto ids = trie.match(topic);
    std::printf("publish %-26s -> subscribers", topic);
    for (auto id : ids) {
      std::printf(" %llu", static_cast<unsigned long long>(id));
      delivered.inc();
      (void)inbox.try_push(std::string(topic));
    }
    std::printf("\n");
  }
  std::printf("bounded inbox (capacity 4, drop-oldest): depth %zu, dropped %llu, high-water %zu\n", inbox.size(),
              static_cast<unsigned long long>(inbox.dropped()), inbox.high_water());
  if (auto ec = validate_topic("sensors..temp")) std::printf("publish sensors..temp refused: %s\n", ec.message().c_str());

  std::printf("\n== RPC providers (sharded registry + O(1) selection with failover)\n");
  core::ShardedRegistry<std::string, std::vector<core::ProviderInfo>> procedures;
  (void)procedures.insert_or_assign("math.add", {{101, false}, {102, true}, {103, false}}, 300s);
  core::ProviderSelector selector(*procedures.get("math.add"));
  core::ExclusionSet tried;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    const auto pick = selector.select(core::SelectionStrategy::round_robin, tried);
    std::printf("call math.add attempt %d -> provider node %llu%s\n", attempt,
                static_cast<unsigned long long>(selector.providers()[*pick].id),
                attempt < 3 ? " (times out, fail over)" : " (answers 42)");
    tried.add(*pick);
  }
  std::printf("a fourth attempt has %s\n", selector.select(core::SelectionStrategy::round_robin, tried) ? "a provider" : "no provider left");

  std::printf("\n== discovery cache (TTL + CLOCK eviction)\n");
  core::ConcurrentCache<std::string, std::string> cache(core::CacheOptions{.capacity = 1000, .default_ttl = 60s});
  cache.put("providers:math.add", "101,102,103");
  (void)cache.get("providers:math.add");
  (void)cache.get("providers:math.mul");
  const auto stats = cache.stats();
  std::printf("cache: %llu hit, %llu miss, %zu entries\n", static_cast<unsigned long long>(stats.hits),
              static_cast<unsigned long long>(stats.misses), stats.size);

  std::printf("\n== metrics (Prometheus text)\n%s", metrics.render().c_str());
  return 0;
}
