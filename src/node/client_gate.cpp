#include "node/client_gate.hpp"

#include "macula/error.hpp"
#include "macula/names.hpp"
#include "transport/hmac.hpp"

namespace macula {

std::string derive_client_token(std::string_view realm, std::string_view secret) {
  std::error_code ec;
  std::string name = normalize_realm(std::string(realm), ec);
  if (ec) name = std::string(realm);
  std::string msg = "macula client token v1";
  msg += '\0';
  msg += name;
  return transport::hmac_sha256_hex(secret, msg);
}

namespace node {

std::error_code ClientGate::resolve(const NodeOptions& options, ClientGate& out, std::string& why) {
  if (options.realm_secret && options.realm_secret->empty()) {
    why = "realm_secret is empty: anyone who knows the realm name could compute its proofs";
    return errc::options_invalid;
  }
  ClientAccess mode = options.client_access;
  if (mode == ClientAccess::automatic)
    mode = options.realm_secret || options.client_token ? ClientAccess::token : ClientAccess::open;
  if (mode == ClientAccess::open && options.realm_secret) {
    why = "client_access open in a realm with a secret would let any client past it (use token or closed)";
    return errc::options_invalid;
  }
  if (options.client_token && options.client_token->empty()) {
    why = "client_token is empty";
    return errc::options_invalid;
  }
  if (mode != ClientAccess::token && options.client_token) {
    why = "client_token is set but client_access is not token: the token would be ignored";
    return errc::options_invalid;
  }
  out.mode_ = mode;
  if (mode == ClientAccess::token) {
    if (!options.client_token && !options.realm_secret) {
      why = "client_access token needs a client_token or a realm_secret to derive it from";
      return errc::options_invalid;
    }
    out.expected_ = "Bearer " + (options.client_token ? *options.client_token
                                                      : derive_client_token(options.realm, *options.realm_secret));
  }
  return {};
}

int ClientGate::check_authorization(std::string_view value) const {
  switch (mode_) {
    case ClientAccess::open:
    case ClientAccess::automatic: return 0;
    case ClientAccess::closed: return 403;
    case ClientAccess::token: return transport::equal_secret(value, expected_) ? 0 : 401;
  }
  return 403;
}

int ClientGate::check(const std::vector<transport::Header>& headers) const {
  for (const auto& h : headers)
    if (h.name == kClientTokenHeader) return check_authorization(h.value);
  return check_authorization({});
}

}  // namespace node
}  // namespace macula
