// NodeCore across real loopback QUIC: pub/sub and RPC between linked nodes, realms.
#include <catch2/catch.hpp>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include "macula/error.hpp"
#include "node/node_core.hpp"
#include "transport/endpoint.hpp"

#include <cctype>
#include "support/io_thread.hpp"

using namespace macula;
using namespace macula::node;
using namespace std::chrono_literals;
using Loop = macula::test::IoThread;

namespace {

std::shared_ptr<NodeCore> make(Loop& loop, std::string realm = "test.realm") {
  NodeCoreOptions o;
  o.realm = std::move(realm);
  o.endpoint.identity = transport::Identity::generate();
  std::error_code ec;
  auto n = NodeCore::create(loop.io, std::move(o), ec);
  REQUIRE_FALSE(ec);
  return n;
}

std::error_code link(NodeCore& from, NodeCore& to) {
  std::promise<std::error_code> p;
  from.connect(to.local_endpoint(), to.node_id(), [&](std::error_code e) { p.set_value(e); });
  return p.get_future().get();
}

std::vector<std::uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<std::uint8_t>& b) { return {b.begin(), b.end()}; }

// Collects deliveries from a handler thread.
struct Inbox {
  std::mutex m;
  std::vector<Delivery> got;
  void operator()(const Delivery& d) {
    std::lock_guard lock(m);
    got.push_back(d);
  }
  std::size_t size() {
    std::lock_guard lock(m);
    return got.size();
  }
  bool wait_for(std::size_t n, std::chrono::milliseconds limit = 3000ms) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (size() < n && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(2ms);
    return size() >= n;
  }
};

// Publishes until the subscriber has `n` messages: interest announcements travel
// asynchronously, so the first publishes may precede them (QoS 0 has no retry).
void publish_until(NodeCore& node, const std::string& topic, Inbox& inbox, std::size_t n) {
  for (int i = 0; i < 200 && inbox.size() < n; ++i) {
    node.publish(topic, bytes("hello"), [](std::error_code) {});
    std::this_thread::sleep_for(10ms);
  }
}

}  // namespace

TEST_CASE("node core: local and remote pub/sub with wildcards; unsubscribe stops delivery", "[node]") {
  Loop loop;
  auto a = make(loop);
  auto b = make(loop);
  Inbox on_b, on_a;
  std::error_code ec;
  // Subscribed before the link exists: the link opens with the interest snapshot.
  const auto sub = b->subscribe("sensors.#.temp", [&](const Delivery& d) { on_b(d); }, ec);
  REQUIRE_FALSE(ec);
  a->subscribe("sensors.**", [&](const Delivery& d) { on_a(d); }, ec);  // local subscriber on the publisher
  REQUIRE_FALSE(link(*a, *b));
  publish_until(*a, "sensors.floor1.room2.temp", on_b, 1);
  REQUIRE(on_b.wait_for(1));
  {
    std::lock_guard lock(on_b.m);
    const Delivery& d = on_b.got.front();
    CHECK(d.topic == "sensors.floor1.room2.temp");
    CHECK(d.pattern == "sensors.#.temp");
    CHECK(text(d.payload) == "hello");
    CHECK(d.publisher == a->node_id());
    CHECK(d.sequence >= 1);
  }
  CHECK(on_a.wait_for(1));  // local delivery too
  // A topic nobody on b wants does not travel there.
  const auto forwarded = a->stats().forwarded;
  a->publish("sensors.floor1.humidity", bytes("x"), [](std::error_code) {});
  std::this_thread::sleep_for(50ms);
  CHECK(a->stats().forwarded == forwarded);
  // Subscribed after the link: INTEREST_ADD reaches a.
  Inbox late;
  b->subscribe("alerts.*", [&](const Delivery& d) { late(d); }, ec);
  publish_until(*a, "alerts.fire", late, 1);
  CHECK(late.wait_for(1));
  // Unsubscribe: INTEREST_REMOVE, nothing more arrives.
  b->unsubscribe(sub);
  std::this_thread::sleep_for(100ms);
  const auto before = on_b.size();
  for (int i = 0; i < 10; ++i) a->publish("sensors.x.temp", bytes("y"), [](std::error_code) {});
  std::this_thread::sleep_for(100ms);
  CHECK(on_b.size() == before);
  // Invalid names are refused with the name error.
  std::promise<std::error_code> bad;
  a->publish("a..b", {}, [&](std::error_code e) { bad.set_value(e); });
  CHECK(bad.get_future().get() == errc::name_empty_segment);
  a->subscribe("x..y", [](const Delivery&) {}, ec);
  CHECK(ec == errc::name_empty_segment);
}

