// QUIC endpoint on Asio UDP (ngtcp2 0.12 + GnuTLS) with HTTP/3 (nghttp3 0.8).
// Design notes: docs/ARCHITECTURE.md "Transport"; pitfalls: quic-stack-notes.md.
#include "transport/endpoint.hpp"
#include "transport/answer_budget.hpp"
#include "transport/body_ledger.hpp"
#include "transport/h3_frame_guard.hpp"
#include "transport/http3_headers.hpp"
#include "transport/route_table.hpp"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <malloc.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/strand.hpp>

#include "macula/error.hpp"
#include "transport/quic_names.hpp"

namespace macula::transport {

namespace asio = boost::asio;
using udp = asio::ip::udp;

namespace {

constexpr std::size_t kCidLen = 18;
constexpr std::size_t kMaxUdpPayload = 1452;
constexpr std::size_t kRecvBatch = 64;
constexpr std::size_t kRecvBufSize = 2048;
constexpr std::size_t kSendBatch = 64;
constexpr std::size_t kStreamWindow = 1 << 20;     // per-stream receive window
constexpr std::size_t kConnWindow = 16 << 20;      // per-connection receive window
constexpr std::uint64_t kTimerGranularityNs = 1'000'000;
constexpr const char* kPriority =
    "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
    "+CHACHA20-POLY1305:+AES-128-CCM:-GROUP-ALL:+GROUP-SECP256R1:+GROUP-X25519:+GROUP-SECP384R1:+GROUP-SECP521R1";

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

std::string cid_key(const std::uint8_t* data, std::size_t len) {
  return std::string(reinterpret_cast<const char*>(data), len);
}
std::string cid_key(const ngtcp2_cid& cid) { return cid_key(cid.data, cid.datalen); }

void random_bytes(std::uint8_t* dest, std::size_t len) {
  if (RAND_bytes(dest, static_cast<int>(len)) != 1) {
    // RAND_bytes only fails when the OS entropy source is gone; GnuTLS' generator is the
    // fallback so that connection ids are never predictable.
    gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
  }
}

void rand_cb(std::uint8_t* dest, std::size_t destlen, const ngtcp2_rand_ctx*) { random_bytes(dest, destlen); }

std::string_view rcbuf_view(nghttp3_rcbuf* b) {
  const nghttp3_vec v = nghttp3_rcbuf_get_buf(b);
  return {reinterpret_cast<const char*>(v.base), v.len};
}

}  // namespace

// ============================================================================ Impl types

struct RequestHandle::State {
  std::weak_ptr<Connection::Impl> conn;
  std::int64_t stream_id = -1;  // set once the request has a stream (on the strand)
  bool cancelled = false;       // strand only
};

class Session::Impl {
 public:
  static constexpr std::size_t kChunk = 64 * 1024;
  struct Chunk {
    std::unique_ptr<std::uint8_t[]> data{new std::uint8_t[kChunk]};
    std::size_t size = 0;    // bytes written into the chunk
    std::size_t handed = 0;  // bytes given to nghttp3 (their memory must not move until acked)
  };

  std::weak_ptr<Connection::Impl> conn;
  std::int64_t stream_id = -1;
  SessionCallbacks callbacks;
  std::optional<NodeId> peer;
  std::vector<Header> response_headers;  // dialer: the acceptor's answer
  std::size_t bound = 0;
  std::deque<Chunk> chunks;
  std::size_t buffered = 0;     // queued and not yet acknowledged
  std::size_t acked_front = 0;  // acknowledged bytes of chunks.front()
  std::size_t high_water = 0;
  std::uint64_t refused = 0;
  bool closed = false;
  bool fin_requested = false;
  std::function<void()> writable;
  std::size_t writable_below = 0;  // `writable` runs once buffered is at or below this

  std::error_code send(std::span<const std::uint8_t> bytes);
  nghttp3_ssize read(nghttp3_vec* vec, std::size_t veccnt, std::uint32_t* pflags);
  void on_acked(std::uint64_t len);
  // Endpoint-wide aggregates (sessions open, bytes buffered, refused sends) for metrics.
  std::atomic<std::size_t>* total_buffered = nullptr;
  std::atomic<std::size_t>* total_sessions = nullptr;
  std::atomic<std::uint64_t>* total_refused = nullptr;
  void attach(std::atomic<std::size_t>& buffered_total, std::atomic<std::size_t>& sessions_total,
              std::atomic<std::uint64_t>& refused_total) {
    total_buffered = &buffered_total;
    total_sessions = &sessions_total;
    total_refused = &refused_total;
    total_sessions->fetch_add(1, std::memory_order_relaxed);
    // An acceptor may send before the session is attached (its first frames go out from the
    // accept callback): count those bytes too, or their acks would take the total below zero.
    total_buffered->fetch_add(buffered, std::memory_order_relaxed);
  }
  ~Impl() { detach(); }
  void detach() {
    if (!total_sessions) return;
    total_sessions->fetch_sub(1, std::memory_order_relaxed);
    total_buffered->fetch_sub(buffered, std::memory_order_relaxed);
    total_sessions = nullptr;
  }
  void finish(std::error_code ec) {
    if (closed) return;
    closed = true;
    detach();
    if (callbacks.on_close) {
      auto cb = std::move(callbacks.on_close);
      callbacks = {};
      cb(ec);
    }
  }
};

class Connection::Impl : public std::enable_shared_from_this<Connection::Impl> {
 public:
  struct Stream {
    std::int64_t id = -1;
    // Receiving side: request (server) or response (client).
    std::string method, path, authority;
    int status = 0;
    std::vector<Header> headers;
    std::size_t header_bytes = 0;
    bool header_overflow = false;
    std::vector<std::uint8_t> body;
    bool body_overflow = false;
    bool body_stopped = false;  // refused (503) or timed out (408): its bytes are ignored
    bool responded = false;
    // Server: the body's capacity charged to the connection's and the endpoint's ledgers,
    // held until the stream ends (the handler may still hold the bytes until it answers).
    std::shared_ptr<BodyLedger> conn_ledger, ep_ledger;
    std::size_t charged = 0;
    std::chrono::steady_clock::time_point body_seen{};  // last body bytes (or the head)
    std::chrono::steady_clock::time_point body_started{};  // the head
    bool receiving_body = false;  // server: head received, end of body not yet
    ~Stream() { refund(); }
    void refund() {
      if (!charged) return;
      conn_ledger->refund(charged);
      ep_ledger->refund(charged);
      charged = 0;
    }
    // Sending side: stable until the stream closes, as nghttp3 and ngtcp2 keep pointers into
    // it until the peer acknowledges the bytes.
    Http3Headers send_fields;
    std::vector<std::uint8_t> send_body;
    std::size_t send_offset = 0;
    // Client requests.
    ResponseHandler on_response;
    std::shared_ptr<RequestHandle::State> handle;
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
    // Session streams.
    std::shared_ptr<Session::Impl> session;
    Connection::SessionHandler on_session;  // client: completes when the response head arrives
  };

  Impl(std::shared_ptr<Endpoint::Impl> ep, bool server, udp::endpoint remote);
  ~Impl();

  bool init_client(const std::optional<NodeId>& expected);
  bool init_server(const ngtcp2_pkt_hd& hd, const udp::endpoint& local, const ngtcp2_cid* retry_odcid);

  void on_datagram(const std::uint8_t* data, std::size_t len);
  void write();
  void close_with_app_error(std::uint64_t code, const std::string& reason);
  void fail(std::error_code ec);  // tears down without a CONNECTION_CLOSE (peer gone or fatal)

  void send_request(Request request, std::chrono::nanoseconds timeout, ResponseHandler handler,
                    std::shared_ptr<RequestHandle::State> handle);
  void cancel_request(const std::shared_ptr<RequestHandle::State>& handle);
  void submit_response(std::int64_t stream_id, Response response);

  // ngtcp2 callbacks (static trampolines below call these)
  int on_handshake_completed();
  int on_recv_stream_data(std::uint32_t flags, std::int64_t stream_id, const std::uint8_t* data, std::size_t len);
  int on_acked_stream_data(std::int64_t stream_id, std::uint64_t len);
  int on_stream_close(std::uint32_t flags, std::int64_t stream_id, std::uint64_t app_error_code);
  int on_stream_reset(std::int64_t stream_id);
  int on_extend_max_stream_data(std::int64_t stream_id);
  int on_get_new_cid(ngtcp2_cid* cid, std::uint8_t* token, std::size_t cidlen);
  int on_remove_cid(const ngtcp2_cid* cid);
  int on_extend_max_local_streams_bidi();
  int verify_peer(gnutls_session_t session);

  // nghttp3 callbacks
  int h3_begin_headers(std::int64_t stream_id);
  int h3_recv_header(std::int64_t stream_id, nghttp3_rcbuf* name, nghttp3_rcbuf* value);
  int h3_recv_data(std::int64_t stream_id, const std::uint8_t* data, std::size_t len);
  int h3_end_stream(std::int64_t stream_id);
  int h3_end_headers(std::int64_t stream_id);
  // Refused clients: CONNECTION_CLOSE(max_clients) once the 503 has been delivered (its
  // stream closed), or after a second if the peer never reads it.
  void close_after_response(std::int64_t stream_id);
  std::int64_t close_after_stream_ = -1;
  std::uint64_t close_after_code_ = 0;
  int h3_acked(std::int64_t stream_id, std::uint64_t len);
  void schedule_write();
  void start_session(Request head, SessionCallbacks callbacks, std::chrono::nanoseconds timeout,
                     Connection::SessionHandler handler);
  int h3_stream_close(std::int64_t stream_id, std::uint64_t app_error_code);
  nghttp3_ssize h3_read_data(std::int64_t stream_id, nghttp3_vec* vec, std::size_t veccnt, std::uint32_t* pflags);

  std::weak_ptr<Endpoint::Impl> endpoint;
  std::shared_ptr<Endpoint::Impl> ep() const { return endpoint.lock(); }
  const bool is_server;
  udp::endpoint remote;
  sockaddr_storage local_sa{}, remote_sa{};
  socklen_t local_salen = 0, remote_salen = 0;
  ngtcp2_conn* conn = nullptr;
  gnutls_session_t tls = nullptr;
  ngtcp2_crypto_conn_ref conn_ref{};
  nghttp3_conn* h3 = nullptr;
  asio::steady_timer timer;
  asio::steady_timer connect_timer;
  std::optional<NodeId> expected_peer;
  std::optional<NodeId> peer;
  std::vector<std::uint8_t> channel_binding;  // set when the handshake completes, then fixed
  std::error_code verify_error;
  bool established = false;
  bool closing = false;  // closing/draining: only waits for removal
  std::atomic<bool> open{true};  // mirrors !closing for other threads
  bool is_client_peer = false;  // server side: the peer presented no node certificate
  bool counted_as_client = false;
  bool refuse_requests = false;  // over max_clients: answer 503, then close
  Endpoint::ConnectHandler on_connected;
  std::unordered_map<std::int64_t, std::unique_ptr<Stream>> streams;
  std::shared_ptr<BodyLedger> body_ledger;  // server: this connection's request bodies
  std::size_t receiving_bodies = 0;          // streams with receiving_body set
  // Makes room for `len` more body bytes on `s`; false when a bound says no.
  bool grow_body(Stream& s, std::size_t len);
  // A server stream's request head (no body), as guards and session acceptors see it.
  Request head_of(const Stream& s) const;
  // Drops a request's body for good (its bytes go back to the ledgers).
  void release_body(Stream& s);
  // Stops a request's upload, answering `status`, and releases its body.
  void stop_body(std::int64_t sid, Stream& s, int status, const char* why);
  // Stops uploads idle past body_idle_timeout (the endpoint's sweep calls it).
  void sweep_bodies(std::chrono::steady_clock::time_point now);
  std::unordered_map<std::int64_t, H3FrameGuard> h3_guards_;  // bidi streams still open
  std::uint64_t h3_close_code_ = 0;  // nonzero: nghttp3 failed, close with this H3 error
  void reject_header_block(std::int64_t stream_id);
  struct Pending {
    Request request;
    std::chrono::nanoseconds timeout;
    ResponseHandler handler;
    std::shared_ptr<RequestHandle::State> handle;
  };
  std::deque<Pending> pending;
  std::vector<std::string> cids;  // keys registered in the endpoint's routing table

 private:
  bool setup_h3();
  void arm_timer();
  void on_timer();
  void enter_closing(std::uint64_t linger_ns);
  void complete_request(Stream& s, std::error_code ec);
  void fail_all_requests(std::error_code ec);
  bool start_request(Request& request, std::chrono::nanoseconds timeout, ResponseHandler& handler,
                     const std::shared_ptr<RequestHandle::State>& handle);
  std::uint64_t timer_generation_ = 0;
  std::uint64_t armed_expiry_ = UINT64_MAX;
  bool write_scheduled_ = false;
  bool in_read_ = false;
 public:
  bool offered_reset_ = false;  // the datagram being read was offered as a possible stateless reset
 private:
  // Request deadlines: one timer per connection at the earliest one (see arm_timer for why).
  std::multimap<std::chrono::steady_clock::time_point, std::int64_t> deadlines_;
  std::unique_ptr<asio::steady_timer> deadline_timer_;
  std::chrono::steady_clock::time_point deadline_armed_ = std::chrono::steady_clock::time_point::max();
  void add_deadline(std::chrono::steady_clock::time_point when, std::int64_t sid);
  void arm_deadline(std::chrono::steady_clock::time_point when);
  void on_deadlines();
 public:
  void cancel_deadline(Stream& s);
};

class Endpoint::Impl : public std::enable_shared_from_this<Endpoint::Impl> {
 public:
  Impl(asio::io_context& io, EndpointOptions opts)
      : strand(asio::make_strand(io)), socket(strand), options(std::move(opts)) {}
  ~Impl() {
    if (cred) gnutls_certificate_free_credentials(cred);
  }

