#include "transport/realm_guard.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>

namespace macula::transport {
namespace {

constexpr const char* kRealmHeader = "macula-realm";
constexpr const char* kProofHeader = "macula-realm-proof";

std::string proof(const std::string& secret, const std::string& realm, const NodeId& dialer, const NodeId& acceptor) {
  std::string msg = "macula realm v1";
  msg += '\0';
  msg += realm;
  msg += '\0';
  msg.append(reinterpret_cast<const char*>(dialer.bytes().data()), NodeId::kBytes);
  msg.append(reinterpret_cast<const char*>(acceptor.bytes().data()), NodeId::kBytes);
  std::array<unsigned char, 32> mac{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(msg.data()),
       msg.size(), mac.data(), &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) {
    hex += kHex[mac[i] >> 4];
    hex += kHex[mac[i] & 0xF];
  }
  return hex;
}

const std::string* find(const std::vector<Header>& headers, const char* name) {
  for (const auto& h : headers)
    if (h.name == name) return &h.value;
  return nullptr;
}

}  // namespace

std::vector<Header> realm_headers(const RealmPolicy& policy, const NodeId& self, const NodeId& acceptor) {
  std::vector<Header> h{{kRealmHeader, policy.realm}};
  if (policy.secret) h.push_back({kProofHeader, proof(*policy.secret, policy.realm, self, acceptor)});
  return h;
}

SessionAcceptor realm_guarded(RealmPolicy policy, NodeId self, SessionAcceptor inner) {
  return [policy = std::move(policy), self, inner = std::move(inner)](
             const Request& head, std::shared_ptr<Session> session, SessionCallbacks& callbacks) -> int {
    const std::string* realm = find(head.headers, kRealmHeader);
    if (!realm || *realm != policy.realm) return 403;
    if (policy.secret) {
      const std::string* given = find(head.headers, kProofHeader);
      // Only nodes (with a proven id) can hold a realm proof: it binds the dialer's id.
      if (!given || !head.peer) return 401;
      const std::string expected = proof(*policy.secret, policy.realm, *head.peer, self);
      if (given->size() != expected.size() || CRYPTO_memcmp(given->data(), expected.data(), expected.size()) != 0)
        return 401;
    }
    return inner(head, std::move(session), callbacks);
  };
}

}  // namespace macula::transport
