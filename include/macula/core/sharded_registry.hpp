// ShardedRegistry: the shared key -> value table for procedures, service advertisements
// and DHT records.
//
// Replaces the old system's single registry process that serialized every lookup (seed
// finding 7, ~1K queries/s). N shards (default 16) keyed by hash, each a ReaderBiasedLock
// around a hash map: lookups take it shared and write no cache line another core reads, so
// they scale with cores; inserts, updates and the reaper take it exclusively.
//
// - Bounded: at most `max_entries` keys in total; inserting a new key past it fails with
//   errc::registry_full (never grows). Replacing an existing key always works.
// - TTL per entry: an expired entry is invisible to readers at once; reap(n) deletes expired
//   entries examining at most n entries per call (bounded work per timer tick).
//
// Thread-safety: every member function may be called from any thread concurrently. Callbacks
// given to visit()/update()/for_each() run under the shard's lock: keep them short and never
// call back into the registry from them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "macula/core/clock.hpp"
#include "macula/core/detail/hashed_key.hpp"
#include "macula/core/detail/reader_biased_lock.hpp"
#include "macula/error.hpp"

namespace macula::core {

struct RegistryOptions {
  std::size_t shards = 16;
  std::size_t max_entries = 1'000'000;
};

template <class K, class V, class Hash = std::hash<K>, class KeyEqual = std::equal_to<K>,
          class Clock = std::chrono::steady_clock>
class ShardedRegistry {
 public:
  explicit ShardedRegistry(RegistryOptions options = {})
      : shard_count_(options.shards == 0 ? 1 : options.shards),
        max_entries_(options.max_entries),
        shards_(std::make_unique<Shard[]>(shard_count_)) {}

  ShardedRegistry(const ShardedRegistry&) = delete;
  ShardedRegistry& operator=(const ShardedRegistry&) = delete;

  /// Inserts or replaces. `ttl` <= 0 means the entry never expires.
  /// Errors: errc::registry_full when `key` is new and the registry is at max_entries.
  std::error_code insert_or_assign(const K& key, V value,
                                   std::chrono::nanoseconds ttl = std::chrono::nanoseconds{0}) {
    const std::int64_t expires = deadline_ns<Clock>(ttl);
    const Ref ref{hash_(key), key};
    Shard& s = shard(ref.hash);
    std::unique_lock lock(s.mutex);
    auto it = s.map.find(ref);
    if (it != s.map.end()) {
      it->second.value = std::move(value);
      it->second.expires_ns = expires;
      return {};
    }
    if (!reserve_slot()) return errc::registry_full;
    s.map.emplace(Stored{ref.hash, key}, Entry{std::move(value), expires});
    return {};
  }

  /// Copy of the live value, or nullopt.
  std::optional<V> get(const K& key) const {
    std::optional<V> out;
    visit(key, [&](const V& v) { out.emplace(v); });
    return out;
  }

  /// Calls `f(const V&)` under a shared lock when the key is live.
  template <class F>
  bool visit(const K& key, F&& f) const {
    const Ref ref{hash_(key), key};
    const Shard& s = shard(ref.hash);
    std::shared_lock lock(s.mutex);
    auto it = s.map.find(ref);
    if (it == s.map.end() || expired(it->second)) return false;
    f(static_cast<const V&>(it->second.value));
    return true;
  }

  /// Atomic read-modify-write of one key: `f(std::optional<V>&)` sees the live value (or
  /// nullopt), and may modify it, create it, or reset it to erase the key. A created or
  /// modified entry gets `ttl` from now (<= 0: never expires).
  /// Errors: errc::registry_full when `f` creates a key past max_entries (nothing stored).
  template <class F>
  std::error_code update(const K& key, F&& f,
                         std::chrono::nanoseconds ttl = std::chrono::nanoseconds{0}) {
    const Ref ref{hash_(key), key};
    Shard& s = shard(ref.hash);
    std::unique_lock lock(s.mutex);
    auto it = s.map.find(ref);
    std::optional<V> current;
    if (it != s.map.end() && !expired(it->second)) current.emplace(std::move(it->second.value));
    f(current);
    const std::int64_t expires = deadline_ns<Clock>(ttl);
    if (it != s.map.end()) {
      if (current) {
        it->second.value = std::move(*current);
        it->second.expires_ns = expires;
      } else {
        s.map.erase(it);
        count_.fetch_sub(1, std::memory_order_relaxed);
      }
      return {};
    }
    if (!current) return {};
    if (!reserve_slot()) return errc::registry_full;
    s.map.emplace(Stored{ref.hash, key}, Entry{std::move(*current), expires});
    return {};
  }