  std::error_code open(const udp::endpoint& local);
  void start_receive();
  void on_readable();
  void handle_datagram(const udp::endpoint& from, const std::uint8_t* data, std::size_t len);
  void accept(const udp::endpoint& from, const std::uint8_t* data, std::size_t len);
  void send_stateless_reset(const std::uint8_t* dcid, std::size_t dcidlen, std::size_t trigger_len,
                            const udp::endpoint& to);
  void send_retry(const ngtcp2_pkt_hd& hd, const udp::endpoint& to);
  void send_version_negotiation(const ngtcp2_version_cid& vc, const udp::endpoint& to);
  static std::string remote_key(const udp::endpoint& e) {
    return std::string(reinterpret_cast<const char*>(e.data()), e.size());
  }

  // Send path: packets are queued, then written with sendmmsg; on EAGAIN the unsent tail is
  // kept and flushed when the socket is writable — never dropped.
  std::uint8_t* packet_buffer();  // null when the queue is full (caller stops writing)
  void queue_packet(const udp::endpoint& to, std::size_t len);
  void flush();
  void register_cid(const std::string& key, const std::shared_ptr<Connection::Impl>& c);
  void unregister_cid(const std::string& key) { by_cid.erase(key); }
  void remove(const std::shared_ptr<Connection::Impl>& c);
  void touch(const std::shared_ptr<Connection::Impl>& c) { touched.insert(c); }
  const RequestHandler* find_route(const std::string& method, const std::string& path) const;
  void do_close();
  std::atomic<bool> close_done{false};  // set once do_close() has run: close() returns at once

  asio::strand<asio::io_context::executor_type> strand;
  udp::socket socket;
  EndpointOptions options;
  gnutls_certificate_credentials_t cred = nullptr;
  std::array<std::uint8_t, 32> static_secret{};
  bool closed = false;
  bool draining = false;  // graceful shutdown in progress: no new connections
  std::unordered_map<std::string, std::shared_ptr<Connection::Impl>> by_cid;
  std::unordered_set<std::shared_ptr<Connection::Impl>> connections;
  // Connections by remote address: a stateless reset carries a random connection id, so an
  // unknown short-header packet is first offered to the connections with its source address.
  std::unordered_multimap<std::string, std::weak_ptr<Connection::Impl>> by_remote;
  // NEW_TOKEN tokens servers gave us, by server address, for the next dial (bounded).
  std::unordered_map<std::string, std::vector<std::uint8_t>> tokens;
  // Answers to packets of no connection: separate budgets, so a flood of one kind cannot
  // starve the other.
  AnswerBudget reset_budget, version_negotiation_budget;
  std::unordered_set<std::shared_ptr<Connection::Impl>> touched;
  std::unordered_set<std::shared_ptr<Connection::Impl>> blocked;  // waiting for send space
  std::atomic<std::size_t> clients{0};
  std::atomic<std::size_t> connection_count{0};  // connections.size(), readable from any thread
  void add_connection(const std::shared_ptr<Connection::Impl>& c) {
    connections.insert(c);
    connection_count.store(connections.size(), std::memory_order_relaxed);
  }
  RouteTable<RequestHandler> routes;
  std::map<std::string, SessionAcceptor> session_routes;
  RouteTable<SessionAcceptor> stream_routes;
  const SessionAcceptor* find_stream_route(const std::string& method, const std::string& path) const {
    if (method == "POST")
      if (auto it = session_routes.find(path); it != session_routes.end()) return &it->second;
    return stream_routes.find(method, path);
  }
  // Written on the strand, read by stats()/metrics from any thread.
  struct Counters {
    std::atomic<std::uint64_t> datagrams_received{0}, datagrams_sent{0}, datagrams_dropped{0}, send_would_block{0},
        handshakes_completed{0}, clients_refused{0}, retries_sent{0}, tokens_accepted{0}, stateless_resets_sent{0},
        stateless_resets_received{0}, session_sends_refused{0}, version_negotiations_sent{0};
    std::atomic<std::size_t> sessions{0}, session_bytes_buffered{0};
    std::atomic<std::uint64_t> bodies_refused{0}, bodies_timed_out{0}, requests_refused{0};
  } stats;
  // Request bodies held: clients' and nodes' apart, so a crowd of clients cannot take the
  // memory DHT requests between nodes need.
  std::shared_ptr<BodyLedger> body_ledger, node_body_ledger;
  RequestGuard request_guard;
  // Connections with uploads in progress, swept once a second for idle ones (only while any).
  std::unordered_map<Connection::Impl*, std::weak_ptr<Connection::Impl>> uploading;
  std::unique_ptr<asio::steady_timer> body_sweep;
  std::size_t body_peak = 0;  // most body bytes held since the sweep last stopped
  void watch_uploads(const std::shared_ptr<Connection::Impl>& c);
  void sweep_uploads();

  struct OutPacket {
    sockaddr_storage to;
    socklen_t tolen;
    std::size_t len;
  };
  std::array<std::array<std::uint8_t, kMaxUdpPayload>, kSendBatch> send_bufs{};
  std::array<OutPacket, kSendBatch> send_meta{};
  std::size_t send_head = 0;  // first unsent packet
  std::size_t send_count = 0;
  bool waiting_writable = false;

