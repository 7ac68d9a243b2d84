// Discovery: how a node finds peers beyond its current links — who serves a procedure, who
// wants a topic — and tells others what it serves and wants.
//
// The engine talks to this one interface; LinkDiscovery is the implementation until the DHT
// lands: links already carry every announcement (PROVIDE_ADD, INTEREST_ADD), so it announces
// nothing and finds nobody new. The DHT's implementation stores provider and topic-interest
// records and answers lookups with peers to link to; the engine dials them through its
// endpoint and treats a returned provider as serving the procedure. No public API changes.
// Threading: every call is made on the node's strand; `done` must be called on that strand
// (a lookup that goes to the network posts its answer back to it), at most once.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "macula/node_id.hpp"
#include "wire/frame.hpp"

namespace macula::node {

struct PeerAddress {
  NodeId id;
  std::string endpoint;  ///< "host:port"
};

using PeersFound = std::function<void(std::vector<PeerAddress>)>;

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

}  // namespace macula::node
