// Streaming subscriptions over HTTP/3 (GET /macula/v1/sub/<pattern>): a certificate-less
// client receives, as newline-delimited JSON, what is published anywhere in the mesh; the
// client policy, the pattern check and the limits answer with their statuses; a stream that
// ends takes its subscription with it. Our own client, and Debian's gtlsclient.
#include <catch2/catch.hpp>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/use_future.hpp>

#include "macula/client_access.hpp"
#include "macula/node.hpp"
#include "macula/publisher.hpp"
#include "macula/subscriber.hpp"
#include "node/http_subscription.hpp"
#include "node/node_core.hpp"
#include "support/io_thread.hpp"
#include "support/node_helpers.hpp"

extern char** environ;

using namespace macula;
using namespace std::chrono_literals;
using test::bytes;
using test::eventually;

namespace {

NodeOptions quiet_node() {
  NodeOptions o;
  o.realm = "stream.realm";
  o.http_listen = "";
  return o;
}

double metric(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
}
double live_streams(const Node& n) { return metric(n.metrics_text(), "macula_http_subscriptions"); }

// Completes once every link of `n` answered a PING sent after the subscriptions it holds:
// the peers know of them.
void settle(const Node& n) {
  auto p = std::make_shared<std::promise<std::error_code>>();
  auto f = p->get_future();
  node::NodeAccess::core(n)->sync([p](std::error_code ec) { p->set_value(ec); });
  REQUIRE(f.wait_for(10s) == std::future_status::ready);
  REQUIRE_FALSE(f.get());
}

// One streaming GET seen from the client: the bytes so far, or the refusal's status.
struct Stream {
  std::mutex m;
  std::string data;
  int refused = 0;
  bool closed = false;
  std::error_code opened;

  std::vector<std::string> lines() {
    std::lock_guard lock(m);
    std::vector<std::string> out;
    std::istringstream in(data);
    for (std::string l; std::getline(in, l);) out.push_back(l);
    if (!data.empty() && data.back() != '\n') out.pop_back();  // a line still arriving
    return out;
  }
  bool is_closed() {
    std::lock_guard lock(m);
    return closed;
  }
};

std::shared_ptr<Stream> open_stream(test::H3Client& client, const std::string& path,
                                    std::vector<transport::Header> headers = {}) {
  auto st = std::make_shared<Stream>();
  transport::SessionCallbacks cb;
  cb.on_data = [st](std::span<const std::uint8_t> b) {
    std::lock_guard lock(st->m);
    st->data.append(b.begin(), b.end());
  };
  cb.on_close = [st](std::error_code) {
    std::lock_guard lock(st->m);
    st->closed = true;
  };
  cb.on_refused = [st](int status, const std::vector<transport::Header>&) {
    std::lock_guard lock(st->m);
    st->refused = status;
  };
  transport::Request head;
  head.method = "GET";
  head.path = path;
  head.headers = std::move(headers);
  auto p = std::make_shared<std::promise<std::error_code>>();
  auto f = p->get_future();
  client.connection().open_session(head, cb, 5s, [p](std::error_code ec, std::shared_ptr<transport::Session> s) {
    if (!ec) s->close();  // a GET has no body; the answer streams on
    p->set_value(ec);
  });
  REQUIRE(f.wait_for(10s) == std::future_status::ready);
  st->opened = f.get();
  return st;
}

std::string line(const std::string& topic, const std::string& payload_b64, int qos) {
  return "{\"topic\":\"" + topic + "\",\"payload\":\"" + payload_b64 + "\",\"qos\":" + std::to_string(qos) + "}";
}

}  // namespace

TEST_CASE("http sub: one ndjson object per message, topic escaped, payload in base64", "[http_sub]") {
  const std::vector<std::uint8_t> binary{0x00, 0xff, 0x10, 0x80};
  CHECK(node::ndjson_line("a.b", binary, Qos::at_least_once) == "{\"topic\":\"a.b\",\"payload\":\"AP8QgA==\",\"qos\":1}\n");
  CHECK(node::ndjson_line("q\"\\\n", {}, Qos::at_most_once) ==
        "{\"topic\":\"q\\\"\\\\\\u000a\",\"payload\":\"\",\"qos\":0}\n");
  const std::string text = "hello";
  CHECK(node::ndjson_line("x", {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()}, Qos::at_most_once) ==
        "{\"topic\":\"x\",\"payload\":\"aGVsbG8=\",\"qos\":0}\n");
}

