// Realm admission between nodes: nodes of different realms never share a link or a DHT, and
// in a realm with a shared secret both ends of every link and of every DHT exchange prove
// that they know it before anything else is used.
//
// A proof is HMAC-SHA256(secret, "macula realm v2" NUL role NUL realm NUL dialer id |
// acceptor id | channel binding), hex-encoded, where role is "dialer" or "acceptor" and the
// channel binding is 32 bytes both ends derive from the connection's TLS exporter. Binding
// the two node ids (each proven by its certificate) and the handshake's own exporter means a
// proof is valid on one connection only: overheard or replayed anywhere else it fails.
//
// The dialer sends `macula-realm` and, with a secret, `macula-realm-proof` on its request.
// The acceptor answers 403 for another realm (and closes the connection), 401 for a missing
// or wrong proof, and otherwise accepts with its own `macula-realm-proof` on the answer; the
// dialer checks that one (acceptor_proof_valid) before it uses the link or the reply.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "macula/node_id.hpp"
#include "transport/endpoint.hpp"

namespace macula::transport {

struct RealmPolicy {
  std::string realm;                  ///< normalized realm name
  std::optional<std::string> secret;  ///< when set, both ends must prove it
};

/// Headers a dialer sends on a session or DHT request into `policy.realm`, to `acceptor`,
/// over a connection with `binding` (Connection::channel_binding()).
std::vector<Header> realm_headers(const RealmPolicy& policy, const NodeId& self, const NodeId& acceptor,
                                  const std::vector<std::uint8_t>& binding);

/// Dialer side: whether `answer` (the acceptor's response headers) proves the secret. True
/// when the realm has no secret.
bool acceptor_proof_valid(const RealmPolicy& policy, const NodeId& self, const NodeId& acceptor,
                          const std::vector<std::uint8_t>& binding, const std::vector<Header>& answer);

/// Acceptor side: 0 when `head` comes from a node of this realm that proved the secret (and
/// then `answer` gets the acceptor's proof), else the HTTP status to refuse it with (403
/// another realm, 401 no or a wrong proof).
int realm_admit(const RealmPolicy& policy, const NodeId& self, const Request& head, std::vector<Header>& answer);

/// Wraps a session acceptor with realm_admit.
SessionAcceptor realm_guarded(RealmPolicy policy, NodeId self, SessionAcceptor inner);

}  // namespace macula::transport
