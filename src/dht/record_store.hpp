// RecordStore: the values this node stores for DHT keys (sans-I/O over the sharded registry).
//
// key -> one record per owner (a provider advertisement, a topic interest), each with its own
// TTL (300 s by default; owners republish every 240 s). Bounded twice: at most `max_keys`
// keys (the registry's cap) and `max_per_key` owners per key; past either, put() refuses with
// errc::registry_full and nothing grows. Expired records are invisible at once and removed by
// put() on their key or by reap() (bounded work per call). Reads may come from any thread;
// writes from one (the node's strand). `Clock` is a template parameter so the simulation can
// run the same code on virtual time.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <system_error>
#include <vector>

#include "macula/core/clock.hpp"
#include "macula/core/sharded_registry.hpp"
#include "macula/error.hpp"
#include "macula/node_id.hpp"

namespace macula::dht {

struct StoredRecord {
  NodeId owner;
  std::vector<std::uint8_t> data;
  std::int64_t expires_ns = 0;  // on Clock
};

template <class Clock = std::chrono::steady_clock>
class RecordStore {
 public:
  struct Options {
    std::size_t max_keys = 100'000;
    std::size_t max_per_key = 64;
    std::size_t shards = 16;
  };
  explicit RecordStore(Options o = {}) : options_(o), registry_(core::RegistryOptions{o.shards, o.max_keys}) {}

  /// Stores (or refreshes) `owner`'s record under `key` for `ttl`. Errors: registry_full.
  std::error_code put(const NodeId& key, const NodeId& owner, std::vector<std::uint8_t> data, std::chrono::nanoseconds ttl) {
    const std::int64_t now = core::now_ns<Clock>();
    const std::int64_t expires = now + ttl.count();
    std::error_code ec;
    std::int64_t longest = expires;
    registry_.visit(key, [&](const std::vector<StoredRecord>& v) {
      for (const auto& r : v) longest = std::max(longest, r.expires_ns);
    });
    const std::error_code full = registry_.update(
        key,
        [&](std::optional<std::vector<StoredRecord>>& v) {
          if (!v) v.emplace();
          std::erase_if(*v, [&](const StoredRecord& r) { return r.expires_ns <= now; });
          auto it = std::find_if(v->begin(), v->end(), [&](const StoredRecord& r) { return r.owner == owner; });
          if (it != v->end()) {
            it->data = std::move(data);
            it->expires_ns = expires;
          } else if (v->size() >= options_.max_per_key) {
            ec = errc::registry_full;
          } else {
            v->push_back(StoredRecord{owner, std::move(data), expires});
          }
          if (v->empty()) v.reset();
        },
        std::chrono::nanoseconds(longest - now));
    return full ? full : ec;  // full: a new key past max_keys
  }

  /// Live records under `key`, with their remaining TTL.
  std::vector<std::pair<StoredRecord, std::chrono::nanoseconds>> get(const NodeId& key) const {
    std::vector<std::pair<StoredRecord, std::chrono::nanoseconds>> out;
    const std::int64_t now = core::now_ns<Clock>();
    registry_.visit(key, [&](const std::vector<StoredRecord>& v) {
      for (const auto& r : v)
        if (r.expires_ns > now) out.emplace_back(r, std::chrono::nanoseconds(r.expires_ns - now));
    });
    return out;
  }

  std::size_t reap(std::size_t budget) { return registry_.reap(budget); }
  std::size_t keys() const { return registry_.size(); }

 private:
  Options options_;
  core::ShardedRegistry<NodeId, std::vector<StoredRecord>, std::hash<NodeId>, std::equal_to<NodeId>, Clock> registry_;
};

}  // namespace macula::dht
