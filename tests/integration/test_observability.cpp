// Observability on a running node: the status pages over plain HTTP and over HTTP/3, the
// readiness rules (a queue past its threshold, lost links), the per-subscription series with
// bounded cardinality, and the host's log sink.
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "macula/node.hpp"
#include "macula/publisher.hpp"
#include "macula/subscriber.hpp"
#include "support/io_thread.hpp"
#include "support/node_helpers.hpp"

using namespace macula;
using namespace std::chrono_literals;
using test::bytes;
using test::eventually;
using test::http_get;

namespace {

// Collects log events from the node's threads.
struct LogLines {
  std::mutex m;
  std::vector<std::tuple<LogLevel, std::string, std::string>> lines;
  LogSink sink() {
    return [this](LogLevel l, std::string_view c, std::string_view msg) {
      std::lock_guard lock(m);
      lines.emplace_back(l, std::string(c), std::string(msg));
    };
  }
  bool has(LogLevel level, const std::string& component, const std::string& part) {
    std::lock_guard lock(m);
    for (auto& [l, c, msg] : lines)
      if (l == level && c == component && msg.find(part) != std::string::npos) return true;
    return false;
  }
  std::size_t size() {
    std::lock_guard lock(m);
    return lines.size();
  }
};

// Blocks subscription handlers until released.
struct Gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return open; });
  }
  void release() {
    {
      std::lock_guard lock(m);
      open = true;
    }
    cv.notify_all();
  }
};

// The value of the first series line starting with `prefix` in Prometheus text, or -1.
double series_value(const std::string& metrics, const std::string& prefix) {
  std::size_t at = 0;
  while ((at = metrics.find(prefix, at)) != std::string::npos) {
    if (at == 0 || metrics[at - 1] == '\n') {
      const auto sp = metrics.find(' ', at + prefix.size());
      const auto nl = metrics.find('\n', sp);
      return std::stod(metrics.substr(sp + 1, nl - sp - 1));
    }
    at += prefix.size();
  }
  return -1;
}

}  // namespace