TEST_CASE("http sub: a client on node B receives what node A publishes, QoS 0 and QoS 1", "[http_sub]") {
  test::IoThread loop;
  Node a(loop.io, quiet_node()), b(loop.io, quiet_node());
  REQUIRE_FALSE(a.start());
  REQUIRE_FALSE(b.start());
  REQUIRE_FALSE(b.connect(a.local_address()));
  test::H3Client client(loop.io, b);
  REQUIRE(client.connected());
  auto st = open_stream(client, "/macula/v1/sub/room.%23");  // room.#: '#' travels escaped
  REQUIRE_FALSE(st->opened);
  REQUIRE(eventually([&] { return live_streams(b) == 1; }));
  settle(b);

  Publisher pub(a);
  REQUIRE_FALSE(pub.publish("room.kitchen.temp", bytes("21")));  // QoS 0, after the interest settled
  REQUIRE_FALSE(pub.async_publish("room.hall", bytes("hello"), Qos::at_least_once, boost::asio::use_future).get());
  REQUIRE_FALSE(pub.publish("other.topic", bytes("no")));
  REQUIRE(eventually([&] { return st->lines().size() >= 2; }, 10000ms));
  std::this_thread::sleep_for(200ms);  // room for a wrong third line to show up
  auto got = st->lines();
  std::sort(got.begin(), got.end());  // QoS 0 and QoS 1 need not keep their relative order
  CHECK(got == std::vector<std::string>{line("room.hall", "aGVsbG8=", 1), line("room.kitchen.temp", "MjE=", 0)});
  CHECK(metric(b.metrics_text(), "macula_messages_dropped_total{reason=\"http_subscriber_overflow\"}") == 0);
  b.stop();
  a.stop();
}

TEST_CASE("http sub: an invalid pattern gets 400, a missing token 401; a stopping node ends its streams", "[http_sub]") {
  test::IoThread loop;
  SECTION("pattern") {
    Node n(loop.io, quiet_node());
    REQUIRE_FALSE(n.start());
    test::H3Client client(loop.io, n);
    REQUIRE(client.connected());
    for (const char* bad : {"bad..pattern", "a.%20b", "%zz", "a.b%", ""}) {
      INFO(bad);
      auto st = open_stream(client, std::string("/macula/v1/sub/") + bad);
      CHECK(st->opened == errc::connection_refused);
      CHECK(st->refused == 400);
    }
    CHECK(live_streams(n) == 0);
    CHECK(n.stats().subscriptions == 0);
    n.stop();
  }
  SECTION("client token") {
    NodeOptions o = quiet_node();
    o.realm_secret = "s3cret";  // token mode
    Node n(loop.io, o);
    REQUIRE_FALSE(n.start());
    test::H3Client client(loop.io, n);
    REQUIRE(client.connected());
    auto none = open_stream(client, "/macula/v1/sub/x.*");
    CHECK(none->refused == 401);
    auto wrong = open_stream(client, "/macula/v1/sub/x.*", {{"authorization", "Bearer nope"}});
    CHECK(wrong->refused == 401);
    const std::string token = derive_client_token(o.realm, *o.realm_secret);
    auto right = open_stream(client, "/macula/v1/sub/x.*", {{"authorization", "Bearer " + token}});
    CHECK_FALSE(right->opened);
    CHECK(eventually([&] { return live_streams(n) == 1; }));
    n.stop();
  }
  SECTION("stopping") {
    Node n(loop.io, quiet_node());
    REQUIRE_FALSE(n.start());
    test::H3Client client(loop.io, n);
    REQUIRE(client.connected());
    auto st = open_stream(client, "/macula/v1/sub/x.*");
    REQUIRE(eventually([&] { return live_streams(n) == 1; }));
    n.stop();
    // The node ends the stream itself (FIN, then its connections close).
    CHECK(eventually([&] { return st->is_closed(); }, 10000ms));
    CHECK(live_streams(n) == 0);
  }
}

TEST_CASE("http sub: a client that goes takes its subscription with it", "[http_sub]") {
  test::IoThread loop;
  Node n(loop.io, quiet_node());
  REQUIRE_FALSE(n.start());
  const std::size_t before = n.stats().subscriptions;
  {
    test::H3Client client(loop.io, n);
    REQUIRE(client.connected());
    auto s1 = open_stream(client, "/macula/v1/sub/a.*");
    auto s2 = open_stream(client, "/macula/v1/sub/b.%23");
    REQUIRE(eventually([&] { return live_streams(n) == 2 && n.stats().subscriptions == before + 2; }));
  }  // the client closes its connection
  CHECK(eventually([&] { return live_streams(n) == 0; }, 10000ms));
  CHECK(eventually([&] { return n.stats().subscriptions == before; }));
  n.stop();
}

