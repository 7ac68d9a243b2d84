// Discovery: how a node finds peers beyond its current links — who serves a procedure, who
// wants a topic — and tells others what it serves and wants.
//
// It lives below both its user (the node engine) and its implementations (LinkDiscovery here,
// dht::DhtDiscovery), so neither depends on the other. LinkDiscovery is what a node without
// the DHT uses: links already carry every announcement (PROVIDE_ADD, INTEREST_ADD), so it
// announces nothing and finds nobody new. The DHT's implementation stores provider and
// topic-interest records and answers lookups with peers to link to; the engine dials them
// through its endpoint and treats a returned provider as serving the procedure.
// Threading: every call is made on the node's strand; `done` must be called on that strand
// (a lookup that goes to the network posts its answer back to it), at most once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "macula/node_id.hpp"
#include "wire/frame.hpp"

namespace macula::discovery {

struct PeerAddress {
  NodeId id;
  std::string endpoint;  ///< "host:port"
};

using PeersFound = std::function<void(std::vector<PeerAddress>)>;

/// Figures a discovery exposes as metrics (all zero for LinkDiscovery).
struct DiscoveryStats {
  std::size_t routing_table_size = 0;
  std::size_t records_stored = 0;
  std::uint64_t cache_hits = 0, cache_misses = 0, cache_evictions = 0;
};

class Discovery {
 public:
  virtual ~Discovery() = default;
  virtual void advertise_procedure(std::string_view procedure) = 0;
  virtual void withdraw_procedure(std::string_view procedure) = 0;
  /// `pattern` became interesting on this node (first local subscriber) / stopped being so.
  virtual void advertise_interest(std::string_view pattern) = 0;
  virtual void withdraw_interest(std::string_view pattern) = 0;
  /// Providers of `procedure` this node may not be linked to yet (none: an empty list).
  virtual void find_providers(std::string_view procedure, PeersFound done) = 0;
  /// Nodes with an interest matching `topic` this node may not be linked to yet.
  virtual void find_subscribers(std::string_view topic, PeersFound done) = 0;

  /// A peer linked to us (its certificate proved `id`; it listens on `endpoint`).
  virtual void on_peer(const NodeId& id, const std::string& endpoint) { (void)id, (void)endpoint; }
  /// A discovery request (DHT_FIND_NODE / FIND_VALUE / STORE) from peer `from`: the answer
  /// to send back, or nullopt when this discovery does not serve such requests.
  virtual std::optional<wire::Frame> handle(const NodeId& from, const wire::Frame& request) {
    (void)from, (void)request;
    return std::nullopt;
  }
  virtual DiscoveryStats stats() const { return {}; }
  /// One raw lookup of `key` (no cache), calling `done` with the number of records found;
  /// false when this discovery has no such lookup (then `done` is not called). Diagnostics.
  virtual bool find_value(const NodeId& key, std::function<void(std::size_t)> done) {
    (void)key, (void)done;
    return false;
  }
};

/// Discovery by the links alone: everything a linked peer serves or wants, it announced over
/// the link; there is nobody else to find.
class LinkDiscovery final : public Discovery {
 public:
  void advertise_procedure(std::string_view) override {}
  void withdraw_procedure(std::string_view) override {}
  void advertise_interest(std::string_view) override {}
  void withdraw_interest(std::string_view) override {}
  void find_providers(std::string_view, PeersFound done) override { done({}); }
  void find_subscribers(std::string_view, PeersFound done) override { done({}); }
};

}  // namespace macula::discovery