  std::array<std::array<std::uint8_t, kRecvBufSize>, kRecvBatch> recv_bufs{};
};

// ============================================================================ trampolines

namespace {

Connection::Impl* self_of(void* user_data) { return static_cast<Connection::Impl*>(user_data); }

ngtcp2_conn* get_conn_from_ref(ngtcp2_crypto_conn_ref* ref) { return static_cast<Connection::Impl*>(ref->user_data)->conn; }

int cb_handshake_completed(ngtcp2_conn*, void* u) { return self_of(u)->on_handshake_completed(); }
int cb_recv_stream_data(ngtcp2_conn*, std::uint32_t flags, std::int64_t sid, std::uint64_t, const std::uint8_t* data,
                        std::size_t len, void* u, void*) {
  return self_of(u)->on_recv_stream_data(flags, sid, data, len);
}
int cb_acked_stream_data_offset(ngtcp2_conn*, std::int64_t sid, std::uint64_t, std::uint64_t len, void* u, void*) {
  return self_of(u)->on_acked_stream_data(sid, len);
}
int cb_stream_close(ngtcp2_conn*, std::uint32_t flags, std::int64_t sid, std::uint64_t code, void* u, void*) {
  return self_of(u)->on_stream_close(flags, sid, code);
}
int cb_stream_reset(ngtcp2_conn*, std::int64_t sid, std::uint64_t, std::uint64_t, void* u, void*) {
  return self_of(u)->on_stream_reset(sid);
}
int cb_stream_stop_sending(ngtcp2_conn*, std::int64_t sid, std::uint64_t, void* u, void*) {
  return self_of(u)->on_stream_reset(sid);
}
int cb_extend_max_stream_data(ngtcp2_conn*, std::int64_t sid, std::uint64_t, void* u, void*) {
  return self_of(u)->on_extend_max_stream_data(sid);
}
int cb_get_new_connection_id(ngtcp2_conn*, ngtcp2_cid* cid, std::uint8_t* token, std::size_t cidlen, void* u) {
  return self_of(u)->on_get_new_cid(cid, token, cidlen);
}
int cb_remove_connection_id(ngtcp2_conn*, const ngtcp2_cid* cid, void* u) { return self_of(u)->on_remove_cid(cid); }
int cb_extend_max_local_streams_bidi(ngtcp2_conn*, std::uint64_t, void* u) {
  return self_of(u)->on_extend_max_local_streams_bidi();
}
int cb_recv_new_token(ngtcp2_conn*, const ngtcp2_vec* token, void* u) {
  auto* c = self_of(u);
  if (auto e = c->ep()) {
    if (e->tokens.size() >= 1024) e->tokens.erase(e->tokens.begin());  // bounded
    e->tokens[Endpoint::Impl::remote_key(c->remote)].assign(token->base, token->base + token->len);
  }
  return 0;
}
int cb_extend_max_remote_streams_bidi(ngtcp2_conn*, std::uint64_t max_streams, void* u) {
  auto* c = self_of(u);
  if (c->h3) nghttp3_conn_set_max_client_streams_bidi(c->h3, max_streams);
  return 0;
}

int verify_peer_cb(gnutls_session_t session) {
  auto* ref = static_cast<ngtcp2_crypto_conn_ref*>(gnutls_session_get_ptr(session));
  return static_cast<Connection::Impl*>(ref->user_data)->verify_peer(session);
}

// nghttp3
int h3_acked_stream_data(nghttp3_conn*, std::int64_t sid, std::uint64_t len, void* u, void*) {
  return self_of(u)->h3_acked(sid, len);
}
int h3_stream_close(nghttp3_conn*, std::int64_t sid, std::uint64_t code, void* u, void*) {
  return self_of(u)->h3_stream_close(sid, code);
}
int h3_recv_data(nghttp3_conn*, std::int64_t sid, const std::uint8_t* data, std::size_t len, void* u, void*) {
  return self_of(u)->h3_recv_data(sid, data, len);
}
int h3_deferred_consume(nghttp3_conn*, std::int64_t sid, std::size_t consumed, void* u, void*) {
  auto* c = self_of(u);
  ngtcp2_conn_extend_max_stream_offset(c->conn, sid, consumed);
  ngtcp2_conn_extend_max_offset(c->conn, consumed);
  return 0;
}
int h3_begin_headers(nghttp3_conn*, std::int64_t sid, void* u, void*) { return self_of(u)->h3_begin_headers(sid); }
int h3_recv_header(nghttp3_conn*, std::int64_t sid, std::int32_t, nghttp3_rcbuf* name, nghttp3_rcbuf* value,
                   std::uint8_t, void* u, void*) {
  return self_of(u)->h3_recv_header(sid, name, value);
}
int h3_end_headers(nghttp3_conn*, std::int64_t sid, int, void* u, void*) { return self_of(u)->h3_end_headers(sid); }
int h3_end_stream(nghttp3_conn*, std::int64_t sid, void* u, void*) { return self_of(u)->h3_end_stream(sid); }
int h3_stop_sending(nghttp3_conn*, std::int64_t sid, std::uint64_t code, void* u, void*) {
  ngtcp2_conn_shutdown_stream_write(self_of(u)->conn, sid, code);
  return 0;
}
int h3_reset_stream(nghttp3_conn*, std::int64_t sid, std::uint64_t code, void* u, void*) {
  ngtcp2_conn_shutdown_stream_read(self_of(u)->conn, sid, code);
  return 0;
}
nghttp3_ssize h3_read_data(nghttp3_conn*, std::int64_t sid, nghttp3_vec* vec, std::size_t veccnt,
                           std::uint32_t* pflags, void* u, void*) {
  return self_of(u)->h3_read_data(sid, vec, veccnt, pflags);
}

}  // namespace

// ============================================================================ Connection::Impl

Connection::Impl::Impl(std::shared_ptr<Endpoint::Impl> ep, bool server, udp::endpoint r)
    : endpoint(ep), is_server(server), remote(std::move(r)), timer(ep->strand), connect_timer(ep->strand) {
  const auto local = ep->socket.local_endpoint();
  std::memcpy(&local_sa, local.data(), local.size());
  local_salen = static_cast<socklen_t>(local.size());
  std::memcpy(&remote_sa, remote.data(), remote.size());
  remote_salen = static_cast<socklen_t>(remote.size());
  conn_ref.get_conn = get_conn_from_ref;
  conn_ref.user_data = this;
}

Connection::Impl::~Impl() {
  if (h3) nghttp3_conn_del(h3);
  if (conn) ngtcp2_conn_del(conn);
  if (tls) gnutls_deinit(tls);
}

namespace {

void fill_callbacks(ngtcp2_callbacks& cb, bool server) {
  std::memset(&cb, 0, sizeof cb);
  if (server) {
    cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  } else {
    cb.client_initial = ngtcp2_crypto_client_initial_cb;
    cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
  }
  cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb.encrypt = ngtcp2_crypto_encrypt_cb;
  cb.decrypt = ngtcp2_crypto_decrypt_cb;
  cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb.update_key = ngtcp2_crypto_update_key_cb;
  cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb.rand = rand_cb;
  cb.handshake_completed = cb_handshake_completed;
  cb.recv_stream_data = cb_recv_stream_data;
  cb.acked_stream_data_offset = cb_acked_stream_data_offset;
  cb.stream_close = cb_stream_close;
  cb.stream_reset = cb_stream_reset;
  cb.stream_stop_sending = cb_stream_stop_sending;
  cb.extend_max_stream_data = cb_extend_max_stream_data;
  cb.get_new_connection_id = cb_get_new_connection_id;
  cb.remove_connection_id = cb_remove_connection_id;
  cb.extend_max_local_streams_bidi = cb_extend_max_local_streams_bidi;
  cb.extend_max_remote_streams_bidi = cb_extend_max_remote_streams_bidi;
  if (!server) cb.recv_new_token = cb_recv_new_token;
}

void fill_settings(ngtcp2_settings& s, const EndpointOptions& o) {
  ngtcp2_settings_default(&s);
  s.initial_ts = now_ns();
  // Before the first RTT sample, 0.12's pacer derives its interval from initial_rtt
  // (333 ms default) and stalls the handshake ~22 ms; loopback and LAN RTTs are far lower.
  s.initial_rtt = 10 * NGTCP2_MILLISECONDS;
  s.max_tx_udp_payload_size = kMaxUdpPayload;
  s.cc_algo = NGTCP2_CC_ALGO_CUBIC;
  s.handshake_timeout = static_cast<ngtcp2_duration>(o.connect_timeout.count());
  s.max_window = kConnWindow * 4;
  s.max_stream_window = kStreamWindow * 4;
}

void fill_params(ngtcp2_transport_params& p, const EndpointOptions& o) {
  ngtcp2_transport_params_default(&p);
  p.initial_max_stream_data_bidi_local = kStreamWindow;
  p.initial_max_stream_data_bidi_remote = kStreamWindow;
  p.initial_max_stream_data_uni = kStreamWindow;
  p.initial_max_data = kConnWindow;
  p.initial_max_streams_bidi = o.max_streams_bidi;
  p.initial_max_streams_uni = 3;
  p.max_idle_timeout = static_cast<ngtcp2_duration>(o.idle_timeout.count());
  p.active_connection_id_limit = 7;
}

}  // namespace

bool Connection::Impl::init_client(const std::optional<NodeId>& expected) {
  auto e = ep();
  expected_peer = expected;
  if (gnutls_init(&tls, GNUTLS_CLIENT | GNUTLS_NO_END_OF_EARLY_DATA) != 0) return false;
  if (gnutls_priority_set_direct(tls, kPriority, nullptr) != 0) return false;
  if (ngtcp2_crypto_gnutls_configure_client_session(tls) != 0) return false;
  if (gnutls_credentials_set(tls, GNUTLS_CRD_CERTIFICATE, e->cred) != 0) return false;
  gnutls_datum_t alpn{const_cast<unsigned char*>(reinterpret_cast<const unsigned char*>("h3")), 2};
  gnutls_alpn_set_protocols(tls, &alpn, 1, GNUTLS_ALPN_MANDATORY);
  gnutls_session_set_ptr(tls, &conn_ref);

  ngtcp2_cid dcid, scid;
  dcid.datalen = scid.datalen = kCidLen;
  random_bytes(dcid.data, kCidLen);
  random_bytes(scid.data, kCidLen);
  ngtcp2_callbacks cb;
  fill_callbacks(cb, false);
  ngtcp2_settings settings;
  fill_settings(settings, e->options);
  auto tok = e->tokens.find(Endpoint::Impl::remote_key(remote));
  if (tok != e->tokens.end()) settings.token = ngtcp2_vec{tok->second.data(), tok->second.size()};
  ngtcp2_transport_params params;
  fill_params(params, e->options);
  ngtcp2_path path{{reinterpret_cast<ngtcp2_sockaddr*>(&local_sa), local_salen},
                   {reinterpret_cast<ngtcp2_sockaddr*>(&remote_sa), remote_salen},
                   nullptr};
  if (ngtcp2_conn_client_new(&conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb, &settings, &params, nullptr,
                             this) != 0)
    return false;
  ngtcp2_conn_set_tls_native_handle(conn, tls);
  if (e->options.keep_alive.count() > 0)
    ngtcp2_conn_set_keep_alive_timeout(conn, static_cast<ngtcp2_duration>(e->options.keep_alive.count()));
  e->register_cid(cid_key(scid), shared_from_this());
  cids.push_back(cid_key(scid));
  return true;
}

bool Connection::Impl::init_server(const ngtcp2_pkt_hd& hd, const udp::endpoint&, const ngtcp2_cid* retry_odcid) {
  auto e = ep();
  body_ledger = std::make_shared<BodyLedger>(e->options.max_connection_body_bytes);
  if (gnutls_init(&tls, GNUTLS_SERVER | GNUTLS_NO_END_OF_EARLY_DATA) != 0) return false;
  if (gnutls_priority_set_direct(tls, kPriority, nullptr) != 0) return false;
  if (ngtcp2_crypto_gnutls_configure_server_session(tls) != 0) return false;
  if (gnutls_credentials_set(tls, GNUTLS_CRD_CERTIFICATE, e->cred) != 0) return false;
  // Ask for a certificate but do not require one: peers without one are clients.
  gnutls_certificate_server_set_request(tls, GNUTLS_CERT_REQUEST);
  gnutls_datum_t alpn{const_cast<unsigned char*>(reinterpret_cast<const unsigned char*>("h3")), 2};
  gnutls_alpn_set_protocols(tls, &alpn, 1, GNUTLS_ALPN_MANDATORY);
  gnutls_session_set_ptr(tls, &conn_ref);

  ngtcp2_cid scid;
  scid.datalen = kCidLen;
  random_bytes(scid.data, kCidLen);
  ngtcp2_callbacks cb;
  fill_callbacks(cb, true);
  ngtcp2_settings settings;
  fill_settings(settings, e->options);
  ngtcp2_transport_params params;
  fill_params(params, e->options);
  params.original_dcid = hd.dcid;
  if (retry_odcid) {  // after our Retry: the client now uses the Retry's source id
    params.original_dcid = *retry_odcid;
    params.retry_scid = hd.dcid;
    params.retry_scid_present = 1;
  }
  params.stateless_reset_token_present = 1;
  if (ngtcp2_crypto_generate_stateless_reset_token(params.stateless_reset_token, e->static_secret.data(),
                                                   e->static_secret.size(), &scid) != 0)
    return false;
  ngtcp2_path path{{reinterpret_cast<ngtcp2_sockaddr*>(&local_sa), local_salen},
                   {reinterpret_cast<ngtcp2_sockaddr*>(&remote_sa), remote_salen},
                   nullptr};
  if (ngtcp2_conn_server_new(&conn, &hd.scid, &scid, &path, hd.version, &cb, &settings, &params, nullptr, this) != 0)
    return false;
  ngtcp2_conn_set_tls_native_handle(conn, tls);
  if (e->options.keep_alive.count() > 0)
    ngtcp2_conn_set_keep_alive_timeout(conn, static_cast<ngtcp2_duration>(e->options.keep_alive.count()));
  for (const auto& key : {cid_key(scid), cid_key(hd.dcid)}) {
    e->register_cid(key, shared_from_this());
    cids.push_back(key);
  }
  return true;
}

int Connection::Impl::verify_peer(gnutls_session_t session) {
  unsigned int n = 0;
  const gnutls_datum_t* certs = gnutls_certificate_get_peers(session, &n);
  if (certs == nullptr || n == 0) {
    if (is_server) {
      is_client_peer = true;
      return 0;
    }
    verify_error = errc::peer_identity_mismatch;  // a node we dial must prove its id
    return -1;
  }
  std::error_code ec;
  const NodeId id = node_id_of_certificate({certs[0].data, certs[0].size}, ec);
  if (ec) {
    verify_error = ec;
    return -1;
  }
  if (expected_peer && *expected_peer != id) {
    verify_error = errc::peer_identity_mismatch;
    return -1;
  }
  peer = id;
  return 0;
}

int Connection::Impl::on_handshake_completed() {
  established = true;
  {
    // RFC 5705/8446 exporter: both ends get the same bytes, and only the two of them.
    static constexpr char kLabel[] = "EXPORTER-macula-channel-binding";
    std::array<char, 32> out{};
    if (gnutls_prf_rfc5705(tls, sizeof kLabel - 1, kLabel, 0, nullptr, out.size(), out.data()) == 0)
      channel_binding.assign(out.begin(), out.end());
  }
  auto e = ep();
  if (!e) return NGTCP2_ERR_CALLBACK_FAILURE;
  ++e->stats.handshakes_completed;
  if (is_server && is_client_peer) {
    if (e->clients >= e->options.max_clients) {
      // Refused, documented: requests get 503, then CONNECTION_CLOSE(max_clients).
      refuse_requests = true;
      ++e->stats.clients_refused;
    } else {
      ++e->clients;
      counted_as_client = true;
    }
  }
  if (!setup_h3()) return NGTCP2_ERR_CALLBACK_FAILURE;
  if (is_server) {
    // NEW_TOKEN: the client may skip a Retry next time it connects from this address.
    std::array<std::uint8_t, NGTCP2_CRYPTO_MAX_REGULAR_TOKENLEN> token;
    const auto n = ngtcp2_crypto_generate_regular_token(token.data(), e->static_secret.data(), e->static_secret.size(),
                                                        reinterpret_cast<const ngtcp2_sockaddr*>(&remote_sa),
                                                        remote_salen, now_ns());
    if (n > 0) ngtcp2_conn_submit_new_token(conn, token.data(), static_cast<std::size_t>(n));
  }
  connect_timer.cancel();
  if (on_connected) {
    auto done = std::move(on_connected);
    on_connected = nullptr;
    // The public handle owns this Impl; the Impl never owns the handle (no cycle).
    done({}, std::make_shared<Connection>(shared_from_this()));
  }
  return 0;
}

bool Connection::Impl::setup_h3() {
  if (h3) return true;
  nghttp3_callbacks cb{};
  cb.acked_stream_data = transport::h3_acked_stream_data;
  cb.stream_close = transport::h3_stream_close;
  cb.recv_data = transport::h3_recv_data;
  cb.deferred_consume = h3_deferred_consume;
  cb.begin_headers = transport::h3_begin_headers;
  cb.recv_header = transport::h3_recv_header;
  cb.end_headers = transport::h3_end_headers;
  cb.stop_sending = h3_stop_sending;
  cb.end_stream = transport::h3_end_stream;
  cb.reset_stream = h3_reset_stream;
  nghttp3_settings settings;
  nghttp3_settings_default(&settings);
  auto e = ep();
  settings.max_field_section_size = e->options.max_header_bytes;
  settings.qpack_max_dtable_capacity = 4096;
  settings.qpack_blocked_streams = 100;
  const int rv = is_server ? nghttp3_conn_server_new(&h3, &cb, &settings, nullptr, this)
                           : nghttp3_conn_client_new(&h3, &cb, &settings, nullptr, this);
  if (rv != 0) return false;
  if (is_server) nghttp3_conn_set_max_client_streams_bidi(h3, e->options.max_streams_bidi);
  std::int64_t ctrl, enc, dec;
  if (ngtcp2_conn_open_uni_stream(conn, &ctrl, nullptr) != 0 || nghttp3_conn_bind_control_stream(h3, ctrl) != 0 ||
      ngtcp2_conn_open_uni_stream(conn, &enc, nullptr) != 0 || ngtcp2_conn_open_uni_stream(conn, &dec, nullptr) != 0 ||
      nghttp3_conn_bind_qpack_streams(h3, enc, dec) != 0)
    return false;
  return true;
}

int Connection::Impl::on_recv_stream_data(std::uint32_t flags, std::int64_t sid, const std::uint8_t* data,
                                          std::size_t len) {
  if (!h3 && !setup_h3()) return NGTCP2_ERR_CALLBACK_FAILURE;
  std::size_t pass = len;
  H3FrameGuard* guard = nullptr;
  if (ngtcp2_is_bidi_stream(sid)) {
    guard = &h3_guards_[sid];
    if (guard->rejected) {  // already answered: drop, but give the credit back
      ngtcp2_conn_extend_max_offset(conn, len);
      return 0;
    }
    // A server answers over-long header sections with 431 anyway (h3_recv_header); the cap
    // stays at or below nghttp3's 64 KiB per-value limit so that no value can reach it.
    const std::uint64_t limit = is_server ? std::min<std::uint64_t>(ep()->options.max_header_bytes, 65536) : 65536;
    pass = h3_guard_scan(*guard, data, len, limit);
  }
  const bool fin = (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0 && !(guard && guard->rejected);
  const nghttp3_ssize consumed = nghttp3_conn_read_stream(h3, sid, data, pass, fin);
  if (consumed < 0) {  // malformed HTTP/3: the connection closes, with an HTTP/3 error code
    h3_close_code_ = nghttp3_err_infer_quic_app_error_code(static_cast<int>(consumed));
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  // Bytes nghttp3 consumed itself (framing, headers) are returned at once; body bytes are
  // returned in h3_recv_data when the application has taken them.
  ngtcp2_conn_extend_max_stream_offset(conn, sid, static_cast<std::uint64_t>(consumed));
  ngtcp2_conn_extend_max_offset(conn, static_cast<std::uint64_t>(consumed));
  if (guard && guard->rejected) {
    ngtcp2_conn_extend_max_offset(conn, len - pass);  // the rest of this chunk is dropped
    reject_header_block(sid);
  }
  return 0;
}

// A HEADERS frame over the limit on `sid`, not given to nghttp3: nghttp3 ignores the rest of
// the stream and sends a QPACK Stream Cancellation; a server answers 431 and stops the
// request (RFC 9114 4.1), a client resets its request. The connection goes on.
void Connection::Impl::reject_header_block(std::int64_t sid) {
  nghttp3_conn_read_stream(h3, sid, nullptr, 0, 0);  // nghttp3 knows the stream (no-op if it does)
  nghttp3_conn_shutdown_stream_read(h3, sid);
  if (!is_server) {
    ngtcp2_conn_shutdown_stream(conn, sid, NGHTTP3_H3_REQUEST_CANCELLED);  // completes as stream_reset
    return;
  }
  h3_begin_headers(sid);  // our Stream, if nghttp3 never announced one
  Stream& st = *streams[sid];
  st.header_overflow = true;
  release_body(st);  // trailers past the limit: the body is dropped with the request
  Response r;
  r.status = 431;
  const std::string msg = "request too large\n";
  r.body.assign(msg.begin(), msg.end());
  submit_response(sid, std::move(r));  // no-op if this stream already has its response
  ngtcp2_conn_shutdown_stream_read(conn, sid, NGHTTP3_H3_NO_ERROR);
}

int Connection::Impl::on_acked_stream_data(std::int64_t sid, std::uint64_t len) {
  if (h3 && nghttp3_conn_add_ack_offset(h3, sid, len) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

int Connection::Impl::on_stream_close(std::uint32_t flags, std::int64_t sid, std::uint64_t code) {
  if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)) code = NGHTTP3_H3_NO_ERROR;
  h3_guards_.erase(sid);
  if (h3) {
    const int rv = nghttp3_conn_close_stream(h3, sid, code);
    if (rv != 0 && rv != NGHTTP3_ERR_STREAM_NOT_FOUND) return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  if (is_server && ngtcp2_is_bidi_stream(sid)) ngtcp2_conn_extend_max_streams_bidi(conn, 1);
  return 0;
}

int Connection::Impl::on_stream_reset(std::int64_t sid) {
  if (h3 && nghttp3_conn_shutdown_stream_read(h3, sid) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

int Connection::Impl::on_extend_max_stream_data(std::int64_t sid) {
  if (h3 && nghttp3_conn_unblock_stream(h3, sid) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

int Connection::Impl::on_get_new_cid(ngtcp2_cid* cid, std::uint8_t* token, std::size_t cidlen) {
  auto e = ep();
  if (!e) return NGTCP2_ERR_CALLBACK_FAILURE;
  random_bytes(cid->data, cidlen);
  cid->datalen = cidlen;
  if (ngtcp2_crypto_generate_stateless_reset_token(token, e->static_secret.data(), e->static_secret.size(), cid) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  const auto key = cid_key(*cid);
  e->register_cid(key, shared_from_this());
  cids.push_back(key);
  return 0;
}

int Connection::Impl::on_remove_cid(const ngtcp2_cid* cid) {
  if (auto e = ep()) {
    const auto key = cid_key(*cid);
    e->unregister_cid(key);
    cids.erase(std::remove(cids.begin(), cids.end(), key), cids.end());
  }
  return 0;
}

int Connection::Impl::on_extend_max_local_streams_bidi() {
  while (!pending.empty()) {
    auto& p = pending.front();
    if (!start_request(p.request, p.timeout, p.handler, p.handle)) break;
    pending.pop_front();
  }
  return 0;
}

// ---- HTTP/3 -----------------------------------------------------------------------------

int Connection::Impl::h3_begin_headers(std::int64_t sid) {
  auto& s = streams[sid];
  if (!s) {
    s = std::make_unique<Stream>();
    s->id = sid;
  }
  return 0;
}

int Connection::Impl::h3_recv_header(std::int64_t sid, nghttp3_rcbuf* name, nghttp3_rcbuf* value) {
  auto it = streams.find(sid);
  if (it == streams.end()) return 0;
  Stream& s = *it->second;
  const auto n = rcbuf_view(name);
  const auto v = rcbuf_view(value);
  s.header_bytes += n.size() + v.size() + 32;
  if (s.header_bytes > ep()->options.max_header_bytes) {
    s.header_overflow = true;
    return 0;
  }
  if (n == ":method") s.method = v;
  else if (n == ":path") s.path = v;
  else if (n == ":authority") s.authority = v;
  else if (n == ":status") s.status = std::atoi(std::string(v).c_str());
  else if (!n.empty() && n[0] != ':') s.headers.push_back({std::string(n), std::string(v)});
  return 0;
}

int Connection::Impl::h3_recv_data(std::int64_t sid, const std::uint8_t* data, std::size_t len) {
  auto it = streams.find(sid);
  if (it != streams.end() && it->second->session) {
    auto session = it->second->session;  // the callback may close the session
    if (session->callbacks.on_data) session->callbacks.on_data({data, len});
  } else if (it != streams.end()) {
    Stream& s = *it->second;
    s.body_seen = std::chrono::steady_clock::now();
    if (s.body_stopped) {
      // Answered already: what was in flight is dropped.
    } else if (is_server && (s.header_overflow || s.body.size() + len > ep()->options.max_body_bytes)) {
      // Refused whatever follows: answer now and stop the upload, rather than take (and
      // throw away) up to the rest of a stream nobody bounds.
      const bool headers = s.header_overflow;
      s.body_overflow = !headers;
      stop_body(sid, s, headers ? 431 : 413, "request too large\n");
    } else if (s.body_overflow || s.body.size() + len > ep()->options.max_body_bytes) {
      // A response over the cap: stop keeping bytes (memory stays bounded) but keep returning
      // credit so the exchange ends and the caller gets body_too_large instead of a stall.
      s.body_overflow = true;
      s.body.clear();
      s.body.shrink_to_fit();
    } else if (!grow_body(s, len)) {
      ++ep()->stats.bodies_refused;
      stop_body(sid, s, 503, "request bodies buffered on this node are at their bound; retry later\n");
    } else {
      s.body.insert(s.body.end(), data, data + len);
    }
  }
  // The body has been taken by the application (copied into the request): return credit.
  ngtcp2_conn_extend_max_stream_offset(conn, sid, len);
  ngtcp2_conn_extend_max_offset(conn, len);
  return 0;
}

bool Connection::Impl::grow_body(Stream& s, std::size_t len) {
  const std::size_t need = s.body.size() + len;
  if (need <= s.body.capacity()) return true;
  auto e = ep();
  if (!is_server || !e || !body_ledger) return true;  // a client's responses: max_body_bytes bounds them
  // Grow geometrically (as the vector would), but charge what is actually reserved.
  const std::size_t cap =
      std::max(need, std::min(std::max<std::size_t>(2 * s.body.capacity(), 16 * 1024), e->options.max_body_bytes));
  const std::size_t delta = cap - std::min(cap, s.charged);
  if (!s.conn_ledger) {
    s.conn_ledger = body_ledger;
    s.ep_ledger = peer ? e->node_body_ledger : e->body_ledger;
  }
  if (!s.conn_ledger->charge(delta)) return false;
  if (!s.ep_ledger->charge(delta)) {
    s.conn_ledger->refund(delta);
    return false;
  }
  s.charged += delta;
  e->body_peak = std::max(e->body_peak, e->body_ledger->bytes.load(std::memory_order_relaxed) +
                                            e->node_body_ledger->bytes.load(std::memory_order_relaxed));
  s.body.reserve(cap);
  return true;
}

void Connection::Impl::release_body(Stream& s) {
  s.body_stopped = true;
  s.body.clear();
  s.body.shrink_to_fit();
  s.refund();
  if (s.receiving_body) {
    s.receiving_body = false;
    --receiving_bodies;
  }
}

void Connection::Impl::stop_body(std::int64_t sid, Stream& s, int status, const char* why) {
  release_body(s);
  Response r;
  r.status = status;
  r.body.assign(why, why + std::strlen(why));
  submit_response(sid, std::move(r));
  // The upload ends here (RFC 9114 4.1: a complete response, then STOP_SENDING). Posted: this
  // may run inside nghttp3's read of this very stream.
  asio::post(ep()->strand, [weak = std::weak_ptr<Impl>(shared_from_this()), sid] {
    auto self = weak.lock();
    if (!self || self->closing || !self->h3) return;
    nghttp3_conn_shutdown_stream_read(self->h3, sid);
    ngtcp2_conn_shutdown_stream_read(self->conn, sid, NGHTTP3_H3_NO_ERROR);
    self->write();
    if (auto e = self->ep()) e->flush();
  });
}

void Connection::Impl::sweep_bodies(std::chrono::steady_clock::time_point now) {
  auto e = ep();
  if (!e || closing) return;
  std::vector<std::int64_t> idle;
  for (auto& [sid, st] : streams)
    if (st->receiving_body && !st->body_stopped &&
        (now - st->body_seen > e->options.body_idle_timeout || now - st->body_started > e->options.body_deadline))
      idle.push_back(sid);
  for (auto sid : idle)
    if (auto it = streams.find(sid); it != streams.end()) {
      ++e->stats.bodies_timed_out;
      stop_body(sid, *it->second, 408, "request body stalled or too slow: not complete within the idle timeout or deadline\n");
    }
  if (!idle.empty()) schedule_write();
}

void Endpoint::Impl::watch_uploads(const std::shared_ptr<Connection::Impl>& c) {
  uploading.insert_or_assign(c.get(), c);  // a reused address replaces a dead entry
  if (body_sweep) return;
  body_sweep = std::make_unique<asio::steady_timer>(strand);
  sweep_uploads();
}

constexpr std::size_t kTrimAfterBytes = 8u << 20;

void Endpoint::Impl::sweep_uploads() {
  const auto now = std::chrono::steady_clock::now();
  for (auto it = uploading.begin(); it != uploading.end();) {
    auto c = it->second.lock();
    if (!c || c->receiving_bodies == 0) {
      it = uploading.erase(it);
      continue;
    }
    c->sweep_bodies(now);
    ++it;
  }
  const std::size_t held = body_ledger->bytes.load(std::memory_order_relaxed) +
                           node_body_ledger->bytes.load(std::memory_order_relaxed);
  if (uploading.empty() && held == 0) {
    body_sweep.reset();  // no uploads: no timer until the next one starts
    // glibc keeps freed heap memory for reuse (and, once a large block has been freed, serves
    // later ones from the heap too): after a burst of bodies, hand it back, so a flood leaves
    // no resident memory behind.
    if (body_peak >= kTrimAfterBytes) malloc_trim(0);
    body_peak = 0;
    return;
  }
  body_sweep->expires_after(std::chrono::seconds(1));
  body_sweep->async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    if (ec) return;
    if (auto self = weak.lock()) self->sweep_uploads();
  });
}

int Connection::Impl::h3_end_stream(std::int64_t sid) {
  auto it = streams.find(sid);
  if (it == streams.end()) return 0;
  Stream& s = *it->second;
  if (s.session) {
    auto session = s.session;
    if (session->callbacks.on_end) {  // half-close: our direction goes on
      auto on_end = std::move(session->callbacks.on_end);
      session->callbacks.on_end = nullptr;
      on_end();
      return 0;
    }
    // The peer finished its direction: the session is over; finish ours after queued bytes.
    session->fin_requested = true;
    nghttp3_conn_resume_stream(h3, sid);
    schedule_write();
    session->finish({});
    return 0;
  }
  if (!is_server) {
    complete_request(s, {});
    return 0;
  }
  if (s.receiving_body) {
    s.receiving_body = false;
    --receiving_bodies;
  }
  if (s.body_stopped) return 0;  // answered when it was stopped
  Response early;
  if (refuse_requests) early.status = 503;
  else if (s.header_overflow) early.status = 431;
  else if (s.body_overflow) early.status = 413;
  if (early.status != 200) {
    const std::string msg = early.status == 503 ? "max_clients reached\n" : "request too large\n";
    early.body.assign(msg.begin(), msg.end());
    submit_response(sid, std::move(early));
    if (refuse_requests) close_after_response(sid);
    return 0;
  }
  auto e = ep();
  const RequestHandler* handler = e->find_route(s.method, s.path);
  if (!handler) {
    Response r;
    r.status = 404;
    const std::string msg = "no route for " + s.method + " " + s.path + "\n";
    r.body.assign(msg.begin(), msg.end());
    submit_response(sid, std::move(r));
    return 0;
  }
  Request req;
  req.method = s.method;
  req.path = s.path;
  req.authority = s.authority;
  req.headers = std::move(s.headers);
  req.body = std::move(s.body);
  req.peer = peer;
  req.channel_binding = channel_binding;
  std::weak_ptr<Impl> weak = shared_from_this();
  auto strand = e->strand;
  Responder respond = [weak, strand, sid](Response r) {
    asio::dispatch(strand, [weak, sid, r = std::move(r)]() mutable {
      if (auto self = weak.lock()) {
        self->submit_response(sid, std::move(r));
        self->write();  // deferred to the end of the read batch when called from inside one
        if (!self->in_read_)
          if (auto ep = self->ep()) ep->flush();
      }
    });
  };
  (*handler)(std::move(req), std::move(respond));
  return 0;
}

void Connection::Impl::submit_response(std::int64_t sid, Response r) {
  auto it = streams.find(sid);
  if (it == streams.end() || it->second->responded || closing || !h3) return;
  Stream& s = *it->second;
  s.responded = true;
  // Answered: whatever the handler still holds is its own bound's business, and a peer that
  // never reads the answer must not keep the request's bytes charged.
  s.refund();
  s.send_fields = Http3Headers::response(r.status);
  s.send_fields.add("content-length", std::to_string(r.body.size()));
  s.send_fields.add_all(r.headers);
  const auto nva = s.send_fields.nv();
  s.send_body = std::move(r.body);
  s.send_offset = 0;
  nghttp3_data_reader dr{transport::h3_read_data};
  nghttp3_conn_submit_response(h3, sid, nva.data(), nva.size(), &dr);
}

nghttp3_ssize Connection::Impl::h3_read_data(std::int64_t sid, nghttp3_vec* vec, std::size_t veccnt,
                                             std::uint32_t* pflags) {
  auto it = streams.find(sid);
  if (it == streams.end() || veccnt == 0) {
    *pflags |= NGHTTP3_DATA_FLAG_EOF;
    return 0;
  }
  Stream& s = *it->second;
  if (s.session) return s.session->read(vec, veccnt, pflags);
  const std::size_t left = s.send_body.size() - s.send_offset;
  *pflags |= NGHTTP3_DATA_FLAG_EOF;
  if (left == 0) return 0;
  vec[0].base = s.send_body.data() + s.send_offset;
  vec[0].len = left;
  s.send_offset = s.send_body.size();
  return 1;
}

int Connection::Impl::h3_stream_close(std::int64_t sid, std::uint64_t code) {
  if (sid == close_after_stream_) {
    close_after_stream_ = -1;
    asio::post(ep()->strand, [weak = std::weak_ptr<Impl>(shared_from_this())] {
      if (auto self = weak.lock())
        self->close_with_app_error(self->close_after_code_, self->refuse_requests ? "max_clients reached" : "refused");
    });
  }
  auto it = streams.find(sid);
  if (it == streams.end()) return 0;
  if (it->second->receiving_body) --receiving_bodies;
  if (it->second->on_session) {
    auto h = std::move(it->second->on_session);
    h(errc::connection_closed, nullptr);
  }
  if (it->second->session)
    it->second->session->finish(code == NGHTTP3_H3_NO_ERROR ? std::error_code{} : make_error_code(errc::stream_reset));
  // Still waiting for its response: the stream ended before the response did (h3_end_stream
  // completes it otherwise), so it is incomplete whatever the close code says.
  if (!is_server && it->second->on_response) complete_request(*it->second, errc::stream_reset);
  streams.erase(it);
  return 0;
}

void Connection::Impl::complete_request(Stream& s, std::error_code ec) {
  if (!s.on_response) return;
  auto handler = std::move(s.on_response);
  s.on_response = nullptr;
  cancel_deadline(s);
  Response r;
  if (!ec) {
    r.status = s.status;
    r.headers = std::move(s.headers);
    r.body = std::move(s.body);
    if (s.body_overflow) ec = errc::body_too_large;
  }
  handler(ec, std::move(r));
}

void Connection::Impl::fail_all_requests(std::error_code ec) {
  for (auto& [sid, s] : streams) {
    complete_request(*s, ec);
    if (s->on_session) {
      auto h = std::move(s->on_session);
      h(ec, nullptr);
    }
    if (s->session) s->session->finish(ec);
  }
  while (!pending.empty()) {
    auto handler = std::move(pending.front().handler);
    pending.pop_front();
    handler(ec, Response{});
  }
}

void Connection::Impl::send_request(Request request, std::chrono::nanoseconds timeout, ResponseHandler handler,
                                    std::shared_ptr<RequestHandle::State> handle) {
  if (handle->cancelled) return handler(errc::cancelled, Response{});
  if (closing || !h3) return handler(errc::connection_closed, Response{});
  if (!pending.empty() || !start_request(request, timeout, handler, handle)) {
    if (pending.size() >= ep()->options.max_pending_requests) return handler(errc::too_many_pending, Response{});
    pending.push_back(Pending{std::move(request), timeout, std::move(handler), std::move(handle)});
    return;
  }
  write();
  if (!in_read_) ep()->flush();
}

bool Connection::Impl::start_request(Request& req, std::chrono::nanoseconds timeout, ResponseHandler& handler,
                                     const std::shared_ptr<RequestHandle::State>& handle) {
  std::int64_t sid;
  if (ngtcp2_conn_open_bidi_stream(conn, &sid, nullptr) != 0) return false;  // no stream credit yet
  auto s = std::make_unique<Stream>();
  s->id = sid;
  s->on_response = std::move(handler);
  s->handle = handle;
  if (handle) handle->stream_id = sid;
  s->send_fields = Http3Headers::request(req.method, std::move(req.authority), req.path);
  if (!req.body.empty() || req.method == "POST" || req.method == "PUT")
    s->send_fields.add("content-length", std::to_string(req.body.size()));
  s->send_fields.add_all(req.headers);
  const auto nva = s->send_fields.nv();
  s->send_body = std::move(req.body);
  s->deadline = std::chrono::steady_clock::now() + timeout;
  add_deadline(s->deadline, sid);
  nghttp3_data_reader dr{transport::h3_read_data};
  const bool has_body = !s->send_body.empty();
  streams[sid] = std::move(s);
  if (nghttp3_conn_submit_request(h3, sid, nva.data(), nva.size(), has_body ? &dr : nullptr, nullptr) != 0) {
    auto it = streams.find(sid);
    complete_request(*it->second, errc::transport_error);
    streams.erase(it);
  }
  return true;
}

// ---- sessions ----------------------------------------------------------------------------

std::error_code Session::Impl::send(std::span<const std::uint8_t> bytes) {
  auto c = conn.lock();
  if (closed || fin_requested || !c || c->closing) return errc::connection_closed;
  if (buffered + bytes.size() > bound) {
    ++refused;
    if (total_refused) total_refused->fetch_add(1, std::memory_order_relaxed);
    return errc::queue_full;
  }
  if (total_buffered) total_buffered->fetch_add(bytes.size(), std::memory_order_relaxed);
  while (!bytes.empty()) {
    if (chunks.empty() || chunks.back().size == kChunk) chunks.emplace_back();
    Chunk& tail = chunks.back();
    const std::size_t n = std::min(bytes.size(), kChunk - tail.size);
    std::memcpy(tail.data.get() + tail.size, bytes.data(), n);
    tail.size += n;
    buffered += n;
    bytes = bytes.subspan(n);
  }
  high_water = std::max(high_water, buffered);
  nghttp3_conn_resume_stream(c->h3, stream_id);
  c->schedule_write();
  return {};
}

nghttp3_ssize Session::Impl::read(nghttp3_vec* vec, std::size_t veccnt, std::uint32_t* pflags) {
  std::size_t n = 0;
  for (auto& chunk : chunks) {
    if (n == veccnt) break;
    if (chunk.handed == chunk.size) continue;
    vec[n].base = chunk.data.get() + chunk.handed;
    vec[n].len = chunk.size - chunk.handed;
    chunk.handed = chunk.size;
    ++n;
  }
  if (n > 0) return static_cast<nghttp3_ssize>(n);
  if (fin_requested) {
    *pflags |= NGHTTP3_DATA_FLAG_EOF;
    return 0;
  }
  return NGHTTP3_ERR_WOULDBLOCK;  // resumed by the next send()
}

void Session::Impl::on_acked(std::uint64_t len) {
  while (len > 0 && !chunks.empty()) {
    Chunk& front = chunks.front();
    const std::size_t take = std::min<std::uint64_t>(len, front.size - acked_front);
    acked_front += take;
    buffered -= take;
    if (total_buffered && total_sessions) total_buffered->fetch_sub(take, std::memory_order_relaxed);
    len -= take;
    // A fully acknowledged chunk goes, unless it is the tail that may still take bytes.
    if (acked_front == front.size && front.handed == front.size && (chunks.size() > 1 || front.size == kChunk)) {
      chunks.pop_front();
      acked_front = 0;
    } else if (take == 0) {
      break;
    }
  }
  if (writable && buffered <= writable_below) {
    auto cb = std::move(writable);
    writable = nullptr;
    cb();
  }
}

int Connection::Impl::h3_acked(std::int64_t sid, std::uint64_t len) {
  auto it = streams.find(sid);
  if (it != streams.end() && it->second->session) it->second->session->on_acked(len);
  return 0;
}

void Connection::Impl::schedule_write() {
  if (write_scheduled_) return;
  write_scheduled_ = true;
  auto e = ep();
  if (!e) return;
  // One write per strand turn however many sends happened in it: frames batch into packets.
  asio::post(e->strand, [weak = std::weak_ptr<Impl>(shared_from_this())] {
    auto self = weak.lock();
    if (!self) return;
    self->write_scheduled_ = false;
    self->write();
    if (auto ep = self->ep()) ep->flush();
  });
}

Request Connection::Impl::head_of(const Stream& s) const {
  Request head;
  head.method = s.method;
  head.path = s.path;
  head.authority = s.authority;
  head.headers = s.headers;
  head.peer = peer;
  head.channel_binding = channel_binding;
  return head;
}

int Connection::Impl::h3_end_headers(std::int64_t sid) {
  auto it = streams.find(sid);
  if (it == streams.end()) return 0;
  Stream& s = *it->second;
  if (!is_server) {
    if (!s.on_session) return 0;
    auto handler = std::move(s.on_session);
    s.on_session = nullptr;
    cancel_deadline(s);
    if (s.status < 200 || s.status > 299) {
      if (s.session->callbacks.on_refused) s.session->callbacks.on_refused(s.status, s.headers);
      s.session->callbacks.on_data = nullptr;  // a refusal's body is not the session's data
      s.session->closed = true;
      ngtcp2_conn_shutdown_stream(conn, sid, NGHTTP3_H3_REQUEST_CANCELLED);
      schedule_write();
      handler(errc::connection_refused, nullptr);
      return 0;
    }
    s.session->response_headers = std::move(s.headers);
    handler({}, std::make_shared<Session>(s.session));
    return 0;
  }
  auto e = ep();
  if (s.header_overflow) return 0;
  const SessionAcceptor* acceptor = e->find_stream_route(s.method, s.path);
  if (!acceptor) {  // an ordinary request: its body is buffered, answered at end_stream
    if (e->request_guard && !refuse_requests) {
      if (const int refused = e->request_guard(head_of(s))) {
        ++e->stats.requests_refused;
        stop_body(sid, s, refused, refused == 403 ? "forbidden\n" : "unauthorized\n");
        return 0;
      }
    }
    s.receiving_body = true;
    s.body_seen = s.body_started = std::chrono::steady_clock::now();
    ++receiving_bodies;
    e->watch_uploads(shared_from_this());
    return 0;
  }
  auto session = std::make_shared<Session::Impl>();
  session->conn = shared_from_this();
  session->stream_id = sid;
  session->peer = peer;
  session->bound = e->options.session_send_buffer;
  const Request head = head_of(s);
  SessionCallbacks callbacks;
  const int status = refuse_requests ? 503 : (*acceptor)(head, std::make_shared<Session>(session), callbacks);
  if (status != 200) {
    Response r;
    r.status = status;
    r.headers = std::move(callbacks.response_headers);
    r.body.assign(callbacks.refusal_body.begin(), callbacks.refusal_body.end());
    submit_response(sid, std::move(r));
    ngtcp2_conn_shutdown_stream_read(conn, sid, NGHTTP3_H3_REQUEST_REJECTED);
    if (refuse_requests || status == 403) close_after_response(sid);
    return 0;
  }
  s.responded = true;
  s.send_fields = Http3Headers::response(200);
  s.send_fields.add_all(callbacks.response_headers);
  callbacks.response_headers.clear();
  session->callbacks = std::move(callbacks);
  session->attach(e->stats.session_bytes_buffered, e->stats.sessions, e->stats.session_sends_refused);
  s.session = session;
  const auto nva = s.send_fields.nv();
  nghttp3_data_reader dr{transport::h3_read_data};
  nghttp3_conn_submit_response(h3, sid, nva.data(), nva.size(), &dr);
  return 0;
}

void Connection::Impl::start_session(Request head, SessionCallbacks callbacks, std::chrono::nanoseconds timeout,
                                     Connection::SessionHandler handler) {
  if (closing || !h3) return handler(errc::connection_closed, nullptr);
  std::int64_t sid;
  if (ngtcp2_conn_open_bidi_stream(conn, &sid, nullptr) != 0) return handler(errc::too_many_pending, nullptr);
  auto s = std::make_unique<Stream>();
  s->id = sid;
  s->session = std::make_shared<Session::Impl>();
  s->session->conn = shared_from_this();
  s->session->stream_id = sid;
  s->session->peer = peer;
  s->session->bound = ep()->options.session_send_buffer;
  s->session->callbacks = std::move(callbacks);
  {
    auto e = ep();
    s->session->attach(e->stats.session_bytes_buffered, e->stats.sessions, e->stats.session_sends_refused);
  }
  s->on_session = std::move(handler);
  s->send_fields = Http3Headers::request(head.method.empty() ? std::string("POST") : head.method, std::move(head.authority),
                                  head.path);
  s->send_fields.add_all(head.headers);
  const auto nva = s->send_fields.nv();
  s->deadline = std::chrono::steady_clock::now() + timeout;
  add_deadline(s->deadline, sid);
  nghttp3_data_reader dr{transport::h3_read_data};
  streams[sid] = std::move(s);
  if (nghttp3_conn_submit_request(h3, sid, nva.data(), nva.size(), &dr, nullptr) != 0) {
    auto it = streams.find(sid);
    auto h = std::move(it->second->on_session);
    streams.erase(it);
    return h(errc::transport_error, nullptr);
  }
  if (!head.body.empty()) (void)streams[sid]->session->send(head.body);
  schedule_write();
}

void Connection::Impl::close_after_response(std::int64_t sid) {
  if (close_after_stream_ >= 0) return;
  close_after_stream_ = sid;
  close_after_code_ = static_cast<std::uint64_t>(refuse_requests ? CloseCode::max_clients : CloseCode::realm_refused);
  auto t = std::make_shared<asio::steady_timer>(ep()->strand, std::chrono::seconds(1));
  t->async_wait([t, weak = std::weak_ptr<Impl>(shared_from_this())](boost::system::error_code) {
    if (auto self = weak.lock()) self->close_with_app_error(self->close_after_code_, "refused");
  });
}

void Connection::Impl::cancel_request(const std::shared_ptr<RequestHandle::State>& handle) {
  if (handle->cancelled) return;
  handle->cancelled = true;
  for (auto it = pending.begin(); it != pending.end(); ++it) {
    if (it->handle == handle) {
      auto h = std::move(it->handler);
      pending.erase(it);
      return h(errc::cancelled, Response{});
    }
  }
  auto it = streams.find(handle->stream_id);
  if (handle->stream_id < 0 || it == streams.end() || !it->second->on_response) return;  // already done
  complete_request(*it->second, errc::cancelled);
  ngtcp2_conn_shutdown_stream(conn, handle->stream_id, NGHTTP3_H3_REQUEST_CANCELLED);
  schedule_write();
}

void Connection::Impl::add_deadline(std::chrono::steady_clock::time_point when, std::int64_t sid) {
  deadlines_.emplace(when, sid);
  arm_deadline(when);
}

void Connection::Impl::arm_deadline(std::chrono::steady_clock::time_point when) {
  if (when >= deadline_armed_) return;
  deadline_armed_ = when;
  if (!deadline_timer_) deadline_timer_ = std::make_unique<asio::steady_timer>(ep()->strand);
  deadline_timer_->expires_at(when);
  deadline_timer_->async_wait([weak = std::weak_ptr<Impl>(shared_from_this())](boost::system::error_code ec) {
    if (ec) return;
    if (auto self = weak.lock()) self->on_deadlines();
  });
}

void Connection::Impl::cancel_deadline(Stream& s) {
  if (s.deadline == std::chrono::steady_clock::time_point::max()) return;
  auto [first, last] = deadlines_.equal_range(s.deadline);
  for (auto it = first; it != last; ++it) {
    if (it->second == s.id) {
      deadlines_.erase(it);
      break;
    }
  }
  s.deadline = std::chrono::steady_clock::time_point::max();
}

void Connection::Impl::on_deadlines() {
  deadline_armed_ = std::chrono::steady_clock::time_point::max();
  const auto now = std::chrono::steady_clock::now();
  bool wrote = false;
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const std::int64_t sid = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    auto it = streams.find(sid);
    if (it == streams.end()) continue;
    Stream& s = *it->second;
    s.deadline = std::chrono::steady_clock::time_point::max();
    if (s.on_response) {
      complete_request(s, errc::timed_out);
    } else if (s.on_session) {
      auto h = std::move(s.on_session);
      s.on_session = nullptr;
      s.session->closed = true;
      h(errc::timed_out, nullptr);
    } else {
      continue;
    }
    ngtcp2_conn_shutdown_stream(conn, sid, NGHTTP3_H3_REQUEST_CANCELLED);
    wrote = true;
  }
  if (!deadlines_.empty()) arm_deadline(deadlines_.begin()->first);
  if (wrote) schedule_write();
}

// ---- packets, timers, closing ------------------------------------------------------------

void Connection::Impl::on_datagram(const std::uint8_t* data, std::size_t len) {
  if (closing) return;
  ngtcp2_path path{{reinterpret_cast<ngtcp2_sockaddr*>(&local_sa), local_salen},
                   {reinterpret_cast<ngtcp2_sockaddr*>(&remote_sa), remote_salen},
                   nullptr};
  ngtcp2_pkt_info pi{};
  in_read_ = true;
  const int rv = ngtcp2_conn_read_pkt(conn, &path, &pi, data, len, now_ns());
  in_read_ = false;
  if (rv == 0) return;
  if (rv == NGTCP2_ERR_DRAINING) {
    if (offered_reset_)
      if (auto e = ep()) e->stats.stateless_resets_received.fetch_add(1, std::memory_order_relaxed);
    // The peer closed: say why in the error users see.
    const auto pc = quic::peer_close(conn);
    std::error_code why = errc::connection_closed;
    if (pc.application && pc.code == static_cast<std::uint64_t>(CloseCode::max_clients)) why = errc::connection_refused;
    if (pc.application && pc.code == static_cast<std::uint64_t>(CloseCode::identity_mismatch))
      why = errc::peer_identity_mismatch;
    if (on_connected) return fail(why);
    // State first, callbacks after: a completion handler may look at the connection.
    enter_closing(3 * ngtcp2_conn_get_pto(conn));
    fail_all_requests(why);
    return;
  }
  if (rv == NGTCP2_ERR_DROP_CONN) return fail(errc::connection_closed);
  if (verify_error) return fail(verify_error);
  quic::CloseError ccerr;
  if (rv == NGTCP2_ERR_CRYPTO) quic::set_tls_alert(ccerr, ngtcp2_conn_get_tls_alert(conn));
  else if (rv == NGTCP2_ERR_CALLBACK_FAILURE && h3_close_code_ != 0) quic::set_app_error(ccerr, h3_close_code_, nullptr, 0);
  else quic::set_liberr(ccerr, rv);
  std::array<std::uint8_t, kMaxUdpPayload> buf;
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info opi{};
  const auto n = ngtcp2_conn_write_connection_close(conn, &ps.path, &opi, buf.data(), buf.size(), &ccerr, now_ns());
  if (n > 0) {
    if (auto e = ep()) {
      if (auto* out = e->packet_buffer()) {
        std::memcpy(out, buf.data(), static_cast<std::size_t>(n));
        e->queue_packet(remote, static_cast<std::size_t>(n));
      }
    }
  }
  fail(errc::transport_error);
}

void Connection::Impl::write() {
  auto e = ep();
  if (!e || closing || !conn) return;
  // Never write from inside ngtcp2_conn_read_pkt (a handler that answers synchronously runs
  // there): ngtcp2 is not re-entrant, and the endpoint writes every touched connection once
  // after the datagram batch anyway, so the answer and the ACK share packets.
  if (in_read_) {
    e->touch(shared_from_this());
    return;
  }
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  const std::uint64_t ts = now_ns();
  for (;;) {
    std::uint8_t* buf = e->packet_buffer();
    if (!buf) {
      e->blocked.insert(shared_from_this());  // resumed when the socket drains
      break;
    }
    std::int64_t sid = -1;
    int fin = 0;
    std::array<nghttp3_vec, 16> vec;
    nghttp3_ssize veccnt = 0;
    if (h3 && ngtcp2_conn_get_max_data_left(conn) > 0) {
      veccnt = nghttp3_conn_writev_stream(h3, &sid, &fin, vec.data(), vec.size());
      if (veccnt < 0) return fail(errc::transport_error);
    }
    ngtcp2_ssize ndatalen = -1;
    std::uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
    if (fin) flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
    const ngtcp2_ssize n =
        ngtcp2_conn_writev_stream(conn, &ps.path, &pi, buf, kMaxUdpPayload, &ndatalen, flags, sid,
                                  reinterpret_cast<const ngtcp2_vec*>(vec.data()), static_cast<std::size_t>(veccnt), ts);
    if (n < 0) {
      if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
        nghttp3_conn_block_stream(h3, sid);
        continue;
      }
      if (n == NGTCP2_ERR_STREAM_SHUT_WR) {
        nghttp3_conn_shutdown_stream_write(h3, sid);
        continue;
      }
      if (n == NGTCP2_ERR_WRITE_MORE) {
        if (nghttp3_conn_add_write_offset(h3, sid, static_cast<std::size_t>(ndatalen)) != 0)
          return fail(errc::transport_error);
        continue;
      }
      return fail(errc::transport_error);
    }
    if (ndatalen >= 0 && sid >= 0 && nghttp3_conn_add_write_offset(h3, sid, static_cast<std::size_t>(ndatalen)) != 0)
      return fail(errc::transport_error);
    if (n == 0) break;
    e->queue_packet(remote, static_cast<std::size_t>(n));
  }
  // No pacing (ngtcp2_conn_update_pkt_tx_time is not called): its sub-millisecond release
  // times need a timer per packet, which on loopback/LAN cost more than they give. See
  // docs/ARCHITECTURE.md "Transport timers".
  arm_timer();
}

void Connection::Impl::arm_timer() {
  const std::uint64_t expiry = ngtcp2_conn_get_expiry(conn);
  // Re-arm only when the expiry moves earlier. Re-arming an Asio timer reprograms the
  // io_context's timerfd, which on this VM cost ~70% of a request's CPU when done on every
  // write; a timer that fires later than needed merely runs handle_expiry (a no-op then)
  // and re-arms from the real expiry.
  if (expiry == UINT64_MAX) return;
  // Coalesce to 1 ms: ngtcp2 0.12 delays ACKs by srtt/8, microseconds on loopback, which
  // would fire a timer per request. We advertise max_ack_delay 25 ms, so acking up to 1 ms
  // late is within the protocol, and an ACK usually leaves earlier with the next packet.
  const std::uint64_t floor = now_ns() + kTimerGranularityNs;
  const std::uint64_t when = std::max(expiry, floor);
  if (when >= armed_expiry_) return;
  armed_expiry_ = when;
  ++timer_generation_;
  timer.expires_at(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(when)));
  std::weak_ptr<Impl> weak = shared_from_this();
  const auto gen = timer_generation_;
  timer.async_wait([weak, gen](boost::system::error_code ec) {
    if (ec) return;
    auto self = weak.lock();
    if (!self || self->timer_generation_ != gen) return;
    self->armed_expiry_ = UINT64_MAX;
    self->on_timer();
  });
}

void Connection::Impl::on_timer() {
  if (closing) return;
  const int rv = ngtcp2_conn_handle_expiry(conn, now_ns());
  if (rv == NGTCP2_ERR_IDLE_CLOSE) return fail(errc::connection_closed);
  if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) return fail(errc::handshake_timeout);
  if (rv != 0) return fail(errc::transport_error);
  write();
  if (auto e = ep()) e->flush();
}

void Connection::Impl::close_with_app_error(std::uint64_t code, const std::string& reason) {
  auto e = ep();
  if (!e || closing || !conn) return;
  if (ngtcp2_conn_is_in_closing_period(conn) || ngtcp2_conn_is_in_draining_period(conn)) return;
  quic::CloseError ccerr;
  quic::set_app_error(ccerr, code, reinterpret_cast<const std::uint8_t*>(reason.data()), reason.size());
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  if (std::uint8_t* buf = e->packet_buffer()) {
    const auto n = ngtcp2_conn_write_connection_close(conn, &ps.path, &pi, buf, kMaxUdpPayload, &ccerr, now_ns());
    if (n > 0) e->queue_packet(remote, static_cast<std::size_t>(n));
  }
  fail_all_requests(errc::connection_closed);
  enter_closing(3 * ngtcp2_conn_get_pto(conn));
  e->flush();
}

void Connection::Impl::enter_closing(std::uint64_t linger_ns) {
  if (closing) return;
  closing = true;
  open = false;
  ++timer_generation_;
  // Keep the connection ids routed to us for the closing period, so late packets from the
  // peer are absorbed rather than answered with stateless resets.
  timer.expires_after(std::chrono::nanoseconds(linger_ns));
  std::weak_ptr<Impl> weak = shared_from_this();
  timer.async_wait([weak](boost::system::error_code ec) {
    if (ec) return;
    if (auto self = weak.lock())
      if (auto e = self->ep()) e->remove(self);
  });
}

void Connection::Impl::fail(std::error_code ec) {
  auto self = shared_from_this();
  connect_timer.cancel();
  if (on_connected) {
    auto done = std::move(on_connected);
    on_connected = nullptr;
    done(verify_error ? verify_error : ec, nullptr);
  }
  fail_all_requests(ec);
  closing = true;
  open = false;
  ++timer_generation_;
  timer.cancel();
  if (auto e = ep()) e->remove(self);
}

// ============================================================================ Endpoint::Impl

std::error_code Endpoint::Impl::open(const udp::endpoint& local) {
  body_ledger = std::make_shared<BodyLedger>(options.max_buffered_body_bytes);
  node_body_ledger = std::make_shared<BodyLedger>(options.max_buffered_body_bytes);
  if (gnutls_certificate_allocate_credentials(&cred) != 0) return errc::transport_error;
  const auto& id = options.identity;
  gnutls_datum_t cert{reinterpret_cast<unsigned char*>(const_cast<char*>(id.cert_pem().data())),
                      static_cast<unsigned int>(id.cert_pem().size())};
  gnutls_datum_t key{reinterpret_cast<unsigned char*>(const_cast<char*>(id.key_pem().data())),
                     static_cast<unsigned int>(id.key_pem().size())};
  if (options.present_certificate &&
      gnutls_certificate_set_x509_key_mem(cred, &cert, &key, GNUTLS_X509_FMT_PEM) < 0)
    return errc::identity_invalid;
  gnutls_certificate_set_verify_function(cred, verify_peer_cb);
  // The stateless-reset secret derives from the node's private key, so it survives restarts
  // of the same node (and a restarted node can reset its peers' stale connections).
  static constexpr char kLabel[] = "macula stateless reset v1";
  std::string material(kLabel);
  material += id.key_pem();
  SHA256(reinterpret_cast<const unsigned char*>(material.data()), material.size(), static_secret.data());

  boost::system::error_code ec;
  socket.open(local.protocol(), ec);
  if (!ec && local.address().is_v6()) socket.set_option(asio::ip::v6_only(true), ec);
  if (!ec) socket.bind(local, ec);
  if (!ec) socket.non_blocking(true, ec);
  if (!ec) {
    // Bursts of a fast sender (no pacing, see write()) must not overflow the kernel's receive
    // queue; the kernel caps these at net.core.{r,w}mem_max, and a refusal is not an error.
    boost::system::error_code ignored;
    socket.set_option(asio::socket_base::receive_buffer_size(4 << 20), ignored);
    socket.set_option(asio::socket_base::send_buffer_size(4 << 20), ignored);
  }
  if (ec) return std::error_code(ec.value(), std::system_category());
  return {};
}

void Endpoint::Impl::start_receive() {
  if (closed) return;
  socket.async_wait(udp::socket::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->closed) return;
    self->on_readable();
    self->start_receive();
  });
}

void Endpoint::Impl::on_readable() {
  std::array<mmsghdr, kRecvBatch> msgs{};
  std::array<iovec, kRecvBatch> iov{};
  std::array<sockaddr_storage, kRecvBatch> addrs{};
  for (int round = 0; round < 16; ++round) {
    for (std::size_t i = 0; i < kRecvBatch; ++i) {
      iov[i] = {recv_bufs[i].data(), recv_bufs[i].size()};
      msgs[i].msg_hdr = {};
      msgs[i].msg_hdr.msg_name = &addrs[i];
      msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    const int n = ::recvmmsg(socket.native_handle(), msgs.data(), kRecvBatch, MSG_DONTWAIT, nullptr);
    if (n <= 0) break;
    for (int i = 0; i < n; ++i) {
      ++stats.datagrams_received;
      if (msgs[static_cast<std::size_t>(i)].msg_hdr.msg_flags & MSG_TRUNC) {
        ++stats.datagrams_dropped;  // larger than any packet we allow peers to send
        continue;
      }
      udp::endpoint from;
      const auto& sa = addrs[static_cast<std::size_t>(i)];
      std::memcpy(from.data(), &sa, msgs[static_cast<std::size_t>(i)].msg_hdr.msg_namelen);
      from.resize(msgs[static_cast<std::size_t>(i)].msg_hdr.msg_namelen);
      handle_datagram(from, recv_bufs[static_cast<std::size_t>(i)].data(), msgs[static_cast<std::size_t>(i)].msg_len);
    }
    if (static_cast<std::size_t>(n) < kRecvBatch) break;
  }
  // Write each touched connection once per batch: ACKs for many packets coalesce.
  auto list = std::move(touched);
  touched.clear();
  for (const auto& c : list) c->write();
  flush();
}

void Endpoint::Impl::handle_datagram(const udp::endpoint& from, const std::uint8_t* data, std::size_t len) {
  ngtcp2_version_cid vc;
  const int rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, kCidLen);
  if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
    // Only a datagram of at least 1200 bytes gets here (ngtcp2 refuses smaller ones of an
    // unknown version), so the answer is never larger than what provoked it.
    send_version_negotiation(vc, from);
    return;
  }
  if (rv != 0) {
    ++stats.datagrams_dropped;
    return;
  }
  auto it = by_cid.find(cid_key(vc.dcid, vc.dcidlen));
  if (it != by_cid.end()) {
    auto c = it->second;
    c->on_datagram(data, len);
    if (!c->closing) touch(c);
    return;
  }
  if (vc.version == 0 && (data[0] & 0x80)) {
    // A Version Negotiation packet for no connection of ours: never answered (RFC 9000 §6.1),
    // and it cannot be a stateless reset, which always has a short header.
    ++stats.datagrams_dropped;
    return;
  }
  if (vc.version == 0) {  // short header for no connection of ours
    auto [first, last] = by_remote.equal_range(remote_key(from));
    for (auto r = first; r != last; ++r) {
      auto c = r->second.lock();
      if (!c || c->closing) continue;
      const auto before = stats.stateless_resets_received.load(std::memory_order_relaxed);
      c->offered_reset_ = true;
      c->on_datagram(data, len);
      c->offered_reset_ = false;
      if (c->closing || stats.stateless_resets_received.load(std::memory_order_relaxed) != before) return;
    }
    ++stats.datagrams_dropped;
    send_stateless_reset(vc.dcid, vc.dcidlen, len, from);
    return;
  }
  if (vc.version != NGTCP2_PROTO_VER_V1) {
    // ngtcp2 also implements the QUIC drafts and the v2 draft, but we offer ALPN h3 in v1
    // alone: such a client would fail its handshake, so it is steered to v1 instead. The
    // size rule is ours to apply here, since ngtcp2 applies it only to versions it lacks.
    if (len >= NGTCP2_MAX_UDP_PAYLOAD_SIZE) send_version_negotiation(vc, from);
    else ++stats.datagrams_dropped;
    return;
  }
  accept(from, data, len);
}

