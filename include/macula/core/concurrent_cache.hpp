// ConcurrentCache: the "ETS-like" shared cache — sharded, bounded, TTL, CLOCK eviction.
//
// Replaces the old system's list-based cache (seed finding 1: O(N) get/put/evict, ~10 µs per
// lookup at 1,000 entries). Here a get is one hash, one shard lock and one hash-table probe.
//
// - Sharding: keys are spread over a power-of-two number of shards by hash; each shard is a
//   ReaderBiasedLock around a hash map plus a CLOCK ring. The capacity bound is per shard
//   (capacity / shards each), so a shard never needs to look at another.
// - Hits take the shard lock shared and write no shared cache line (the reference bit is
//   written only when not yet set; hit/miss counts go to per-thread counter cells), so reads
//   scale across cores. put/update/erase/sweep take it exclusively.
// - Eviction: CLOCK (second chance). A hit only sets a reference bit — no list splicing under
//   the lock as an LRU would need — and the hand evicts the first unreferenced entry. It
//   approximates LRU and keeps frequently read entries, unlike random eviction.
// - TTL: per entry. Expired entries are removed lazily when read (counted as expirations,
//   not hits), and sweep(n) removes them proactively with at most n slots examined per call.
//   Entries without TTL never read the clock on get.
// - Stats: hits, misses, evictions, expirations, size.
//
// Thread-safety: every member function may be called from any thread concurrently. Callbacks
// given to visit() run under the shard's shared lock (possibly concurrently with other
// readers of the same entry), those given to update() under its exclusive lock: keep them short and do not call back
// into the same cache from them (that would deadlock).
// Values are copied out by get(); for large values store a std::shared_ptr<const T>.
#pragma once

#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "macula/core/clock.hpp"
#include "macula/core/detail/hashed_key.hpp"
#include "macula/core/detail/reader_biased_lock.hpp"
#include "macula/core/metrics.hpp"

namespace macula::core {

struct CacheStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t evictions = 0;    ///< removed to make room (capacity bound)
  std::uint64_t expirations = 0;  ///< removed because their TTL passed
  std::size_t size = 0;
};

struct CacheOptions {
  std::size_t capacity = 100'000;             ///< total entries (enforced per shard)
  std::size_t shards = 0;                     ///< 0: pick from capacity (up to 64)
  std::chrono::nanoseconds default_ttl{0};    ///< 0: entries never expire unless put with a ttl
};

template <class K, class V, class Hash = std::hash<K>, class KeyEqual = std::equal_to<K>,
          class Clock = std::chrono::steady_clock>
class ConcurrentCache {
 public:
  explicit ConcurrentCache(CacheOptions options = {}) : default_ttl_(options.default_ttl) {
    std::size_t capacity = options.capacity == 0 ? 1 : options.capacity;
    std::size_t shards = options.shards;
    // At least 64 entries per shard by default, so small caches do not suffer from uneven
    // shard fill; at most 64 shards (plenty for the thread counts a node uses).
    if (shards == 0) shards = std::min<std::size_t>(64, std::max<std::size_t>(1, capacity / 64));
    shards = std::bit_floor(shards);
    if (shards > capacity) shards = std::bit_floor(capacity);
    shard_mask_ = shards - 1;
    const std::size_t per_shard = (capacity + shards - 1) / shards;
    shards_ = std::make_unique<Shard[]>(shards);
    for (std::size_t i = 0; i < shards; ++i) {
      shards_[i].owner = this;
      shards_[i].init(per_shard);
    }
    shard_count_ = shards;
  }

  ConcurrentCache(const ConcurrentCache&) = delete;
  ConcurrentCache& operator=(const ConcurrentCache&) = delete;

  /// Copy of the value, or nullopt on a miss (or an expired entry).
  std::optional<V> get(const K& key) {
    std::optional<V> out;
    visit(key, [&](const V& v) { out.emplace(v); });
    return out;
  }

