// Node: one member of a libmacula mesh — a QUIC/HTTP/3 endpoint that links to peer nodes of
// its realm, carries pub/sub and RPC between them, and serves HTTP/3 clients.
//
// Lifecycle: construct with options, start(), use it through Publisher, Subscriber, RpcClient
// and advertise(), then stop() (or destroy it). A Node either runs on an io_context the host
// gives it (the host runs that io_context on threads of its choice) or owns one with
// `io_threads` threads.
//
// Threading: every member function may be called from any thread unless it says otherwise.
// Network state lives on one strand; subscription and RPC handlers run on the handler
// executor (default: the node's worker pool), never on that strand unless they opted in to
// running inline (SubscribeOptions / AdvertiseOptions::inline_handler). Completion handlers of
// async_* operations run on the token's associated executor, by default the io_context's
// (not the strand): they must not block. Blocking functions (connect(), stop()) must not be
// called from library callbacks; they detect it and return errc::would_deadlock instead.
//
// Errors: std::error_code in the macula category (macula/error.hpp); functions without an
// error_code parameter throw std::system_error with the same codes.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "macula/detail/completion.hpp"
#include "macula/node_id.hpp"
#include "macula/node_options.hpp"
#include "macula/rpc_handler.hpp"

namespace macula {

namespace node {
class NodeCore;          // the engine (internal)
class HttpStatusServer;  // plain HTTP /metrics and health pages (internal)
struct NodeAccess;       // how Publisher, Subscriber and RpcClient reach the engine (internal)
}

/// Counters of one node since start (a snapshot; the metrics text has them all).
struct NodeStats {
  std::size_t links = 0;           ///< live links to peer nodes
  std::size_t subscriptions = 0;   ///< local subscriptions
  std::uint64_t published = 0;     ///< publishes accepted
  std::uint64_t delivered = 0;     ///< messages queued to local subscriptions
  std::uint64_t forwarded = 0;     ///< PUBLISH frames sent to peers (retries included)
  std::uint64_t dropped = 0;       ///< every drop, all reasons (metrics break it down)
  std::uint64_t duplicates = 0;    ///< QoS 1 re-sends recognised and not delivered again
  std::uint64_t qos1_in_flight = 0;
  std::uint64_t qos1_retries = 0;
  std::uint64_t qos1_expired = 0;  ///< QoS 1 publishes that gave up (timed_out)
  std::uint64_t calls_started = 0;
  std::uint64_t calls_served = 0;
  std::uint64_t calls_failed_over = 0;
  std::size_t pending_calls = 0;
  std::uint64_t protocol_errors = 0;  ///< links closed for a malformed or forged frame
};

/// Unregisters its procedure when destroyed (or reset()). Movable, not copyable.
class Advertisement {
 public:
  Advertisement() = default;
  Advertisement(std::weak_ptr<node::NodeCore> core, std::string procedure) noexcept
      : core_(std::move(core)), procedure_(std::move(procedure)) {}
  Advertisement(Advertisement&& o) noexcept = default;
  Advertisement& operator=(Advertisement&& o) noexcept {
    if (this != &o) {
      reset();
      core_ = std::move(o.core_);
      procedure_ = std::move(o.procedure_);
    }
    return *this;
  }
  ~Advertisement() { reset(); }
  void reset() noexcept;
  const std::string& procedure() const noexcept { return procedure_; }
  explicit operator bool() const noexcept { return !procedure_.empty(); }

 private:
  std::weak_ptr<node::NodeCore> core_;
  std::string procedure_;
};

class Node {
 public:
  /// A node on the host's io_context (the host runs it).
  Node(boost::asio::io_context& io, NodeOptions options);
  /// A node that owns its io_context and runs it on `options.io_threads` threads.
  explicit Node(NodeOptions options);
  ~Node();  ///< stop()s
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  /// Loads or generates the identity, binds, starts serving, and starts linking to the
  /// bootstrap peers (in the background: links come up asynchronously). Errors:
  /// realm/name errors, address_invalid, identity_invalid, the socket's bind errors.
  std::error_code start();
  /// Why the last start() failed, naming the option and the reason, e.g. "dht_record_ttl 5 s:
  /// must be 30 s to 1 day" or "listen <address>: <the bind error>" (the same text the log
  /// sink gets at error level after "not starting: "); "" before the first start() and after
  /// one that succeeded. Not synchronised: read it on the thread that called start().
  std::string last_start_error() const;

  /// Graceful stop: refuses new work, waits up to `stop_timeout` for QoS 1 acks, RPC
  /// replies and running handlers, then fails what is left with errc::cancelled, closes
  /// links (peers see a clean close) and joins the worker threads. Idempotent.
  void stop();

  bool running() const noexcept;
  /// This node's id: SHA-256 of its certificate's public key. Valid after start().
  const NodeId& node_id() const;
  /// "host:port" the node listens on (after start()).
  std::string local_address() const;
  /// "host:port" of the plain HTTP status pages, or "" when http_listen is empty.
  std::string http_address() const;
  const NodeOptions& options() const noexcept { return options_; }
  boost::asio::io_context::executor_type get_executor() const noexcept { return io_->get_executor(); }

  /// Links to the node at `address` ("host:port"; a host name is resolved without blocking the
  /// caller) and keeps re-linking when the link drops until stop(). Completes with
  /// void(std::error_code) once the first link is up. Errors: address_invalid,
  /// address_unresolved, handshake_timeout, connection_refused, peer realm refused
  /// (connection_refused), not_started.
  template <class Token>
  auto async_connect(std::string address, Token&& token) {
    return boost::asio::async_initiate<Token, void(std::error_code)>(
        [this](auto handler, std::string a) {
          connect_impl(std::move(a), detail::wrap_completion<std::error_code>(std::move(handler), get_executor()));
        },
        token, std::move(address));
  }
  /// Blocking form of async_connect. Not from library callbacks (would_deadlock).
  std::error_code connect(const std::string& address);

  /// Serves `procedure` from this node until the returned handle is destroyed.
  /// Errors: procedure name errors, not_started.
  Advertisement advertise(std::string procedure, RpcHandler handler, AdvertiseOptions options, std::error_code& ec);
  Advertisement advertise(std::string procedure, RpcHandler handler, AdvertiseOptions options = {});

  NodeStats stats() const;
  /// Every series of this node in Prometheus text format 0.0.4.
  std::string metrics_text() const;

 private:
  friend struct node::NodeAccess;
  void connect_impl(std::string address, detail::Completion<std::error_code> done);

  NodeOptions options_;
  std::unique_ptr<boost::asio::io_context> owned_io_;
  boost::asio::io_context* io_;
  std::unique_ptr<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::vector<std::thread> io_threads_;
  std::shared_ptr<node::NodeCore> core_;
  std::shared_ptr<node::HttpStatusServer> http_;
  std::string start_error_;
};

}  // namespace macula
