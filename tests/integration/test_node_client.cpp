// NodeClient, the public client of a node's HTTP/3 API, and node key files: what the
// `macula` tool is built on, used here through public headers only.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "macula/client_access.hpp"
#include "macula/error.hpp"
#include "macula/node.hpp"
#include "macula/node_client.hpp"
#include "macula/node_key.hpp"
#include "macula/subscriber.hpp"
#include "support/node_helpers.hpp"

using namespace macula;
using namespace std::chrono_literals;
using macula::test::bytes;
using macula::test::eventually;

namespace {

NodeOptions node_options() {
  NodeOptions o;
  o.listen = "127.0.0.1:0";
  o.realm = "client.realm";
  o.dht = false;
  return o;
}

std::string text(const Bytes& b) { return {b.begin(), b.end()}; }


double metric(const Node& n, const std::string& series) {
  const std::string t = n.metrics_text();
  const auto at = t.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stod(t.substr(at + series.size() + 2));
}

struct ServingNode {
  ServingNode() : ServingNode(node_options()) {}
  explicit ServingNode(NodeOptions o) : node(std::move(o)) {
    REQUIRE_FALSE(node.start());
    std::error_code ec;
    echo = node.advertise("svc.echo", [](Bytes args, RpcResponder r) { r.reply(std::move(args)); }, {}, ec);
    REQUIRE_FALSE(ec);
    failing = node.advertise("svc.fail", [](Bytes, RpcResponder r) { r.fail("no such sensor"); }, {}, ec);
    REQUIRE_FALSE(ec);
  }
  Node node;
  Advertisement echo, failing;
};

}  // namespace