void Endpoint::Impl::accept(const udp::endpoint& from, const std::uint8_t* data, std::size_t len) {
  ngtcp2_pkt_hd hd;
  if (closed || draining || !options.present_certificate || ngtcp2_accept(&hd, data, len) != 0 ||
      connections.size() >= options.max_connections) {
    ++stats.datagrams_dropped;
    return;
  }
  // Address validation: a Retry token proves the client saw our Retry; a NEW_TOKEN token
  // proves it connected from this address before. Both are HMACs under our static secret.
  bool validated = false;
  ngtcp2_cid odcid{};
  const auto ts = now_ns();
  if (hd.token.len > 0) {
    if (hd.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
      if (ngtcp2_crypto_verify_retry_token(&odcid, hd.token.base, hd.token.len, static_secret.data(),
                                           static_secret.size(), hd.version,
                                           reinterpret_cast<const ngtcp2_sockaddr*>(from.data()),
                                           static_cast<ngtcp2_socklen>(from.size()), &hd.dcid,
                                           10 * NGTCP2_SECONDS, ts) != 0) {
        ++stats.datagrams_dropped;  // forged or stale: no connection, no answer
        return;
      }
      validated = true;
    } else if (hd.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_REGULAR &&
               ngtcp2_crypto_verify_regular_token(hd.token.base, hd.token.len, static_secret.data(),
                                                  static_secret.size(),
                                                  reinterpret_cast<const ngtcp2_sockaddr*>(from.data()),
                                                  static_cast<ngtcp2_socklen>(from.size()),
                                                  3600 * NGTCP2_SECONDS, ts) == 0) {
      validated = true;
    }
  }
  if (validated) ++stats.tokens_accepted;
  const bool want_retry = options.retry == RetryPolicy::always ||
                          (options.retry == RetryPolicy::above_load && connections.size() >= options.retry_load_threshold);
  if (want_retry && !validated) return send_retry(hd, from);

  auto c = std::make_shared<Connection::Impl>(shared_from_this(), true, from);
  add_connection(c);
  by_remote.emplace(remote_key(from), c);
  if (!c->init_server(hd, socket.local_endpoint(), hd.token.len > 0 && hd.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY ? &odcid : nullptr)) {
    ++stats.datagrams_dropped;
    remove(c);
    return;
  }
  c->on_datagram(data, len);
  if (!c->closing) touch(c);
}

