// Subscription: one local subscriber's bounded queue and the task that drains it.
//
// The network strand pushes matched messages (deliver()); the queue's overflow policy decides
// what a full queue loses, and the loss is counted here. In callback mode a subscription that
// becomes ready is handed to the node's DispatchQueue, at most once at a time (the scheduled
// mark), so one subscription's handler sees messages in order and a slow handler holds only
// its own queue and one worker.
// In pull mode receivers wait on the queue. close() stops both: no handler call starts after
// it, waiting receivers complete with errc::cancelled.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "macula/core/bounded_queue.hpp"
#include "macula/detail/completion.hpp"
#include "macula/error.hpp"
#include "macula/message.hpp"
#include "macula/node_options.hpp"
#include "macula/subscriber.hpp"

namespace macula::node {

/// Marks library callback threads, so blocking calls made from them fail fast.
struct CallbackScope {
  CallbackScope() noexcept { ++depth(); }
  ~CallbackScope() { --depth(); }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;
  static bool active() noexcept { return depth() > 0; }
  static int& depth() noexcept {
    thread_local int d = 0;
    return d;
  }
};

class Subscription : public std::enable_shared_from_this<Subscription> {
 public:
  Subscription(std::string pattern, MessageHandler handler, const SubscribeOptions& options)
      : pattern_(std::make_shared<const std::string>(std::move(pattern))),
        handler_(std::move(handler)),
        // An inline subscription queues nothing: one slot, not queue_capacity of them.
        queue_(options.queue_capacity == 0 || (options.inline_handler && handler_) ? 1 : options.queue_capacity,
               options.overflow == SubscriberOverflow::drop_oldest ? core::OverflowPolicy::drop_oldest
                                                                   : core::OverflowPolicy::reject),
        batch_(options.batch == 0 ? 1 : options.batch),
        inline_(options.inline_handler && handler_) {}

  const std::shared_ptr<const std::string>& pattern() const noexcept { return pattern_; }
  bool pull_mode() const noexcept { return !handler_; }

  /// Network strand. Returns how many messages the queue lost to this delivery: 1 when the
  /// arriving message was refused (drop_newest, or closed) or an old one made room for it
  /// (drop_oldest), else 0. Sets `schedule_me` when the subscription just became ready and
  /// must be handed to the DispatchQueue (callback mode).
  std::uint64_t deliver(const std::shared_ptr<const detail::MessageBody>& body, bool& schedule_me) {
    schedule_me = false;
    if (closed_.load(std::memory_order_relaxed)) return 1;
    if (inline_) {
      // The caller's thread is the handler's: no queue, no hand-over (SubscribeOptions).
      received_.fetch_add(1, std::memory_order_relaxed);
      CallbackScope scope;
      try {
        handler_(Message(body, pattern_));
      } catch (...) {
        handler_errors_.fetch_add(1, std::memory_order_relaxed);
      }
      return 0;
    }
    const std::uint64_t before = queue_.dropped();
    Message m(body, pattern_);
    if (queue_.try_push(m)) return 1;  // drop_newest refused it (or the queue closed)
    received_.fetch_add(1, std::memory_order_relaxed);
    if (handler_) schedule_me = try_mark_scheduled();
    return queue_.dropped() - before;
  }

  /// Handler executor (one caller at a time: whoever holds the scheduled mark). Runs the
  /// handler on up to `batch` queued messages. Returns true when messages remain and this
  /// caller still holds the mark: queue the subscription again.
  bool drain_batch() {
    CallbackScope scope;
    batch_buffer_.clear();
    queue_.pop_batch(batch_buffer_, batch_);
    for (const Message& m : batch_buffer_) {
      if (closed_.load(std::memory_order_relaxed)) break;
      try {
        handler_(m);
      } catch (...) {
        handler_errors_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    batch_buffer_.clear();
    room_freed();
    scheduled_.store(false, std::memory_order_release);
    // A push between pop_batch and the store above may have seen the mark set and not
    // scheduled. The queue's lock orders that push with this check: either the check sees the
    // item, or the push (locking after us) sees the mark cleared and schedules.
    return queue_.locked_size() > 0 && !closed_.load(std::memory_order_relaxed) && try_mark_scheduled();
  }

  /// Pull mode: completes `done` with the next message (now or when one arrives).
  void receive(detail::Completion<std::error_code, Message> done) {
    if (!pull_mode()) return done(errc::wrong_mode, Message{});
    if (auto m = queue_.try_pop()) {
      room_freed();
      return done({}, std::move(*m));
    }
    if (closed_.load()) return done(errc::cancelled, Message{});
    auto slot = std::make_shared<detail::Completion<std::error_code, Message>>(std::move(done));
    const std::error_code ec = queue_.wait_for_item([self = shared_from_this(), slot](std::error_code e) {
      if (e) return (*slot)(e == errc::queue_closed ? make_error_code(errc::cancelled) : e, Message{});
      self->receive(std::move(*slot));
    });
    if (ec) (*slot)(ec == errc::queue_closed ? make_error_code(errc::cancelled) : ec, Message{});
  }
  std::optional<Message> try_receive() {
    auto m = queue_.try_pop();
    if (m) room_freed();
    return m;
  }

  /// Set once, before the first delivery: called (from the consumer's thread) when the
  /// consumer took messages out after want_room().
  void set_room_callback(std::function<void()> callback) { room_callback_ = std::move(callback); }
  /// Network strand, when this full queue holds up a QoS 1 message: asks for the room
  /// callback. Returns true when there is room already (then no callback is owed).
  bool want_room() {
    room_wanted_.store(true);
    // Ordered with the consumer's pop by the queue's lock: either this sees the room, or the
    // consumer, popping after it, sees the flag.
    if (queue_.locked_size() < queue_.capacity()) {
      room_wanted_.store(false);
      return true;
    }
    return false;
  }

  void close() {
    closed_.store(true);
    queue_.close();
    room_freed();  // nothing waits for a closed queue
  }
  bool closed() const noexcept { return closed_.load(std::memory_order_relaxed); }

  std::size_t queued() const noexcept { return queue_.size(); }
  std::size_t high_water() const noexcept { return queue_.high_water(); }
  std::size_t capacity() const noexcept { return queue_.capacity(); }
  std::uint64_t dropped() const noexcept { return queue_.dropped() + queue_.rejected(); }
  std::uint64_t received() const noexcept { return received_.load(std::memory_order_relaxed); }
  std::uint64_t handler_errors() const noexcept { return handler_errors_.load(std::memory_order_relaxed); }

 private:
  void room_freed() {
    if (room_wanted_.load() && room_wanted_.exchange(false) && room_callback_) room_callback_();
  }

  // Called after a push (which held the queue's lock) or after drain_batch's locked check: the
  // lock orders both with the consumer's mark clearing, so a plain load skips the costly
  // exchange on the hot path (the subscription is usually scheduled already under load).
  bool try_mark_scheduled() {
    if (scheduled_.load(std::memory_order_acquire)) return false;
    return !scheduled_.exchange(true, std::memory_order_acq_rel);
  }

  std::shared_ptr<const std::string> pattern_;
  MessageHandler handler_;
  core::BoundedQueue<Message> queue_;
  std::size_t batch_;
  const bool inline_;
  std::vector<Message> batch_buffer_;  // only the (single) running drain task touches it
  std::atomic<bool> scheduled_{false};
  std::atomic<bool> closed_{false};
  std::atomic<bool> room_wanted_{false};
  std::function<void()> room_callback_;
  std::atomic<std::uint64_t> received_{0};
  std::atomic<std::uint64_t> handler_errors_{0};
};

}  // namespace macula::node
