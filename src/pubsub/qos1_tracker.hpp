// Qos1Tracker: QoS 1 messages sent and not yet acknowledged by every interested peer.
//
// A publisher keeps each QoS 1 message until every peer it was meant for has acknowledged it.
// Peers are keyed by a stable peer key (not by link), so a message survives its link being
// dropped and re-established: the node sends again, on the new link, what a peer still owes.
// There is no retry timer: on a live link QUIC already retransmits what the network lost, and
// an application-level re-send would only add load (and, when the receiver is merely slow,
// duplicates). Bounded by count and by payload bytes: track() refuses past either with
// errc::too_many_pending. Sans-I/O, not thread-safe (the node's strand owns it).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "macula/error.hpp"

namespace macula::pubsub {

template <class Payload, class Completion>
class Qos1Tracker {
 public:
  using PeerKey = std::uint64_t;

  struct Entry {
    Payload message;
    std::size_t bytes = 0;
    std::vector<PeerKey> waiting;  ///< peers that have not acknowledged yet
    Completion done;
  };

  explicit Qos1Tracker(std::size_t max = 100'000, std::size_t max_bytes = SIZE_MAX)
      : max_(max), max_bytes_(max_bytes) {}

  /// Whether a message of `bytes` would fit now (one message always fits an empty tracker).
  bool has_room(std::size_t bytes) const noexcept {
    return entries_.size() < max_ && (entries_.empty() || bytes_ + bytes <= max_bytes_);
  }

  /// Starts tracking message `id` (ids increase). Errors: too_many_pending (nothing stored;
  /// `done` is not called).
  std::error_code track(std::uint64_t id, Payload message, std::size_t bytes, std::vector<PeerKey> waiting,
                        Completion done) {
    if (!has_room(bytes)) return errc::too_many_pending;
    bytes_ += bytes;
    entries_.emplace_hint(entries_.end(), id, Entry{std::move(message), bytes, std::move(waiting), std::move(done)});
    return {};
  }

  /// `peer` acknowledged `id`. Returns true when `peer` was still waiting for it; `done` is
  /// set to the message's completion when that was the last peer (the entry is gone then).
  bool ack(std::uint64_t id, PeerKey peer, std::optional<Completion>& done) {
    auto it = entries_.find(id);
    if (it == entries_.end()) return false;
    auto& w = it->second.waiting;
    const auto pos = std::find(w.begin(), w.end(), peer);
    if (pos == w.end()) return false;
    w.erase(pos);
    if (w.empty()) done = take(it);
    return true;
  }

  Entry* find(std::uint64_t id) {
    auto it = entries_.find(id);
    return it == entries_.end() ? nullptr : &it->second;
  }

  /// Stops tracking `id`; returns its completion (nullopt when unknown).
  std::optional<Completion> remove(std::uint64_t id) {
    auto it = entries_.find(id);
    if (it == entries_.end()) return std::nullopt;
    return take(it);
  }

  /// Calls f(id, Entry&) for every message still owed by `peer`, in id (publish) order.
  template <class F>
  void for_peer(PeerKey peer, F&& f) {
    for (auto& [id, e] : entries_)
      if (std::find(e.waiting.begin(), e.waiting.end(), peer) != e.waiting.end()) f(id, e);
  }

  /// `peer` will never acknowledge (it is gone for good): it stops being waited for, and
  /// f(completion) runs for each message that was waiting for it alone, in id order.
  template <class F>
  void forget_peer(PeerKey peer, F&& f) {
    for (auto it = entries_.begin(); it != entries_.end();) {
      auto& w = it->second.waiting;
      const auto pos = std::find(w.begin(), w.end(), peer);
      if (pos == w.end()) {
        ++it;
        continue;
      }
      w.erase(pos);
      if (!w.empty()) {
        ++it;
        continue;
      }
      auto next = std::next(it);
      f(take(it));
      it = next;
    }
  }

  std::vector<std::uint64_t> ids() const {
    std::vector<std::uint64_t> out;
    for (const auto& [id, e] : entries_) out.push_back(id);
    return out;
  }

  std::size_t size() const noexcept { return entries_.size(); }
  std::size_t bytes() const noexcept { return bytes_; }
  std::size_t capacity() const noexcept { return max_; }

 private:
  Completion take(typename std::map<std::uint64_t, Entry>::iterator it) {
    Completion done(std::move(it->second.done));
    bytes_ -= it->second.bytes;
    entries_.erase(it);
    return done;
  }

  std::size_t max_, max_bytes_;
  std::size_t bytes_ = 0;
  std::map<std::uint64_t, Entry> entries_;  // ordered: re-sends go out in publish order
};

}  // namespace macula::pubsub