void Endpoint::Impl::send_retry(const ngtcp2_pkt_hd& hd, const udp::endpoint& to) {
  ngtcp2_cid scid;
  scid.datalen = kCidLen;
  random_bytes(scid.data, kCidLen);
  std::array<std::uint8_t, NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN> token;
  const auto tokenlen = ngtcp2_crypto_generate_retry_token(
      token.data(), static_secret.data(), static_secret.size(), hd.version,
      reinterpret_cast<const ngtcp2_sockaddr*>(to.data()), static_cast<ngtcp2_socklen>(to.size()), &scid, &hd.dcid,
      now_ns());
  if (tokenlen < 0) return;
  std::uint8_t* buf = packet_buffer();
  if (!buf) return;
  const auto n = ngtcp2_crypto_write_retry(buf, kMaxUdpPayload, hd.version, &hd.scid, &scid, &hd.dcid, token.data(),
                                           static_cast<std::size_t>(tokenlen));
  if (n <= 0) return;
  queue_packet(to, static_cast<std::size_t>(n));
  ++stats.retries_sent;
}

void Endpoint::Impl::send_version_negotiation(const ngtcp2_version_cid& vc, const udp::endpoint& to) {
  // Only a server that would take the connection invites the client to try again in v1.
  if (closed || draining || !options.present_certificate || !version_negotiation_budget.take()) {
    ++stats.datagrams_dropped;
    return;
  }
  std::uint8_t unused;
  random_bytes(&unused, 1);
  // The reserved version (RFC 9000 §15) keeps clients honest about ignoring unknown ones.
  std::uint32_t grease;
  random_bytes(reinterpret_cast<std::uint8_t*>(&grease), sizeof grease);
  const std::array<std::uint32_t, 2> versions = {(grease & ~0x0f0f0f0fu) | NGTCP2_RESERVED_VERSION_MASK,
                                                 NGTCP2_PROTO_VER_V1};
  std::uint8_t* buf = packet_buffer();
  if (!buf) return;
  const auto n = ngtcp2_pkt_write_version_negotiation(buf, kMaxUdpPayload, unused, vc.scid, vc.scidlen, vc.dcid,
                                                      vc.dcidlen, versions.data(), versions.size());
  if (n <= 0) return;
  queue_packet(to, static_cast<std::size_t>(n));
  ++stats.version_negotiations_sent;
}

