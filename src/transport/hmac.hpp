// HMAC-SHA256 as lowercase hex: the one MAC behind realm proofs and client tokens.
#pragma once

#include <string>
#include <string_view>

namespace macula::transport {

std::string hmac_sha256_hex(std::string_view key, std::string_view message);

/// Compares two secrets in time independent of where they differ.
bool equal_secret(std::string_view a, std::string_view b);

}  // namespace macula::transport
