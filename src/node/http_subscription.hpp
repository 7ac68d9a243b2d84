// HttpSubscriptions: the live streaming subscriptions of a node's certificate-less clients,
// GET /macula/v1/sub/<pattern>. Each is an ordinary node subscription whose messages are
// written to the request's response stream as newline-delimited JSON, one object a message:
//   {"topic":"a.b","payload":"<base64>","qos":0}
// for as long as the client keeps the request open. docs/PROTOCOL.md ("Streaming
// subscriptions over HTTP/3") is the client's side of it.
//
// Bounded, so that no client can make the node hold more than a little for it: at most
// Limits::per_connection streams per QUIC connection and Limits::total on the node (503
// past either); each counts as a subscription against max_subscriptions. A client that reads
// slower than messages arrive never holds the node up: once its stream has
// Limits::buffer_bound bytes unacknowledged, its messages are dropped and counted
// (macula_messages_dropped_total{reason="http_subscriber_overflow"}).
//
// Threading: everything runs on the endpoint's strand. The subscriptions are in pull mode
// and their queue waiters are woken by the push itself, which happens on the strand, so a
// message is written to its session there, inline, and never from a worker thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "macula/core/metrics.hpp"
#include "macula/message.hpp"
#include "macula/observe/metrics_registry.hpp"
#include "transport/endpoint.hpp"

namespace macula::node {

class Subscription;

/// One message as its ndjson line (ending in '\n').
std::string ndjson_line(std::string_view topic, std::span<const std::uint8_t> payload, Qos qos);

class HttpSubscriptions : public std::enable_shared_from_this<HttpSubscriptions> {
 public:
  struct Limits {
    std::size_t total = 10'000;       ///< streaming subscriptions on the node (max_clients)
    std::size_t per_connection = 16;  ///< streaming subscriptions on one QUIC connection
    std::size_t buffer_bound = 1024 * 1024;  ///< unacknowledged bytes past which messages drop
    std::size_t queue = 256;  ///< the subscription's own queue (drained on every push)
  };
  /// The node's subscribe / unsubscribe (strand): errors too_many_subscriptions, not_started.
  using Subscribe = std::function<std::error_code(const std::shared_ptr<Subscription>&)>;
  using Unsubscribe = std::function<void(const std::shared_ptr<Subscription>&)>;

  /// `alive` is the node: the hooks are used only while it lives.
  HttpSubscriptions(Limits limits, observe::MetricsRegistry& metrics, Subscribe subscribe, Unsubscribe unsubscribe,
                    std::weak_ptr<void> alive);

  /// Strand. The stream route's acceptor once the client policy let the request through:
  /// `pattern` is the path after the route's prefix, percent-encoded ('#' travels as %23).
  /// Returns 200 (streaming) or the refusal's status, its reason in `callbacks`.
  int accept(std::string_view pattern, const transport::Request& head, std::shared_ptr<transport::Session> session,
             transport::SessionCallbacks& callbacks);

  /// Strand (or after the strand stopped): the node is stopping. Every stream is ended
  /// cleanly (FIN after what is queued) and its subscription removed.
  void close_all();

  std::size_t live() const noexcept { return entries_.size(); }

 private:
  struct Entry;
  void forward(Entry& e, const Message& m);
  void pump(const std::shared_ptr<Entry>& e);
  void remove(std::uint64_t id);

  Limits limits_;
  Subscribe subscribe_;
  Unsubscribe unsubscribe_;
  std::weak_ptr<void> alive_;
  core::Gauge& gauge_;
  core::Counter& dropped_;
  std::uint64_t next_id_ = 0;
  std::map<std::uint64_t, std::shared_ptr<Entry>> entries_;
  std::map<std::string, std::size_t> per_connection_;  // by the connection's channel binding
};

}  // namespace macula::node
