// The naive structures libmacula's core replaces, kept only to be timed against.
// Each mirrors what the old Erlang system did (SEED_FINDINGS.md), written as a competent
// C++ programmer would write that same algorithm — the baseline is the algorithm, not a
// deliberately slow implementation.
#pragma once

#include <cstddef>
#include <iterator>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace macula::bench {

/// Finding 1: the old cache was a list; get/put walk it (O(N)), a hit moves to the front.
template <class K, class V>
class ListLru {
 public:
  explicit ListLru(std::size_t capacity) : capacity_(capacity) {}
  std::optional<V> get(const K& k) {
    std::lock_guard lock(mutex_);
    for (auto it = items_.begin(); it != items_.end(); ++it) {
      if (it->first == k) {
        items_.splice(items_.begin(), items_, it);
        return it->second;
      }
    }
    return std::nullopt;
  }
  void put(const K& k, V v) {
    std::lock_guard lock(mutex_);
    for (auto it = items_.begin(); it != items_.end(); ++it) {
      if (it->first == k) {
        it->second = std::move(v);
        items_.splice(items_.begin(), items_, it);
        return;
      }
    }
    items_.emplace_front(k, std::move(v));
    if (items_.size() > capacity_) items_.pop_back();
  }
  /// Fills without the search, for setting up large lists (the caller knows `k` is new).
  void put_new(const K& k, V v) { items_.emplace_front(k, std::move(v)); }

 private:
  std::mutex mutex_;
  std::list<std::pair<K, V>> items_;
  std::size_t capacity_;
};

/// The textbook LRU: one mutex, a hash map into a recency list.
template <class K, class V>
class MutexMapLru {
 public:
  explicit MutexMapLru(std::size_t capacity) : capacity_(capacity) { map_.reserve(capacity); }
  std::optional<V> get(const K& k) {
    std::lock_guard lock(mutex_);
    auto it = map_.find(k);
    if (it == map_.end()) return std::nullopt;
    items_.splice(items_.begin(), items_, it->second);
    return it->second->second;
  }
  void put(const K& k, V v) {
    std::lock_guard lock(mutex_);
    auto it = map_.find(k);
    if (it != map_.end()) {
      it->second->second = std::move(v);
      items_.splice(items_.begin(), items_, it->second);
      return;
    }
    items_.emplace_front(k, std::move(v));
    map_.emplace(k, items_.begin());
    if (items_.size() > capacity_) {
      map_.erase(items_.back().first);
      items_.pop_back();
    }
  }

 private:
  std::mutex mutex_;
  std::list<std::pair<K, V>> items_;
  std::unordered_map<K, typename std::list<std::pair<K, V>>::iterator> map_;
  std::size_t capacity_;
};

/// Finding 9: round robin by walking a list to the n-th provider.
class ListRoundRobin {
 public:
  explicit ListRoundRobin(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) providers_.push_back(i);
  }
  std::size_t select() {
    std::lock_guard lock(mutex_);
    auto it = providers_.begin();
    std::advance(it, static_cast<std::ptrdiff_t>(cursor_++ % providers_.size()));
    return *it;
  }

 private:
  std::mutex mutex_;
  std::list<std::size_t> providers_;
  std::size_t cursor_ = 0;
};

/// Finding 6: publish scans every subscription with a per-pair matcher. Patterns are split
/// once at subscribe time and the matcher allocates nothing, so the baseline's cost is the
/// scan itself.
class LinearScanMatcher {
 public:
  void add(std::string_view pattern, std::uint64_t id) {
    std::vector<std::string> segs;
    std::size_t start = 0;
    for (;;) {
      const auto dot = pattern.find('.', start);
      segs.emplace_back(pattern.substr(start, dot == std::string_view::npos ? dot : dot - start));
      if (dot == std::string_view::npos) break;
      start = dot + 1;
    }
    subs_.push_back({std::move(segs), id});
  }
  void match(const std::vector<std::string_view>& topic, std::vector<std::uint64_t>& out) const {
    for (const auto& s : subs_)
      if (matches(s.segs, 0, topic, 0)) out.push_back(s.id);
  }
  std::size_t size() const { return subs_.size(); }

 private:
  struct Sub {
    std::vector<std::string> segs;
    std::uint64_t id;
  };
  static bool matches(const std::vector<std::string>& p, std::size_t i, const std::vector<std::string_view>& t,
                      std::size_t j) {
    for (; i < p.size(); ++i, ++j) {
      if (p[i] == "#" || p[i] == "**") {
        for (std::size_t k = j; k <= t.size(); ++k)
          if (matches(p, i + 1, t, k)) return true;
        return false;
      }
      if (j == t.size()) return false;
      if (p[i] != "*" && p[i] != t[j]) return false;
    }
    return j == t.size();
  }
  std::vector<Sub> subs_;
};

}  // namespace macula::bench