TEST_CASE("node core: three nodes; each interested link gets a publish once", "[node]") {
  Loop loop;
  auto a = make(loop), b = make(loop), c = make(loop);
  REQUIRE_FALSE(link(*a, *b));
  REQUIRE_FALSE(link(*a, *c));
  Inbox on_b, on_c;
  std::error_code ec;
  b->subscribe("x.*", [&](const Delivery& d) { on_b(d); }, ec);
  b->subscribe("x.#", [&](const Delivery& d) { on_b(d); }, ec);  // two patterns, one link
  c->subscribe("#", [&](const Delivery& d) { on_c(d); }, ec);
  publish_until(*a, "x.y", on_b, 2);
  publish_until(*a, "x.y", on_c, 1);
  REQUIRE(on_b.wait_for(2));
  REQUIRE(on_c.wait_for(1));
  // From now on each publish crosses each link once: b's two subscriptions both see it.
  const auto fwd = a->stats().forwarded;
  const auto nb = on_b.size(), nc = on_c.size();
  a->publish("x.y", bytes("once"), [](std::error_code) {});
  REQUIRE(on_b.wait_for(nb + 2));
  REQUIRE(on_c.wait_for(nc + 1));
  CHECK(a->stats().forwarded == fwd + 2);  // two links, one frame each
}

TEST_CASE("node core: RPC across nodes: result, handler error, exception, no provider, timeout", "[node][rpc]") {
  Loop loop;
  auto a = make(loop), b = make(loop);
  REQUIRE_FALSE(b->advertise("math.sum", [](std::vector<std::uint8_t> args, RpcReply reply) {
    unsigned sum = 0;
    for (auto x : args) sum += x;
    reply({}, bytes(std::to_string(sum)));
  }));
  REQUIRE_FALSE(b->advertise("math.fail", [](std::vector<std::uint8_t>, RpcReply reply) {
    reply(make_error_code(errc::handler_error), bytes("division by zero"));
  }));
  REQUIRE_FALSE(b->advertise("math.throw", [](std::vector<std::uint8_t>, RpcReply) { throw std::runtime_error("boom"); }));
  REQUIRE_FALSE(b->advertise("math.slow", [](std::vector<std::uint8_t>, RpcReply reply) {
    std::this_thread::sleep_for(300ms);
    reply({}, bytes("late"));
  }));
  REQUIRE_FALSE(link(*a, *b));
  auto call = [&](const std::string& proc, std::vector<std::uint8_t> args, std::chrono::milliseconds timeout = 2000ms) {
    std::promise<std::pair<std::error_code, std::string>> p;
    a->call(proc, std::move(args), timeout,
            [&](std::error_code e, std::vector<std::uint8_t> r) { p.set_value({e, text(r)}); });
    return p.get_future().get();
  };
  // PROVIDE_ADD travels with the link opening; retry briefly until it has arrived.
  std::pair<std::error_code, std::string> r;
  for (int i = 0; i < 100; ++i) {
    r = call("math.sum", {1, 2, 3});
    if (r.first != errc::no_provider) break;
    std::this_thread::sleep_for(10ms);
  }
  CHECK_FALSE(r.first);
  CHECK(r.second == "6");
  auto fail = call("math.fail", {});
  CHECK(fail.first == errc::handler_error);
  CHECK(fail.second == "division by zero");
  auto thrown = call("math.throw", {});
  CHECK(thrown.first == errc::handler_error);
  CHECK(thrown.second == "boom");
  CHECK(call("math.nothing", {}).first == errc::no_provider);
  CHECK(call("math.slow", {}, 100ms).first == errc::timed_out);
  CHECK(call("bad..name", {}).first == errc::name_empty_segment);
  // Unadvertised: PROVIDE_REMOVE reaches a.
  b->unadvertise("math.sum");
  for (int i = 0; i < 100 && call("math.sum", {1}).first != errc::no_provider; ++i) std::this_thread::sleep_for(10ms);
  CHECK(call("math.sum", {1}).first == errc::no_provider);
  // A procedure served locally is called without the network.
  REQUIRE_FALSE(a->advertise("local.echo", [](std::vector<std::uint8_t> args, RpcReply reply) { reply({}, args); }));
  CHECK(call("local.echo", bytes("hi")).second == "hi");
  std::this_thread::sleep_for(300ms);  // let math.slow's worker finish before teardown
}