void Endpoint::Impl::send_stateless_reset(const std::uint8_t* dcid, std::size_t dcidlen, std::size_t trigger_len,
                                          const udp::endpoint& to) {
  // Smaller than the packet that triggered it (so two endpoints cannot loop), and only
  // when it can still be a valid reset: 1 header byte + 5 random + 16 token.
  constexpr std::size_t kMin = 1 + NGTCP2_MIN_STATELESS_RESET_RANDLEN + NGTCP2_STATELESS_RESET_TOKENLEN;
  if (trigger_len <= kMin || dcidlen != kCidLen) return;
  if (!reset_budget.take()) return;
  ngtcp2_cid cid;
  ngtcp2_cid_init(&cid, dcid, dcidlen);
  std::array<std::uint8_t, NGTCP2_STATELESS_RESET_TOKENLEN> token;
  if (ngtcp2_crypto_generate_stateless_reset_token(token.data(), static_secret.data(), static_secret.size(), &cid) != 0)
    return;
  const std::size_t len = std::min<std::size_t>(trigger_len - 1, 64);
  std::array<std::uint8_t, 64> rand;
  random_bytes(rand.data(), len - 1 - NGTCP2_STATELESS_RESET_TOKENLEN);
  std::uint8_t* buf = packet_buffer();
  if (!buf) return;
  const auto n = ngtcp2_pkt_write_stateless_reset(buf, len, token.data(), rand.data(),
                                                  len - 1 - NGTCP2_STATELESS_RESET_TOKENLEN);
  if (n <= 0) return;
  queue_packet(to, static_cast<std::size_t>(n));
  ++stats.stateless_resets_sent;
}

