// NodeCore: the engine under the public Node / Publisher / Subscriber / RpcClient API.
//
// One NodeCore is one mesh node: a transport endpoint, links to peer nodes (one HTTP/3
// session each, carrying wire frames), the local subscriptions, the interest and procedures
// peers announced, the QoS 1 tracker, the pending-call table, and the HTTP/3 routes external
// clients use. docs/ARCHITECTURE.md ("Node") explains the flows; docs/PROTOCOL.md the frames.
//
// Threading: all mutable state lives on the endpoint's strand. Public member functions may be
// called from any thread; they hand work to the strand (publishes in batches through a
// bounded queue). Subscription and RPC handlers run on the handler executor. Completions are
// detail::Completion objects, which post themselves to their own executor.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include "macula/detail/completion.hpp"
#include "macula/message.hpp"
#include "macula/node.hpp"
#include "macula/node_id.hpp"
#include "macula/node_options.hpp"
#include "macula/rpc_client.hpp"
#include "macula/rpc_handler.hpp"
#include "node/status_pages.hpp"
#include "transport/endpoint.hpp"
#include "transport/identity.hpp"

namespace macula::node {

class Subscription;

class NodeCore {
 public:
  /// Binds and starts serving. Errors: invalid realm, address errors, those of
  /// transport::Endpoint::create.
  static std::shared_ptr<NodeCore> create(boost::asio::io_context& io, const NodeOptions& options,
                                          transport::Identity identity, std::error_code& ec);
  ~NodeCore();

  const NodeId& node_id() const noexcept;
  boost::asio::ip::udp::endpoint local_endpoint() const;

  /// Links to `address`; with `redial`, re-links with backoff whenever the link drops.
  void connect(const boost::asio::ip::udp::endpoint& address, std::optional<NodeId> expected, bool redial,
               detail::Completion<std::error_code> done);

  /// Hands a publish to the strand. Returns errors it can tell at once (topic, queue_full,
  /// not_started); then `done` (may be empty) is not called. Otherwise `done` gets the outcome.
  std::error_code publish(std::string topic, Bytes payload, Qos qos, detail::Completion<std::error_code> done);

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

  /// Runs `f` on the handler executor (for the public API's own callbacks).
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
  /// Live links, read without waiting for the strand (any thread, including the io thread).
  std::size_t links_now() const noexcept;

  /// Graceful stop (see Node::stop). Must not run on the strand or a handler thread.
  void stop();
  bool stopping() const noexcept;

  /// Replaces the discovery (default: LinkDiscovery). The DHT installs itself through this;
  /// tests install fakes. Waits for the strand.
  void set_discovery(std::unique_ptr<class Discovery> discovery);

  /// One DHT FIND_VALUE for `key` (no cache), completing with the number of records found, or
  /// errc::not_found when the node runs without the DHT. For benchmarks and diagnostics.
  void dht_find_value(const NodeId& key, std::function<void(std::error_code, std::size_t)> done);

  /// Test hook: closes every link's connection as if the network dropped it. Dialed links
  /// with redial come back on their own.
  void drop_links_for_test();

  class Impl;

 private:
  explicit NodeCore(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

/// Parses "host:port" / "[v6]:port" with a numeric host. Errors: address_invalid.
std::error_code parse_address(std::string_view text, boost::asio::ip::udp::endpoint& out);
std::string format_address(const boost::asio::ip::udp::endpoint& e);

}  // namespace macula::node
