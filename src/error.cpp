#include "macula/error.hpp"

#include "macula/limits.hpp"

namespace macula {
namespace {

class MaculaCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "macula"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::ok: return "success";
      case errc::name_empty: return "name is empty";
      case errc::name_too_long: return "name is longer than 256 bytes";
      case errc::name_empty_segment:
        return "name has an empty segment (leading, trailing or doubled '.')";
      case errc::name_invalid_character:
        return "name has a character outside A-Z a-z 0-9 _ - (patterns also allow * and #)";
      case errc::name_wildcard_not_allowed:
        return "a whole-segment wildcard (*, #, **) is allowed only in subscription patterns";
      case errc::node_id_bad_length: return "node id hex must be exactly 64 characters";
      case errc::node_id_bad_hex: return "node id hex has a character outside 0-9 a-f A-F";
      case errc::queue_full: return "queue is full (reject policy)";
      case errc::queue_closed: return "queue is closed";
      case errc::too_many_waiters: return "too many waiters on a bounded queue";
      case errc::registry_full: return "registry reached its maximum number of entries";
      case errc::not_found: return "no entry for that key";
      case errc::no_provider: return "no provider left to select (none registered or all excluded)";
      case errc::metrics_series_limit: return "metrics registry reached its series limit";
      case errc::metrics_name_invalid:
        return "metric or label name must match [a-zA-Z_:][a-zA-Z0-9_:]* (labels: no ':')";
      case errc::metrics_type_conflict:
        return "metric family already registered with another type or help text";
      case errc::frame_truncated: return "protocol error: frame truncated (length runs past the data)";
      case errc::frame_too_large: return "protocol error: frame larger than the maximum frame size";
      case errc::frame_unknown_version: return "protocol error: unknown frame version";
      case errc::frame_unknown_type: return "protocol error: unknown frame type";
      case errc::frame_malformed:
        return "protocol error: malformed frame (field out of range, invalid name or trailing bytes)";
      case errc::identity_invalid: return "node key or certificate is invalid, unreadable or mismatched";
      case errc::peer_identity_mismatch:
        return "peer certificate does not hash to the node id it claims or was dialed as";
      case errc::transport_error: return "QUIC/TLS transport error";
      case errc::handshake_timeout: return "connection not established within the connect timeout";
      case errc::connection_closed: return "connection closed";
      case errc::connection_refused: return "connection refused by the peer";
      case errc::endpoint_closed: return "endpoint is closed or shutting down";
      case errc::address_invalid: return "address is not a valid host:port";
      case errc::timed_out: return "operation timed out";
      case errc::stream_reset: return "stream reset by the peer";
      case errc::too_many_pending: return "too many requests queued on this connection";
      case errc::body_too_large: return "body exceeds the configured maximum size";
      case errc::cancelled: return "operation cancelled";
      case errc::too_many_subscriptions: return "too many subscriptions for this peer or subscriber";
      case errc::handler_error: return "the RPC handler failed";
      case errc::not_connected: return "no link to a peer that could carry this";
      case errc::not_started: return "the node is not running (start() it first, or it was stopped)";
      case errc::overloaded: return "the provider is at its concurrency limit for this procedure";
      case errc::would_deadlock: return "blocking call made from a library callback thread";
      case errc::wrong_mode: return "operation does not fit this subscriber's mode (callback vs pull)";
      case errc::would_block: return "no room to publish within the publisher's block_timeout (links or queues full)";
      case errc::payload_too_large:
        return "payload larger than the maximum of " + std::to_string(kMaxPayloadBytes) + " bytes (kMaxPayloadBytes)";
      case errc::realm_proof_failed:
        return "the peer did not prove the realm's shared secret (a node of another realm, or a wrong realm_secret)";
      case errc::unauthorized:
        return "the node refused the request: missing or wrong client token, or its client API is closed";
      case errc::options_invalid: return "node options contradict each other (the node's log says which)";
      case errc::no_subscribers: return "no subscriber anywhere in the realm matched the topic: nobody received the message";
      case errc::address_unresolved: return "the host name could not be resolved";
      case errc::realm_mismatch: return "the node is in another realm: it refused the link";
    }
    return "unknown macula error";
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const MaculaCategory category;
  return category;
}

}  // namespace macula