TEST_CASE("observability: plain HTTP /metrics, /health, /ready, /live; a taken port is not fatal", "[observe][http]") {
  CHECK(NodeOptions{}.http_listen.empty());  // a library opens no TCP port unless asked
  macula::test::IoThread loop;
  LogLines log;
  NodeOptions o;
  o.realm = "status.realm";
  o.http_listen = "127.0.0.1:0";
  o.log_sink = log.sink();
  Node n(loop.io, o);
  REQUIRE_FALSE(n.start());
  REQUIRE_FALSE(n.http_address().empty());
  CHECK(log.has(LogLevel::info, "node", "started on " + n.local_address()));
  CHECK(log.has(LogLevel::info, "http", "status pages on http://" + n.http_address()));
  Publisher(n).publish("status.ping", bytes("x"));
  const auto metrics = http_get(n.http_address(), "/metrics");
  CHECK(metrics.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(metrics.find("text/plain; version=0.0.4") != std::string::npos);
  CHECK(metrics.find("macula_messages_published_total{qos=\"0\"}") != std::string::npos);
  CHECK(metrics.find("\nmacula_http_status_up 1") != std::string::npos);
  for (const char* series : {"\nmacula_qos1_too_old_total 0", "\nmacula_qos1_deferred_total 0",
                             "\nmacula_slow_peer_disconnects_total 0", "\nmacula_cache_hits_total{cache=\"rpc_results\"} 0",
                             "\nmacula_dht_routing_table_size 0", "\nmacula_queue_depth{queue=\"handler_tasks\"} 0"})
    CHECK(metrics.find(series) != std::string::npos);
  CHECK(http_get(n.http_address(), "/health").rfind("HTTP/1.1 200", 0) == 0);
  CHECK(http_get(n.http_address(), "/live").rfind("HTTP/1.1 200", 0) == 0);
  CHECK(http_get(n.http_address(), "/nope").rfind("HTTP/1.1 404", 0) == 0);

  // A node that should have links but has none is not ready, and says why.
  NodeOptions lonely = o;
  lonely.bootstrap = {"127.0.0.1:1"};
  Node m(loop.io, lonely);
  REQUIRE_FALSE(m.start());
  std::string ready;
  CHECK(eventually([&] { return (ready = http_get(m.http_address(), "/ready")).rfind("HTTP/1.1 503", 0) == 0; }));
  CHECK(ready.find("no link to any peer") != std::string::npos);

  // Port taken (many nodes in one process): the node starts anyway, says so, and serves the
  // pages over HTTP/3 only.
  LogLines clash_log;
  NodeOptions clash = o;
  clash.http_listen = n.http_address();
  clash.log_sink = clash_log.sink();
  Node k(loop.io, clash);
  REQUIRE_FALSE(k.start());
  CHECK(k.http_address().empty());
  CHECK(clash_log.has(LogLevel::warn, "http", "status pages not served on " + n.http_address()));
  CHECK(k.metrics_text().find("\nmacula_http_status_up 0") != std::string::npos);
  k.stop();
  m.stop();
  n.stop();
}

TEST_CASE("observability: /metrics, /health, /ready, /live over HTTP/3 on the QUIC port", "[observe][http3]") {
  macula::test::IoThread loop;
  NodeOptions o;
  o.realm = "status.realm";
  o.http_listen.clear();  // plain HTTP off: HTTP/3 still serves the pages
  Node n(loop.io, o);
  REQUIRE_FALSE(n.start());
  CHECK(n.http_address().empty());
  Publisher(n).publish("status.ping", bytes("x"));
  test::H3Client client(loop.io, n);
  REQUIRE(client.connected());
  const auto metrics = client.request("GET", "/metrics");
  CHECK(metrics.status == 200);
  const std::string body = test::text(metrics.body);
  CHECK(body.find("# TYPE macula_messages_published_total counter") != std::string::npos);
  CHECK(series_value(body, "macula_messages_published_total{qos=\"0\"}") == 1);
  CHECK(series_value(body, "macula_ready") == 1);
  CHECK(client.request("GET", "/health").status == 200);
  CHECK(test::text(client.request("GET", "/ready").body) == "ok\n");
  CHECK(client.request("GET", "/live").status == 200);
  CHECK(client.request("GET", "/nope").status == 404);
  n.stop();
}

TEST_CASE("observability: a queue past its threshold makes the node not ready, says which, and recovers",
          "[observe][health]") {
  macula::test::IoThread loop;
  LogLines log;
  NodeOptions o;
  o.realm = "health.realm";
  o.http_listen.clear();
  o.health_queue_threshold = 100;
  o.health_queue_grace = 200ms;
  o.log_sink = log.sink();
  Node n(loop.io, o);
  REQUIRE_FALSE(n.start());
  auto gate = std::make_shared<Gate>();
  std::atomic<int> handled{0};
  SubscribeOptions so;
  so.queue_capacity = 10'000;
  Subscriber stuck(n, "work.#", [gate, &handled](const Message&) {
    gate->wait();
    ++handled;
  }, so);
  Publisher pub(n);
  for (int i = 0; i < 500; ++i) REQUIRE_FALSE(pub.publish("work.item", bytes("x")));
  auto ready = [&] { return node::NodeAccess::core(n)->readiness(); };
  REQUIRE(eventually([&] { return !ready().first; }));
  CHECK(ready().second.find("queue subscription") != std::string::npos);
  CHECK(ready().second.find("(work.#)") != std::string::npos);
  CHECK(ready().second.find("threshold of 100") != std::string::npos);
  CHECK(log.has(LogLevel::warn, "health", "not ready: queue subscription"));
  CHECK(series_value(n.metrics_text(), "macula_ready") == 0);
  gate->release();
  REQUIRE(eventually([&] { return ready().first; }));
  CHECK(handled == 500);
  CHECK(log.has(LogLevel::info, "health", "ready again"));
  n.stop();
}

TEST_CASE("observability: losing every link makes the node not ready", "[observe][health]") {
  macula::test::IoThread loop;
  NodeOptions o;
  o.realm = "health.realm";
  o.http_listen.clear();
  Node a(loop.io, o), b(loop.io, o);
  REQUIRE_FALSE(a.start());
  REQUIRE_FALSE(b.start());
  CHECK(node::NodeAccess::core(a)->readiness().first);  // no bootstrap peers: alone is fine
  REQUIRE_FALSE(a.connect(b.local_address()));
  REQUIRE(eventually([&] { return a.stats().links == 1; }));
  b.stop();
  CHECK(eventually([&] { return a.stats().links == 0; }));
  INFO(node::NodeAccess::core(a)->readiness().second);
  REQUIRE(eventually([&] { return !node::NodeAccess::core(a)->readiness().first; }));
  CHECK(node::NodeAccess::core(a)->readiness().second == "lost all links to peers");
  a.stop();
  CHECK(node::NodeAccess::core(a)->readiness().second == "stopping");

  // A node that only accepted links (a seed) stays ready when they go: it dials nobody.
  Node seed(loop.io, o), visitor(loop.io, o);
  REQUIRE_FALSE(seed.start());
  REQUIRE_FALSE(visitor.start());
  REQUIRE_FALSE(visitor.connect(seed.local_address()));
  REQUIRE(eventually([&] { return seed.stats().links == 1; }));
  visitor.stop();
  REQUIRE(eventually([&] { return seed.stats().links == 0; }));
  std::this_thread::sleep_for(1500ms);  // at least one health check with no link
  CHECK(node::NodeAccess::core(seed)->readiness().first);
  seed.stop();
}

TEST_CASE("observability: per-subscription drops for the top N subscriptions only", "[observe][metrics]") {
  macula::test::IoThread loop;
  NodeOptions o;
  o.realm = "drops.realm";
  o.http_listen.clear();
  o.metrics_top_subscriptions = 2;
  Node n(loop.io, o);
  REQUIRE_FALSE(n.start());
  auto gate = std::make_shared<Gate>();
  SubscribeOptions tiny;
  tiny.queue_capacity = 10;
  tiny.overflow = SubscriberOverflow::drop_newest;
  auto blocked = [gate](const Message&) { gate->wait(); };
  // Pull-mode subscriptions nobody reads: their queues fill and drop exactly the surplus.
  Subscriber a(n, "drops.a", tiny), b(n, "drops.b", tiny), c(n, "drops.c", tiny);
  Subscriber fine(n, "drops.#", blocked);  // large default queue: no drops
  Publisher pub(n);
  auto burst = [&](const char* topic, int count) {
    for (int i = 0; i < count; ++i) REQUIRE_FALSE(pub.publish(topic, bytes("x")));
  };
  burst("drops.a", 15);  // 5 dropped
  burst("drops.b", 40);  // 30 dropped
  burst("drops.c", 11);  // 1 dropped
  REQUIRE(eventually([&] { return n.stats().dropped >= 36; }));
  const std::string m = n.metrics_text();
  CHECK(series_value(m, "macula_subscription_dropped_total{subscription=\"2\",pattern=\"drops.b\"}") == 30);
  CHECK(series_value(m, "macula_subscription_dropped_total{subscription=\"1\",pattern=\"drops.a\"}") == 5);
  CHECK(m.find("pattern=\"drops.c\"") == std::string::npos);  // third: past the top 2
  CHECK(series_value(m, "macula_subscription_queue_depth{subscription=\"2\",pattern=\"drops.b\"}") == 10);
  CHECK(series_value(m, "macula_messages_dropped_total{reason=\"subscriber_overflow\"}") == 36);
  gate->release();
  n.stop();
}
