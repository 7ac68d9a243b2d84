// Connection::Impl's QUIC life cycle: TLS and ngtcp2 setup for both sides, the handshake
// and the peer's identity, connection ids, packets in and out, the transport timer, closing.
#include "transport/endpoint_impl.hpp"

#include <gnutls/crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>

#include <boost/asio/post.hpp>

#include "macula/error.hpp"
#include "transport/quic_names.hpp"

namespace macula::transport {

namespace {

constexpr std::size_t kStreamWindow = 1 << 20;     // per-stream receive window
constexpr std::size_t kConnWindow = 16 << 20;      // per-connection receive window
constexpr std::uint64_t kTimerGranularityNs = 1'000'000;
constexpr const char* kPriority =
    "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
    "+CHACHA20-POLY1305:+AES-128-CCM:-GROUP-ALL:+GROUP-SECP256R1:+GROUP-X25519:+GROUP-SECP384R1:+GROUP-SECP521R1";

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

void random_bytes(std::uint8_t* dest, std::size_t len) {
  if (RAND_bytes(dest, static_cast<int>(len)) != 1) {
    // RAND_bytes only fails when the OS entropy source is gone; GnuTLS' generator is the
    // fallback so that connection ids are never predictable.
    gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
  }
}

Connection::Impl::Impl(std::shared_ptr<Endpoint::Impl> ep, bool server, udp::endpoint r)
    : endpoint(ep), is_server(server), remote(std::move(r)), timer(ep->strand), connect_timer(ep->strand) {
  const auto local = ep->socket.local_endpoint();
  std::memcpy(&local_sa, local.data(), local.size());
  local_salen = static_cast<socklen_t>(local.size());
  std::memcpy(&remote_sa, remote.data(), remote.size());
  remote_salen = static_cast<socklen_t>(remote.size());
  conn_ref.get_conn = conn_of_ref;
  conn_ref.user_data = this;
}

Connection::Impl::~Impl() {
  if (h3) nghttp3_conn_del(h3);
  if (conn) ngtcp2_conn_del(conn);
  if (tls) gnutls_deinit(tls);
}

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
  fill_quic_callbacks(cb, false);
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
  fill_quic_callbacks(cb, true);
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
  nghttp3_callbacks cb;
  fill_h3_callbacks(cb);
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

void Connection::Impl::on_recv_new_token(const ngtcp2_vec& token) {
  if (auto e = ep()) e->store_token(remote, token);
}

// ---- ngtcp2 stream and connection-id events ----------------------------------------------

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

}  // namespace macula::transport
