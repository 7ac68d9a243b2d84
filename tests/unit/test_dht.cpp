// The DHT core: k-bucket replacement and refresh, record expiry, republish and caps, and
// iterative lookups in a simulated network of 1,000 nodes (success, hops, failures, loss).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>

#include "dht/lookup.hpp"
#include "dht/record_store.hpp"
#include "dht/routing_table.hpp"
#include "dht/simulation.hpp"
#include "macula/core/clock.hpp"
#include "macula/error.hpp"

using namespace macula;
using namespace macula::dht;
using namespace std::chrono_literals;

namespace {

NodeId id_with_first_byte(std::uint8_t first, std::uint8_t last) {
  NodeId::Bytes b{};
  b[0] = first;
  b[31] = last;
  return NodeId(b);
}
Contact contact(const NodeId& id) { return Contact{id, "127.0.0.1:1", {}, 0}; }

// A network of n nodes, each joined through a random earlier node, then refreshed once.
SimNetwork build(std::size_t n, SimConfig config) {
  SimNetwork net(config);
  std::mt19937_64 rng(config.seed + 7);
  for (std::size_t i = 0; i < n; ++i)
    net.add_node(i == 0 ? std::nullopt : std::optional<std::size_t>(rng() % i));
  for (std::size_t i = 0; i < n; ++i) net.refresh(i);
  return net;
}

struct Outcome {
  double success = 0;
  double median_hops = 0;
  unsigned max_hops = 0;
};

Outcome lookups(SimNetwork& net, const std::vector<NodeId>& keys, std::size_t count, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<unsigned> hops;
  std::size_t ok = 0, tried = 0;
  while (tried < count) {
    const std::size_t from = rng() % net.size();
    if (!net.alive(from)) continue;
    ++tried;
    const auto s = net.find_value(from, keys[rng() % keys.size()]);
    if (s.found) {
      ++ok;
      hops.push_back(s.hops);
    }
  }
  Outcome o;
  o.success = static_cast<double>(ok) / static_cast<double>(tried);
  if (!hops.empty()) {
    std::sort(hops.begin(), hops.end());
    o.median_hops = hops[hops.size() / 2];
    o.max_hops = hops.back();
  }
  return o;
}

}  // namespace

TEST_CASE("dht routing table: k per bucket, Kademlia replacement, self never inserted", "[dht]") {
  const NodeId self = id_with_first_byte(0x00, 0);
  RoutingTable t(self, 3, 2, 1h);
  const auto now = Clock::now();
  CHECK_FALSE(t.observe(contact(self), now));  // self: ignored
  CHECK(t.size() == 0);
  // Ids with first byte 0x80.. share no prefix with self: all in bucket 255.
  for (std::uint8_t i = 1; i <= 3; ++i) CHECK_FALSE(t.observe(contact(id_with_first_byte(0x80, i)), now + std::chrono::seconds(i)));
  CHECK(t.bucket_size(255) == 3);
  // A fourth: the bucket is full; the least recently seen (#1) must be pinged, #4 waits.
  auto ping = t.observe(contact(id_with_first_byte(0x80, 4)), now + 4s);
  REQUIRE(ping);
  CHECK(ping->id == id_with_first_byte(0x80, 1));
  CHECK(t.replacements(255) == 1);
  CHECK_FALSE(t.contains(id_with_first_byte(0x80, 4)));
  // #1 answers: it moves to the tail, #4 stays a replacement.
  CHECK_FALSE(t.observe(contact(id_with_first_byte(0x80, 1)), now + 5s));
  CHECK(t.contains(id_with_first_byte(0x80, 1)));
  // The next newcomer makes #2 the one to ping; #2 fails: evicted, the freshest replacement in.
  auto ping2 = t.observe(contact(id_with_first_byte(0x80, 5)), now + 6s);
  REQUIRE(ping2);
  CHECK(ping2->id == id_with_first_byte(0x80, 2));
  CHECK(t.on_failed(id_with_first_byte(0x80, 2)));
  CHECK_FALSE(t.contains(id_with_first_byte(0x80, 2)));
  CHECK(t.contains(id_with_first_byte(0x80, 5)));
  CHECK(t.bucket_size(255) == 3);
  CHECK(t.size() == 3);
  // Replacement cache bounded (2).
  for (std::uint8_t i = 10; i < 20; ++i) t.observe(contact(id_with_first_byte(0x80, i)), now + 7s);
  CHECK(t.replacements(255) == 2);
  // closest() orders by XOR distance.
  CHECK_FALSE(t.observe(contact(id_with_first_byte(0x01, 0)), now));
  auto c = t.closest(id_with_first_byte(0x01, 1), 2);
  REQUIRE(c.size() == 2);
  CHECK(c[0].id == id_with_first_byte(0x01, 0));
}