TEST_CASE("http sub: past 16 streams on one connection the node answers 503", "[http_sub]") {
  test::IoThread loop;
  Node n(loop.io, quiet_node());
  REQUIRE_FALSE(n.start());
  test::H3Client client(loop.io, n);
  REQUIRE(client.connected());
  std::vector<std::shared_ptr<Stream>> streams;
  const std::size_t cap = node::HttpSubscriptions::Limits{}.per_connection;
  for (std::size_t i = 0; i < cap; ++i) {
    streams.push_back(open_stream(client, "/macula/v1/sub/cap." + std::to_string(i)));
    REQUIRE_FALSE(streams.back()->opened);
  }
  auto over = open_stream(client, "/macula/v1/sub/cap.over");
  CHECK(over->opened == errc::connection_refused);
  CHECK(over->refused == 503);
  CHECK(live_streams(n) == static_cast<double>(cap));
  // Another connection has its own allowance.
  test::H3Client other(loop.io, n);
  REQUIRE(other.connected());
  auto fresh = open_stream(other, "/macula/v1/sub/cap.other");
  CHECK_FALSE(fresh->opened);
  CHECK(eventually([&] { return live_streams(n) == static_cast<double>(cap + 1); }));
  n.stop();
}

TEST_CASE("http sub: gtlsclient streams messages published on another node", "[http_sub][interop]") {
  const char* gtlsclient = "/usr/bin/gtlsclient";
  if (access(gtlsclient, X_OK) != 0)
    FAIL("/usr/bin/gtlsclient is missing: install Debian's ngtcp2-client (cmake/install-deps.sh does)");
  test::IoThread loop;
  Node a(loop.io, quiet_node()), b(loop.io, quiet_node());
  REQUIRE_FALSE(a.start());
  REQUIRE_FALSE(b.start());
  REQUIRE_FALSE(b.connect(a.local_address()));
  char tmpl[] = "/tmp/macula_http_sub_XXXXXX";
  REQUIRE(mkdtemp(tmpl));
  const std::filesystem::path dir = tmpl;
  const std::string addr = b.local_address();
  const std::string port = addr.substr(addr.rfind(':') + 1);
  // gtlsclient saves the body under the path's last component; it exits when the node ends
  // the stream (on stop), and `timeout` bounds it whatever happens.
  const std::string cmd = "exec timeout 30 " + std::string(gtlsclient) + " 127.0.0.1 " + port + " https://localhost:" + port +
                          "/macula/v1/sub/gt.%23 --download=" + (dir / "body").string() +
                          " --exit-on-all-streams-close --no-quic-dump --no-http-dump -q > " + (dir / "log").string() +
                          " 2>&1";
  std::filesystem::create_directory(dir / "body");
  std::vector<const char*> argv = {"sh", "-c", cmd.c_str(), nullptr};
  pid_t pid;
  REQUIRE(posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv.data()), environ) == 0);
  auto log = [&] {
    std::ifstream in(dir / "log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const bool streaming = eventually([&] { return live_streams(b) == 1; }, 15000ms);
  INFO("gtlsclient: " << log());
  REQUIRE(streaming);
  settle(b);
  Publisher pub(a);
  for (int i = 0; i < 3; ++i)
    REQUIRE_FALSE(pub.async_publish("gt.reading", bytes("v" + std::to_string(i)), Qos::at_least_once,
                                    boost::asio::use_future)
                      .get());
  b.stop();  // ends the stream: gtlsclient exits
  int status = 0;
  bool exited = eventually([&] { return waitpid(pid, &status, WNOHANG) == pid; }, 20000ms);
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  CHECK(exited);
  std::string body;
  for (const auto& f : std::filesystem::directory_iterator(dir / "body")) {
    std::ifstream in(f.path());
    body += std::string(std::istreambuf_iterator<char>(in), {});
  }
  INFO("body: " << body);
  CHECK(body == line("gt.reading", "djA=", 1) + "\n" + line("gt.reading", "djE=", 1) + "\n" +
                    line("gt.reading", "djI=", 1) + "\n");
  std::filesystem::remove_all(dir);
  a.stop();
}
