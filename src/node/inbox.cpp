#include "node/inbox.hpp"

#include <algorithm>

#include "macula/error.hpp"

namespace macula::node {

bool Inbox::full(std::size_t bytes) const {
  const std::size_t n = publishes_.load(std::memory_order_relaxed);
  return n >= options_.max_publish_queue ||
         (n > 0 && bytes_.load(std::memory_order_relaxed) + bytes > options_.max_publish_queue_bytes);
}

// Under the lock: plain loads and stores, no locked instruction per publish.
void Inbox::count_in(std::size_t bytes) {
  const std::size_t n = publishes_.load(std::memory_order_relaxed) + 1;
  publishes_.store(n, std::memory_order_relaxed);
  bytes_.store(bytes_.load(std::memory_order_relaxed) + bytes, std::memory_order_relaxed);
  high_water_ = std::max(high_water_, n);
}

void Inbox::wake_strand_locked(bool& post) {
  post = !scheduled_;
  scheduled_ = true;
}

std::error_code Inbox::push_publish(Outgoing&& m, std::optional<Clock::time_point> wait_until, bool on_strand_thread) {
  const std::size_t bytes = m.payload_size();
  auto refuse = [&] {
    metrics_.drop_queue_full->inc();
    m.count_drop();
    return make_error_code(errc::queue_full);
  };
  if (!wait_until && full(bytes)) return stopped_ ? make_error_code(errc::not_started) : refuse();
  bool post = false;
  {
    std::unique_lock lock(mutex_);
    if (stopped_) return errc::not_started;
    if (full(bytes)) {
      if (!wait_until) return refuse();
      if (on_strand_thread) return errc::would_block;  // it would wait for itself
      ++waiters_;
      const bool room = room_.wait_until(lock, *wait_until, [&] { return stopped_ || !full(bytes); });
      --waiters_;
      if (stopped_) return errc::not_started;
      if (!room) return errc::would_block;
    }
    count_in(bytes);
    items_.emplace_back(std::move(m));
    wake_strand_locked(post);
  }
  if (post) schedule_();
  return {};
}

bool Inbox::refuse_if_full(std::size_t bytes, std::atomic<std::uint64_t>* drops) {
  if (!full(bytes)) return false;
  metrics_.drop_queue_full->inc();
  if (drops) drops->fetch_add(1, std::memory_order_relaxed);
  return true;
}

std::error_code Inbox::count_publish(std::size_t bytes) {
  std::lock_guard lock(mutex_);
  if (full(bytes)) {
    metrics_.drop_queue_full->inc();
    return errc::queue_full;
  }
  count_in(bytes);
  return {};
}

void Inbox::push(Task f, bool urgent) {
  bool post = false;
  {
    std::lock_guard lock(mutex_);
    if (urgent) urgent_.push_back(std::move(f));
    else items_.emplace_back(std::move(f));
    wake_strand_locked(post);
  }
  if (post) schedule_();
}

void Inbox::released(std::size_t count, std::size_t bytes) {
  std::lock_guard lock(mutex_);  // once per batch
  publishes_.store(publishes_.load(std::memory_order_relaxed) - count, std::memory_order_relaxed);
  bytes_.store(bytes_.load(std::memory_order_relaxed) - bytes, std::memory_order_relaxed);
  if (waiters_) room_.notify_all();
}

void Inbox::stop() {
  std::lock_guard lock(mutex_);
  stopped_ = true;
  room_.notify_all();
}

bool Inbox::empty() const {
  std::lock_guard lock(mutex_);
  return items_.empty() && urgent_.empty() && pos_ == batch_.size();
}

void Inbox::take_batch() {
  std::lock_guard lock(mutex_);
  urgent_batch_.swap(urgent_);
  if (pos_ == batch_.size()) {
    batch_.clear();
    pos_ = 0;
    batch_.swap(items_);
    metrics_.publish_queue->set(static_cast<double>(publishes_.load(std::memory_order_relaxed)));
    metrics_.publish_queue_hw->set(static_cast<double>(high_water_));
  }
}

void Inbox::finish_turn() {
  bool again = pos_ < batch_.size();
  {
    std::lock_guard lock(mutex_);
    again = again || !items_.empty() || !urgent_.empty();
    scheduled_ = again;
  }
  if (again) schedule_();
}

}  // namespace macula::node
