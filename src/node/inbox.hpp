// Inbox: every hand-over from other threads to the node's strand, and the publish queue's
// bound.
//
// One FIFO carries publishes and API operations, so one thread's operations reach the strand
// in the order it made them (subscribe, then publish: the publish sees the subscription), with
// one strand post per batch. An urgent lane carries the engines' own wake-ups (RPC answers from
// handler threads, cancellations, a subscription with room again): they owe no order to API
// operations and run at the start of the next turn instead of behind a deep publish backlog.
// A turn carries out at most kTurn items, then gives the io thread back: a producer faster than
// the network must not keep the strand from reading its links.
//
// Publishes count against max_publish_queue(_bytes) from push until the engine reports them
// released (every link took them, or they failed). A full queue is seen without the lock (a
// producer in a tight loop must not starve the strand and the handler threads of it: glibc's
// mutex is not fair); a blocking publisher waits on a condition variable.
//
// Threading: push_*() and released() from any thread; turn() on the strand.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <variant>
#include <vector>

#include "macula/node_options.hpp"
#include "node/engine_types.hpp"
#include "node/node_metrics.hpp"

namespace macula::node {

class Inbox {
 public:
  using Task = core::detail::UniqueFunction<void()>;
  static constexpr std::size_t kTurn = 4096;

  /// `schedule` posts one strand turn (it calls turn()).
  Inbox(const NodeOptions& options, NodeMetrics& metrics, std::function<void()> schedule)
      : options_(options), metrics_(metrics), schedule_(std::move(schedule)) {}

  /// A publish from a user thread. Full queue: with `wait_until` (block policy) waits for room
  /// until then (would_block after; never on `on_strand_thread`), else queue_full (counted).
  /// Errors: not_started once stopped.
  std::error_code push_publish(Outgoing&& m, std::optional<Clock::time_point> wait_until, bool on_strand_thread);
  /// Any thread: whether a drop-policy publish of `bytes` would be refused now; if so it is
  /// counted (node and `drops`). Lets a caller refuse before copying the payload.
  bool refuse_if_full(std::size_t bytes, std::atomic<std::uint64_t>* drops);
  /// A publish already on the strand (the HTTP/3 API): counted in the queue, not queued.
  /// Errors: queue_full.
  std::error_code count_publish(std::size_t bytes);
  void push(Task f, bool urgent);
  /// Publishes left the queue: room for waiting publishers.
  void released(std::size_t count, std::size_t bytes);
  /// Refuse publishes from now on and wake every waiting publisher.
  void stop();

  /// Strand: one turn — urgent tasks, then up to kTurn items (publishes to `publish`), then
  /// `after`; a turn is scheduled again while items remain.
  template <class OnPublish>
  void turn(OnPublish&& publish, const std::function<void()>& after) {
    take_batch();
    for (auto& f : urgent_batch_) f();
    urgent_batch_.clear();
    const std::size_t end = std::min(batch_.size(), pos_ + kTurn);
    for (; pos_ < end; ++pos_) {
      auto& item = batch_[pos_];
      if (auto* m = std::get_if<Outgoing>(&item)) publish(std::move(*m));
      else std::get<Task>(item)();
    }
    after();
    finish_turn();
  }

  /// Strand: nothing waits, queued or in the current batch.
  bool empty() const;
  std::size_t depth() const noexcept { return publishes_.load(std::memory_order_relaxed); }

 private:
  using Item = std::variant<Outgoing, Task>;
  bool full(std::size_t bytes) const;
  void count_in(std::size_t bytes);
  void take_batch();
  void finish_turn();
  void wake_strand_locked(bool& post);

  const NodeOptions& options_;
  NodeMetrics& metrics_;
  std::function<void()> schedule_;
  mutable std::mutex mutex_;
  std::condition_variable room_;
  std::size_t waiters_ = 0;
  std::atomic<bool> stopped_{false};  // also read by the lock-free fast path
  std::vector<Item> items_;
  std::vector<Task> urgent_;
  bool scheduled_ = false;
  // Changed only under the lock; read without it by the full-queue fast path (a stale read only
  // moves one refusal by one message).
  std::atomic<std::size_t> publishes_{0}, bytes_{0};
  std::size_t high_water_ = 0;
  // Strand only: the batch being carried out.
  std::vector<Item> batch_;
  std::size_t pos_ = 0;
  std::vector<Task> urgent_batch_;
};

}  // namespace macula::node
