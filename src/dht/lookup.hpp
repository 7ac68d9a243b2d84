// Lookup: one iterative Kademlia lookup (FIND_NODE or FIND_VALUE), sans-I/O.
//
// The caller asks next() for contacts to query (at most `alpha` in flight), sends them the
// request with a deadline, and reports each outcome: on_response (with the closer contacts the
// peer returned), on_value (FIND_VALUE found it: the lookup is done), on_failure (timeout or
// error: the contact is dropped from the shortlist and another takes its place). The lookup
// ends when the k closest contacts seen so far have all answered (or failed) and nothing is in
// flight, or when no contact is left to ask. Contacts learned `max_hops` hops away are not
// queried further (the old system's MAX_HOPS 10). hops() is the hop depth of the closest
// answering contact (or of the one that had the value); messages() counts requests sent.
#pragma once

#include <algorithm>
#include <cstddef>
#include <optional>
#include <vector>

#include "dht/routing_table.hpp"

namespace macula::dht {

struct LookupConfig {
  std::size_t k = 20;
  std::size_t alpha = 3;
  unsigned max_hops = 10;
};

class Lookup {
 public:
  Lookup(NodeId target, const std::vector<Contact>& seeds, LookupConfig config = {}) : target_(target), config_(config) {
    for (const auto& s : seeds) add(s, 1);
  }

  const NodeId& target() const noexcept { return target_; }

  /// Contacts to query now; each is marked in flight.
  std::vector<Contact> next() {
    std::vector<Contact> out;
    if (finished_) return out;
    std::size_t considered = 0;
    for (auto& c : list_) {
      if (c.state == State::failed) continue;
      if (++considered > config_.k) break;  // only the k closest live candidates matter
      if (in_flight_ >= config_.alpha) break;
      if (c.state == State::fresh && c.depth <= config_.max_hops) {
        c.state = State::in_flight;
        ++in_flight_;
        ++messages_;
        out.push_back(c.contact);
      }
    }
    if (out.empty() && in_flight_ == 0) finished_ = true;
    return out;
  }

  /// `from` answered with `closer` (contacts nearer the target it knows).
  void on_response(const NodeId& from, const std::vector<Contact>& closer) {
    auto* c = find(from);
    if (!c || c->state != State::in_flight) return;
    c->state = State::answered;
    --in_flight_;
    const unsigned depth = c->depth;
    for (const auto& n : closer) add(n, depth + 1);
  }

  /// FIND_VALUE: `from` had the value. The lookup is done.
  void on_value(const NodeId& from) {
    auto* c = find(from);
    if (!c) return;
    if (c->state == State::in_flight) --in_flight_;
    c->state = State::answered;
    value_depth_ = c->depth;
    finished_ = true;
  }

  void on_failure(const NodeId& from) {
    auto* c = find(from);
    if (!c || c->state != State::in_flight) return;
    c->state = State::failed;
    --in_flight_;
  }

  bool done() const noexcept { return finished_; }
  bool found_value() const noexcept { return value_depth_.has_value(); }
  std::size_t in_flight() const noexcept { return in_flight_; }
  std::size_t messages() const noexcept { return messages_; }

  /// The k closest contacts that answered, closest first.
  std::vector<Contact> closest() const {
    std::vector<Contact> out;
    for (const auto& c : list_)
      if (c.state == State::answered && out.size() < config_.k) out.push_back(c.contact);
    return out;
  }

  unsigned hops() const {
    if (value_depth_) return *value_depth_;
    for (const auto& c : list_)
      if (c.state == State::answered) return c.depth;
    return 0;
  }

 private:
  enum class State { fresh, in_flight, answered, failed };
  struct Candidate {
    Contact contact;
    NodeId distance;
    State state = State::fresh;
    unsigned depth = 1;
  };

  void add(const Contact& c, unsigned depth) {
    if (find(c.id)) return;
    const NodeId d = c.id.distance(target_);
    auto pos = std::lower_bound(list_.begin(), list_.end(), d, [](const Candidate& x, const NodeId& v) { return x.distance < v; });
    list_.insert(pos, Candidate{c, d, State::fresh, depth});
    // Bound the shortlist: far candidates beyond 4k can never be among the k closest asked.
    if (list_.size() > 4 * config_.k && list_.back().state == State::fresh) list_.pop_back();
  }
  Candidate* find(const NodeId& id) {
    for (auto& c : list_)
      if (c.contact.id == id) return &c;
    return nullptr;
  }

  NodeId target_;
  LookupConfig config_;
  std::vector<Candidate> list_;  // sorted by distance to the target
  std::size_t in_flight_ = 0, messages_ = 0;
  bool finished_ = false;
  std::optional<unsigned> value_depth_;
};

}  // namespace macula::dht
