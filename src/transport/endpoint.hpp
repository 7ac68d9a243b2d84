// QUIC + HTTP/3 endpoint: one UDP socket that both listens and dials.
//
// Internal to libmacula (src/transport). Everything of one endpoint — its socket, its
// connections, every ngtcp2/nghttp3/GnuTLS object — runs on one strand of the io_context the
// endpoint was created on; public member functions may be called from any thread and post
// to that strand. Completion handlers (connect, request, route handlers) run on the strand:
// they must not block. A Responder may be called from any thread, once.
//
// Connections are mutually authenticated: both sides present a certificate whose key hashes
// to their NodeId (transport/identity.hpp). A dialer that names the node id it expects
// refuses a peer whose certificate hashes to anything else. A peer that presents no
// certificate is a *client*: it may send HTTP/3 requests but has no node id.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "macula/detail/asio.hpp"
#include "macula/node_id.hpp"
#include "transport/identity.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/strand.hpp>

namespace macula::transport {

struct Header {
  std::string name;
  std::string value;
};

struct Request {
  std::string method;
  std::string path;
  std::string authority;
  std::vector<Header> headers;
  std::vector<std::uint8_t> body;
  std::optional<NodeId> peer;  ///< set when the peer proved a node identity; empty for clients
  /// 32 bytes both ends of this QUIC connection derive from its TLS 1.3 exporter: unique per
  /// handshake, so a proof bound to it cannot be replayed on another connection.
  std::vector<std::uint8_t> channel_binding;
};

struct Response {
  int status = 200;
  std::vector<Header> headers;
  std::vector<std::uint8_t> body;
};

/// Sends the response to one request. Call exactly once, from any thread.
using Responder = std::function<void(Response)>;
using RequestHandler = std::function<void(Request&&, Responder)>;

/// Documented QUIC application error codes (CONNECTION_CLOSE) used by libmacula.
enum class CloseCode : std::uint64_t {
  no_error = 0x100,            ///< H3_NO_ERROR: graceful close
  max_clients = 0x4d01,        ///< the endpoint has max_clients clients already
  identity_mismatch = 0x4d02,  ///< the peer's certificate does not match its node id
  protocol_error = 0x4d03,     ///< a malformed frame on a session stream
  realm_refused = 0x4d04,      ///< a session asked for another realm (after its 403)
  slow_consumer = 0x4d05,      ///< the peer stopped reading: its link's buffer stayed full
};

/// When the server makes a new client prove its address with a Retry round trip first.
enum class RetryPolicy { never, always, above_load };

struct EndpointOptions {
  Identity identity;
  RetryPolicy retry = RetryPolicy::above_load;
  std::size_t retry_load_threshold = 1000;  ///< above_load: Retry once this many connections exist
  /// false: dial without a certificate, as a *client* (an application that only calls);
  /// such an endpoint cannot accept connections.
  bool present_certificate = true;
  /// PING an otherwise idle connection this often (0: off). Keeps NAT bindings and the
  /// peer's idle timer alive; the pool's reaper still closes connections nobody uses.
  std::chrono::nanoseconds keep_alive{0};
  std::chrono::nanoseconds idle_timeout = std::chrono::minutes(5);
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(5);
  std::size_t max_clients = 10'000;      ///< connections from peers without a node certificate
  std::size_t max_connections = 20'000;  ///< all connections; Initials past it are dropped
  std::uint64_t max_streams_bidi = 100;  ///< concurrent requests a peer may open per connection
  std::size_t max_header_bytes = 16 * 1024;
  /// Largest request (server) or response (client) body kept; past it the request gets 413.
  /// The node's routes take at most one payload (kMaxPayloadBytes, 1 MiB) plus framing.
  std::size_t max_body_bytes = 2 * 1024 * 1024;
  /// Request bodies the server holds in memory — received and not yet answered — are bounded
  /// per connection and for the whole endpoint, so no peer, nor many together, can make it
  /// buffer more. A request that would pass either bound gets 503 and its upload is stopped
  /// (STOP_SENDING); its bytes are released at once.
  std::size_t max_connection_body_bytes = 16 * 1024 * 1024;
  std::size_t max_buffered_body_bytes = 64 * 1024 * 1024;
  /// A request whose body stops arriving for this long gets 408 and is stopped, releasing
  /// what it had buffered (an upload cannot hold memory by going quiet)...
  std::chrono::nanoseconds body_idle_timeout = std::chrono::seconds(10);
  /// ...nor by trickling: a body must be complete this long after its request head.
  std::chrono::nanoseconds body_deadline = std::chrono::seconds(60);
  std::size_t max_pending_requests = 1024;  ///< client requests queued waiting for a stream id
  std::size_t session_send_buffer = 4 * 1024 * 1024;  ///< per-session unacknowledged bytes bound
};

struct EndpointStats {
  std::size_t connections = 0;
  std::size_t clients = 0;
  std::uint64_t datagrams_received = 0;
  std::uint64_t datagrams_sent = 0;
  std::uint64_t datagrams_dropped = 0;  ///< garbage, unknown connection ids, over limits
  std::uint64_t send_would_block = 0;   ///< times the socket pushed back (tail kept, not dropped)
  std::uint64_t handshakes_completed = 0;
  std::uint64_t clients_refused = 0;
  std::uint64_t retries_sent = 0;
  std::uint64_t tokens_accepted = 0;        ///< Initials whose Retry or NEW_TOKEN token verified
  std::uint64_t stateless_resets_sent = 0;
  std::uint64_t stateless_resets_received = 0;  ///< our connections ended by a peer's reset
  std::uint64_t version_negotiations_sent = 0;  ///< answers to Initials of a QUIC version we do not speak
  std::size_t sessions = 0;                 ///< open session / streaming-route streams
  std::size_t session_bytes_buffered = 0;   ///< unacknowledged bytes queued on all sessions
  std::uint64_t session_sends_refused = 0;  ///< send() answered queue_full (backpressure)
  /// Request-body bytes held until answered, clients' and nodes' together (each bounded by
  /// max_buffered_body_bytes on its own, so clients cannot crowd out nodes).
  std::size_t body_bytes_buffered = 0;
  std::uint64_t bodies_refused = 0;         ///< requests answered 503: a body bound was reached
  std::uint64_t bodies_timed_out = 0;       ///< uploads stopped by body_idle_timeout / body_deadline
  std::uint64_t requests_refused = 0;       ///< requests the RequestGuard refused at their head
};

class Connection;
class Session;

/// Callbacks of one session stream; both run on the endpoint's strand.
struct SessionCallbacks {
  /// Bytes from the peer, in order; frame boundaries are the reader's business (wire/).
  /// Receive credit is returned to the peer when this returns.
  std::function<void(std::span<const std::uint8_t>)> on_data;
  /// The session ended: empty error for a clean end by either side, else why.
  std::function<void(std::error_code)> on_close;
  /// Optional: the peer finished its direction (its body ended) while ours may go on, as an
  /// HTTP upload does before its response. Without it, the peer's end ends the session.
  std::function<void()> on_end;
  /// Acceptor side: extra response headers to send with the status (with a refusal too).
  std::vector<Header> response_headers;
  /// Acceptor side, when refusing: the body sent with the status, so that a client learns
  /// why (a session refusal is otherwise a bare status).
  std::string refusal_body{};  // {}: four-member aggregate initialisers stay warning-free
  /// Dialer side, optional: the status and headers of a non-2xx answer, just before the
  /// handler completes with connection_refused (which alone cannot tell 401 from 503).
  std::function<void(int status, const std::vector<Header>& headers)> on_refused{};
};

/// A long-lived bidirectional HTTP/3 request carrying binary frames both ways: one per link
/// for the one-way event flow between nodes. Many send() calls are batched into each HTTP/3
/// DATA frame. Must be used on the endpoint's strand (the thread that runs its callbacks).
class Session {
 public:
  /// Queues bytes. Errors: queue_full when the unacknowledged bytes would pass the send
  /// buffer bound (nothing queued: wait for on_writable), connection_closed.
  std::error_code send(std::span<const std::uint8_t> bytes);
  /// Bytes queued and not yet acknowledged by the peer.
  std::size_t buffered() const;
  std::size_t high_water() const;
  std::uint64_t refused_sends() const;  ///< times send() answered queue_full
  /// Called once, on the strand, when the buffer has drained below half its bound (at once,
  /// inline, when it is below already).
  void on_writable(std::function<void()> callback);
  /// The same with the level to drain to: `below` bytes buffered or fewer.
  void on_writable(std::function<void()> callback, std::size_t below);
  /// Ends the session cleanly (FIN after the queued bytes).
  void close();
  /// Abandons the session in both directions (RESET_STREAM and STOP_SENDING with
  /// H3_REQUEST_CANCELLED), discarding what is queued: for a dialer that no longer wants what
  /// the peer streams. on_close follows with stream_reset. Strand only.
  void reset();
  /// Closes the whole QUIC connection the session runs on with `code` (CONNECTION_CLOSE),
  /// discarding what is queued: for a peer that stopped reading, whose queued bytes would
  /// never drain. Strand only.
  void close_connection(CloseCode code, const std::string& reason);
  std::optional<NodeId> peer_id() const;
  /// Dialer side: the headers of the peer's 2xx answer (e.g. its realm proof).
  const std::vector<Header>& response_headers() const;

