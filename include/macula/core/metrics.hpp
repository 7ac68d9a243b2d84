// Metric primitives: Counter, Gauge, Histogram. Lock-free on the hot path.
//
// They are plain objects usable on their own; observe/metrics_registry.hpp names them and
// renders them as Prometheus text. Every operation is safe from any thread.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

#include "macula/core/detail/thread_slot.hpp"

namespace macula::core {

/// Monotonic counter. Increments go to one of a few cache-line-padded cells picked by thread,
/// so counters bumped from several threads at once do not bounce one cache line.
class Counter {
 public:
  void inc(std::uint64_t n = 1) noexcept { cells_[cell_index()].v.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept {
    std::uint64_t sum = 0;
    for (const auto& c : cells_) sum += c.v.load(std::memory_order_relaxed);
    return sum;
  }

 private:
  static constexpr std::size_t kCells = 8;
  struct alignas(128) Cell {  // 128: the adjacent-line prefetcher pairs 64-byte lines
    std::atomic<std::uint64_t> v{0};
  };
  static std::size_t cell_index() noexcept { return detail::thread_slot() % kCells; }
  std::array<Cell, kCells> cells_{};
};

/// A value that goes up and down (queue depth, connections).
class Gauge {
 public:
  void set(double v) noexcept { v_.store(v, std::memory_order_relaxed); }
  void add(double d) noexcept { v_.fetch_add(d, std::memory_order_relaxed); }
  void sub(double d) noexcept { v_.fetch_sub(d, std::memory_order_relaxed); }
  double value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0.0};
};

/// Cumulative histogram with fixed upper bounds (Prometheus semantics: bucket i counts
/// observations <= bounds[i]; an implicit +Inf bucket counts everything).
class Histogram {
 public:
  /// Latency buckets in seconds, 50 µs .. 10 s: the range from a loopback RPC to a timeout.
  static std::vector<double> latency_buckets() {
    return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
            0.1,     0.25,   0.5,     1.0,    2.5,   5.0,    10.0};
  }

  explicit Histogram(std::vector<double> bounds = latency_buckets())
      : bounds_(std::move(bounds)), counts_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {
    std::sort(bounds_.begin(), bounds_.end());
    for (std::size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
  }

  void observe(double v) noexcept {
    const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
    counts_[static_cast<std::size_t>(it - bounds_.begin())].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(v, std::memory_order_relaxed);
  }

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<std::uint64_t> cumulative;  ///< one per bound, then +Inf
    double sum = 0;
    std::uint64_t count = 0;
  };
  Snapshot snapshot() const {
    Snapshot s;
    s.bounds = bounds_;
    std::uint64_t running = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
      running += counts_[i].load(std::memory_order_relaxed);
      s.cumulative.push_back(running);
    }
    s.count = running;
    s.sum = sum_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;
  std::atomic<double> sum_{0.0};
};

}  // namespace macula::core
