// ClientGate: the node's client access policy (macula/client_access.hpp) resolved at start
// and applied to each client request.
#pragma once

#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "macula/client_access.hpp"
#include "macula/node_options.hpp"
#include "transport/endpoint.hpp"

namespace macula::node {

class ClientGate {
 public:
  ClientGate() = default;
  /// Resolves `automatic` and the token. Errors: options_invalid (`why` says which), for an
  /// empty realm_secret, `open` in a realm with a secret, `token` with neither a secret nor a
  /// client_token, or a client_token without `token` mode.
  static std::error_code resolve(const NodeOptions& options, ClientGate& out, std::string& why);

  ClientAccess mode() const noexcept { return mode_; }
  /// 0 when a request with these headers may use the client API; else 401 (no or a wrong
  /// token) or 403 (closed).
  int check(const std::vector<transport::Header>& headers) const;
  /// The same for one `authorization` header value (the plain-HTTP status port).
  int check_authorization(std::string_view value) const;

 private:
  ClientAccess mode_ = ClientAccess::open;
  std::string expected_;  // "Bearer <token>"
};

}  // namespace macula::node
