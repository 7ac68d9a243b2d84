// NodeClient: a program that uses a node's client API without being a node.
//
// A client connects to one node over QUIC/HTTP/3 without a node certificate, so it needs no
// key, joins no realm and is never dialed back: the node publishes and calls across its own
// links on the client's behalf. This is how the `macula` command-line tool, scripts and
// short-lived programs reach a mesh. The routes it speaks are documented in docs/PROTOCOL.md
// ("Client access", "Streaming subscriptions over HTTP/3"): POST /macula/v1/pub/<topic>,
// POST /macula/v1/rpc/<procedure>, GET /macula/v1/sub/<pattern> (a stream), GET /metrics,
// GET /health.
//
// Threads: a NodeClient runs one thread of its own. Every completion handler and stream
// callback runs on it, one at a time; they must not block, nor destroy the NodeClient.
// The blocking forms (no handler) wait on the calling thread and must not be called from a
// NodeClient callback (they return errc::would_deadlock).
//
// Lifetime: destroying the NodeClient closes the connection; handlers still pending complete
// with errc::connection_closed (or endpoint_closed) before the destructor returns, and stream
// callbacks stop. Destroy it from a thread of your own, not from one of its callbacks.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "macula/message.hpp"

namespace macula {

struct NodeClientOptions {
  /// Sent as `authorization: Bearer <token>` on every request. Nodes of a realm with a
  /// shared secret require it (derive_client_token(realm, secret), or their client_token).
  std::optional<std::string> token;
  /// How long connect() waits for the handshake.
  std::chrono::milliseconds connect_timeout{5'000};
  /// Deadline of each request, answer included. A QoS 1 publish waits for every subscriber's
  /// acknowledgement and an RPC for its handler, so this bounds those too.
  std::chrono::milliseconds request_timeout{10'000};
};

/// What a node answered: its HTTP status and body. Status 401 means no or a wrong token,
/// 403 a closed client API, 404 no subscriber (QoS 1) or no provider, 500 the handler
/// failed (the body is its message), 504 the node's own deadline passed.
struct ClientResponse {
  int status = 0;
  Bytes body;
};

/// The errc an answer stands for: ok for 2xx, unauthorized (401, 403), no_subscribers for a
/// QoS 1 publish's 404, no_provider for a call's 404, handler_error (500), timed_out (504),
/// overloaded (503), payload_too_large (413), name errors as name_invalid_character (400),
/// and transport_error for anything else.
std::error_code client_status_error(int status, std::string_view route);

class NodeClient {
 public:
  /// Connects to the node at `address` ("host:port"; a host name is resolved once).
  /// Blocks until the handshake completes or fails. Errors: address_invalid,
  /// address_unresolved, handshake_timeout, connection_refused (the node's max_clients),
  /// transport_error, would_deadlock (called from any NodeClient's callback).
  static std::unique_ptr<NodeClient> connect(std::string_view address, NodeClientOptions options,
                                             std::error_code& ec);
  ~NodeClient();
  NodeClient(const NodeClient&) = delete;
  NodeClient& operator=(const NodeClient&) = delete;

  using ResponseHandler = std::function<void(std::error_code, ClientResponse)>;

  /// Any request of the client API. `ec` is a transport failure (timed_out, connection_closed,
  /// stream_reset, too_many_pending, endpoint_closed); an answer, whatever its status, comes
  /// with an empty `ec`. At most 100 requests are in flight per connection; more wait in a
  /// bounded queue (1,024), past which they fail with too_many_pending.
  void request(std::string_view method, std::string_view path, Bytes body, ResponseHandler done);
  /// Blocking form of request().
  ClientResponse request(std::string_view method, std::string_view path, Bytes body, std::error_code& ec);

  /// Publishes through the node: QoS 0 returns once the node accepted the message; QoS 1 once
  /// every subscriber acknowledged it (no_subscribers when nobody subscribes anywhere).
  std::error_code publish(std::string_view topic, std::span<const std::uint8_t> payload, Qos qos = Qos::at_most_once);
  /// Calls a procedure through the node; the result on success, else `ec` (no_provider,
  /// handler_error with the handler's message in `message`, timed_out, unauthorized, ...).
  Bytes call(std::string_view procedure, std::span<const std::uint8_t> args, std::error_code& ec,
             std::string* message = nullptr);

  /// One message of a streaming subscription.
  struct StreamedMessage {
    std::string topic;
    Bytes payload;
    Qos qos = Qos::at_most_once;
  };
  /// A streaming subscription held open by the node for this client. Destroying it ends the
  /// stream; no callback runs after the destructor returns.
  class Stream {
   public:
    virtual ~Stream() = default;
  };
  struct StreamCallbacks {
    /// Each message, in the order the node sent them (client thread).
    std::function<void(StreamedMessage)> on_message;
    /// The node sent a line that is not a message (client thread); optional.
    std::function<void(std::string_view line)> on_garbage;
    /// The stream ended: empty for a clean end by the node, else why (client thread).
    std::function<void(std::error_code)> on_end;
  };
  /// Asks the node to stream messages matching `pattern` (`*` one segment, `#` the rest).
  /// Blocks until the node accepted or refused. On refusal returns nullptr, with `ec` from
  /// client_status_error (unauthorized, name errors, overloaded: no room or stopping) and
  /// `status` the node's answer (-1: none).
  std::unique_ptr<Stream> subscribe(std::string_view pattern, StreamCallbacks callbacks, std::error_code& ec,
                                    int* status = nullptr);

  /// The request paths of the client API, with the name percent-encoded so that '?', '#'
  /// or '/' in it cannot change the route (the node then refuses the name with 400).
  static std::string pub_path(std::string_view topic, Qos qos = Qos::at_most_once);
  static std::string rpc_path(std::string_view procedure);
  static std::string sub_path(std::string_view pattern);

  /// The address connected to, as resolved ("ip:port").
  std::string remote_address() const;
  bool has_token() const noexcept;

 private:
  struct Impl;
  explicit NodeClient(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace macula
