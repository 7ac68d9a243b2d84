// Qos1Tracker: QoS 1 messages sent and not yet acknowledged by every interested peer.
//
// A publisher keeps each QoS 1 message until every peer it was meant for has acknowledged it.
// Peers are keyed by a stable peer key (not by link), so a message survives its link being
// dropped and re-established: the node re-sends what a peer still owes when the peer comes
// back, and on every retry deadline. Bounded: at most `max` messages wait; track() refuses
// past it with errc::too_many_pending. Sans-I/O, not thread-safe (the node's strand owns it).
#pragma once

#include <algorithm>
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

namespace macula::pubsub {

template <class Payload, class Completion>
class Qos1Tracker {
 public:
  using Clock = std::chrono::steady_clock;
  using PeerKey = std::uint64_t;

  struct Entry {
    Payload message;
    std::vector<PeerKey> waiting;  ///< peers that have not acknowledged yet
    unsigned sends = 1;            ///< sends so far (the first included)
    Completion done;
    typename std::multimap<Clock::time_point, std::uint64_t>::iterator deadline;
  };

  explicit Qos1Tracker(std::size_t max = 100'000) : max_(max) {}

  /// Starts tracking message `id`, first sent now, re-sent at `retry_at` unless acknowledged.
  /// Errors: too_many_pending (nothing stored; `done` is not called).
  std::error_code track(std::uint64_t id, Payload message, std::vector<PeerKey> waiting, Clock::time_point retry_at,
                        Completion done) {
    if (entries_.size() >= max_) return errc::too_many_pending;
    auto d = deadlines_.emplace(retry_at, id);
    entries_.emplace(id, Entry{std::move(message), std::move(waiting), 1, std::move(done), d});
    return {};
  }

  /// `peer` acknowledged `id`. Returns the message's completion when that was the last peer
  /// it waited for (the entry is gone then); nullopt otherwise (also for unknown ids).
  std::optional<Completion> ack(std::uint64_t id, PeerKey peer) {
    auto it = entries_.find(id);
    if (it == entries_.end()) return std::nullopt;
    auto& w = it->second.waiting;
    w.erase(std::remove(w.begin(), w.end(), peer), w.end());
    if (!w.empty()) return std::nullopt;
    return take(it);
  }

  /// Ids whose retry deadline is at or before `now`, earliest first (still tracked).
  void due(Clock::time_point now, std::vector<std::uint64_t>& out) const {
    for (auto it = deadlines_.begin(); it != deadlines_.end() && it->first <= now; ++it) out.push_back(it->second);
  }

  Entry* find(std::uint64_t id) {
    auto it = entries_.find(id);
    return it == entries_.end() ? nullptr : &it->second;
  }

  /// Counts one more send of `id` and moves its retry deadline.
  void resent(std::uint64_t id, Clock::time_point retry_at) {
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    ++it->second.sends;
    deadlines_.erase(it->second.deadline);
    it->second.deadline = deadlines_.emplace(retry_at, id);
  }

  /// Stops tracking `id`; returns its completion (nullopt when unknown).
  std::optional<Completion> remove(std::uint64_t id) {
    auto it = entries_.find(id);
    if (it == entries_.end()) return std::nullopt;
    return take(it);
  }

  /// Calls f(id, Entry&) for every message still owed by `peer`, in id order.
  template <class F>
  void for_peer(PeerKey peer, F&& f) {
    std::vector<std::uint64_t> ids;
    for (auto& [id, e] : entries_)
      if (std::find(e.waiting.begin(), e.waiting.end(), peer) != e.waiting.end()) ids.push_back(id);
    std::sort(ids.begin(), ids.end());
    for (auto id : ids) f(id, entries_.at(id));
  }

  std::vector<std::uint64_t> ids() const {
    std::vector<std::uint64_t> out;
    for (const auto& [id, e] : entries_) out.push_back(id);
    return out;
  }

  std::optional<Clock::time_point> next_deadline() const {
    if (deadlines_.empty()) return std::nullopt;
    return deadlines_.begin()->first;
  }
  std::size_t size() const noexcept { return entries_.size(); }
  std::size_t capacity() const noexcept { return max_; }

 private:
  std::optional<Completion> take(typename std::unordered_map<std::uint64_t, Entry>::iterator it) {
    std::optional<Completion> done(std::move(it->second.done));
    deadlines_.erase(it->second.deadline);
    entries_.erase(it);
    return done;
  }

  std::size_t max_;
  std::unordered_map<std::uint64_t, Entry> entries_;
  std::multimap<Clock::time_point, std::uint64_t> deadlines_;
};

}  // namespace macula::pubsub
