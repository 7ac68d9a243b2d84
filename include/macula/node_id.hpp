// NodeId: the 256-bit identity of a node, and its Kademlia geometry.
//
// A node's id is the SHA-256 of its public key, so the certificate proves the id, ids are
// uniformly spread, and the XOR metric gives Kademlia its buckets. NodeId is a trivially
// copyable value type.
#pragma once

#include <array>
#include <bit>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>

#include "macula/error.hpp"

namespace macula {

class NodeId {
 public:
  static constexpr std::size_t kBytes = 32;
  static constexpr std::size_t kBits = kBytes * 8;
  using Bytes = std::array<std::uint8_t, kBytes>;

  constexpr NodeId() noexcept = default;  ///< all zero bits
  constexpr explicit NodeId(const Bytes& bytes) noexcept : bytes_(bytes) {}

  /// Parses 64 hex characters (either case). On error returns the zero id and sets `ec`.
  static NodeId from_hex(std::string_view hex, std::error_code& ec) noexcept {
    ec.clear();
    NodeId id;
    if (hex.size() != kBytes * 2) {
      ec = errc::node_id_bad_length;
      return {};
    }
    for (std::size_t i = 0; i < kBytes; ++i) {
      const int hi = nibble(hex[2 * i]);
      const int lo = nibble(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) {
        ec = errc::node_id_bad_hex;
        return {};
      }
      id.bytes_[i] = static_cast<std::uint8_t>((hi << 4) | lo);
    }
    return id;
  }

  /// Lower-case hex, 64 characters.
  std::string to_hex() const {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out(kBytes * 2, '0');
    for (std::size_t i = 0; i < kBytes; ++i) {
      out[2 * i] = kDigits[bytes_[i] >> 4];
      out[2 * i + 1] = kDigits[bytes_[i] & 0xF];
    }
    return out;
  }

  constexpr const Bytes& bytes() const noexcept { return bytes_; }
  constexpr bool is_zero() const noexcept {
    for (auto b : bytes_)
      if (b != 0) return false;
    return true;
  }

  /// XOR distance, itself a NodeId so that distances order like ids (big-endian).
  constexpr NodeId distance(const NodeId& other) const noexcept {
    NodeId d;
    for (std::size_t i = 0; i < kBytes; ++i) d.bytes_[i] = bytes_[i] ^ other.bytes_[i];
    return d;
  }

  /// Number of leading bits shared with `other`: 0..256 (256 only when equal).
  constexpr std::size_t common_prefix_length(const NodeId& other) const noexcept {
    for (std::size_t i = 0; i < kBytes; ++i) {
      const std::uint8_t x = bytes_[i] ^ other.bytes_[i];
      if (x != 0) return i * 8 + static_cast<std::size_t>(std::countl_zero(x));
    }
    return kBits;
  }

  /// Kademlia bucket of `other` in this node's routing table: 255 for the farthest half of
  /// the id space, 0 for ids differing only in the last bit. Equal ids have no bucket
  /// (returns kNoBucket): a node never stores itself.
  static constexpr std::size_t kNoBucket = kBits;
  constexpr std::size_t bucket_index(const NodeId& other) const noexcept {
    const std::size_t cpl = common_prefix_length(other);
    return cpl == kBits ? kNoBucket : kBits - 1 - cpl;
  }

  /// Bit `i` counted from the most significant bit of byte 0.
  constexpr bool bit(std::size_t i) const noexcept {
    return ((bytes_[i / 8] >> (7 - i % 8)) & 1U) != 0;
  }

  friend constexpr auto operator<=>(const NodeId&, const NodeId&) noexcept = default;
  friend constexpr bool operator==(const NodeId&, const NodeId&) noexcept = default;

 private:
  static constexpr int nibble(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  Bytes bytes_{};
};

}  // namespace macula

template <>
struct std::hash<macula::NodeId> {
  std::size_t operator()(const macula::NodeId& id) const noexcept {
    // Ids are SHA-256 outputs, already uniform: the first word is a good hash.
    std::size_t h;
    std::memcpy(&h, id.bytes().data(), sizeof h);
    return h;
  }
};
