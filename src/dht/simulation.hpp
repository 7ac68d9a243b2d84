// Simulation: the DHT's routing table, lookups and record store running over an in-memory
// network with virtual time (core::ManualClock), configurable latency, loss and node failures,
// deterministic for a seed. Used by the DHT tests (1,000 nodes in the default run, 10,000 in an
// opt-in label) and by the benchmark rows for hops and messages per lookup.
//
// Messages: FIND_NODE(target) -> the responder's k closest contacts; FIND_VALUE(key) -> its
// records, or its closest contacts; STORE(key, record). A responder observes the requester
// (inserting it into its routing table, with Kademlia replacement); a request that times out
// is retried once, then counts as a failure (the contact is dropped from the lookup and
// reported to the routing table).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "dht/lookup.hpp"
#include "dht/record_store.hpp"
#include "dht/routing_table.hpp"
#include "macula/core/clock.hpp"

namespace macula::dht {

struct SimConfig {
  std::uint64_t seed = 1;
  std::chrono::milliseconds latency_min{5}, latency_max{15};
  double loss = 0.0;                        ///< probability a message is lost
  std::chrono::milliseconds timeout{100};   ///< per request
  LookupConfig lookup;
  std::chrono::seconds record_ttl{300};
};

struct LookupStats {
  bool found = false;
  unsigned hops = 0;
  std::size_t messages = 0;
  std::chrono::nanoseconds duration{0};  ///< virtual time from the first request to the answer
};

class SimNetwork {
 public:
  using Clock = core::ManualClock;
  /// Virtual now on the routing table's time line.
  static dht::Clock::time_point table_now() { return dht::Clock::time_point(Clock::now().time_since_epoch()); }
  explicit SimNetwork(SimConfig c = {}) : config_(c), rng_(c.seed) { Clock::reset(); }

  std::size_t size() const noexcept { return nodes_.size(); }
  const NodeId& id(std::size_t i) const { return nodes_[i]->table.self(); }
  bool alive(std::size_t i) const { return nodes_[i]->alive; }
  void kill(std::size_t i) { nodes_[i]->alive = false; }
  /// Puts node i in partition `group`: messages cross only between nodes of one group.
  void partition(std::size_t i, int group) { nodes_[i]->group = group; }
  void heal() {
    for (auto& n : nodes_) n->group = 0;
  }
  RoutingTable& table(std::size_t i) { return nodes_[i]->table; }
  RecordStore<Clock>& store(std::size_t i) { return nodes_[i]->store; }

  NodeId random_id() {
    NodeId::Bytes b;
    for (auto& x : b) x = static_cast<std::uint8_t>(rng_());
    return NodeId(b);
  }

  /// Adds a node; it joins through `bootstrap` (an existing node) by looking up its own id.
  std::size_t add_node(std::optional<std::size_t> bootstrap) {
    auto n = std::make_unique<Node>(random_id(), config_.lookup.k);
    const std::size_t i = nodes_.size();
    index_[n->table.self()] = i;
    nodes_.push_back(std::move(n));
    if (bootstrap) {
      nodes_[i]->table.observe(contact_of(*bootstrap), table_now());
      find_node(i, id(i));
    }
    return i;
  }

  /// Refreshes node i's buckets farther than its closest neighbour (Kademlia's join step).
  void refresh(std::size_t i) {
    auto& t = nodes_[i]->table;
    for (std::size_t b = 0; b < RoutingTable::kBuckets; ++b)
      if (t.bucket_size(b) > 0) find_node(i, t.random_id_in_bucket(b, random_id()));
  }

  LookupStats find_node(std::size_t from, const NodeId& target) { return run(from, target, false); }
  LookupStats find_value(std::size_t from, const NodeId& key) { return run(from, key, true); }

