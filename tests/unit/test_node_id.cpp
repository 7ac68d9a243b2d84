#include <catch2/catch.hpp>

#include <random>
#include <unordered_set>

#include "macula/node_id.hpp"

using macula::NodeId;

namespace {
NodeId random_id(std::mt19937_64& rng) {
  NodeId::Bytes b;
  for (auto& x : b) x = static_cast<std::uint8_t>(rng());
  return NodeId(b);
}
}  // namespace

TEST_CASE("hex round trip and errors", "[node_id]") {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 100; ++i) {
    const NodeId id = random_id(rng);
    std::error_code ec;
    const std::string hex = id.to_hex();
    CHECK(hex.size() == 64);
    CHECK(hex.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(NodeId::from_hex(hex, ec) == id);
    CHECK_FALSE(ec);
  }
  std::error_code ec;
  NodeId::from_hex("abc", ec);
  CHECK(ec == macula::errc::node_id_bad_length);
  NodeId::from_hex(std::string(63, '0') + "g", ec);
  CHECK(ec == macula::errc::node_id_bad_hex);
  CHECK(NodeId::from_hex(std::string(62, '0') + "FF", ec).bytes()[31] == 0xFF);
  CHECK_FALSE(ec);
}

TEST_CASE("xor distance, prefix length and buckets", "[node_id]") {
  NodeId::Bytes a{}, b{};
  b[0] = 0x80;  // differs in the very first bit
  CHECK(NodeId(a).common_prefix_length(NodeId(b)) == 0);
  CHECK(NodeId(a).bucket_index(NodeId(b)) == 255);
  b[0] = 0;
  b[31] = 0x01;  // differs in the last bit
  CHECK(NodeId(a).common_prefix_length(NodeId(b)) == 255);
  CHECK(NodeId(a).bucket_index(NodeId(b)) == 0);
  CHECK(NodeId(a).bucket_index(NodeId(a)) == NodeId::kNoBucket);
  CHECK(NodeId(a).common_prefix_length(NodeId(a)) == 256);

  std::mt19937_64 rng(2);
  for (int i = 0; i < 200; ++i) {
    const NodeId x = random_id(rng), y = random_id(rng), z = random_id(rng);
    CHECK(x.distance(y) == y.distance(x));
    CHECK(x.distance(x).is_zero());
    // XOR is its own inverse: d(x,y) xor d(y,z) == d(x,z)
    CHECK(x.distance(y).distance(y.distance(z)) == x.distance(z));
    // prefix length is the number of leading zero bits of the distance
    const NodeId d = x.distance(y);
    std::size_t lz = 0;
    while (lz < 256 && !d.bit(lz)) ++lz;
    CHECK(x.common_prefix_length(y) == lz);
  }
}

TEST_CASE("ordering and hashing", "[node_id]") {
  NodeId::Bytes a{}, b{};
  b[0] = 1;
  CHECK(NodeId(a) < NodeId(b));
  a[31] = 0xFF;
  CHECK(NodeId(a) < NodeId(b));  // big-endian: the first byte dominates
  std::mt19937_64 rng(3);
  std::unordered_set<NodeId> set;
  for (int i = 0; i < 1000; ++i) set.insert(random_id(rng));
  CHECK(set.size() == 1000);
}
