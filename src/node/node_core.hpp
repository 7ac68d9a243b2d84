// NodeCore: one mesh node wired together — transport endpoint, session links, pub/sub and RPC.
//
// Internal (src/node): the engine under the public Node / Publisher / Subscriber / RpcClient
// API of the Node issue, which adds completion tokens, QoS 1, bounded per-subscription
// queues, failover and metrics on top. What it does now:
// - links: `connect()` dials a peer node (mutual node-id TLS), opens a session with the realm
//   headers (DESIGN §6) and exchanges HELLO, the aggregated subscription interest and the
//   procedures each side provides; incoming sessions are admitted by the realm guard.
// - pub/sub (QoS 0): a publish is matched locally with the pattern trie and sent once per link
//   whose announced interest matches; links that push back (session bound) count a drop.
// - HTTP/3 for external clients: POST /macula/v1/pub/<topic>, POST /macula/v1/rpc/<procedure>,
//   GET /health (docs/PROTOCOL.md).
// - RPC: a call goes to a link that announced the procedure (or runs locally), waits in the
//   bounded pending-call table with a deadline, and completes with the result, no_provider,
//   handler_error (message as payload), timed_out or connection_closed.
// Threading: all state lives on the endpoint's strand; public member functions may be called
// from any thread. Subscription and RPC handlers run on a worker pool, never on the strand;
// completion callbacks of connect/publish/call run on the strand and must not block.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "macula/node_id.hpp"
#include "transport/endpoint.hpp"

namespace macula::node {

struct NodeCoreOptions {
  std::string realm = "macula.default";
  std::optional<std::string> realm_secret;
  transport::EndpointOptions endpoint;  ///< identity, limits (identity must be set)
  boost::asio::ip::udp::endpoint listen{boost::asio::ip::make_address("127.0.0.1"), 0};
  std::size_t worker_threads = 2;
  std::size_t max_pending_calls = 100'000;
  std::size_t max_patterns_per_link = 10'000;
};

struct Delivery {
  std::string topic;
  std::string pattern;  ///< the subscription's pattern that matched
  std::vector<std::uint8_t> payload;
  NodeId publisher;
  std::uint64_t sequence = 0;
};

using DeliveryHandler = std::function<void(const Delivery&)>;
/// Answers one RPC: an empty error and the result, or an error and a message for the caller.
using RpcReply = std::function<void(std::error_code, std::vector<std::uint8_t>)>;
using RpcHandler = std::function<void(std::vector<std::uint8_t> args, RpcReply reply)>;
using CallHandler = std::function<void(std::error_code, std::vector<std::uint8_t>)>;
using Done = std::function<void(std::error_code)>;

struct NodeCoreStats {
  std::size_t links = 0;
  std::uint64_t published = 0;
  std::uint64_t delivered_local = 0;
  std::uint64_t forwarded = 0;             ///< PUBLISH frames sent to links
  std::uint64_t dropped_backpressure = 0;  ///< QoS 0 publishes a link's session bound refused
  std::uint64_t calls_sent = 0;
  std::uint64_t calls_served = 0;
  std::uint64_t protocol_errors = 0;
};

class NodeCore {
 public:
  /// Binds and starts listening. Errors: those of transport::Endpoint::create, invalid realm.
  static std::shared_ptr<NodeCore> create(boost::asio::io_context& io, NodeCoreOptions options, std::error_code& ec);
  ~NodeCore();

  const NodeId& node_id() const noexcept;
  boost::asio::ip::udp::endpoint local_endpoint() const;

  /// Links to the node at `address` (which must prove `expected` when given).
  void connect(const boost::asio::ip::udp::endpoint& address, std::optional<NodeId> expected, Done done);

  /// Subscribes `handler` to `pattern`; returns an id for unsubscribe. Errors: pattern errors.
  /// Waits for the strand: never call it from a completion callback (those run there).
  std::uint64_t subscribe(const std::string& pattern, DeliveryHandler handler, std::error_code& ec);
  void unsubscribe(std::uint64_t id);

  /// QoS 0 publish. `done` gets topic errors or success once the message was handed to local
  /// subscribers and interested links.
  void publish(std::string topic, std::vector<std::uint8_t> payload, Done done);

  /// Serves `procedure` from this node. Errors: procedure name errors.
  std::error_code advertise(const std::string& procedure, RpcHandler handler);
  void unadvertise(const std::string& procedure);

  void call(std::string procedure, std::vector<std::uint8_t> args, std::chrono::milliseconds timeout,
            CallHandler done);

  NodeCoreStats stats() const;  ///< blocks until the strand answers; not from the strand
  void stop();                  ///< closes links and the endpoint, joins the workers

  class Impl;

 private:
  explicit NodeCore(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

}  // namespace macula::node