TEST_CASE("NodeClient: publish, call and their errors through a node", "[node_client]") {
  ServingNode s;
  std::error_code ec;
  auto client = NodeClient::connect(s.node.local_address(), {}, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(client);
  CHECK(client->remote_address() == s.node.local_address());

  CHECK(text(client->call("svc.echo", bytes("hi"), ec)) == "hi");
  CHECK_FALSE(ec);
  std::string why;
  client->call("svc.fail", bytes("x"), ec, &why);
  CHECK(ec == errc::handler_error);
  CHECK(why.find("no such sensor") != std::string::npos);
  client->call("svc.none", bytes("x"), ec);
  CHECK(ec == errc::no_provider);
  client->call("bad..name", bytes("x"), ec);
  CHECK(ec == errc::name_invalid_character);

  // QoS 1 to a topic nobody subscribes to: nobody got it, and the client is told.
  CHECK(client->publish("nobody.listens", bytes("x"), Qos::at_least_once) == errc::no_subscribers);
  std::mutex m;
  std::vector<std::string> got;
  Subscriber sub(s.node, "sensors.#", [&](const Message& msg) {
    std::lock_guard lock(m);
    got.push_back(std::string(msg.topic()) + " " + msg.payload_string());
  });
  CHECK_FALSE(client->publish("sensors.hall.temp", bytes("19"), Qos::at_least_once));
  CHECK_FALSE(client->publish("sensors.hall.temp", bytes("20")));
  CHECK(eventually([&] {
    std::lock_guard lock(m);
    return got.size() == 2;
  }));
  std::lock_guard lock(m);
  CHECK(got == std::vector<std::string>{"sensors.hall.temp 19", "sensors.hall.temp 20"});
}

TEST_CASE("NodeClient: a stream delivers every byte, and ending it ends the node's subscription", "[node_client]") {
  ServingNode s;
  std::error_code ec;
  auto client = NodeClient::connect(s.node.local_address(), {}, ec);
  REQUIRE(client);
  std::mutex m;
  std::vector<NodeClient::StreamedMessage> got;
  std::atomic<int> ends{0};
  std::atomic<int> deadlock_checks{0};
  NodeClient::StreamCallbacks cb;
  cb.on_message = [&](NodeClient::StreamedMessage msg) {
    // A blocking call from the client's own thread would wait for itself: refused.
    if (client->publish("x.y", bytes("z")) == errc::would_deadlock) ++deadlock_checks;
    std::error_code e2;
    if (!NodeClient::connect("127.0.0.1:1", {}, e2) && e2 == errc::would_deadlock) ++deadlock_checks;
    std::lock_guard lock(m);
    got.push_back(std::move(msg));
  };
  cb.on_end = [&](std::error_code) { ++ends; };
  int status = 0;
  auto stream = client->subscribe("bin.#", cb, ec, &status);
  REQUIRE_FALSE(ec);
  REQUIRE(stream);
  CHECK(status == 200);
  CHECK(metric(s.node, "macula_http_subscriptions") == 1);

  const Bytes binary{'a', 0, 'b', '\n', 0xff, '"', '\\'};
  CHECK_FALSE(client->publish("bin.one", binary));
  CHECK_FALSE(client->publish("bin.two", Bytes(70'000, 0x5a), Qos::at_least_once));
  REQUIRE(eventually([&] {
    std::lock_guard lock(m);
    return got.size() == 2;
  }));
  {
    std::lock_guard lock(m);
    CHECK(got[0].topic == "bin.one");
    CHECK(got[0].payload == binary);
    CHECK(got[0].qos == Qos::at_most_once);
    CHECK(got[1].payload == Bytes(70'000, 0x5a));
    CHECK(got[1].qos == Qos::at_least_once);
  }
  CHECK(deadlock_checks == 4);

  stream.reset();
  CHECK(eventually([&] { return metric(s.node, "macula_http_subscriptions") == 0; }));
  CHECK_FALSE(client->publish("bin.three", bytes("after")));
  std::this_thread::sleep_for(100ms);
  std::lock_guard lock(m);
  CHECK(got.size() == 2);  // nothing after the stream was destroyed
  CHECK(ends == 0);        // ...not even its end
}

TEST_CASE("NodeClient: refusals and unreachable nodes are errors that say which", "[node_client]") {
  std::error_code ec;
  CHECK_FALSE(NodeClient::connect("no host!:1", {}, ec));
  CHECK(ec == errc::address_invalid);
  CHECK_FALSE(NodeClient::connect("no-such-host.invalid:9443", {}, ec));
  CHECK(ec == errc::address_unresolved);
  NodeClientOptions quick;
  quick.connect_timeout = 300ms;
  CHECK_FALSE(NodeClient::connect("127.0.0.1:1", quick, ec));
  CHECK(ec);

  // A realm with a secret: clients need its token.
  auto o = node_options();
  o.realm_secret = "s3cret";
  ServingNode s(o);
  auto anonymous = NodeClient::connect(s.node.local_address(), {}, ec);
  REQUIRE(anonymous);
  CHECK_FALSE(anonymous->has_token());
  anonymous->call("svc.echo", bytes("x"), ec);
  CHECK(ec == errc::unauthorized);
  int status = 0;
  CHECK_FALSE(anonymous->subscribe("a.#", {}, ec, &status));
  CHECK(ec == errc::unauthorized);
  CHECK(status == 401);
  ClientResponse r = anonymous->request("GET", "/health", {}, ec);  // probes need no token
  CHECK_FALSE(ec);
  CHECK(r.status == 200);

  NodeClientOptions with_token;
  with_token.token = derive_client_token("client.realm", "s3cret");
  auto member = NodeClient::connect(s.node.local_address(), with_token, ec);
  REQUIRE(member);
  CHECK(text(member->call("svc.echo", bytes("in"), ec)) == "in");
  CHECK_FALSE(ec);
  CHECK_FALSE(member->subscribe("bad..pattern", {}, ec, &status));
  CHECK(status == 400);
}

TEST_CASE("NodeClient: destroying the client completes what is pending", "[node_client]") {
  ServingNode s;
  std::error_code ec;
  std::vector<RpcResponder> held;
  std::mutex m;
  auto slow = s.node.advertise("svc.slow", [&](Bytes, RpcResponder r) {
    std::lock_guard lock(m);
    held.push_back(std::move(r));
  }, {}, ec);
  auto client = NodeClient::connect(s.node.local_address(), {}, ec);
  REQUIRE(client);
  std::atomic<int> completed{0};
  std::error_code seen;
  client->request("POST", "/macula/v1/rpc/svc.slow", bytes("x"), [&](std::error_code e, ClientResponse) {
    seen = e;
    ++completed;
  });
  REQUIRE(eventually([&] {
    std::lock_guard lock(m);
    return held.size() == 1;
  }));
  const auto t0 = std::chrono::steady_clock::now();
  client.reset();
  CHECK(completed == 1);
  CHECK(seen == errc::connection_closed);
  // Closing does not wait for the connection's timers (the request had a 10 s deadline).
  CHECK(std::chrono::steady_clock::now() - t0 < 500ms);
}

TEST_CASE("NodeClient: names are percent-encoded into paths, so they cannot change the route", "[node_client]") {
  CHECK(NodeClient::pub_path("a.b?qos=1") == "/macula/v1/pub/a.b%3Fqos%3D1");
  CHECK(NodeClient::pub_path("a.b", Qos::at_least_once) == "/macula/v1/pub/a.b?qos=1");
  CHECK(NodeClient::rpc_path("svc/../x") == "/macula/v1/rpc/svc%2F..%2Fx");
  CHECK(NodeClient::sub_path("sensors.#") == "/macula/v1/sub/sensors.%23");
  CHECK(NodeClient::sub_path("*.hall.temp") == "/macula/v1/sub/*.hall.temp");
}

TEST_CASE("node key files: written once, the node keeps the id they prove", "[node_key]") {
  const auto dir = std::filesystem::temp_directory_path() / ("macula-key-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string key = (dir / "node.key").string(), cert = (dir / "node.crt").string();
  std::error_code ec;
  const NodeId id = write_node_key(key, cert, ec);
  REQUIRE_FALSE(ec);
  struct stat st {};
  REQUIRE(::stat(key.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(read_node_key(key, cert, ec) == id);
  CHECK_FALSE(ec);

  // Never overwritten, and a refused pair leaves nothing behind.
  const std::string other = (dir / "other.crt").string();
  write_node_key(key, other, ec);
  CHECK(ec == std::errc::file_exists);
  CHECK_FALSE(std::filesystem::exists(other));
  write_node_key((dir / "new.key").string(), cert, ec);
  CHECK(ec == std::errc::file_exists);
  CHECK_FALSE(std::filesystem::exists(dir / "new.key"));
  write_node_key((dir / "missing" / "a.key").string(), (dir / "missing" / "a.crt").string(), ec);
  CHECK(ec == std::errc::no_such_file_or_directory);

  auto o = node_options();
  o.key_file = key;
  o.cert_file = cert;
  Node node(o);
  REQUIRE_FALSE(node.start());
  CHECK(node.node_id() == id);
  node.stop();

  read_node_key(key, (dir / "nope.crt").string(), ec);
  CHECK(ec == errc::identity_invalid);
  std::filesystem::remove_all(dir);
}
