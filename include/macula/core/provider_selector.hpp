// ProviderSelector: picks which provider of a procedure serves the next call, in O(1).
//
// Replaces the old system's O(N) list walk per round-robin pick (seed finding 9). One
// ProviderSelector holds the providers of one key (one procedure in one realm); it is built
// from a snapshot of providers and swapped whole when the set changes, so selection never
// takes a lock.
//
// Strategies:
// - round_robin: a per-key atomic cursor.
// - random: a thread-local xorshift generator.
// - local_first: round robin over the providers on this node, else round robin over all.
// - least_outstanding: "power of two choices" — compare the outstanding-call counts of two
//   random providers and take the smaller. Exact least-outstanding needs an O(N) scan or a
//   heap with lock-protected updates on every call completion; two choices is O(1) and keeps
//   the maximum load within log log N of the optimum.
//
// Failover: select() takes the providers already tried (an ExclusionSet) and never returns
// one of them. It probes at most |excluded| + 1 candidates, so it stays O(1) for the few
// attempts a call makes (min(3, providers) by default).
//
// Thread-safety: select(), begin_call()/end_call() may be called from any thread concurrently.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace macula::core {

enum class SelectionStrategy { round_robin, random, local_first, least_outstanding };

/// What the selector needs to know about a provider; `id` is opaque to it (an index into the
/// caller's table of node ids, for instance).
struct ProviderInfo {
  std::uint64_t id = 0;
  bool local = false;
};

/// Providers already tried by one call. Small and allocation-free up to kInline entries.
class ExclusionSet {
 public:
  static constexpr std::size_t kInline = 8;

  void add(std::size_t index) {
    if (contains(index)) return;
    if (size_ < kInline) {
      inline_[size_++] = index;
    } else {
      overflow_.push_back(index);
      ++size_;
    }
  }
  bool contains(std::size_t index) const noexcept {
    const std::size_t n = size_ < kInline ? size_ : kInline;
    for (std::size_t i = 0; i < n; ++i)
      if (inline_[i] == index) return true;
    for (std::size_t v : overflow_)
      if (v == index) return true;
    return false;
  }
  std::size_t size() const noexcept { return size_; }

 private:
  std::size_t inline_[kInline]{};
  std::size_t size_ = 0;
  std::vector<std::size_t> overflow_;
};

class ProviderSelector {
 public:
  explicit ProviderSelector(std::vector<ProviderInfo> providers)
      : providers_(std::move(providers)),
        outstanding_(std::make_unique<std::atomic<std::uint32_t>[]>(providers_.size())) {
    for (std::size_t i = 0; i < providers_.size(); ++i) {
      outstanding_[i].store(0, std::memory_order_relaxed);
      if (providers_[i].local) local_.push_back(i);
    }
  }

  /// Index (into providers()) of the provider to try next, or nullopt when none is left.
  std::optional<std::size_t> select(SelectionStrategy strategy, const ExclusionSet& excluded = {}) {
    const std::size_t n = providers_.size();
    if (n == 0 || excluded.size() >= n) return std::nullopt;
    switch (strategy) {
      case SelectionStrategy::round_robin:
        return probe(cursor_.fetch_add(1, std::memory_order_relaxed) % n, excluded);
      case SelectionStrategy::random:
        return probe(next_random() % n, excluded);
      case SelectionStrategy::local_first: {
        const std::size_t m = local_.size();
        const std::size_t start = cursor_.fetch_add(1, std::memory_order_relaxed);
        for (std::size_t k = 0; k < m && k <= excluded.size(); ++k) {
          const std::size_t idx = local_[(start + k) % m];
          if (!excluded.contains(idx)) return idx;
        }
        return probe(start % n, excluded);
      }
      case SelectionStrategy::least_outstanding: {
        const auto a = probe(next_random() % n, excluded);
        const auto b = probe(next_random() % n, excluded);
        if (!a || !b) return a ? a : b;
        return outstanding(*a) <= outstanding(*b) ? a : b;
      }
    }
    return std::nullopt;
  }

  /// Call accounting for least_outstanding: begin_call when a call is sent to `index`,
  /// end_call when its reply, error or timeout arrives.
  void begin_call(std::size_t index) noexcept { outstanding_[index].fetch_add(1, std::memory_order_relaxed); }
  void end_call(std::size_t index) noexcept { outstanding_[index].fetch_sub(1, std::memory_order_relaxed); }
  std::uint32_t outstanding(std::size_t index) const noexcept {
    return outstanding_[index].load(std::memory_order_relaxed);
  }

  const std::vector<ProviderInfo>& providers() const noexcept { return providers_; }
  std::size_t size() const noexcept { return providers_.size(); }

 private:
  // First non-excluded index at or after `start` (wrapping). At most |excluded| + 1 probes.
  std::optional<std::size_t> probe(std::size_t start, const ExclusionSet& excluded) const {
    const std::size_t n = providers_.size();
    for (std::size_t k = 0; k <= excluded.size() && k < n; ++k) {
      const std::size_t idx = (start + k) % n;
      if (!excluded.contains(idx)) return idx;
    }
    return std::nullopt;
  }

  static std::uint64_t next_random() noexcept {
    thread_local std::uint64_t state =
        0x9E3779B97F4A7C15ULL ^ reinterpret_cast<std::uintptr_t>(&state);
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  }

  std::vector<ProviderInfo> providers_;
  std::vector<std::size_t> local_;
  std::unique_ptr<std::atomic<std::uint32_t>[]> outstanding_;
  alignas(64) std::atomic<std::uint64_t> cursor_{0};
};

}  // namespace macula::core
