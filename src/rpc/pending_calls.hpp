// PendingCalls: RPC calls sent and not yet answered, bounded, with deadlines.
//
// The old system's RPC blocked on network I/O (seed finding 8); here many calls are in flight
// per connection and each waits in this table until its reply, its deadline, or its
// cancellation takes it out — exactly once. At most `max` calls wait; past it insert() fails
// with errc::too_many_pending (callers see it at once instead of an unbounded queue).
// Sans-I/O, not thread-safe: the node drives it from its strand and a deadline timer armed at
// next_deadline().
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "macula/error.hpp"

namespace macula::rpc {

template <class Handler>
class PendingCalls {
 public:
  using Clock = std::chrono::steady_clock;

  explicit PendingCalls(std::size_t max = 100'000) : max_(max) {}

  /// Stores `handler` until `deadline`; returns the call id (never 0). Errors:
  /// too_many_pending (the handler is not stored and not called).
  std::uint64_t insert(Clock::time_point deadline, Handler handler, std::error_code& ec) {
    if (calls_.size() >= max_) {
      ec = errc::too_many_pending;
      return 0;
    }
    ec.clear();
    const std::uint64_t id = ++last_id_;
    auto d = deadlines_.emplace(deadline, id);
    calls_.emplace(id, Entry{std::move(handler), d});
    return id;
  }

  /// Takes the call out (its reply arrived, or it was cancelled); nullopt when it is not
  /// waiting any more (already answered, expired or unknown — a late or forged reply).
  std::optional<Handler> take(std::uint64_t id) {
    auto it = calls_.find(id);
    if (it == calls_.end()) return std::nullopt;
    std::optional<Handler> h(std::move(it->second.handler));
    deadlines_.erase(it->second.deadline);
    calls_.erase(it);
    return h;
  }

  /// The waiting call `id`, left in place; nullptr when none.
  const Handler* find(std::uint64_t id) const {
    auto it = calls_.find(id);
    return it == calls_.end() ? nullptr : &it->second.handler;
  }

  /// Moves every call whose deadline is at or before `now` into `out`, earliest first.
  void expire(Clock::time_point now, std::vector<std::pair<std::uint64_t, Handler>>& out) {
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      const std::uint64_t id = deadlines_.begin()->second;
      auto it = calls_.find(id);
      out.emplace_back(id, std::move(it->second.handler));
      calls_.erase(it);
      deadlines_.erase(deadlines_.begin());
    }
  }

  /// Moves every call whose handler satisfies `pred` into `out` (e.g. the calls sent over a
  /// link that just closed). O(size): for rare events only.
  template <class Pred>
  void take_if(Pred&& pred, std::vector<std::pair<std::uint64_t, Handler>>& out) {
    for (auto it = calls_.begin(); it != calls_.end();) {
      if (pred(static_cast<const Handler&>(it->second.handler))) {
        out.emplace_back(it->first, std::move(it->second.handler));
        deadlines_.erase(it->second.deadline);
        it = calls_.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::optional<Clock::time_point> next_deadline() const {
    if (deadlines_.empty()) return std::nullopt;
    return deadlines_.begin()->first;
  }
  std::size_t size() const noexcept { return calls_.size(); }
  std::size_t capacity() const noexcept { return max_; }

 private:
  struct Entry {
    Handler handler;
    typename std::multimap<Clock::time_point, std::uint64_t>::iterator deadline;
  };
  std::size_t max_;
  std::uint64_t last_id_ = 0;
  std::unordered_map<std::uint64_t, Entry> calls_;
  std::multimap<Clock::time_point, std::uint64_t> deadlines_;
};

}  // namespace macula::rpc
