// The one place that knows ngtcp2 0.12's names that 1.x renamed (quic-stack-notes.md):
// `ngtcp2_connection_close_error*` (1.x `ngtcp2_ccerr*`), `ngtcp2_crypto_level`
// (1.x `ngtcp2_encryption_level`), `ngtcp2_conn_get_conn_stat` (1.x `get_conn_info`).
// The rest of transport/ uses only these aliases, so moving to 1.x stays local to this file.
#pragma once

#include <ngtcp2/ngtcp2.h>

#include <cstddef>
#include <cstdint>

namespace macula::transport::quic {

using CloseError = ngtcp2_connection_close_error;

inline void set_app_error(CloseError& e, std::uint64_t code, const std::uint8_t* reason, std::size_t len) {
  ngtcp2_connection_close_error_set_application_error(&e, code, reason, len);
}
inline void set_liberr(CloseError& e, int liberr) {
  ngtcp2_connection_close_error_set_transport_error_liberr(&e, liberr, nullptr, 0);
}
inline void set_tls_alert(CloseError& e, std::uint8_t alert) {
  ngtcp2_connection_close_error_set_transport_error_tls_alert(&e, alert, nullptr, 0);
}
/// The CONNECTION_CLOSE the peer sent (valid once the connection is draining).
struct PeerClose {
  bool application = false;
  std::uint64_t code = 0;
};
inline PeerClose peer_close(ngtcp2_conn* conn) {
  CloseError e;
  ngtcp2_conn_get_connection_close_error(conn, &e);
  return {e.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION, e.error_code};
}

/// Smoothed RTT and congestion window, for metrics.
struct ConnStat {
  std::uint64_t smoothed_rtt_ns = 0;
  std::uint64_t cwnd = 0;
  std::uint64_t bytes_in_flight = 0;
};
inline ConnStat conn_stat(ngtcp2_conn* conn) {
  ngtcp2_conn_stat s;
  ngtcp2_conn_get_conn_stat(conn, &s);
  return {s.smoothed_rtt, s.cwnd, s.bytes_in_flight};
}

}  // namespace macula::transport::quic
