// Realm admission for session streams: nodes of different realms never share a link, and in
// a realm with a shared secret no peer gets a session without proving it knows the secret.
//
// A dialer opens its session with header `macula-realm: <realm>` and, when the realm has a
// shared secret, `macula-realm-proof: <hex HMAC-SHA256(secret, "macula realm v1" | realm |
// dialer node id | acceptor node id)>`. Binding both node ids means a proof overheard on one
// link cannot be replayed on another. The acceptor answers 403 for another realm (and closes
// the connection: a node of another realm has no business on this one), 401 for a missing or
// wrong proof, and otherwise hands the session to the inner acceptor.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "macula/node_id.hpp"
#include "transport/endpoint.hpp"

namespace macula::transport {

struct RealmPolicy {
  std::string realm;                 ///< normalized realm name
  std::optional<std::string> secret;  ///< when set, sessions must prove it
};

/// Headers a dialer sends to open a session into `policy.realm` with `acceptor`.
std::vector<Header> realm_headers(const RealmPolicy& policy, const NodeId& self, const NodeId& acceptor);

/// Wraps `inner` with the realm check. `self` is the accepting node's id.
SessionAcceptor realm_guarded(RealmPolicy policy, NodeId self, SessionAcceptor inner);

}  // namespace macula::transport
