// DhtDiscovery: discovery::Discovery backed by the Kademlia DHT over the node's own links.
//
// Provider records: a procedure is stored under key SHA-256("macula.rpc" | realm | procedure)
// at the k closest nodes (record = owner id, TTL 300 s, data = the owner's "host:port"), and
// republished every 240 s while advertised. find_providers() is an iterative FIND_VALUE
// (alpha requests in flight, each with a deadline) that returns the owners found.
// Interest records: a pattern is stored under interest_key(first literal segment, or "*")
// with data "host:port\npattern"; find_subscribers(topic) looks up the topic's first segment
// and "*" and keeps the owners whose pattern matches. Trade-off (docs/ARCHITECTURE.md): one
// key per first segment puts every pattern of a popular first segment on the same k nodes,
// and "*"-first patterns on one key for the realm; in exchange a publish needs exactly two
// lookups, whatever its depth or the patterns' wildcards.
// Requests go through the DhtTransport (HTTP/3 on pooled connections). The routing table
// learns every linked peer (its HELLO endpoint) and every responder.
// Threading: everything runs on the node's strand.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>

#include "dht/lookup.hpp"
#include "macula/core/concurrent_cache.hpp"
#include "dht/record_store.hpp"
#include "dht/routing_table.hpp"
#include "discovery/discovery.hpp"
#include "wire/frame.hpp"

namespace macula::dht {

/// How DhtDiscovery reaches other nodes (implemented by the node engine).
class DhtTransport {
 public:
  virtual ~DhtTransport() = default;
  /// Sends `request` (its request_id set) to `to` and calls `done` on the strand once, with
  /// the reply or nullopt (timeout, no route, link closed).
  virtual void request(const Contact& to, wire::Frame request, std::function<void(std::optional<wire::Frame>)> done) = 0;
  virtual void after(std::chrono::nanoseconds delay, std::function<void()> f) = 0;
};

NodeId procedure_key(std::string_view realm, std::string_view procedure);
/// Topic-interest key: the pattern's first segment when it is literal, else "*" (patterns that
/// start with a wildcard). A publish to a.b.c looks up the keys of "a" and of "*".
NodeId interest_key(std::string_view realm, std::string_view first_segment);
std::string first_segment_key(std::string_view pattern);

class DhtDiscovery final : public discovery::Discovery {
 public:
  struct Options {
    LookupConfig lookup;
    std::chrono::seconds record_ttl{300};      ///< of this node's own records
    std::chrono::seconds republish{240};
    std::chrono::seconds max_record_ttl{300};  ///< the longest this node keeps another's record
    std::chrono::seconds provider_cache_ttl{60};  ///< discovery cache TTL (the old system's 60 s)
    std::chrono::seconds refresh_check{60};        ///< how often stale buckets are looked for
  };
  DhtDiscovery(NodeId self, std::string self_endpoint, std::string realm, DhtTransport& transport, Options o);

  void advertise_procedure(std::string_view procedure) override;
  void withdraw_procedure(std::string_view procedure) override;
  void advertise_interest(std::string_view pattern) override;
  void withdraw_interest(std::string_view pattern) override;
  void find_providers(std::string_view procedure, discovery::PeersFound done) override;
  void find_subscribers(std::string_view topic, discovery::PeersFound done) override;
  void on_peer(const NodeId& id, const std::string& endpoint) override;
  std::optional<wire::Frame> handle(const NodeId& from, const wire::Frame& request) override;
  discovery::DiscoveryStats stats() const override;
  bool find_value(const NodeId& key, std::function<void(std::size_t)> done) override;

  const RoutingTable& table() const noexcept { return table_; }
  /// One FIND_VALUE for `key`, bypassing the provider cache (benchmarks, diagnostics).
  void lookup_value(const NodeId& key, std::function<void(std::vector<wire::Record>)> done);
  std::size_t records() const { return store_.keys(); }
  core::CacheStats provider_cache_stats() const { return provider_cache_.stats(); }

 private:
  struct Active;
  void lookup(const NodeId& target, bool want_value, std::function<void(Active&)> done);
  void pump(const std::shared_ptr<Active>& a);
  void store_at_closest(const NodeId& key, std::vector<std::uint8_t> data);
  void republish_all();
  void find_records(const NodeId& key, std::function<void(std::vector<wire::Record>)> done);
  void schedule_republish();
  void schedule_refresh();

  NodeId self_;
  std::string self_endpoint_, realm_;
  DhtTransport& transport_;
  Options options_;
  RoutingTable table_;
  RecordStore<> store_;
  std::set<std::string> advertised_;
  std::set<std::string> interests_;
  static constexpr std::size_t kMaxInterestRecordBytes = 16 * 1024;
  std::vector<std::uint8_t> interest_record(const std::string& segment) const;
  bool bootstrapped_ = false;
  std::minstd_rand rng_{std::random_device{}()};
  bool republish_armed_ = false;
  // Providers found per procedure, for provider_cache_ttl: a burst of calls to a procedure with
  // no linked provider costs one lookup, not one each.
  core::ConcurrentCache<std::string, std::vector<discovery::PeerAddress>> provider_cache_{core::CacheOptions{10'000, 0, {}}};
};

}  // namespace macula::dht
