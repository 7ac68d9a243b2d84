// NodeCore: the engine under the public Node / Publisher / Subscriber / RpcClient API, and
// the composition root of its parts:
//   LinkTable     links and peers, per-link send queues and flow control, slow peers
//   PubSubEngine  subscriptions, interest, routes, local delivery, QoS 1, publisher backpressure
//   RpcEngine     procedures, serving, calls, failover, deadlines, result cache
//   NodeMetrics   counters, rendering, readiness
//   HttpApi       the HTTP/3 routes for clients and the status pages
// NodeCore itself owns the strand's inbox (every hand-over from other threads), the lifecycle
// (start, graceful stop), the routing of link events to the parts, and the DHT's transport.
// docs/ARCHITECTURE.md ("The Node") shows who owns which state.
//
// Threading: all mutable state lives on the endpoint's strand. Public member functions may be
// called from any thread; they hand work to the strand through the inbox. Subscription and
// RPC handlers run on the handler executor. Completions are detail::Completion objects, which
// post themselves to their own executor.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include "discovery/discovery.hpp"
#include "macula/detail/completion.hpp"
#include "macula/message.hpp"
#include "macula/node.hpp"
#include "macula/node_id.hpp"
#include "macula/node_options.hpp"
#include "macula/rpc_client.hpp"
#include "macula/rpc_handler.hpp"
#include "node/address.hpp"
#include "node/engine_types.hpp"
#include "node/status_pages.hpp"
#include "transport/endpoint.hpp"
#include "transport/identity.hpp"

namespace macula::node {

class Subscription;

class NodeCore {
 public:
  /// Binds and starts serving. Errors: invalid realm, address errors, options_invalid, those
  /// of transport::Endpoint::create; then `why` names the option and the reason.
  static std::shared_ptr<NodeCore> create(boost::asio::io_context& io, const NodeOptions& options,
                                          transport::Identity identity, std::error_code& ec, std::string& why);
  ~NodeCore();

  const NodeId& node_id() const noexcept;
  boost::asio::ip::udp::endpoint local_endpoint() const;

  /// Links to `address`; with `redial`, re-links with backoff whenever the link drops.
  void connect(const boost::asio::ip::udp::endpoint& address, std::optional<NodeId> expected, bool redial,
               detail::Completion<std::error_code> done);

  /// Hands a publish to the strand. Returns errors it can tell at once (topic,
  /// payload_too_large, queue_full, would_block, not_started); then `m.done` is not called.
  /// Otherwise `m.done` (may be empty) gets the outcome. With `wait_until`, a full publish
  /// queue is waited on until then (would_block after); without, it answers queue_full.
  std::error_code publish(Outgoing&& m, std::optional<Clock::time_point> wait_until);
  /// Any thread, before building a drop-policy publish: true (counted as dropped, also on
  /// `drops`) when the publish queue would refuse `bytes` now. A producer in a tight loop then
  /// costs no allocation and no copy per refused message.
  bool refuses(std::size_t bytes, std::atomic<std::uint64_t>* drops) const;
  /// Any thread: whether a drop-policy QoS 0 publish of `topic` is lost to full links now, as
  /// `publisher`'s memo says (its last message of that topic found every interested link full
  /// and nothing changed since); if so it is counted (node and publisher) like the strand would.
  bool drops_for_full_links(std::string_view topic, detail::PublisherState& publisher) const;

  /// Registers a subscription (its pattern validated by the caller). Errors:
  /// too_many_subscriptions, not_started. Delivery may start before this returns.
  std::error_code subscribe(const std::shared_ptr<Subscription>& subscription);
  void unsubscribe(const std::shared_ptr<Subscription>& subscription);

  std::error_code advertise(std::string procedure, RpcHandler handler, AdvertiseOptions options);
  void unadvertise(const std::string& procedure);

  void call(std::string procedure, Bytes args, CallOptions options, detail::Completion<std::error_code, Bytes> done);

  /// Completes once every link answered a PING sent after everything this thread handed to
  /// the node before (subscriptions, publishes): frames on a link are ordered, so the peer
  /// has processed them all. A link that drops meanwhile leaves it waiting (callers bound it).
  void sync(detail::Completion<std::error_code> done);

  const HandlerExecutor& handler_executor() const noexcept;

  NodeStats stats() const;  ///< waits for the strand (not from it)
  /// Prometheus text: the registry's series plus the top-N subscriptions by drops. Any thread.
  std::string metrics_text() const;
  /// (ready, why not): stopping, a queue past health_queue_threshold for health_queue_grace,
  /// or no link left (checked once a second). Any thread.
  std::pair<bool, std::string> readiness() const;
  /// The node's status pages (they hold the node weakly), for the plain-HTTP server; the
  /// HTTP/3 routes answer from the same object. Valid after create().
  StatusPages status_pages() const;
  /// The Node reports whether its plain-HTTP status pages listen (metric and log line).
  void note_http_status(bool up, const std::string& detail);
  /// A counter series read at scrape time, for parts the Node owns (the status port).
  void add_counter_callback(const std::string& name, const std::string& help, const std::string& reason,
                            std::function<double()> read);

  /// Graceful stop (see Node::stop). Must not run on the strand or a handler thread.
  void stop();
  bool stopping() const noexcept;

  class Impl;

 private:
  friend struct TestHooks;
  explicit NodeCore(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

/// Reaches the engine of a public Node (for Publisher, Subscriber, RpcClient, LocalMesh and
/// in-tree tests); not part of the installed API.
struct NodeAccess {
  static std::shared_ptr<NodeCore> core(const Node& node) noexcept { return node.core_; }
};

/// Hooks for in-tree tests and benchmarks, kept out of NodeCore's production surface.
struct TestHooks {
  /// Closes every link's connection as if the network dropped it (dialed links come back).
  static void drop_links(const Node& node);
  /// Replaces the node's discovery (tests install fakes). Waits for the strand.
  static void set_discovery(const Node& node, std::unique_ptr<discovery::Discovery> d);
  /// One raw discovery lookup of `key`: the number of records found, or not_found when the
  /// node's discovery has no such lookup (no DHT).
  static void find_value(const Node& node, const NodeId& key, std::function<void(std::error_code, std::size_t)> done);
};

}  // namespace macula::node
