// ClientAccess: who may use a node's client API — publish and call over HTTP/3 (POST
// /macula/v1/pub/<topic>, /macula/v1/rpc/<procedure>) and read /metrics.
//
// Clients are programs that connect without a node certificate (curl, the CLI's pub/call,
// other languages). They are not realm members: a realm's shared secret admits *nodes*, and
// the client policy decides what clients may do. /health, /ready and /live stay open in
// every mode (a load balancer's probe carries no credentials).
#pragma once

#include <string>
#include <string_view>

namespace macula {

enum class ClientAccess {
  /// `token` when the realm has a secret or NodeOptions::client_token is set, else `open`.
  automatic,
  /// Anyone who reaches the port may publish, call and read /metrics. Refused at start in a
  /// realm with a secret: it would let anyone past the secret.
  open,
  /// Requests must carry `authorization: Bearer <token>`, the token being
  /// NodeOptions::client_token or, when that is unset, derive_client_token(realm, secret).
  /// Without it: 401 (and macula_client_refusals_total counts it).
  token,
  /// No client API over HTTP/3: publish, call and /metrics answer 403. The plain-HTTP status
  /// port (an operator interface, loopback by default) still serves /metrics.
  closed,
};

/// The bearer token clients of a realm with shared secret `secret` present: lowercase hex of
/// HMAC-SHA256(secret, "macula client token v1" NUL realm), realm normalized as NodeOptions
/// does. Anyone holding the secret can derive it; holding the token does not reveal the
/// secret, so clients can be given the token without being able to join as nodes.
std::string derive_client_token(std::string_view realm, std::string_view secret);

/// The header a client sends: `authorization`, value "Bearer " + token.
inline constexpr std::string_view kClientTokenHeader = "authorization";

}  // namespace macula
