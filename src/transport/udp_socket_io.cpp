// Endpoint::Impl: the UDP socket (recvmmsg in, a sendmmsg ring out), routing datagrams to
// connections by connection id, accepting new ones (Retry and token validation), stateless
// resets and Version Negotiation for packets of no connection, and closing it all.
#include "transport/endpoint_impl.hpp"

#include <ngtcp2/ngtcp2_crypto.h>
#include <openssl/sha.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <boost/asio/ip/v6_only.hpp>

#include "macula/error.hpp"

namespace macula::transport {

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
  gnutls_certificate_set_verify_function(cred, verify_peer_certificate);
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

// ---- send ring ---------------------------------------------------------------------------

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

}  // namespace macula::transport
