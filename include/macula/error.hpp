// libmacula error codes.
//
// Every failure the library reports is a std::error_code in the `macula` category (the
// async path never throws). The enumerators are stable: the C ABI maps them one to one.
#pragma once

#include <string>
#include <system_error>

namespace macula {

enum class errc : int {
  ok = 0,
  // Names (topics, patterns, procedures, realms).
  name_empty = 1,          ///< the name is empty (after trimming, for realms)
  name_too_long,           ///< the name is longer than kMaxNameLength bytes
  name_empty_segment,      ///< leading, trailing or doubled '.'
  name_invalid_character,  ///< a character outside A-Z a-z 0-9 _ - (and '*' '#' inside patterns)
  name_wildcard_not_allowed,  ///< a whole-segment wildcard in a topic, procedure or realm
  // Node ids.
  node_id_bad_length,      ///< hex text is not exactly 64 characters
  node_id_bad_hex,         ///< hex text has a non-hex character
  // Bounded containers.
  queue_full,              ///< a bounded queue with the reject policy is full
  queue_closed,            ///< the queue was closed; no more pushes or waits
  too_many_waiters,        ///< a bounded queue's waiter list is full
  registry_full,           ///< a sharded registry reached its maximum entry count
  not_found,               ///< no entry for that key
  no_provider,             ///< every provider is excluded or none is registered
  metrics_series_limit,    ///< the metrics registry reached its series cap
  metrics_name_invalid,    ///< a metric or label name breaks the Prometheus grammar
  metrics_type_conflict,   ///< a family was registered again with another type or help
  // Wire frames (protocol errors: the stream or connection carrying them is closed).
  frame_truncated,         ///< a frame's declared length runs past the bytes it came with
  frame_too_large,         ///< a frame is larger than the receiver's maximum frame size
  frame_unknown_version,   ///< a frame carries a protocol version this node does not speak
  frame_unknown_type,      ///< a frame type this version does not define
  frame_malformed,         ///< a field is out of range, a name invalid, or bytes are left over
  // Identity and transport.
  identity_invalid,        ///< a key or certificate could not be made, read or matched
  peer_identity_mismatch,  ///< the peer's certificate does not hash to the node id expected
  transport_error,         ///< the QUIC/TLS stack failed (details in the log)
  handshake_timeout,       ///< the connection was not established within the connect timeout
  connection_closed,       ///< the connection closed before the operation completed
  connection_refused,      ///< the peer refused the connection (e.g. max_clients reached)
  endpoint_closed,         ///< the endpoint is shutting down or closed
  address_invalid,         ///< a host:port could not be parsed or resolved
  timed_out,               ///< the operation's deadline passed
  stream_reset,            ///< the peer reset the stream before the response was complete
  too_many_pending,        ///< a per-connection bound on queued requests was reached
  body_too_large,          ///< a request or response body exceeds the configured maximum
  cancelled,               ///< the caller cancelled the operation
  too_many_subscriptions,  ///< a peer or subscriber passed its bound on subscriptions
  handler_error,           ///< the remote RPC handler failed (its message is the reply payload)
  not_connected,           ///< no link to carry the operation
  // Node API.
  not_started,             ///< the node is not running (before start() or after stop())
  overloaded,              ///< the provider is at its concurrency limit for that procedure
  would_deadlock,          ///< a blocking call was made from a library callback thread
  wrong_mode,              ///< a pull operation on a callback subscriber (or the reverse)
  // Flow control.
  would_block,             ///< a block-policy publish found no room before its block_timeout
  payload_too_large,       ///< a payload, RPC argument or RPC result is above kMaxPayloadBytes
  // Access.
  realm_proof_failed,      ///< a peer node did not prove the realm's shared secret (refused)
  unauthorized,            ///< a client request lacked the node's client token, or the client API is closed
  options_invalid,         ///< NodeOptions contradict each other (the log and the message say which)
  // Routing.
  no_subscribers,          ///< a QoS 1 publish found no subscriber anywhere (after discovery): nobody got it
  address_unresolved,      ///< a host name in an address could not be resolved
  realm_mismatch,          ///< the node dialed is in another realm (it refused the link)
};

/// The `macula` error category; messages say what is wrong in words a user can act on.
const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace macula

template <>
struct std::is_error_code_enum<macula::errc> : std::true_type {};
