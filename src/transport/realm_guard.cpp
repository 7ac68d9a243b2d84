#include "transport/realm_guard.hpp"

#include "transport/hmac.hpp"

namespace macula::transport {
namespace {

constexpr const char* kRealmHeader = "macula-realm";
constexpr const char* kProofHeader = "macula-realm-proof";
constexpr std::size_t kBindingBytes = 32;

std::string proof(const std::string& secret, const char* role, const std::string& realm, const NodeId& dialer,
                  const NodeId& acceptor, const std::vector<std::uint8_t>& binding) {
  std::string msg = "macula realm v2";
  msg += '\0';
  msg += role;
  msg += '\0';
  msg += realm;
  msg += '\0';
  msg.append(reinterpret_cast<const char*>(dialer.bytes().data()), NodeId::kBytes);
  msg.append(reinterpret_cast<const char*>(acceptor.bytes().data()), NodeId::kBytes);
  msg.append(reinterpret_cast<const char*>(binding.data()), binding.size());
  return hmac_sha256_hex(secret, msg);
}

const std::string* find(const std::vector<Header>& headers, const char* name) {
  for (const auto& h : headers)
    if (h.name == name) return &h.value;
  return nullptr;
}

bool same(const std::string* given, const std::string& expected) { return given && equal_secret(*given, expected); }

}  // namespace

std::vector<Header> realm_headers(const RealmPolicy& policy, const NodeId& self, const NodeId& acceptor,
                                  const std::vector<std::uint8_t>& binding) {
  std::vector<Header> h{{kRealmHeader, policy.realm}};
  if (policy.secret && binding.size() == kBindingBytes)
    h.push_back({kProofHeader, proof(*policy.secret, "dialer", policy.realm, self, acceptor, binding)});
  return h;
}

bool acceptor_proof_valid(const RealmPolicy& policy, const NodeId& self, const NodeId& acceptor,
                          const std::vector<std::uint8_t>& binding, const std::vector<Header>& answer) {
  if (!policy.secret) return true;
  // Without a channel binding no proof can be fresh: fail closed.
  if (binding.size() != kBindingBytes) return false;
  return same(find(answer, kProofHeader), proof(*policy.secret, "acceptor", policy.realm, self, acceptor, binding));
}

int realm_admit(const RealmPolicy& policy, const NodeId& self, const Request& head, std::vector<Header>& answer) {
  const std::string* realm = find(head.headers, kRealmHeader);
  if (!realm || *realm != policy.realm) return 403;
  if (!policy.secret) return 0;
  // Only nodes (with a proven id) can hold a realm proof: it binds the dialer's id.
  if (!head.peer || head.channel_binding.size() != kBindingBytes) return 401;
  if (!same(find(head.headers, kProofHeader),
            proof(*policy.secret, "dialer", policy.realm, *head.peer, self, head.channel_binding)))
    return 401;
  answer.push_back({kProofHeader, proof(*policy.secret, "acceptor", policy.realm, *head.peer, self, head.channel_binding)});
  return 0;
}

SessionAcceptor realm_guarded(RealmPolicy policy, NodeId self, SessionAcceptor inner) {
  return [policy = std::move(policy), self, inner = std::move(inner)](
             const Request& head, std::shared_ptr<Session> session, SessionCallbacks& callbacks) -> int {
    if (const int refused = realm_admit(policy, self, head, callbacks.response_headers)) return refused;
    return inner(head, std::move(session), callbacks);
  };
}

}  // namespace macula::transport