  /// STORE `data` under `key` at the k closest nodes `owner` finds. Returns how many stored it.
  std::size_t store_value(std::size_t owner, const NodeId& key, std::vector<std::uint8_t> data) {
    run(owner, key, false);
    std::size_t stored = 0;
    for (const auto& c : last_closest_) {
      const std::size_t j = index_.at(c.id);
      ++messages_;
      if (!deliverable(owner, j) && (++messages_, !deliverable(owner, j))) continue;  // one retry
      if (!nodes_[j]->store.put(key, id(owner), data, config_.record_ttl)) ++stored;
      nodes_[j]->table.observe(contact_of(owner), table_now());
    }
    return stored;
  }

  void advance(std::chrono::nanoseconds d) { Clock::advance(d); }
  std::size_t messages() const noexcept { return messages_; }

 private:
  struct Node {
    Node(NodeId id, std::size_t k) : table(id, k) {}
    RoutingTable table;
    RecordStore<Clock> store;
    bool alive = true;
    int group = 0;
  };

  Contact contact_of(std::size_t i) const { return Contact{id(i), "sim:" + std::to_string(i), {}, 0}; }
  bool deliverable(std::size_t from, std::size_t j) {
    return nodes_[j]->alive && nodes_[j]->group == nodes_[from]->group &&
           std::uniform_real_distribution<double>(0, 1)(rng_) >= config_.loss;
  }
  std::chrono::nanoseconds latency() {
    std::uniform_int_distribution<long> d(config_.latency_min.count(), config_.latency_max.count());
    return std::chrono::milliseconds(d(rng_));
  }

  // Drives one lookup to completion on virtual time: events are request outcomes ordered by
  // the time they are known (response arrival or timeout).
  LookupStats run(std::size_t from, const NodeId& target, bool want_value) {
    Node& self = *nodes_[from];
    Lookup lookup(target, self.table.closest(target, config_.lookup.k), config_.lookup);
    struct Event {
      std::chrono::nanoseconds at;
      std::size_t to;
      bool ok;
      unsigned attempt;
    };
    std::multimap<std::chrono::nanoseconds, Event> events;
    std::chrono::nanoseconds now{0};
    std::size_t sent = 0;
    auto send = [&](const Contact& c, unsigned attempt) {
      const std::size_t j = index_.at(c.id);
      ++sent;
      ++messages_;
      const bool request_arrives = deliverable(from, j);
      const bool reply_arrives = request_arrives && deliverable(j, from);
      if (request_arrives) nodes_[j]->table.observe(contact_of(from), table_now());  // the responder learns us
      const auto rtt = latency() + latency();
      events.emplace(now + (reply_arrives ? rtt : std::chrono::nanoseconds(config_.timeout)),
                     Event{now, j, reply_arrives, attempt});
    };
    for (const auto& c : lookup.next()) send(c, 1);
    bool found = false;
    while (!events.empty()) {
      auto it = events.begin();
      now = it->first;
      Event e = it->second;
      events.erase(it);
      const NodeId& peer = id(e.to);
      if (!e.ok) {
        if (e.attempt < 2) {  // one retry before giving up on the contact
          send(contact_of(e.to), e.attempt + 1);
          continue;
        }
        lookup.on_failure(peer);
        self.table.on_failed(peer, 3);  // a lossy link is not a dead node: evict after 3 in a row
      } else {
        self.table.observe(contact_of(e.to), table_now());
        Node& responder = *nodes_[e.to];
        if (want_value && !responder.store.get(target).empty()) {
          lookup.on_value(peer);
          found = true;
          break;
        }
        lookup.on_response(peer, responder.table.closest(target, config_.lookup.k));
      }
      for (const auto& c : lookup.next()) send(c, 1);
    }
    last_closest_ = lookup.closest();
    LookupStats s;
    s.found = want_value ? found : !last_closest_.empty();
    s.hops = lookup.hops();
    s.messages = sent;
    s.duration = now;
    return s;
  }

  SimConfig config_;
  std::mt19937_64 rng_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::unordered_map<NodeId, std::size_t> index_;
  std::vector<Contact> last_closest_;
  std::size_t messages_ = 0;
};

}  // namespace macula::dht
