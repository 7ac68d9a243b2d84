// Node key files: the key and certificate that give a node the same id across restarts.
//
// A node without NodeOptions::key_file makes a fresh key at every start, so its id (and what
// the DHT remembers of it) changes. Operators make a key once, keep it with the node, and
// pass key_file/cert_file. The key is ECDSA P-256; the certificate is self-signed; the node
// id is the SHA-256 of the public key, so the files prove the id without any CA.
#pragma once

#include <string>
#include <system_error>

#include "macula/node_id.hpp"

namespace macula {

/// Makes a new key and certificate and writes them as PEM, the key file readable by its
/// owner only (0600). Never overwrites: an existing file at either path is an error
/// (std::errc::file_exists) and nothing is written. Returns the node id they prove.
/// Errors: identity_invalid (the crypto library failed), and the system's errors for files
/// that cannot be created or written (a partly written pair is removed).
NodeId write_node_key(const std::string& key_path, const std::string& cert_path, std::error_code& ec);

/// The node id a key/certificate pair proves. Errors: identity_invalid (unreadable,
/// unparsable, or a certificate that does not carry the key's public half).
NodeId read_node_key(const std::string& key_path, const std::string& cert_path, std::error_code& ec);

}  // namespace macula
