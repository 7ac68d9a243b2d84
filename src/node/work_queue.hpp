// WorkQueue: runs queued items on the handler executor with bounded parallelism.
//
// Posting one executor task per item costs a lock and often a thread wake-up each; under load
// that dominates (a 1,000-subscription fan-out was capped at 2-4 M deliveries/s by it). Here
// producers append items under one lock (a whole batch at once), and at most `parallelism`
// runner tasks take items one at a time; `run(item)` returns true to queue the item again at
// the back (a subscription that still has messages). A slow item holds only the runner running
// it. A runner gives its thread back after kTurnsPerTask items (re-posting itself), so other
// work on the same executor is not starved by sustained load. The queue holds at most what
// producers bound elsewhere (ready subscriptions; RPC calls admitted by the pending and
// concurrency bounds).
#pragma once

#include <algorithm>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "macula/node_options.hpp"

namespace macula::node {

template <class Item, class Run>
class WorkQueue : public std::enable_shared_from_this<WorkQueue<Item, Run>> {
 public:
  static constexpr std::size_t kTurnsPerTask = 256;

  WorkQueue(HandlerExecutor executor, std::size_t parallelism, Run run = Run{})
      : executor_(std::move(executor)), parallelism_(parallelism == 0 ? 1 : parallelism), run_(std::move(run)) {}

  /// Any thread: appends the items and starts runners up to the parallelism. Empties `items`.
  void push(std::vector<Item>& items) {
    if (items.empty()) return;
    std::size_t start = 0;
    {
      std::lock_guard lock(mutex_);
      for (auto& i : items) queue_.push_back(std::move(i));
      while (active_ < parallelism_ && start < queue_.size()) {
        ++active_;
        ++start;
      }
      high_water_ = std::max(high_water_, queue_.size());
    }
    items.clear();
    for (std::size_t i = 0; i < start; ++i) post();
  }
  void push(Item item) {
    std::vector<Item> one;
    one.push_back(std::move(item));
    push(one);
  }

  std::size_t depth() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
  }
  std::size_t high_water() const {
    std::lock_guard lock(mutex_);
    return high_water_;
  }

 private:
  void post() {
    executor_([self = this->shared_from_this()] { self->drain(); });
  }

  void drain() {
    for (std::size_t turn = 0; turn < kTurnsPerTask; ++turn) {
      Item item;
      {
        std::lock_guard lock(mutex_);
        if (queue_.empty()) {
          --active_;
          return;
        }
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      if (run_(item)) {
        std::lock_guard lock(mutex_);
        queue_.push_back(std::move(item));
      }
    }
    post();  // still busy: yield the thread to other queued work, then continue
  }

  HandlerExecutor executor_;
  std::size_t parallelism_;
  Run run_;
  mutable std::mutex mutex_;
  std::deque<Item> queue_;
  std::size_t active_ = 0;
  std::size_t high_water_ = 0;
};

}  // namespace macula::node