  /// Removes the key; returns whether a live entry was removed.
  bool erase(const K& key) {
    const Ref ref{hash_(key), key};
    Shard& s = shard(ref.hash);
    std::unique_lock lock(s.mutex);
    auto it = s.map.find(ref);
    if (it == s.map.end()) return false;
    const bool live = !expired(it->second);
    s.map.erase(it);
    count_.fetch_sub(1, std::memory_order_relaxed);
    return live;
  }

  /// Deletes expired entries, examining at most `max_entries_examined` entries in total.
  /// Successive calls continue where the previous one stopped, so a periodic tick covers
  /// the whole registry in size/budget ticks. Returns how many entries it deleted.
  std::size_t reap(std::size_t max_entries_examined) {
    const std::int64_t now = now_ns<Clock>();
    std::size_t removed = 0;
    std::size_t budget = max_entries_examined;
    for (std::size_t visited = 0; visited < shard_count_ && budget > 0; ++visited) {
      Shard& s = shards_[reap_shard_.load(std::memory_order_relaxed) % shard_count_];
      std::unique_lock lock(s.mutex);
      const std::size_t buckets = s.map.bucket_count();
      std::vector<Stored> dead;
      while (budget > 0 && s.reap_bucket < buckets) {
        for (auto it = s.map.begin(s.reap_bucket); it != s.map.end(s.reap_bucket) && budget > 0; ++it) {
          --budget;
          if (it->second.expires_ns != 0 && it->second.expires_ns <= now) dead.push_back(it->first);
        }
        ++s.reap_bucket;
      }
      for (const Stored& k : dead) s.map.erase(k);
      count_.fetch_sub(dead.size(), std::memory_order_relaxed);
      removed += dead.size();
      if (s.reap_bucket >= buckets) {
        s.reap_bucket = 0;
        reap_shard_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    return removed;
  }

  /// Calls `f(const K&, const V&)` for every live entry, one shard at a time (a snapshot per
  /// shard, not of the whole registry).
  template <class F>
  void for_each(F&& f) const {
    for (std::size_t i = 0; i < shard_count_; ++i) {
      const Shard& s = shards_[i];
      std::shared_lock lock(s.mutex);
      for (const auto& [k, e] : s.map)
        if (!expired(e)) f(static_cast<const K&>(k.key), static_cast<const V&>(e.value));
    }
  }

  /// Stored keys, including expired ones not yet reaped.
  std::size_t size() const noexcept { return count_.load(std::memory_order_relaxed); }
  std::size_t max_entries() const noexcept { return max_entries_; }
  std::size_t shard_count() const noexcept { return shard_count_; }

 private:
  struct Entry {
    V value;
    std::int64_t expires_ns;
  };
  using Stored = detail::HashedKey<K>;
  using Ref = detail::HashedKeyRef<K>;
  struct alignas(128) Shard {  // at least its lock's alignment (clang rejects less)
    mutable detail::ReaderBiasedLock mutex;
    std::unordered_map<Stored, Entry, detail::HashedKeyHash, detail::HashedKeyEqual<KeyEqual>> map;
    std::size_t reap_bucket = 0;
  };

  static bool expired(const Entry& e) noexcept {
    return e.expires_ns != 0 && e.expires_ns <= now_ns<Clock>();
  }

  bool reserve_slot() noexcept {
    std::size_t n = count_.load(std::memory_order_relaxed);
    do {
      if (n >= max_entries_) return false;
    } while (!count_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
    return true;
  }

  Shard& shard(std::size_t h) noexcept { return shards_[detail::mix_hash(h) % shard_count_]; }
  const Shard& shard(std::size_t h) const noexcept { return shards_[detail::mix_hash(h) % shard_count_]; }

  Hash hash_{};
  std::size_t shard_count_;
  std::size_t max_entries_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<std::size_t> count_{0};
  std::atomic<std::size_t> reap_shard_{0};
};

}  // namespace macula::core