  class Impl;
  explicit Session(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<Impl> impl_;
};

/// Decides on an ordinary request as soon as its head is in, before any of its body is
/// buffered: 0 to go on, or the HTTP status to refuse it with (401, 403: the upload is then
/// stopped and nothing of it is kept). Runs on the strand.
using RequestGuard = std::function<int(const Request& head)>;

/// Decides on an incoming session: return 200 to accept (after filling `callbacks`), or an
/// HTTP status to refuse it (e.g. 403 realm mismatch, 401 missing realm proof).
using SessionAcceptor = std::function<int(const Request& head, std::shared_ptr<Session> session,
                                          SessionCallbacks& callbacks)>;

class Endpoint {
 public:
  /// Creates an endpoint bound to `local` (port 0 picks a free port).
  /// Errors: address_invalid / a system error from bind; identity_invalid.
  static std::shared_ptr<Endpoint> create(boost::asio::io_context& io, EndpointOptions options,
                                          const boost::asio::ip::udp::endpoint& local, std::error_code& ec);
  ~Endpoint();

  boost::asio::ip::udp::endpoint local_endpoint() const;
  const NodeId& node_id() const noexcept;
  /// The strand every callback of this endpoint runs on; components that share state with
  /// those callbacks (the node) post their own work here.
  boost::asio::strand<boost::asio::io_context::executor_type> strand() const;

