// The implementation classes behind endpoint.hpp's handles, shared by transport/'s units
// (as ngtcp2's examples keep server.h). Internal to src/transport: it pulls in ngtcp2,
// nghttp3, GnuTLS and Asio, which nothing outside the transport needs to see.
//
// Who owns what:
//   udp_socket_io.cpp   Endpoint::Impl: the socket, recvmmsg/sendmmsg, routing by connection
//                       id, accepting (Retry, tokens), stateless resets, Version Negotiation
//   connection.cpp      Connection::Impl's QUIC life cycle: TLS and ngtcp2 setup, handshake,
//                       connection ids, packets in and out, timers, closing
//   quic_callbacks.cpp  the ngtcp2 and nghttp3 callback tables (trampolines into the above)
//   http3_exchange.cpp  HTTP/3 requests and responses: headers, bodies and their bounds,
//                       routes, request deadlines
//   session.cpp         Session::Impl (the long-lived byte streams) and opening/accepting one
//   endpoint.cpp        the public facade: each call posts to the endpoint's strand
#pragma once

#include "transport/answer_budget.hpp"
#include "transport/body_ledger.hpp"
#include "transport/endpoint.hpp"
#include "transport/h3_frame_guard.hpp"
#include "transport/http3_headers.hpp"
#include "transport/route_table.hpp"

#include <gnutls/gnutls.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

namespace macula::transport {

namespace asio = boost::asio;
using udp = asio::ip::udp;

// Every connection id this endpoint issues has this length: ngtcp2_pkt_decode_version_cid
// needs one fixed length to find a short header's id.
inline constexpr std::size_t kCidLen = 18;
inline constexpr std::size_t kMaxUdpPayload = 1452;
inline constexpr std::size_t kRecvBatch = 64;
inline constexpr std::size_t kRecvBufSize = 2048;
inline constexpr std::size_t kSendBatch = 64;

inline std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

inline std::string cid_key(const std::uint8_t* data, std::size_t len) {
  return std::string(reinterpret_cast<const char*>(data), len);
}
inline std::string cid_key(const ngtcp2_cid& cid) { return cid_key(cid.data, cid.datalen); }

// Connection ids and tokens must never be predictable (connection.cpp).
void random_bytes(std::uint8_t* dest, std::size_t len);

// The callback tables (quic_callbacks.cpp).
void fill_quic_callbacks(ngtcp2_callbacks& cb, bool server);
void fill_h3_callbacks(nghttp3_callbacks& cb);
// The reader nghttp3 pulls a stream's body (or a session's bytes) through.
nghttp3_data_reader h3_body_reader();
// GnuTLS' way back to the ngtcp2 connection, and its certificate check.
ngtcp2_conn* conn_of_ref(ngtcp2_crypto_conn_ref* ref);
int verify_peer_certificate(gnutls_session_t session);

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
  // The byte queue itself, apart from the connection (send() checks and wakes it): appends
  // `bytes` (the caller checked the bound); read() hands nghttp3 what it has not seen yet;
  // on_acked() frees what the peer acknowledged.
  void queue(std::span<const std::uint8_t> bytes);
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
    // it until the peer acknowledges the bytes. (Header fields are not kept: nghttp3 copies the
    // list when it is submitted.)
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

  // ngtcp2 callbacks (the trampolines of quic_callbacks.cpp call these)
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
  void on_recv_new_token(const ngtcp2_vec& token);

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
  // Server: a request on a stream route becomes a session, or is refused with its status.
  int accept_session(std::int64_t stream_id, Stream& s, const SessionAcceptor& acceptor);
  // Dialer: the head of the answer to open_session arrived.
  int session_answered(std::int64_t stream_id, Stream& s);
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
  // NEW_TOKEN from a server we dialed: kept for the next dial to the same address.
  void store_token(const udp::endpoint& server, const ngtcp2_vec& token) {
    if (tokens.size() >= 1024) tokens.erase(tokens.begin());  // bounded
    tokens[remote_key(server)].assign(token.base, token.base + token.len);
  }
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
  const RequestHandler* find_route(const std::string& method, const std::string& path) const {
    return routes.find(method, path);
  }
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

}  // namespace macula::transport