std::uint8_t* Endpoint::Impl::packet_buffer() {
  if (send_count == kSendBatch) {
    flush();
    if (send_count == kSendBatch) return nullptr;
  }
  return send_bufs[(send_head + send_count) % kSendBatch].data();
}

void Endpoint::Impl::queue_packet(const udp::endpoint& to, std::size_t len) {
  auto& m = send_meta[(send_head + send_count) % kSendBatch];
  std::memcpy(&m.to, to.data(), to.size());
  m.tolen = static_cast<socklen_t>(to.size());
  m.len = len;
  ++send_count;
}

void Endpoint::Impl::flush() {
  while (send_count > 0 && !waiting_writable) {
    std::array<mmsghdr, kSendBatch> msgs{};
    std::array<iovec, kSendBatch> iov{};
    // The ring may wrap: send the contiguous part first.
    const std::size_t n = std::min(send_count, kSendBatch - send_head);
    for (std::size_t i = 0; i < n; ++i) {
      auto& m = send_meta[send_head + i];
      iov[i] = {send_bufs[send_head + i].data(), m.len};
      msgs[i].msg_hdr.msg_name = &m.to;
      msgs[i].msg_hdr.msg_namelen = m.tolen;
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    const int sent = ::sendmmsg(socket.native_handle(), msgs.data(), static_cast<unsigned>(n), MSG_DONTWAIT);
    if (sent < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
        ++stats.send_would_block;
        waiting_writable = true;
        socket.async_wait(udp::socket::wait_write, [self = shared_from_this()](boost::system::error_code ec) {
          self->waiting_writable = false;
          if (ec) return;
          self->flush();
          auto list = std::move(self->blocked);
          self->blocked.clear();
          for (const auto& c : list) c->write();
          self->flush();
        });
        return;
      }
      // A hard error for one destination (e.g. unreachable): drop that packet only; QUIC
      // retransmits what mattered.
      ++stats.datagrams_dropped;
      send_head = (send_head + 1) % kSendBatch;
      --send_count;
      continue;
    }
    stats.datagrams_sent += static_cast<std::uint64_t>(sent);
    send_head = (send_head + static_cast<std::size_t>(sent)) % kSendBatch;
    send_count -= static_cast<std::size_t>(sent);
  }
  if (send_count == 0) send_head = 0;
}

