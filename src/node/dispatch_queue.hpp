// DispatchQueue: runs ready subscriptions' handlers on the handler executor.
//
// Posting one executor task per subscription per message (or per ready subscription) costs a
// lock and often a thread wake-up each: at a fan-out of 1,000 that dominates delivery. Here
// the strand hands over every subscription a publish made ready under one lock, and at most
// `parallelism` worker tasks drain the ready list, one batch of one subscription at a time,
// re-queueing a subscription at the back while it still has messages. A slow handler holds
// only the worker running it; the others keep draining everyone else. A task gives its thread
// back after `kTurnsPerTask` batches (re-posting itself), so RPC handlers sharing the pool are
// not starved by sustained pub/sub load.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "macula/node_options.hpp"
#include "node/subscription.hpp"

namespace macula::node {

class DispatchQueue : public std::enable_shared_from_this<DispatchQueue> {
 public:
  static constexpr std::size_t kTurnsPerTask = 256;

  DispatchQueue(HandlerExecutor executor, std::size_t parallelism)
      : executor_(std::move(executor)), parallelism_(parallelism == 0 ? 1 : parallelism) {}

  /// Any thread: appends the subscriptions (each holding its scheduled mark) and starts
  /// worker tasks up to the parallelism. Empties `ready`.
  void schedule(std::vector<std::shared_ptr<Subscription>>& ready) {
    if (ready.empty()) return;
    std::size_t start = 0;
    {
      std::lock_guard lock(mutex_);
      for (auto& s : ready) queue_.push_back(std::move(s));
      while (active_ < parallelism_ && start < queue_.size()) {
        ++active_;
        ++start;
      }
      depth_high_water_ = std::max(depth_high_water_, queue_.size());
    }
    ready.clear();
    for (std::size_t i = 0; i < start; ++i) post();
  }

  std::size_t depth() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
  }
  std::size_t high_water() const {
    std::lock_guard lock(mutex_);
    return depth_high_water_;
  }

 private:
  void post() {
    executor_([self = shared_from_this()] { self->run(); });
  }

  void run() {
    for (std::size_t turn = 0; turn < kTurnsPerTask; ++turn) {
      std::shared_ptr<Subscription> s;
      {
        std::lock_guard lock(mutex_);
        if (queue_.empty()) {
          --active_;
          return;
        }
        s = std::move(queue_.front());
        queue_.pop_front();
      }
      if (s->drain_batch()) {
        std::lock_guard lock(mutex_);
        queue_.push_back(std::move(s));
      }
    }
    post();  // still busy: yield the thread to other queued work, then continue
  }

  HandlerExecutor executor_;
  std::size_t parallelism_;
  mutable std::mutex mutex_;
  std::deque<std::shared_ptr<Subscription>> queue_;  // bounded by the number of subscriptions
  std::size_t active_ = 0;
  std::size_t depth_high_water_ = 0;
};

}  // namespace macula::node
