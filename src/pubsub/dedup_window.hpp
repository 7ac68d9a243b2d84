// DedupWindow: has this (publisher, message id) been delivered already? (QoS 1 receivers)
//
// QoS 1 is at-least-once on the wire: a retry after a lost ack re-sends a message the
// receiver may already have handed to its subscribers. Publishers number their messages
// upwards, so each publisher needs only the highest id seen and a bitmap of the 1,024 ids
// below it. An id older than that window cannot be told apart and is treated as a duplicate
// (counted in `too_old`) — dropping is safe there, since a retry that late has long been
// superseded. At most `max_publishers` windows are kept; the least recently active one is
// forgotten past that (counted in `evicted`). Sans-I/O, not thread-safe.
#pragma once

#include <bitset>
#include <cstddef>
#include <cstdint>
#include <list>
#include <unordered_map>

#include "macula/node_id.hpp"

namespace macula::pubsub {

class DedupWindow {
 public:
  static constexpr std::uint64_t kWindow = 1024;

  explicit DedupWindow(std::size_t max_publishers = 10'000) : max_publishers_(max_publishers) {}

  /// True the first time (publisher, id) is seen, and for an id too old to tell (counted in
  /// too_old()); false for a duplicate.
  bool first_time(const NodeId& publisher, std::uint64_t id) {
    auto it = windows_.find(publisher);
    if (it == windows_.end()) {
      if (windows_.size() >= max_publishers_) evict_one();
      lru_.push_front(publisher);
      it = windows_.emplace(publisher, Window{id, {}, lru_.begin()}).first;
      it->second.seen.set(0);
      return true;
    }
    Window& w = it->second;
    lru_.splice(lru_.begin(), lru_, w.lru);
    if (id > w.highest) {
      const std::uint64_t shift = id - w.highest;
      w.seen = shift >= kWindow ? std::bitset<kWindow>{} : (w.seen << shift);
      w.seen.set(0);  // bit k stands for id highest - k
      w.highest = id;
      return true;
    }
    const std::uint64_t back = w.highest - id;
    if (back >= kWindow) {
      // Too old to tell (a retry that waited while newer ids went by). At least once allows a
      // duplicate; it does not allow a loss, and an acknowledged drop would be one.
      ++too_old_;
      return true;
    }
    if (w.seen.test(back)) {
      ++duplicates_;
      return false;
    }
    w.seen.set(back);
    return true;
  }

  std::uint64_t duplicates() const noexcept { return duplicates_; }
  std::uint64_t too_old() const noexcept { return too_old_; }
  std::uint64_t evicted() const noexcept { return evicted_; }
  std::size_t publishers() const noexcept { return windows_.size(); }

 private:
  struct Window {
    std::uint64_t highest;
    std::bitset<kWindow> seen;
    std::list<NodeId>::iterator lru;
  };
  void evict_one() {
    windows_.erase(lru_.back());
    lru_.pop_back();
    ++evicted_;
  }

  std::size_t max_publishers_;
  std::unordered_map<NodeId, Window> windows_;
  std::list<NodeId> lru_;
  std::uint64_t duplicates_ = 0, too_old_ = 0, evicted_ = 0;
};

}  // namespace macula::pubsub
