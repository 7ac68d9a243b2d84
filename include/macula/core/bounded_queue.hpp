// BoundedQueue: the bounded MPMC queue every hand-off in libmacula goes through.
//
// Nothing in a node may grow without bound (seed findings 5, 12): each queue has a capacity
// and an overflow policy fixed at construction, and reports its depth, high-water mark,
// drops and rejections so that metrics and health checks can see it fill up.
//
// Overflow policies when full:
// - reject:      try_push fails with errc::queue_full; the caller keeps the item (counted
//                in rejected()).
// - drop_oldest: the oldest queued item is discarded to make room (counted in dropped()).
// - wait:        try_push fails with errc::queue_full; the producer registers to be told when
//                space frees up (wait_for_space, or the Asio adapter async_push in
//                bounded_queue_asio.hpp) and retries.
//
// Waiters are themselves bounded (max_waiters); past it, errc::too_many_waiters.
// Waiter callbacks run on the thread that freed the space / pushed the item / closed the
// queue, outside the queue's lock; they must be quick (the Asio adapter only posts).
//
// Implementation: a mutex around a ring buffer. At the depths and rates a node hands off
// (batches, not single bytes) a short critical section is cheaper and simpler than a
// lock-free ring with the same policies; depth is mirrored in an atomic so readers of
// metrics never take the lock.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "macula/core/unique_function.hpp"
#include "macula/error.hpp"

namespace macula::core {

enum class OverflowPolicy { reject, drop_oldest, wait };

template <class T>
class BoundedQueue {
 public:
  using Waiter = detail::UniqueFunction<void(std::error_code)>;

  BoundedQueue(std::size_t capacity, OverflowPolicy policy, std::size_t max_waiters = 1024)
      : ring_(capacity == 0 ? 1 : capacity), policy_(policy), max_waiters_(max_waiters) {}

  BoundedQueue(const BoundedQueue&) = delete;
  BoundedQueue& operator=(const BoundedQueue&) = delete;

  /// Pushes by the queue's policy. Errors: queue_full (reject, wait), queue_closed.
  /// On error `value` is left untouched, so the caller still owns it.
  std::error_code try_push(T& value) {
    Waiter wake;
    {
      std::lock_guard lock(mutex_);
      if (closed_) return errc::queue_closed;
      if (count_ == ring_.size()) {
        if (policy_ != OverflowPolicy::drop_oldest) {
          if (policy_ == OverflowPolicy::reject) rejected_.fetch_add(1, std::memory_order_relaxed);
          return errc::queue_full;
        }
        ring_[head_].reset();
        head_ = next(head_);
        --count_;
        dropped_.fetch_add(1, std::memory_order_relaxed);
      }
      ring_[(head_ + count_) % ring_.size()].emplace(std::move(value));
      ++count_;
      publish_depth();
      wake = take_waiter(item_waiters_);
    }
    if (wake) wake(std::error_code{});
    return {};
  }
  std::error_code try_push(T&& value) { return try_push(value); }

  std::optional<T> try_pop() {
    std::optional<T> out;
    Waiter wake;
    {
      std::lock_guard lock(mutex_);
      if (count_ == 0) return out;
      out = std::move(ring_[head_]);
      ring_[head_].reset();
      head_ = next(head_);
      --count_;
      publish_depth();
      wake = take_waiter(space_waiters_);
    }
    if (wake) wake(std::error_code{});
    return out;
  }

  /// Moves up to `max` items into `out` under one lock acquisition; returns how many.
  std::size_t pop_batch(std::vector<T>& out, std::size_t max) {
    std::vector<Waiter> wake;
    std::size_t n = 0;
    {
      std::lock_guard lock(mutex_);
      for (; n < max && count_ > 0; ++n) {
        out.push_back(std::move(*ring_[head_]));
        ring_[head_].reset();
        head_ = next(head_);
        --count_;
        if (auto w = take_waiter(space_waiters_)) wake.push_back(std::move(w));
      }
      publish_depth();
    }
    for (auto& w : wake) w(std::error_code{});
    return n;
  }

  /// Registers `w` to be called once when space may have freed up (or with queue_closed).
  /// If there is space already, `w` is called at once on this thread.
  /// Errors (w not stored, not called): too_many_waiters, queue_closed.
  std::error_code wait_for_space(Waiter w) { return wait(std::move(w), space_waiters_, true); }

  /// Registers `w` to be called once when an item may be available (or with queue_closed).
  std::error_code wait_for_item(Waiter w) { return wait(std::move(w), item_waiters_, false); }

  /// Refuses further pushes and wakes every waiter with errc::queue_closed. Queued items
  /// can still be popped.
  void close() {
    std::deque<Waiter> a, b;
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
      a.swap(space_waiters_);
      b.swap(item_waiters_);
      waiter_count_.store(0, std::memory_order_relaxed);
    }
    for (auto& w : a) w(make_error_code(errc::queue_closed));
    for (auto& w : b) w(make_error_code(errc::queue_closed));
  }

  std::size_t size() const noexcept { return depth_.load(std::memory_order_relaxed); }
  /// The depth read under the queue's lock: ordered with every push and pop (what a consumer
  /// needs to decide "empty, stop" without missing a concurrent push).
  std::size_t locked_size() const {
    std::lock_guard lock(mutex_);
    return count_;
  }
  std::size_t capacity() const noexcept { return ring_.size(); }
  std::size_t high_water() const noexcept { return high_water_.load(std::memory_order_relaxed); }
  std::uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }
  std::uint64_t rejected() const noexcept { return rejected_.load(std::memory_order_relaxed); }
  std::size_t waiters() const noexcept { return waiter_count_.load(std::memory_order_relaxed); }
  OverflowPolicy policy() const noexcept { return policy_; }
  bool closed() const {
    std::lock_guard lock(mutex_);
    return closed_;
  }

 private:
  std::size_t next(std::size_t i) const noexcept { return i + 1 == ring_.size() ? 0 : i + 1; }

  void publish_depth() noexcept {
    depth_.store(count_, std::memory_order_relaxed);
    if (count_ > high_water_.load(std::memory_order_relaxed))
      high_water_.store(count_, std::memory_order_relaxed);
  }

  Waiter take_waiter(std::deque<Waiter>& list) {
    if (list.empty()) return {};
    Waiter w = std::move(list.front());
    list.pop_front();
    waiter_count_.fetch_sub(1, std::memory_order_relaxed);
    return w;
  }

  std::error_code wait(Waiter w, std::deque<Waiter>& list, bool for_space) {
    {
      std::lock_guard lock(mutex_);
      if (closed_) return errc::queue_closed;
      const bool ready = for_space ? count_ < ring_.size() : count_ > 0;
      if (!ready) {
        if (space_waiters_.size() + item_waiters_.size() >= max_waiters_) return errc::too_many_waiters;
        list.push_back(std::move(w));
        waiter_count_.fetch_add(1, std::memory_order_relaxed);
        return {};
      }
    }
    w(std::error_code{});
    return {};
  }

  mutable std::mutex mutex_;
  std::vector<std::optional<T>> ring_;
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  bool closed_ = false;
  const OverflowPolicy policy_;
  const std::size_t max_waiters_;
  std::deque<Waiter> space_waiters_;
  std::deque<Waiter> item_waiters_;
  std::atomic<std::size_t> depth_{0};
  std::atomic<std::size_t> high_water_{0};
  std::atomic<std::size_t> waiter_count_{0};
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<std::uint64_t> rejected_{0};
};

}  // namespace macula::core
