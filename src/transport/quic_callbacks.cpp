// The C callback tables ngtcp2 and nghttp3 call into. Each trampoline only finds the
// Connection::Impl its user_data points at and forwards, so what a library may call is read
// in one place and the logic stays with the state it touches.
#include "transport/endpoint_impl.hpp"

#include <cstring>

namespace macula::transport {

namespace {

void rand_cb(std::uint8_t* dest, std::size_t destlen, const ngtcp2_rand_ctx*) { random_bytes(dest, destlen); }

Connection::Impl* self_of(void* user_data) { return static_cast<Connection::Impl*>(user_data); }

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
  self_of(u)->on_recv_new_token(*token);
  return 0;
}
int cb_extend_max_remote_streams_bidi(ngtcp2_conn*, std::uint64_t max_streams, void* u) {
  auto* c = self_of(u);
  if (c->h3) nghttp3_conn_set_max_client_streams_bidi(c->h3, max_streams);
  return 0;
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

void fill_quic_callbacks(ngtcp2_callbacks& cb, bool server) {
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

void fill_h3_callbacks(nghttp3_callbacks& cb) {
  cb = nghttp3_callbacks{};
  cb.acked_stream_data = h3_acked_stream_data;
  cb.stream_close = h3_stream_close;
  cb.recv_data = h3_recv_data;
  cb.deferred_consume = h3_deferred_consume;
  cb.begin_headers = h3_begin_headers;
  cb.recv_header = h3_recv_header;
  cb.end_headers = h3_end_headers;
  cb.stop_sending = h3_stop_sending;
  cb.end_stream = h3_end_stream;
  cb.reset_stream = h3_reset_stream;
}

nghttp3_data_reader h3_body_reader() { return nghttp3_data_reader{h3_read_data}; }

ngtcp2_conn* conn_of_ref(ngtcp2_crypto_conn_ref* ref) { return static_cast<Connection::Impl*>(ref->user_data)->conn; }

int verify_peer_certificate(gnutls_session_t session) {
  auto* ref = static_cast<ngtcp2_crypto_conn_ref*>(gnutls_session_get_ptr(session));
  return static_cast<Connection::Impl*>(ref->user_data)->verify_peer(session);
}

}  // namespace macula::transport
