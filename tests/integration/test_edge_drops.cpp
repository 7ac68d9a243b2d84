// Drops at the publisher: once a drop-policy QoS 0 publish of a topic found every interested
// link full, the next ones of that topic are dropped in publish() itself (no copy, no work for
// the io thread) while nothing changed. These tests hold the verdict to what the node would
// have decided: it ends when the link has room again, it never hides a subscription the same
// thread made before publishing, and every message is still received or counted as dropped.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "macula/error.hpp"
#include "macula/publisher.hpp"
#include "macula/subscriber.hpp"
#include "macula/testing/local_mesh.hpp"
#include "support/node_helpers.hpp"

using namespace macula;
using namespace std::chrono_literals;
using macula::testing::LocalMesh;
using macula::testing::LocalMeshOptions;
using test::eventually;

namespace {

LocalMeshOptions small_links() {
  LocalMeshOptions o;
  o.size = 2;
  o.node.realm = "edge.realm";
  o.node.link_queue_bytes = 256 * 1024;  // full after a few 16 KiB messages
  return o;
}

SubscribeOptions big_queue() {
  SubscribeOptions o;
  o.queue_capacity = 1 << 16;  // never the bottleneck: drops here are the links'
  return o;
}

struct Count {
  std::atomic<std::uint64_t> all{0}, markers{0};
};

MessageHandler counting(const std::shared_ptr<Count>& c) {
  return [c](const Message& m) {
    c->all.fetch_add(1);
    if (m.payload().size() == 1) c->markers.fetch_add(1);  // a marker is the only 1-byte payload
  };
}

// The node's count of publishes dropped in publish() itself (macula_publish_edge_drops_total).
std::uint64_t edge_drops(const Node& node) {
  const std::string text = node.metrics_text();
  const std::string name = "macula_publish_edge_drops_total ";
  const auto at = text.find("\n" + name);
  REQUIRE(at != std::string::npos);
  return std::stoull(text.substr(at + 1 + name.size()));
}

// Publishes 16 KiB messages of `topic` until the node dropped some at the edge: the publisher's
// "every link full" verdict is in force. Returns how many were published.
std::uint64_t flood_until_edge_drops(Node& node, Publisher& pub, const std::string& topic) {
  const Bytes payload(16 * 1024, 0x5a);
  const std::uint64_t before = edge_drops(node);
  std::uint64_t published = 0;
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < until) {
    for (int i = 0; i < 64; ++i, ++published) (void)pub.publish(topic, payload);
    if (edge_drops(node) >= before + 3) return published;
  }
  FAIL("no publish was dropped at the edge within 10 s");
  return published;
}

}  // namespace

TEST_CASE("edge drops: the verdict ends when the link has room again", "[flow][edge]") {
  LocalMesh mesh(small_links());
  auto remote = std::make_shared<Count>();
  Subscriber sub(mesh[1], "edge.#", counting(remote), big_queue());
  mesh.settle();
  Publisher pub(mesh[0]);
  std::uint64_t sent = 0;
  for (int round = 0; round < 3; ++round) {
    sent += flood_until_edge_drops(mesh[0], pub, "edge.room");
    // Every message is received or counted as dropped (at the edge or on the io thread): the
    // link has carried all it took and has room again.
    REQUIRE(eventually([&] { return remote->all.load() + pub.dropped() >= sent; }, 10s));
    // So the next message of the flooded topic goes out and arrives.
    REQUIRE_FALSE(pub.publish("edge.room", Bytes{1}));
    ++sent;
    INFO("round " << round);
    CHECK(eventually([&] { return remote->markers.load() == static_cast<std::uint64_t>(round + 1); }, 5s));
  }
  CHECK(sub.dropped() == 0);
}

TEST_CASE("edge drops: a subscription made before publishing is never hidden by the verdict", "[flow][edge]") {
  LocalMesh mesh(small_links());
  auto remote = std::make_shared<Count>();
  Subscriber far(mesh[1], "edge.#", counting(remote), big_queue());
  mesh.settle();
  Publisher pub(mesh[0]);
  for (int round = 0; round < 10; ++round) {
    const std::string topic = "edge.sub" + std::to_string(round);
    (void)flood_until_edge_drops(mesh[0], pub, topic);
    // The remote link is full; this thread now subscribes on the publishing node and then
    // publishes: the local subscription must get it (delivery here needs no link).
    auto local = std::make_shared<Count>();
    Subscriber near(mesh[0], topic, counting(local));
    REQUIRE_FALSE(pub.publish(topic, Bytes{1}));
    INFO("round " << round);
    CHECK(eventually([&] { return local->markers.load() == 1; }, 5s));
  }
}

TEST_CASE("edge drops: counted on the publisher and on the node alike, once per full link", "[flow][edge]") {
  LocalMeshOptions o = small_links();
  o.size = 3;
  LocalMesh mesh(o);
  auto one = std::make_shared<Count>(), two = std::make_shared<Count>();
  Subscriber sub1(mesh[1], "edge.#", counting(one), big_queue());
  Subscriber sub2(mesh[2], "edge.#", counting(two), big_queue());
  mesh.settle();
  Publisher pub(mesh[0]);
  const std::uint64_t published = flood_until_edge_drops(mesh[0], pub, "edge.count");
  // Two interested links: each message is received or dropped once per link.
  REQUIRE(eventually([&] { return one->all.load() + two->all.load() + pub.dropped() >= 2 * published; }, 10s));
  std::this_thread::sleep_for(300ms);  // nothing is both received and dropped
  CHECK(one->all.load() + two->all.load() + pub.dropped() == 2 * published);
  CHECK(mesh[0].stats().dropped == pub.dropped());
  CHECK(mesh[0].stats().published == published);  // an edge drop was still published
  CHECK(sub1.dropped() == 0);
  CHECK(sub2.dropped() == 0);
}