  /// Calls `f(const V&)` under the shard's shared lock when the key is live; returns
  /// whether it did.
  template <class F>
  bool visit(const K& key, F&& f) {
    const Ref ref{hash_(key), key};
    Shard& s = shard(ref.hash);
    bool saw_expired = false;
    {
      std::shared_lock lock(s.mutex);
      auto it = s.map.find(ref);
      if (it != s.map.end()) {
        Entry& e = it->second;
        if (e.expires_ns == 0 || e.expires_ns > now_ns<Clock>()) {
          std::atomic_ref<bool> referenced(e.referenced);
          if (!referenced.load(std::memory_order_relaxed)) referenced.store(true, std::memory_order_relaxed);
          hits_.inc();
          f(static_cast<const V&>(e.value));
          return true;
        }
        saw_expired = true;
      }
    }
    misses_.inc();
    if (saw_expired) {
      std::unique_lock lock(s.mutex);
      auto it = s.map.find(ref);
      if (it != s.map.end() && expired(it->second)) {
        s.remove(it);
        expirations_.inc();
      }
    }
    return false;
  }

  /// Inserts or replaces. `ttl` <= 0 uses the cache's default TTL (0 there: never expires).
  void put(const K& key, V value, std::chrono::nanoseconds ttl = std::chrono::nanoseconds{0}) {
    const std::int64_t expires = deadline_ns<Clock>(ttl.count() > 0 ? ttl : default_ttl_);
    const Ref ref{hash_(key), key};
    Shard& s = shard(ref.hash);
    std::unique_lock lock(s.mutex);
    auto it = s.map.find(ref);
    if (it != s.map.end()) {
      it->second.value = std::move(value);
      it->second.expires_ns = expires;
      it->second.referenced = true;
      return;
    }
    s.insert(ref, std::move(value), expires);
  }

  /// Atomic read-modify-write: `f(std::optional<V>&)` sees the current live value (or
  /// nullopt) and may change it, create it, or reset it to erase the entry. A created or
  /// changed entry gets `ttl` (or the default TTL) from now.
  template <class F>
  void update(const K& key, F&& f, std::chrono::nanoseconds ttl = std::chrono::nanoseconds{0}) {
    const Ref ref{hash_(key), key};
    Shard& s = shard(ref.hash);
    std::unique_lock lock(s.mutex);
    auto it = s.map.find(ref);
    if (it != s.map.end() && expired(it->second)) {
      s.remove(it);
      expirations_.inc();
      it = s.map.end();
    }
    std::optional<V> current;
    if (it != s.map.end()) current.emplace(std::move(it->second.value));
    f(current);
    const std::int64_t expires = deadline_ns<Clock>(ttl.count() > 0 ? ttl : default_ttl_);
    if (it != s.map.end()) {
      if (current) {
        it->second.value = std::move(*current);
        it->second.expires_ns = expires;
        it->second.referenced = true;
      } else {
        s.remove(it);
      }
    } else if (current) {
      s.insert(ref, std::move(*current), expires);
    }
  }

  /// Removes the key; returns whether a live entry was removed.
  bool erase(const K& key) {
    const Ref ref{hash_(key), key};
    Shard& s = shard(ref.hash);
    std::unique_lock lock(s.mutex);
    auto it = s.map.find(ref);
    if (it == s.map.end()) return false;
    const bool live = !expired(it->second);
    s.remove(it);
    return live;
  }

  /// Removes expired entries, examining at most `max_slots` slots in total (bounded work per
  /// call, so a periodic timer can call it without stalling). Returns how many it removed.
  std::size_t sweep(std::size_t max_slots) {
    std::size_t removed = 0;
    const std::int64_t now = now_ns<Clock>();
    const std::size_t per_shard = std::max<std::size_t>(1, max_slots / shard_count_);
    while (max_slots > 0) {
      Shard& s = shards_[sweep_shard_.fetch_add(1, std::memory_order_relaxed) & shard_mask_];
      const std::size_t budget = std::min(per_shard, max_slots);
      std::unique_lock lock(s.mutex);
      removed += s.sweep(budget, now);
      max_slots -= budget;
    }
    return removed;
  }

