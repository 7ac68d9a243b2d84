// A node's identity: its key pair, its self-signed certificate, and its NodeId.
//
// The NodeId is the SHA-256 of the DER SubjectPublicKeyInfo of the node's public key, so
// anyone holding the certificate can recompute it and nobody can claim an id without the
// matching private key. Keys are ECDSA P-256, which GnuTLS 3.7 accepts for TLS 1.3 on both
// sides. OpenSSL makes keys and certificates; GnuTLS gets them as PEM.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <system_error>

#include "macula/node_id.hpp"

namespace macula::transport {

class Identity {
 public:
  /// A fresh key pair and a self-signed certificate (CN = node id hex), in memory.
  /// Errors: identity_invalid (OpenSSL failed).
  static Identity generate(std::error_code& ec);
  static Identity generate();  ///< throws std::system_error

  /// Loads a PEM private key and certificate; the certificate must carry that key's public
  /// half. Errors: identity_invalid (unreadable, unparsable or mismatched files).
  static Identity from_pem_files(const std::string& key_path, const std::string& cert_path, std::error_code& ec);
  static Identity from_pem(std::string key_pem, std::string cert_pem, std::error_code& ec);

  const NodeId& node_id() const noexcept { return node_id_; }
  const std::string& key_pem() const noexcept { return key_pem_; }
  const std::string& cert_pem() const noexcept { return cert_pem_; }

 private:
  NodeId node_id_;
  std::string key_pem_;
  std::string cert_pem_;
};

/// NodeId of the key inside a DER certificate (what the TLS peer presented).
/// Errors: identity_invalid.
NodeId node_id_of_certificate(std::span<const std::uint8_t> der, std::error_code& ec);

}  // namespace macula::transport