void Endpoint::Impl::register_cid(const std::string& key, const std::shared_ptr<Connection::Impl>& c) {
  by_cid[key] = c;
}

void Endpoint::Impl::remove(const std::shared_ptr<Connection::Impl>& c) {
  for (const auto& key : c->cids) {
    auto it = by_cid.find(key);
    if (it != by_cid.end() && it->second == c) by_cid.erase(it);
  }
  c->cids.clear();
  auto [first, last] = by_remote.equal_range(remote_key(c->remote));
  for (auto r = first; r != last; ++r) {
    if (r->second.lock() == c || r->second.expired()) {
      by_remote.erase(r);
      break;
    }
  }
  if (c->counted_as_client) {
    --clients;
    c->counted_as_client = false;
  }
  touched.erase(c);
  blocked.erase(c);
  connections.erase(c);
  connection_count.store(connections.size(), std::memory_order_relaxed);
}

const RequestHandler* Endpoint::Impl::find_route(const std::string& method, const std::string& path) const {
  return routes.find(method, path);
}

void Endpoint::Impl::do_close() {
  if (closed) return;
  auto list = connections;
  for (const auto& c : list) {
    if (c->established) c->close_with_app_error(static_cast<std::uint64_t>(CloseCode::no_error), "endpoint closing");
    else c->fail(errc::endpoint_closed);
  }
  flush();
  closed = true;
  body_sweep.reset();
  uploading.clear();
  for (const auto& c : list) remove(c);
  boost::system::error_code ignored;
  socket.close(ignored);
  close_done.store(true, std::memory_order_release);
}

// ============================================================================ public API

std::shared_ptr<Endpoint> Endpoint::create(asio::io_context& io, EndpointOptions options, const udp::endpoint& local,
                                           std::error_code& ec) {
  auto impl = std::make_shared<Impl>(io, std::move(options));
  ec = impl->open(local);
  if (ec) return nullptr;
  asio::dispatch(impl->strand, [impl] { impl->start_receive(); });
  return std::shared_ptr<Endpoint>(new Endpoint(impl));
}

Endpoint::~Endpoint() { close(); }

udp::endpoint Endpoint::local_endpoint() const {
  boost::system::error_code ec;
  return impl_->socket.local_endpoint(ec);
}

const NodeId& Endpoint::node_id() const noexcept { return impl_->options.identity.node_id(); }
asio::strand<asio::io_context::executor_type> Endpoint::strand() const { return impl_->strand; }

void Endpoint::route(std::string method, std::string path_prefix, RequestHandler handler) {
  asio::dispatch(impl_->strand, [impl = impl_, m = std::move(method), p = std::move(path_prefix),
                                 h = std::move(handler)]() mutable { impl->routes.add(std::move(m), std::move(p), std::move(h)); });
}

void Endpoint::connect(const udp::endpoint& remote, std::optional<NodeId> expected, ConnectHandler handler) {
  asio::dispatch(impl_->strand, [impl = impl_, remote, expected, handler = std::move(handler)]() mutable {
    if (impl->closed || impl->draining) return handler(errc::endpoint_closed, nullptr);
    if (remote.protocol() != impl->socket.local_endpoint().protocol()) return handler(errc::address_invalid, nullptr);
    auto c = std::make_shared<Connection::Impl>(impl, false, remote);
    impl->add_connection(c);
    impl->by_remote.emplace(Impl::remote_key(remote), c);
    if (!c->init_client(expected)) {
      impl->remove(c);
      return handler(errc::transport_error, nullptr);
    }
    c->on_connected = std::move(handler);
    c->connect_timer.expires_after(impl->options.connect_timeout);
    std::weak_ptr<Connection::Impl> weak = c;
    c->connect_timer.async_wait([weak](boost::system::error_code ec) {
      if (ec) return;
      if (auto self = weak.lock(); self && self->on_connected) self->fail(errc::handshake_timeout);
    });
    c->write();
    impl->flush();
  });
}

void Endpoint::close() {
  auto impl = impl_;
  // Closed already (e.g. close() then the destructor after the io_context stopped): nothing
  // to wait for.
  if (impl->close_done.load(std::memory_order_acquire)) return;
  if (impl->strand.running_in_this_thread()) return impl->do_close();
  std::promise<void> done;
  auto fut = done.get_future();
  asio::dispatch(impl->strand, [impl, &done] {
    impl->do_close();
    done.set_value();
  });
  // If the io_context is not running (already stopped), do it here: nothing else can touch
  // the endpoint then.
  if (fut.wait_for(std::chrono::seconds(2)) != std::future_status::ready) impl->do_close();
}

void Endpoint::shutdown(std::chrono::nanoseconds deadline, std::function<void(std::size_t)> done) {
  asio::dispatch(impl_->strand, [impl = impl_, deadline, done = std::move(done)]() mutable {
    if (impl->closed) return done(0);
    impl->draining = true;
    const auto until = std::chrono::steady_clock::now() + deadline;
    // Requests in flight: answers we owe (server) and answers we wait for (client).
    auto in_flight = [impl] {
      std::size_t n = 0;
      for (const auto& c : impl->connections)
        for (const auto& [sid, st] : c->streams)
          if (!st->session && (st->on_response || (c->is_server && !st->responded))) ++n;
      return n;
    };
    auto timer = std::make_shared<asio::steady_timer>(impl->strand);
    auto check = std::make_shared<std::function<void()>>();
    *check = [impl, until, in_flight, timer, check, done = std::move(done)]() mutable {
      const std::size_t n = in_flight();
      if (n == 0 || std::chrono::steady_clock::now() >= until) {
        impl->do_close();
        auto d = std::move(done);
        *check = nullptr;  // break the self-reference
        return d(n);
      }
      timer->expires_after(std::chrono::milliseconds(5));
      timer->async_wait([check](boost::system::error_code ec) {
        if (!ec && *check) (*check)();
      });
    };
    (*check)();
  });
}

void Endpoint::abort() {
  auto impl = impl_;
  auto run = [impl] {
    if (impl->closed) return;
    impl->closed = true;
    auto list = impl->connections;
    for (const auto& c : list) {
      c->on_connected = nullptr;
      c->closing = true;
      c->open = false;
      impl->remove(c);
    }
    impl->send_count = 0;
    boost::system::error_code ignored;
    impl->socket.close(ignored);
  };
  if (impl->strand.running_in_this_thread()) return run();
  std::promise<void> done;
  asio::dispatch(impl->strand, [&] {
    run();
    done.set_value();
  });
  done.get_future().wait();
}

EndpointStats Endpoint::stats() const {
  const auto& c = impl_->stats;
  auto get = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  EndpointStats s;
  s.connections = impl_->connection_count.load(std::memory_order_relaxed);
  s.clients = impl_->clients.load(std::memory_order_relaxed);
  s.datagrams_received = get(c.datagrams_received);
  s.datagrams_sent = get(c.datagrams_sent);
  s.datagrams_dropped = get(c.datagrams_dropped);
  s.send_would_block = get(c.send_would_block);
  s.handshakes_completed = get(c.handshakes_completed);
  s.clients_refused = get(c.clients_refused);
  s.retries_sent = get(c.retries_sent);
  s.tokens_accepted = get(c.tokens_accepted);
  s.stateless_resets_sent = get(c.stateless_resets_sent);
  s.stateless_resets_received = get(c.stateless_resets_received);
  s.version_negotiations_sent = get(c.version_negotiations_sent);
  s.sessions = c.sessions.load(std::memory_order_relaxed);
  s.session_bytes_buffered = c.session_bytes_buffered.load(std::memory_order_relaxed);
  s.session_sends_refused = get(c.session_sends_refused);
  if (impl_->body_ledger)
    s.body_bytes_buffered = impl_->body_ledger->bytes.load(std::memory_order_relaxed) +
                            impl_->node_body_ledger->bytes.load(std::memory_order_relaxed);
  s.requests_refused = get(c.requests_refused);
  s.bodies_refused = get(c.bodies_refused);
  s.bodies_timed_out = get(c.bodies_timed_out);
  return s;
}

RequestHandle Connection::request(Request request, std::chrono::nanoseconds timeout, ResponseHandler handler) {
  auto state = std::make_shared<RequestHandle::State>();
  state->conn = impl_;
  auto e = impl_->ep();
  if (!e) {
    handler(errc::endpoint_closed, Response{});
    return RequestHandle(state);
  }
  asio::dispatch(e->strand, [impl = impl_, r = std::move(request), timeout, h = std::move(handler), state]() mutable {
    impl->send_request(std::move(r), timeout, std::move(h), std::move(state));
  });
  return RequestHandle(state);
}

void RequestHandle::cancel() const {
  if (!state_) return;
  auto c = state_->conn.lock();
  if (!c) return;
  auto e = c->ep();
  if (!e) return;
  asio::dispatch(e->strand, [c, s = state_] { c->cancel_request(s); });
}

void Connection::open_session(Request head, SessionCallbacks callbacks, std::chrono::nanoseconds timeout,
                              SessionHandler handler) {
  auto e = impl_->ep();
  if (!e) return handler(errc::endpoint_closed, nullptr);
  asio::dispatch(e->strand, [impl = impl_, h = std::move(head), cb = std::move(callbacks), timeout,
                             done = std::move(handler)]() mutable {
    impl->start_session(std::move(h), std::move(cb), timeout, std::move(done));
  });
}

void Endpoint::stream_route(std::string method, std::string path_prefix, SessionAcceptor acceptor) {
  asio::dispatch(impl_->strand, [impl = impl_, m = std::move(method), p = std::move(path_prefix),
                                 a = std::move(acceptor)]() mutable {
    impl->stream_routes.add(std::move(m), std::move(p), std::move(a));
  });
}

void Endpoint::request_guard(RequestGuard guard) {
  asio::dispatch(impl_->strand, [impl = impl_, g = std::move(guard)]() mutable { impl->request_guard = std::move(g); });
}

void Endpoint::session_route(std::string path, SessionAcceptor acceptor) {
  asio::dispatch(impl_->strand, [impl = impl_, p = std::move(path), a = std::move(acceptor)]() mutable {
    impl->session_routes[std::move(p)] = std::move(a);
  });
}

std::error_code Session::send(std::span<const std::uint8_t> bytes) { return impl_->send(bytes); }
std::size_t Session::buffered() const { return impl_->buffered; }
std::size_t Session::high_water() const { return impl_->high_water; }
std::uint64_t Session::refused_sends() const { return impl_->refused; }
void Session::on_writable(std::function<void()> callback) { on_writable(std::move(callback), impl_->bound / 2); }
void Session::on_writable(std::function<void()> callback, std::size_t below) {
  if (impl_->buffered <= below) return callback();
  impl_->writable = std::move(callback);
  impl_->writable_below = below;
}
void Session::close() {
  if (impl_->fin_requested) return;
  impl_->fin_requested = true;
  if (auto c = impl_->conn.lock(); c && c->h3) {
    nghttp3_conn_resume_stream(c->h3, impl_->stream_id);
    c->schedule_write();
  }
}
void Session::reset() {
  if (impl_->closed) return;
  if (auto c = impl_->conn.lock(); c && c->conn && impl_->stream_id >= 0) {
    ngtcp2_conn_shutdown_stream(c->conn, impl_->stream_id, NGHTTP3_H3_REQUEST_CANCELLED);
    c->schedule_write();
  }
}
void Session::close_connection(CloseCode code, const std::string& reason) {
  if (auto c = impl_->conn.lock()) c->close_with_app_error(static_cast<std::uint64_t>(code), reason);
}
std::optional<NodeId> Session::peer_id() const { return impl_->peer; }
const std::vector<Header>& Session::response_headers() const { return impl_->response_headers; }
const std::vector<std::uint8_t>& Connection::channel_binding() const { return impl_->channel_binding; }

std::optional<NodeId> Connection::peer_id() const { return impl_->peer; }
bool Connection::is_open() const noexcept { return impl_->open.load(std::memory_order_relaxed); }
udp::endpoint Connection::remote_endpoint() const { return impl_->remote; }

void Connection::close(CloseCode code, std::string reason) {
  auto e = impl_->ep();
  if (!e) return;
  asio::dispatch(e->strand, [impl = impl_, code, r = std::move(reason)] {
    impl->close_with_app_error(static_cast<std::uint64_t>(code), r);
  });
}

}  // namespace macula::transport