TEST_CASE("dht routing table: buckets untouched for the refresh period are reported", "[dht]") {
  const NodeId self = id_with_first_byte(0x00, 0);
  RoutingTable t(self, 20, 20, 1h);
  const auto t0 = Clock::now();
  t.observe(contact(id_with_first_byte(0x80, 1)), t0);
  t.observe(contact(id_with_first_byte(0x01, 1)), t0 + 50min);
  CHECK(t.stale_buckets(t0 + 30min).empty());
  CHECK(t.stale_buckets(t0 + 61min) == std::vector<std::size_t>{255});
  t.touch_bucket(255, t0 + 61min);
  CHECK(t.stale_buckets(t0 + 62min).empty());
  std::mt19937_64 rng(3);
  for (std::size_t b : {0u, 1u, 100u, 254u, 255u}) {
    NodeId::Bytes r;
    for (auto& x : r) x = static_cast<std::uint8_t>(rng());
    CHECK(self.bucket_index(t.random_id_in_bucket(b, NodeId(r))) == b);
  }
}

TEST_CASE("dht records: expire after their TTL unless republished; caps refuse", "[dht]") {
  using MC = core::ManualClock;
  MC::reset();
  RecordStore<MC> store(RecordStore<MC>::Options{2, 2, 2});
  const NodeId key = id_with_first_byte(1, 1), a = id_with_first_byte(2, 0), b = id_with_first_byte(3, 0);
  REQUIRE_FALSE(store.put(key, a, {1}, 300s));
  REQUIRE_FALSE(store.put(key, b, {2}, 300s));
  CHECK(store.put(key, id_with_first_byte(4, 0), {3}, 300s) == errc::registry_full);  // per-key cap
  REQUIRE_FALSE(store.put(id_with_first_byte(9, 9), a, {4}, 300s));
  CHECK(store.put(id_with_first_byte(9, 8), a, {5}, 300s) == errc::registry_full);  // key cap
  CHECK(store.get(key).size() == 2);
  // a republishes every 240 s; b stops.
  for (int i = 0; i < 3; ++i) {
    MC::advance(240s);
    REQUIRE_FALSE(store.put(key, a, {1}, 300s));
  }
  auto live = store.get(key);
  REQUIRE(live.size() == 1);
  CHECK(live[0].first.owner == a);
  CHECK(live[0].second <= 300s);
  MC::advance(301s);  // a stopped too
  CHECK(store.get(key).empty());
  CHECK(store.reap(100) >= 1);
  CHECK(store.keys() == 0);
}

TEST_CASE("dht lookup: alpha in flight, k closest, failures replaced", "[dht]") {
  const NodeId target = id_with_first_byte(0x00, 0);
  std::vector<Contact> seeds;
  for (std::uint8_t i = 1; i <= 6; ++i) seeds.push_back(contact(id_with_first_byte(i, 0)));
  Lookup l(target, seeds, LookupConfig{4, 2, 10});
  auto first = l.next();
  REQUIRE(first.size() == 2);  // alpha
  CHECK(first[0].id == id_with_first_byte(1, 0));
  CHECK(l.next().empty());  // nothing more while two are in flight
  l.on_failure(first[0].id);
  l.on_response(first[1].id, {contact(id_with_first_byte(0, 7))});  // a closer one
  auto second = l.next();
  REQUIRE(second.size() == 2);
  CHECK(second[0].id == id_with_first_byte(0, 7));
  for (auto& c : second) l.on_response(c.id, {});
  while (!l.done()) {
    auto n = l.next();
    for (auto& c : n) l.on_response(c.id, {});
  }
  auto closest = l.closest();
  REQUIRE(closest.size() == 4);
  CHECK(closest[0].id == id_with_first_byte(0, 7));
  CHECK(l.hops() == 2);
}

