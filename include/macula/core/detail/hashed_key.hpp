// Hash-once keys for the sharded containers.
//
// A sharded container hashes a key to pick the shard, and the shard's hash map would hash it
// again; for string keys that second hash is a measurable share of a lookup. Shard maps
// therefore store the key together with its hash and look up with a (hash, key reference)
// pair, so the hash is computed exactly once per operation and never recomputed on rehash
// or while walking a bucket.
#pragma once

#include <cstddef>
#include <utility>

namespace macula::core::detail {

template <class K>
struct HashedKey {
  std::size_t hash;
  K key;
};

template <class K>
struct HashedKeyRef {
  std::size_t hash;
  const K& key;
};

struct HashedKeyHash {
  using is_transparent = void;
  template <class T>
  std::size_t operator()(const T& k) const noexcept {
    return k.hash;
  }
};

template <class KeyEqual>
struct HashedKeyEqual {
  using is_transparent = void;
  [[no_unique_address]] KeyEqual eq{};
  template <class A, class B>
  bool operator()(const A& a, const B& b) const {
    return a.hash == b.hash && eq(a.key, b.key);
  }
};

/// Spreads a hash's high bits into the low ones: std::hash of an integer is the identity,
/// and shard indexes use the low bits.
constexpr std::size_t mix_hash(std::size_t h) noexcept {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

}  // namespace macula::core::detail