TEST_CASE("node core: nodes of different realms do not link", "[node][realm]") {
  Loop loop;
  auto a = make(loop, "acme.prod");
  auto b = make(loop, "ACME.PROD ");  // normalizes to the same realm
  auto c = make(loop, "other.realm");
  CHECK_FALSE(link(*a, *b));
  CHECK(link(*a, *c) == errc::connection_refused);
  CHECK(a->stats().links == 1);
}

TEST_CASE("node core: external HTTP/3 clients publish and call through the node", "[node][http]") {
  Loop loop;
  auto a = make(loop), b = make(loop);
  REQUIRE_FALSE(link(*a, *b));
  REQUIRE_FALSE(b->advertise("text.upper", [](std::vector<std::uint8_t> args, RpcReply reply) {
    for (auto& c : args) c = static_cast<std::uint8_t>(std::toupper(c));
    reply({}, std::move(args));
  }));
  Inbox on_b;
  std::error_code ec;
  b->subscribe("ext.#", [&](const Delivery& d) { on_b(d); }, ec);
  std::this_thread::sleep_for(100ms);  // interest and PROVIDE_ADD cross the link
  // An application without a node certificate talks to node a.
  transport::EndpointOptions co;
  co.identity = transport::Identity::generate();
  co.present_certificate = false;
  auto app = transport::Endpoint::create(loop.io, co, boost::asio::ip::udp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0), ec);
  REQUIRE_FALSE(ec);
  std::promise<std::shared_ptr<transport::Connection>> pc;
  app->connect(a->local_endpoint(), a->node_id(), [&](std::error_code e, std::shared_ptr<transport::Connection> c) {
    REQUIRE_FALSE(e);
    pc.set_value(c);
  });
  auto conn = pc.get_future().get();
  auto post = [&](const std::string& path, const std::string& body) {
    transport::Request r;
    r.method = "POST";
    r.path = path;
    r.body = bytes(body);
    std::promise<transport::Response> p;
    conn->request(r, 5s, [&](std::error_code e, transport::Response resp) {
      if (e) resp.status = -1;
      p.set_value(std::move(resp));
    });
    return p.get_future().get();
  };
  auto pub = post("/macula/v1/pub/ext.sensor.1", "from outside");
  CHECK(pub.status == 202);
  REQUIRE(on_b.wait_for(1));  // a forwarded it to b over the mesh
  CHECK(text(on_b.got.front().payload) == "from outside");
  auto rpc = post("/macula/v1/rpc/text.upper", "shout");
  CHECK(rpc.status == 200);
  CHECK(text(rpc.body) == "SHOUT");
  CHECK(post("/macula/v1/rpc/text.lower", "x").status == 404);
  CHECK(post("/macula/v1/rpc/bad..name", "x").status == 400);
  CHECK(post("/macula/v1/pub/bad..topic", "x").status == 400);
  app->close();
}