TEST_CASE("dht simulation: 1,000 nodes find stored keys; hops; 20% killed; 5% loss", "[dht][sim]") {
  SimConfig config;
  config.seed = 42;
  SimNetwork net = build(1000, config);
  std::vector<NodeId> keys;
  for (int i = 0; i < 50; ++i) {
    keys.push_back(net.random_id());
    CHECK(net.store_value(static_cast<std::size_t>(i), keys.back(), {1, 2, 3}) >= 15);
  }
  const auto healthy = lookups(net, keys, 2000, 1);
  INFO("success " << healthy.success << " median hops " << healthy.median_hops << " max " << healthy.max_hops);
  CHECK(healthy.success >= 0.999);
  CHECK(healthy.median_hops <= std::log2(1000.0) / 2);
  CHECK(healthy.max_hops <= 10);

  // Kill 20% at once; owners republish and nodes refresh once (one refresh period).
  std::mt19937_64 rng(9);
  std::size_t killed = 0;
  while (killed < 200) {
    const std::size_t i = 50 + rng() % 950;  // owners (0..49) stay up to republish
    if (net.alive(i)) {
      net.kill(i);
      ++killed;
    }
  }
  net.advance(240s);
  for (std::size_t i = 0; i < 50; ++i) net.store_value(i, keys[i], {1, 2, 3});
  for (std::size_t i = 0; i < net.size(); ++i)
    if (net.alive(i)) net.find_node(i, net.id(i));
  const auto after = lookups(net, keys, 2000, 2);
  INFO("after 20% killed: success " << after.success);
  CHECK(after.success >= 0.99);

  // Partitions. Two halves (odd/even): each half still holds about half of every key's 20
  // replicas, so lookups inside a half keep succeeding. A node cut off alone finds nothing;
  // once healed (and after one republish/refresh round) it finds everything again.
  for (std::size_t i = 0; i < net.size(); ++i) net.partition(i, i % 2 == 0 ? 1 : 2);
  const auto halves = lookups(net, keys, 500, 4);
  INFO("two halves: success " << halves.success);
  CHECK(halves.success >= 0.99);
  net.heal();
  std::size_t lonely = 60;
  while (!net.alive(lonely)) ++lonely;
  net.partition(lonely, 3);
  std::size_t found_alone = 0;
  for (const auto& k : keys) found_alone += net.find_value(lonely, k).found;
  CHECK(found_alone == 0);
  net.heal();
  net.advance(240s);
  for (std::size_t i = 0; i < 50; ++i) net.store_value(i, keys[i], {1, 2, 3});
  net.find_node(lonely, net.id(lonely));
  std::size_t found_healed = 0;
  for (const auto& k : keys) found_healed += net.find_value(lonely, k).found;
  CHECK(found_healed == keys.size());

  SimConfig lossy = config;
  lossy.seed = 43;
  lossy.loss = 0.05;
  SimNetwork net2 = build(1000, lossy);
  std::vector<NodeId> keys2;
  for (int i = 0; i < 50; ++i) {
    keys2.push_back(net2.random_id());
    net2.store_value(static_cast<std::size_t>(i), keys2.back(), {1});
  }
  const auto with_loss = lookups(net2, keys2, 2000, 3);
  INFO("5% loss: success " << with_loss.success);
  CHECK(with_loss.success >= 0.99);
}

// Opt-in (CTest label "scale"): 10,000 nodes.
TEST_CASE("dht simulation: 10,000 nodes", "[.][scale]") {
  SimConfig config;
  config.seed = 10'000;
  SimNetwork net = build(10'000, config);
  std::vector<NodeId> keys;
  for (int i = 0; i < 100; ++i) {
    keys.push_back(net.random_id());
    net.store_value(static_cast<std::size_t>(i), keys.back(), {1});
  }
  const auto o = lookups(net, keys, 5000, 11);
  INFO("10K: success " << o.success << " median hops " << o.median_hops << " max " << o.max_hops);
  CHECK(o.success >= 0.999);
  CHECK(o.median_hops <= std::log2(10'000.0) / 2);
  CHECK(o.max_hops <= 10);
}
