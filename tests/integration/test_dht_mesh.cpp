// The DHT over real QUIC on loopback: 10 nodes, each linked only to a bootstrap node; a
// procedure advertised on node 7 is found through the DHT and called from node 2.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "macula/error.hpp"
#include "macula/node.hpp"
#include "macula/publisher.hpp"
#include "macula/rpc_client.hpp"
#include "macula/subscriber.hpp"
#include "support/io_thread.hpp"

using namespace macula;
using namespace std::chrono_literals;

TEST_CASE("dht mesh: 10 nodes linked only to a bootstrap node find a provider through the DHT", "[dht][node]") {
  macula::test::IoThread loop;
  NodeOptions o;
  o.realm = "dht.realm";
  o.dht = true;
  o.worker_threads = 1;
  std::vector<std::unique_ptr<Node>> nodes;
  nodes.push_back(std::make_unique<Node>(loop.io, o));
  REQUIRE_FALSE(nodes[0]->start());
  o.bootstrap = {nodes[0]->local_address()};
  for (int i = 1; i < 10; ++i) {
    nodes.push_back(std::make_unique<Node>(loop.io, o));
    REQUIRE_FALSE(nodes.back()->start());
  }
  for (auto& n : nodes) {
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (n->stats().links == 0 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
  }
  // Discovery traffic uses pooled connections, not links: each node has only its bootstrap link.
  for (int i = 1; i < 10; ++i) CHECK(nodes[static_cast<std::size_t>(i)]->stats().links == 1);
  auto adv = nodes[7]->advertise("math.double", sync_handler([](const Bytes& a) {
    Bytes r = a;
    for (auto& x : r) x = static_cast<std::uint8_t>(x * 2);
    return r;
  }));
  RpcClient client(*nodes[2]);
  std::error_code ec;
  Bytes r;
  // The provider record reaches the k closest nodes asynchronously: retry briefly.
  for (int i = 0; i < 50; ++i) {
    r = client.call("math.double", Bytes{21}, ec);
    if (!ec) break;
    std::this_thread::sleep_for(50ms);
  }
  CHECK_FALSE(ec);
  CHECK(r == Bytes{42});
  CHECK(nodes[2]->stats().links == 2);  // it linked to node 7, found through the DHT
  // A subscriber of sensors.# on node 9 gets a publish from node 3: found through the DHT.
  std::atomic<int> got{0};
  Subscriber sub(*nodes[9], "sensors.#", [&](const Message& m) {
    if (m.topic() == "sensors.hall.temp") ++got;
  });
  Subscriber wild(*nodes[8], "*.hall.temp", [&](const Message&) { ++got; });
  Publisher pub(*nodes[3]);
  for (int i = 0; i < 100 && got < 2; ++i) {
    // QoS 0: the first publishes may precede the links discovery creates.
    REQUIRE_FALSE(pub.publish("sensors.hall.temp", Bytes{1}));
    std::this_thread::sleep_for(30ms);
  }
  CHECK(got >= 2);
  CHECK(client.call("math.nobody", {}, ec).empty());
  CHECK(ec == errc::no_provider);
  for (auto& n : nodes) n->stop();
}
