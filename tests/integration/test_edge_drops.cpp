// Drops at the publisher: once a drop-policy QoS 0 publish of a topic found every interested
// link full, the next ones of that topic are dropped in publish() itself (no copy, no work for
// the io thread) while nothing changed. These tests hold the verdict to what the node would
// have decided: it ends when the link has room again, it never hides a subscription the same
// thread made before publishing, and every message is still received or counted as dropped.
#include <catch2/catch.hpp>

#include <atomic>
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

struct Count {
  std::atomic<std::uint64_t> all{0}, markers{0};
};

MessageHandler counting(const std::shared_ptr<Count>& c) {
  return [c](const Message& m) {
    c->all.fetch_add(1);
    if (m.payload().size() == 1) c->markers.fetch_add(1);  // a marker is the only 1-byte payload
  };
}

// Publishes 16 KiB messages of `topic` until three publishes in a row were accepted and counted
// as dropped before they returned: the publisher's "every link full" verdict is in force (the
// node's own drops are counted later, on its io thread). Returns how many were published.
std::uint64_t flood_until_edge_drops(Publisher& pub, const std::string& topic) {
  const Bytes payload(16 * 1024, 0x5a);
  std::uint64_t published = 0;
  int in_a_row = 0;
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (in_a_row < 3 && std::chrono::steady_clock::now() < until) {
    const std::uint64_t before = pub.dropped();
    const auto ec = pub.publish(topic, payload);
    ++published;
    in_a_row = (!ec && pub.dropped() == before + 1) ? in_a_row + 1 : 0;
  }
  REQUIRE(in_a_row == 3);
  return published;
}

}  // namespace

TEST_CASE("edge drops: the verdict ends when the link has room again", "[flow][edge]") {
  LocalMesh mesh(small_links());
  auto remote = std::make_shared<Count>();
  SubscribeOptions big;
  big.queue_capacity = 1 << 16;
  Subscriber sub(mesh[1], "edge.#", counting(remote), big);
  mesh.settle();
  Publisher pub(mesh[0]);
  std::uint64_t sent = 0;
  for (int round = 0; round < 3; ++round) {
    sent += flood_until_edge_drops(pub, "edge.room");
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
  SubscribeOptions big;
  big.queue_capacity = 1 << 16;
  Subscriber far(mesh[1], "edge.#", counting(remote), big);
  mesh.settle();
  Publisher pub(mesh[0]);
  for (int round = 0; round < 10; ++round) {
    const std::string topic = "edge.sub" + std::to_string(round);
    (void)flood_until_edge_drops(pub, topic);
    // The remote link is full; this thread now subscribes on the publishing node and then
    // publishes: the local subscription must get it (delivery here needs no link).
    auto local = std::make_shared<Count>();
    Subscriber near(mesh[0], topic, counting(local));
    REQUIRE_FALSE(pub.publish(topic, Bytes{1}));
    INFO("round " << round);
    CHECK(eventually([&] { return local->markers.load() == 1; }, 5s));
  }
}

TEST_CASE("edge drops: counted on the publisher and on the node alike", "[flow][edge]") {
  LocalMesh mesh(small_links());
  auto remote = std::make_shared<Count>();
  SubscribeOptions big;
  big.queue_capacity = 1 << 16;
  Subscriber sub(mesh[1], "edge.#", counting(remote), big);
  mesh.settle();
  Publisher pub(mesh[0]);
  const std::uint64_t published = flood_until_edge_drops(pub, "edge.count");
  REQUIRE(eventually([&] { return remote->all.load() + pub.dropped() >= published; }, 10s));
  std::this_thread::sleep_for(300ms);  // nothing is both received and dropped
  CHECK(remote->all.load() + pub.dropped() == published);
  CHECK(mesh[0].stats().dropped == pub.dropped());
  CHECK(sub.dropped() == 0);
}
