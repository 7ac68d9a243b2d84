// The DHT over real QUIC on loopback: 10 nodes, each linked only to a bootstrap node; a
// procedure advertised on node 7 is found through the DHT and called from node 2. A dead
// provider's record (kept until its TTL) does not cost a caller its deadline.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/use_future.hpp>

#include "macula/cancellation.hpp"
#include "macula/error.hpp"
#include "macula/node.hpp"
#include "macula/publisher.hpp"
#include "macula/rpc_client.hpp"
#include "macula/subscriber.hpp"
#include "dht/dht_discovery.hpp"
#include "node/node_core.hpp"
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

namespace {

double metric(const Node& n, const std::string& series) {
  const std::string text = "\n" + n.metrics_text();
  const auto at = text.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
}

// A UDP socket that swallows every datagram on `address`'s port: a dial there times out (as to
// a host that died), rather than failing at once on an ICMP port-unreachable.
struct BlackHole {
  int fd = -1;
  explicit BlackHole(const std::string& address) {
    const auto port = static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
    fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ~BlackHole() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

TEST_CASE("dht mesh: a dead provider's record costs a caller no deadline; the failed dial is counted", "[dht][node]") {
  macula::test::IoThread loop;
  NodeOptions o;
  o.realm = "dht.dead";
  o.worker_threads = 1;
  o.http_listen.clear();
  auto seed = std::make_unique<Node>(loop.io, o);
  REQUIRE_FALSE(seed->start());
  o.bootstrap = {seed->local_address()};
  auto alive = std::make_unique<Node>(loop.io, o);
  auto dead = std::make_unique<Node>(loop.io, o);
  REQUIRE_FALSE(alive->start());
  REQUIRE_FALSE(dead->start());
  const auto echo = sync_handler([](const Bytes& a) { return a; });
  auto a1 = alive->advertise("svc.echo", echo);
  auto a2 = dead->advertise("svc.echo", echo);
  auto a3 = dead->advertise("svc.only_dead", echo);
  // The records are in the DHT (lookups from the seed find them).
  auto records = [&](const char* procedure) {
    std::promise<std::size_t> p;
    node::TestHooks::find_value(*seed, dht::procedure_key("dht.dead", procedure), [&p](std::error_code, std::size_t n) { p.set_value(n); });
    return p.get_future().get();
  };
  for (int i = 0; i < 100 && (records("svc.echo") < 2 || records("svc.only_dead") < 1); ++i) std::this_thread::sleep_for(50ms);
  REQUIRE(records("svc.echo") == 2);
  REQUIRE(records("svc.only_dead") == 1);
  const std::string dead_address = dead->local_address();
  a2 = {};
  a3 = {};
  dead->stop();  // its record stays until its TTL
  BlackHole hole(dead_address);
  REQUIRE(hole.fd >= 0);

  // A caller that knows no provider looks them up, finds both, and goes on with the one it
  // could link, well within a deadline shorter than connect_timeout (5 s).
  auto caller = std::make_unique<Node>(loop.io, o);
  REQUIRE_FALSE(caller->start());
  for (int i = 0; i < 100 && metric(*caller, "macula_dht_routing_table_size") < 2; ++i) std::this_thread::sleep_for(50ms);
  REQUIRE(metric(*caller, "macula_dht_routing_table_size") >= 2);  // it knows the seed and the live provider
  RpcClient client(*caller);
  CallOptions co;
  co.timeout = 2s;
  std::error_code ec;
  const auto t0 = std::chrono::steady_clock::now();
  const Bytes r = client.call("svc.echo", Bytes{7}, ec, co);
  CHECK_FALSE(ec);
  CHECK(r == Bytes{7});
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  // The dial to the dead node times out in the background, counted.
  for (int i = 0; i < 100 && metric(*caller, "macula_link_dials_failed_total") < 1; ++i) std::this_thread::sleep_for(100ms);
  CHECK(metric(*caller, "macula_link_dials_failed_total") == 1);

  // Only the dead node's record: the call waits for its dial (5 s connect timeout), but no
  // longer than its own deadline, and a cancellation ends it at once; the dials that finish
  // later find the calls over.
  co.timeout = 1s;
  const auto t1 = std::chrono::steady_clock::now();
  (void)client.call("svc.only_dead", Bytes{1}, ec, co);
  CHECK(ec == errc::timed_out);
  CHECK(std::chrono::steady_clock::now() - t1 < 2500ms);
  Cancellation cancel;
  CallOptions cc;
  cc.timeout = 4s;
  cc.cancel = cancel;
  auto pending = client.async_call("svc.only_dead", Bytes{2}, cc, boost::asio::use_future);
  std::this_thread::sleep_for(200ms);
  const auto t2 = std::chrono::steady_clock::now();
  cancel.cancel();
  CHECK(pending.wait_for(2s) == std::future_status::ready);
  CHECK(std::get<0>(pending.get()) == errc::cancelled);
  CHECK(std::chrono::steady_clock::now() - t2 < 1s);
  for (int i = 0; i < 100 && metric(*caller, "macula_link_dials_failed_total") < 3; ++i) std::this_thread::sleep_for(100ms);
  CHECK(metric(*caller, "macula_link_dials_failed_total") == 3);
  caller->stop();
  alive->stop();
  seed->stop();
}

TEST_CASE("dht mesh: options that would break discovery are refused at start", "[dht][node]") {
  macula::test::IoThread loop;
  auto refused = [&](auto change) {
    NodeOptions o;
    o.http_listen.clear();
    change(o);
    Node n(loop.io, o);
    return n.start() == errc::options_invalid;
  };
  CHECK(refused([](NodeOptions& o) { o.dht_record_ttl = 20s; }));
  CHECK(refused([](NodeOptions& o) { o.dht_record_ttl = std::chrono::hours(25); }));
  // "Any address" is nothing a peer can dial: it needs the address to announce.
  CHECK(refused([](NodeOptions& o) { o.listen = "0.0.0.0:0"; }));
  CHECK(refused([](NodeOptions& o) { o.advertise_address = "0.0.0.0:4433"; }));
  CHECK(refused([](NodeOptions& o) { o.advertise_address = "127.0.0.1:0"; }));
  CHECK(refused([](NodeOptions& o) { o.advertise_address = "not an address"; }));
  NodeOptions o;
  o.http_listen.clear();
  o.dht_record_ttl = 30s;
  o.listen = "0.0.0.0:0";
  o.advertise_address = "127.0.0.1:4433";
  Node ok(loop.io, o);
  CHECK_FALSE(ok.start());
  ok.stop();
  // A leaf announces no address: it may listen anywhere.
  NodeOptions lo;
  lo.http_listen.clear();
  lo.leaf = true;
  lo.listen = "0.0.0.0:0";
  Node leaf(loop.io, lo);
  CHECK_FALSE(leaf.start());
  leaf.stop();
}
