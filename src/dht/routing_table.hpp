// RoutingTable: Kademlia k-buckets over 256-bit node ids (sans-I/O, one thread).
//
// Bucket i holds contacts whose id shares exactly 255 - i leading bits with ours (distance in
// [2^i, 2^(i+1))). Each bucket keeps at most k contacts, least recently seen first. Real
// Kademlia replacement (the old system rejected newcomers to a full bucket forever): when a
// full bucket hears from a newcomer, the newcomer waits in the bucket's replacement cache and
// the caller is asked to ping the bucket's least-recently-seen contact; if that contact fails
// (on_failed), it is evicted and the freshest replacement takes its place; if it answers
// (observe it again), it moves to the tail and the newcomer stays a replacement. Self is
// never inserted. Buckets not touched for `refresh_after` are reported for a refresh lookup.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "macula/node_id.hpp"

namespace macula::dht {

using Clock = std::chrono::steady_clock;

struct Contact {
  NodeId id;
  std::string endpoint;  ///< "host:port"
  Clock::time_point last_seen{};
  unsigned failures = 0;
};

class RoutingTable {
 public:
  static constexpr std::size_t kBuckets = NodeId::kBits;

  using Contacts = std::deque<Contact>;
  static Contacts::iterator find(Contacts& c, const NodeId& id) {
    return std::find_if(c.begin(), c.end(), [&](const Contact& x) { return x.id == id; });
  }
  static Contacts::const_iterator find(const Contacts& c, const NodeId& id) {
    return std::find_if(c.begin(), c.end(), [&](const Contact& x) { return x.id == id; });
  }

  explicit RoutingTable(NodeId self, std::size_t k = 20, std::size_t replacements = 20,
                        std::chrono::nanoseconds refresh_after = std::chrono::hours(1))
      : self_(self), k_(k), max_replacements_(replacements), refresh_after_(refresh_after) {}

  const NodeId& self() const noexcept { return self_; }
  std::size_t k() const noexcept { return k_; }

  /// We heard from `c` (a request or a response). Returns the contact the caller should ping
  /// when `c` could not be inserted because its bucket is full (`c` waits as a replacement).
  std::optional<Contact> observe(Contact c, Clock::time_point now) {
    const std::size_t b = self_.bucket_index(c.id);
    if (b == NodeId::kNoBucket) return std::nullopt;  // ourselves
    Bucket& bucket = buckets_[b];
    bucket.touched = now;
    c.last_seen = now;
    c.failures = 0;
    auto it = find(bucket.contacts, c.id);
    if (it != bucket.contacts.end()) {
      if (c.endpoint.empty()) c.endpoint = it->endpoint;
      bucket.contacts.erase(it);
      bucket.contacts.push_back(std::move(c));  // most recently seen at the tail
      return std::nullopt;
    }
    if (bucket.contacts.size() < k_) {
      bucket.contacts.push_back(std::move(c));
      ++size_;
      return std::nullopt;
    }
    // Full: the newcomer waits; the least recently seen contact must prove it is alive.
    auto r = find(bucket.replacements, c.id);
    if (r != bucket.replacements.end()) bucket.replacements.erase(r);
    bucket.replacements.push_back(std::move(c));
    if (bucket.replacements.size() > max_replacements_) bucket.replacements.pop_front();
    return bucket.contacts.front();
  }

  /// A request to `id` failed (timeout). After `max_failures` in a row the contact is
  /// evicted and the freshest replacement takes its place. Returns whether it was evicted.
  bool on_failed(const NodeId& id, unsigned max_failures = 1) {
    const std::size_t b = self_.bucket_index(id);
    if (b == NodeId::kNoBucket) return false;
    Bucket& bucket = buckets_[b];
    auto it = find(bucket.contacts, id);
    if (it == bucket.contacts.end()) {
      if (auto r = find(bucket.replacements, id); r != bucket.replacements.end()) bucket.replacements.erase(r);
      return false;
    }
    if (++it->failures < max_failures) return false;
    bucket.contacts.erase(it);
    --size_;
    if (!bucket.replacements.empty()) {
      bucket.contacts.push_back(std::move(bucket.replacements.back()));
      bucket.replacements.pop_back();
      ++size_;
    }
    return true;
  }

  /// Forgets `id` (it left, or proved it is not who it claimed).
  void remove(const NodeId& id) {
    const std::size_t b = self_.bucket_index(id);
    if (b == NodeId::kNoBucket) return;
    auto& c = buckets_[b].contacts;
    if (auto it = find(c, id); it != c.end()) {
      c.erase(it);
      --size_;
    }
  }

  /// The `n` known contacts closest to `target` by XOR distance, closest first.
  std::vector<Contact> closest(const NodeId& target, std::size_t n) const {
    std::vector<const Contact*> all;
    all.reserve(size_);
    for (const auto& b : buckets_)
      for (const auto& c : b.contacts) all.push_back(&c);
    const std::size_t m = std::min(n, all.size());
    std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(m), all.end(),
                      [&](const Contact* a, const Contact* b) { return a->id.distance(target) < b->id.distance(target); });
    std::vector<Contact> out;
    out.reserve(m);
    for (std::size_t i = 0; i < m; ++i) out.push_back(*all[i]);
    return out;
  }

  bool contains(const NodeId& id) const {
    const std::size_t b = self_.bucket_index(id);
    return b != NodeId::kNoBucket && find(buckets_[b].contacts, id) != buckets_[b].contacts.end();
  }

  /// Buckets holding contacts that nobody touched for `refresh_after`: refresh each with a
  /// lookup of a random id in its range (random_id_in_bucket).
  std::vector<std::size_t> stale_buckets(Clock::time_point now) const {
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < kBuckets; ++i)
      if (!buckets_[i].contacts.empty() && now - buckets_[i].touched >= refresh_after_) out.push_back(i);
    return out;
  }
  void touch_bucket(std::size_t i, Clock::time_point now) { buckets_[i].touched = now; }

  /// An id whose bucket (relative to self) is `i`, its other bits from `random`.
  NodeId random_id_in_bucket(std::size_t i, const NodeId& random) const {
    NodeId::Bytes b = random.bytes();
    const std::size_t cpl = NodeId::kBits - 1 - i;  // bits equal to self before the first difference
    for (std::size_t bit = 0; bit <= cpl; ++bit) {
      const std::size_t byte = bit / 8, shift = 7 - bit % 8;
      const bool mine = self_.bit(bit);
      const bool want = bit == cpl ? !mine : mine;
      b[byte] = static_cast<std::uint8_t>((b[byte] & ~(1U << shift)) | (static_cast<unsigned>(want) << shift));
    }
    return NodeId(b);
  }

  std::size_t size() const noexcept { return size_; }
  std::size_t bucket_size(std::size_t i) const { return buckets_[i].contacts.size(); }
  std::size_t replacements(std::size_t i) const { return buckets_[i].replacements.size(); }

 private:
  struct Bucket {
    std::deque<Contact> contacts;      // least recently seen first
    std::deque<Contact> replacements;  // oldest first
    Clock::time_point touched{};
  };
  NodeId self_;
  std::size_t k_, max_replacements_;
  std::chrono::nanoseconds refresh_after_;
  std::array<Bucket, kBuckets> buckets_{};
  std::size_t size_ = 0;
};

}  // namespace macula::dht
