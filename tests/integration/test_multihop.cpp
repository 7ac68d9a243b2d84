// Multi-hop over real QUIC on loopback: with library defaults every subscriber and provider is
// reachable from every node — along a chain (the DHT finds them), and for leaves, which are
// reached only through the gateway they dialed. A publish nobody wants says so.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "macula/error.hpp"
#include "macula/node.hpp"
#include "macula/publisher.hpp"
#include "macula/rpc_client.hpp"
#include "macula/subscriber.hpp"
#include "macula/testing/local_mesh.hpp"

using namespace macula;
using namespace std::chrono_literals;

namespace {

// The outcome of one QoS 1 publish (bounded wait).
std::error_code publish_qos1(Publisher& pub, const std::string& topic, const std::string& payload) {
  auto done = std::make_shared<std::promise<std::error_code>>();
  auto f = done->get_future();
  pub.async_publish(topic, Bytes(payload.begin(), payload.end()), Qos::at_least_once,
                    [done](std::error_code ec) { done->set_value(ec); });
  if (f.wait_for(20s) != std::future_status::ready) return errc::timed_out;
  return f.get();
}

// Publishes QoS 1 probes until one reaches a subscriber: the records and interest settled.
bool until_delivered(Publisher& pub, const std::string& topic) {
  for (int i = 0; i < 100; ++i) {
    if (!publish_qos1(pub, topic, "probe")) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

// Counts each payload a subscription received.
struct Received {
  std::mutex m;
  std::map<std::string, int> counts;
  void add(const Message& msg) {
    std::lock_guard lock(m);
    ++counts[msg.payload_string()];
  }
  std::size_t distinct(const std::string& prefix) {
    std::lock_guard lock(m);
    std::size_t n = 0;
    for (const auto& [p, c] : counts) n += p.rfind(prefix, 0) == 0;
    return n;
  }
  int max_copies(const std::string& prefix) {
    std::lock_guard lock(m);
    int most = 0;
    for (const auto& [p, c] : counts)
      if (p.rfind(prefix, 0) == 0) most = std::max(most, c);
    return most;
  }
  bool wait_for(const std::string& prefix, std::size_t n, std::chrono::seconds limit = 10s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (distinct(prefix) < n && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
    return distinct(prefix) >= n;
  }
};

double metric(const Node& n, const std::string& series) {
  const std::string text = "\n" + n.metrics_text();
  const auto at = text.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
}

// Library defaults (the DHT on), except one handler thread per node.
testing::LocalMeshOptions mesh_options(std::size_t size, testing::Topology topology) {
  testing::LocalMeshOptions mo;
  mo.size = size;
  mo.topology = topology;
  mo.node.worker_threads = 1;
  return mo;
}

RpcHandler echo() {
  return sync_handler([](const Bytes& a) { return a; });
}

}  // namespace

TEST_CASE("multihop: a 5-node chain with library defaults carries QoS 1 and RPC end to end", "[multihop]") {
  auto mo = mesh_options(5, testing::Topology::chain);
  testing::LocalMesh mesh(mo);
  Received got;
  Subscriber sub(mesh[4], "chain.#", [&](const Message& m) { got.add(m); });
  auto adv = mesh[4].advertise("chain.echo", echo());
  Publisher pub(mesh[0]);
  REQUIRE(until_delivered(pub, "chain.probe"));
  constexpr int kMessages = 300;
  std::atomic<int> ok{0}, failed{0};
  for (int i = 0; i < kMessages; ++i) {
    const std::string p = "m" + std::to_string(i);
    pub.async_publish("chain.data", Bytes(p.begin(), p.end()), Qos::at_least_once,
                      [&](std::error_code ec) { ++(ec ? failed : ok); });
  }
  CHECK(got.wait_for("m", kMessages));
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (ok + failed < kMessages && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
  CHECK(ok == kMessages);
  CHECK(failed == 0);
  CHECK(got.max_copies("m") == 1);
  RpcClient client(mesh[0]);
  std::error_code ec;
  const Bytes r = client.call("chain.echo", Bytes{7, 8}, ec);
  CHECK_FALSE(ec);
  CHECK(r == Bytes{7, 8});
  // The node that published linked to the subscriber's node directly, found through the DHT.
  CHECK(mesh[0].stats().links >= 2);
}

TEST_CASE("multihop: a QoS 1 publish nobody subscribes to completes with no_subscribers, QoS 0 counts no_route",
          "[multihop]") {
  auto mo = mesh_options(3, testing::Topology::full);
  testing::LocalMesh mesh(mo);
  Publisher pub(mesh[1]);
  CHECK(publish_qos1(pub, "nobody.listens", "x") == errc::no_subscribers);
  const double before = metric(mesh[1], "macula_messages_dropped_total{reason=\"no_route\"}");
  REQUIRE_FALSE(pub.publish("nobody.listens", Bytes{1}));
  mesh.settle();
  CHECK(metric(mesh[1], "macula_messages_dropped_total{reason=\"no_route\"}") >= before + 1);
  // A subscriber on the node itself is a route.
  Received got;
  Subscriber sub(mesh[1], "local.#", [&](const Message& m) { got.add(m); });
  CHECK_FALSE(publish_qos1(pub, "local.x", "y"));
}

TEST_CASE("multihop: the first QoS 0 publish to a topic waits for discovery and reaches a subscriber no link knew",
          "[multihop]") {
  auto mo = mesh_options(4, testing::Topology::chain);
  testing::LocalMesh mesh(mo);
  Received got;
  Subscriber sub(mesh[3], "hold.#", [&](const Message& m) { got.add(m); });
  // Node 1 waits until the subscriber's record is in the DHT; node 0 has never looked.
  Publisher probe(mesh[1]);
  REQUIRE(until_delivered(probe, "hold.probe"));
  const auto links_before = mesh[0].stats().links;
  Publisher pub(mesh[0]);
  REQUIRE_FALSE(pub.publish("hold.first", Bytes{'f', 'i', 'r', 's', 't'}));
  CHECK(got.wait_for("first", 1));
  CHECK(mesh[0].stats().links == links_before + 1);
  CHECK(metric(mesh[0], "macula_publish_held_for_discovery_total") >= 1);
}

TEST_CASE("multihop: a leaf behind a gateway is reached from three hops away and stops being a target when it leaves",
          "[multihop][leaf]") {
  auto mo = mesh_options(3, testing::Topology::chain);
  mo.node.peer_grace = 500ms;
  testing::LocalMesh mesh(mo);
  NodeOptions lo = mo.node;
  lo.leaf = true;
  lo.http_listen.clear();
  auto leaf = std::make_unique<Node>(mesh.io(), lo);
  REQUIRE_FALSE(leaf->start());
  Received at_leaf;
  Subscriber leaf_sub(*leaf, "leaf.#", [&](const Message& m) { at_leaf.add(m); });
  auto leaf_adv = leaf->advertise("leaf.echo", echo());
  REQUIRE_FALSE(leaf->connect(mesh[2].local_address()));  // node 2 is its gateway

  // Nobody can dial a leaf.
  CHECK(mesh[0].connect(leaf->local_address()) == errc::connection_refused);

  // Messages from node 0 reach the leaf: 0 -> (DHT) -> gateway 2 -> leaf.
  Publisher pub(mesh[0]);
  REQUIRE(until_delivered(pub, "leaf.probe"));
  for (int i = 0; i < 200; ++i) CHECK_FALSE(publish_qos1(pub, "leaf.q1", "q" + std::to_string(i)));
  CHECK(at_leaf.wait_for("q", 200));
  CHECK(at_leaf.max_copies("q") == 1);
  for (int i = 0; i < 20; ++i) {
    const std::string p = "z" + std::to_string(i);
    REQUIRE_FALSE(pub.publish("leaf.q0", Bytes(p.begin(), p.end())));
  }
  CHECK(at_leaf.wait_for("z", 20));
  CHECK(metric(mesh[2], "macula_messages_relayed_total") >= 220);

  // Calls reach the leaf's procedure, and the leaf's calls and publishes reach the mesh.
  RpcClient to_leaf(mesh[0]);
  std::error_code ec;
  CHECK(to_leaf.call("leaf.echo", Bytes{3}, ec) == Bytes{3});
  CHECK_FALSE(ec);
  auto mesh_adv = mesh[0].advertise("mesh.echo", echo());
  RpcClient from_leaf(*leaf);
  Bytes r;
  for (int i = 0; i < 50; ++i) {  // the provider record is stored asynchronously
    r = from_leaf.call("mesh.echo", Bytes{4}, ec);
    if (!ec) break;
    std::this_thread::sleep_for(100ms);
  }
  CHECK_FALSE(ec);
  CHECK(r == Bytes{4});
  Received at_mesh;
  Subscriber mesh_sub(mesh[0], "up.#", [&](const Message& m) { at_mesh.add(m); });
  Publisher leaf_pub(*leaf);
  REQUIRE(until_delivered(leaf_pub, "up.probe"));
  for (int i = 0; i < 50; ++i) CHECK_FALSE(publish_qos1(leaf_pub, "up.x", "u" + std::to_string(i)));
  CHECK(at_mesh.wait_for("u", 50));
  CHECK(at_mesh.max_copies("u") == 1);

  // The leaf leaves: once peer_grace is over, its gateway withdraws its interest and
  // procedures, and node 0 stops targeting it.
  leaf->stop();
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = publish_qos1(pub, "leaf.q1", "after") == errc::no_subscribers;
    if (!gone) std::this_thread::sleep_for(100ms);
  }
  CHECK(gone);
  to_leaf.call("leaf.echo", Bytes{3}, ec);
  CHECK(ec == errc::no_provider);
}

TEST_CASE("multihop: a leaf linked to two gateways receives each message once, and its own never", "[multihop][leaf]") {
  auto mo = mesh_options(3, testing::Topology::full);
  mo.node.peer_grace = 500ms;
  testing::LocalMesh mesh(mo);
  NodeOptions lo = mo.node;
  lo.leaf = true;
  auto leaf = std::make_unique<Node>(mesh.io(), lo);
  REQUIRE_FALSE(leaf->start());
  Received at_leaf;
  Subscriber leaf_sub(*leaf, "twice.#", [&](const Message& m) { at_leaf.add(m); });
  REQUIRE_FALSE(leaf->connect(mesh[1].local_address()));
  REQUIRE_FALSE(leaf->connect(mesh[2].local_address()));
  Publisher pub(mesh[0]);
  REQUIRE(until_delivered(pub, "twice.probe"));
  for (int i = 0; i < 100; ++i) CHECK_FALSE(publish_qos1(pub, "twice.q1", "t" + std::to_string(i)));
  CHECK(at_leaf.wait_for("t", 100));
  // The leaf's own publish is delivered to it locally, not echoed back through a gateway.
  Publisher own(*leaf);
  REQUIRE_FALSE(own.publish("twice.own", Bytes{'o'}));
  mesh.settle();
  std::this_thread::sleep_for(300ms);
  CHECK(at_leaf.max_copies("t") == 1);
  CHECK(at_leaf.max_copies("o") == 1);
  leaf->stop();
}

TEST_CASE("multihop: every pattern a node has under one first segment is found through the DHT", "[multihop]") {
  auto mo = mesh_options(4, testing::Topology::chain);
  testing::LocalMesh mesh(mo);
  Received got;
  Subscriber a(mesh[3], "col.a", [&](const Message& m) { got.add(m); });
  Subscriber b(mesh[3], "col.b", [&](const Message& m) { got.add(m); });
  Publisher pub(mesh[0]);
  REQUIRE(until_delivered(pub, "col.b"));
  // A second lookup, from a node that never published: both patterns are in the one record.
  Publisher other(mesh[1]);
  CHECK_FALSE(publish_qos1(other, "col.a", "ca"));
  CHECK(got.wait_for("ca", 1));
}

TEST_CASE("multihop: drop-policy publishes to a topic keep their order while its first one waits for discovery",
          "[multihop]") {
  auto mo = mesh_options(4, testing::Topology::chain);
  testing::LocalMesh mesh(mo);
  std::mutex m;
  std::vector<int> order;
  Subscriber sub(mesh[3], "ord.#", [&](const Message& msg) {
    std::lock_guard lock(m);
    order.push_back(std::stoi(msg.payload_string()));
  });
  Publisher probe(mesh[1]);
  REQUIRE(until_delivered(probe, "ord.probe.x"));
  {
    std::lock_guard lock(m);
    order.clear();
  }
  Publisher pub(mesh[0]);  // node 0 never looked ord.* up: its first publish waits
  for (int i = 0; i < 50; ++i) {
    const std::string p = std::to_string(i);
    REQUIRE_FALSE(pub.publish("ord.x", Bytes(p.begin(), p.end())));
  }
  const auto until = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    {
      std::lock_guard lock(m);
      if (order.size() >= 50 || std::chrono::steady_clock::now() > until) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  std::lock_guard lock(m);
  REQUIRE(order.size() == 50);
  for (int i = 0; i < 50; ++i) CHECK(order[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("multihop: a leaf's publishes right after connect wait for its gateway's route, none fails", "[multihop][leaf]") {
  auto mo = mesh_options(2, testing::Topology::full);
  testing::LocalMesh mesh(mo);
  Received at_gateway;
  Subscriber sub(mesh[0], "early.#", [&](const Message& m) { at_gateway.add(m); });
  NodeOptions lo = mo.node;
  lo.leaf = true;
  lo.http_listen.clear();
  auto leaf = std::make_unique<Node>(mesh.io(), lo);
  REQUIRE_FALSE(leaf->start());
  REQUIRE_FALSE(leaf->connect(mesh[0].local_address()));
  // At once: the gateway's "#" (which gives the leaf its route) follows the link's HELLO.
  Publisher pub(*leaf);
  constexpr int kCount = 200;
  std::mutex m;
  std::map<std::string, int> outcomes;
  std::atomic<int> done{0};
  for (int i = 0; i < kCount; ++i) {
    const std::string p = "e" + std::to_string(i);
    pub.async_publish("early.x", Bytes(p.begin(), p.end()), Qos::at_least_once, [&](std::error_code ec) {
      std::lock_guard lock(m);
      ++outcomes[ec ? ec.message() : "ok"];
      ++done;
    });
  }
  for (int i = 0; i < 1000 && done < kCount; ++i) std::this_thread::sleep_for(10ms);
  std::lock_guard lock(m);
  CHECK(outcomes["ok"] == kCount);
  CHECK(outcomes.size() == 1);
  CHECK(at_gateway.wait_for("e", kCount));
  leaf->stop();
}