  CacheStats stats() const {
    CacheStats total;
    total.hits = hits_.value();
    total.misses = misses_.value();
    total.evictions = evictions_.value();
    total.expirations = expirations_.value();
    total.size = size();
    return total;
  }

  /// Stored entries, including expired ones not yet removed.
  std::size_t size() const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < shard_count_; ++i) {
      std::shared_lock lock(shards_[i].mutex);
      n += shards_[i].map.size();
    }
    return n;
  }
  std::size_t capacity() const noexcept { return shard_count_ * shards_[0].ring.size(); }
  std::size_t shard_count() const noexcept { return shard_count_; }

 private:
  struct Entry {
    V value;
    std::int64_t expires_ns;
    std::uint32_t slot;
    bool referenced;
  };
  using Stored = detail::HashedKey<K>;
  using Ref = detail::HashedKeyRef<K>;
  using Map = std::unordered_map<Stored, Entry, detail::HashedKeyHash, detail::HashedKeyEqual<KeyEqual>>;
  using Node = typename Map::value_type;

  static bool expired(const Entry& e) noexcept { return e.expires_ns != 0 && e.expires_ns <= now_ns<Clock>(); }

  struct alignas(128) Shard {  // at least its lock's alignment (clang rejects less)
    mutable detail::ReaderBiasedLock mutex;
    ConcurrentCache* owner = nullptr;
    Map map;
    // CLOCK ring over map nodes (references into an unordered_map stay valid across rehash).
    std::vector<Node*> ring;
    std::vector<std::uint32_t> free_slots;
    std::size_t hand = 0;
    std::size_t sweep_cursor = 0;

    void init(std::size_t capacity) {
      ring.assign(capacity, nullptr);
      free_slots.reserve(capacity);
      for (std::size_t i = capacity; i-- > 0;) free_slots.push_back(static_cast<std::uint32_t>(i));
      map.reserve(capacity);
    }

    void insert(const Ref& ref, V&& value, std::int64_t expires) {
      if (free_slots.empty()) evict_one();
      const std::uint32_t slot = free_slots.back();
      free_slots.pop_back();
      auto [it, ok] = map.emplace(Stored{ref.hash, ref.key}, Entry{std::move(value), expires, slot, false});
      (void)ok;
      ring[slot] = &*it;
    }

    void remove(typename Map::iterator it) {
      const std::uint32_t slot = it->second.slot;
      ring[slot] = nullptr;
      free_slots.push_back(slot);
      map.erase(it);
    }

    void evict_one() {
      // Every slot is occupied here, so at most two turns of the hand find a victim.
      for (;;) {
        Node* n = ring[hand];
        hand = hand + 1 == ring.size() ? 0 : hand + 1;
        if (n == nullptr) continue;
        if (n->second.referenced) {  // exclusive lock: no reader can race this write
          n->second.referenced = false;
          continue;
        }
        remove(map.find(n->first));
        owner->evictions_.inc();
        return;
      }
    }

    std::size_t sweep(std::size_t budget, std::int64_t now) {
      std::size_t removed = 0;
      for (std::size_t i = 0; i < budget && !map.empty(); ++i) {
        Node* n = ring[sweep_cursor];
        sweep_cursor = sweep_cursor + 1 == ring.size() ? 0 : sweep_cursor + 1;
        if (n != nullptr && n->second.expires_ns != 0 && n->second.expires_ns <= now) {
          remove(map.find(n->first));
          owner->expirations_.inc();
          ++removed;
        }
      }
      return removed;
    }
  };

  Shard& shard(std::size_t h) noexcept { return shards_[detail::mix_hash(h) & shard_mask_]; }

  Hash hash_{};
  std::chrono::nanoseconds default_ttl_;
  std::unique_ptr<Shard[]> shards_;
  std::size_t shard_count_ = 1;
  std::size_t shard_mask_ = 0;
  std::atomic<std::size_t> sweep_shard_{0};
  Counter hits_, misses_, evictions_, expirations_;
};

}  // namespace macula::core