  /// Routes requests whose method matches and whose path starts with `path_prefix`; the
  /// longest matching prefix wins. Unrouted requests get 404.
  void route(std::string method, std::string path_prefix, RequestHandler handler);

  /// Installs the guard every ordinary request's head passes first (one per endpoint).
  void request_guard(RequestGuard guard);

  /// Accepts sessions opened with POST to exactly `path`.
  void session_route(std::string path, SessionAcceptor acceptor);
  /// Streaming handler for any request with `method` whose path starts with `path_prefix`
  /// (longest prefix wins; checked before buffered routes): the request body arrives through
  /// on_data/on_end as it comes, and the response body is written with Session::send.
  void stream_route(std::string method, std::string path_prefix, SessionAcceptor acceptor);

  using ConnectHandler = std::function<void(std::error_code, std::shared_ptr<Connection>)>;
  /// Dials `remote`. When `expected` is set, the peer must prove exactly that node id.
  /// Completes with the established connection, or: handshake_timeout,
  /// peer_identity_mismatch, transport_error, endpoint_closed.
  void connect(const boost::asio::ip::udp::endpoint& remote, std::optional<NodeId> expected,
               ConnectHandler handler);

  /// Closes every connection with H3_NO_ERROR and the socket; pending operations fail with
  /// endpoint_closed. Idempotent.
  void close();

  /// Graceful shutdown: stops accepting connections and dialing, lets requests already in
  /// flight (both directions) finish until `deadline`, then closes every connection with
  /// H3_NO_ERROR. `done` runs on the strand with the number of requests that were still
  /// unfinished at the deadline (0 when everything drained).
  void shutdown(std::chrono::nanoseconds deadline, std::function<void(std::size_t unfinished)> done);

  /// Drops every connection and the socket without telling any peer, as a crash would
  /// (for fault tests; peers learn of it by stateless reset or idle timeout).
  void abort();

  /// A snapshot of the counters; any thread, never blocks.
  EndpointStats stats() const;

  class Impl;

 private:
  explicit Endpoint(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

/// Cancels one request (Boost 1.74's Asio predates cancellation slots, so this is a handle).
class RequestHandle {
 public:
  RequestHandle() = default;
  /// Completes the request with errc::cancelled (if it has not completed) and resets its
  /// stream with H3_REQUEST_CANCELLED. Any thread; idempotent.
  void cancel() const;

  struct State;
  explicit RequestHandle(std::shared_ptr<State> s) : state_(std::move(s)) {}

 private:
  std::shared_ptr<State> state_;
};

class Connection {
 public:
  using ResponseHandler = std::function<void(std::error_code, Response)>;

  /// Sends an HTTP/3 request. Completes on the endpoint's strand with the whole response, or:
  /// timed_out (after `timeout`), cancelled, stream_reset, connection_closed, too_many_pending.
  RequestHandle request(Request request, std::chrono::nanoseconds timeout, ResponseHandler handler);

  using SessionHandler = std::function<void(std::error_code, std::shared_ptr<Session>)>;
  /// Opens a session: a request (`head.method`, POST when empty) to `head.path` whose request
  /// and response bodies are the two byte streams. Completes when the peer answered 2xx, or
  /// with: connection_refused (another status), connection_closed, timed_out. A non-empty
  /// `head.body` goes out at once as the stream's first bytes, before any answer (an upload
  /// whose answer waits for its end).
  void open_session(Request head, SessionCallbacks callbacks, std::chrono::nanoseconds timeout,
                    SessionHandler handler);

  /// The peer's node id, when it presented a node certificate.
  std::optional<NodeId> peer_id() const;
  boost::asio::ip::udp::endpoint remote_endpoint() const;
  /// This connection's channel binding (see Request::channel_binding); fixed once connected.
  const std::vector<std::uint8_t>& channel_binding() const;

  /// Closes with an application error code and reason. Idempotent.
  void close(CloseCode code, std::string reason);

  /// False once the connection is closing, draining or gone (any thread).
  bool is_open() const noexcept;

  class Impl;
  explicit Connection(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace macula::transport
