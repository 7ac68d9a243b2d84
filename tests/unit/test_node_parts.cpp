// The node engine's parts that need no sockets: the error -> HTTP status table and the
// metrics' readiness verdict and top-N rendering.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "macula/error.hpp"
#include "node/http_api.hpp"
#include "node/node_metrics.hpp"

using namespace macula;
using namespace std::chrono_literals;

TEST_CASE("http status: one table for every error a client can meet", "[node][http]") {
  CHECK(node::http_status({}) == 200);
  for (auto e : {errc::name_empty, errc::name_too_long, errc::name_empty_segment, errc::name_invalid_character,
                 errc::name_wildcard_not_allowed})
    CHECK(node::http_status(e) == 400);
  CHECK(node::http_status(errc::no_provider) == 404);
  CHECK(node::http_status(errc::payload_too_large) == 413);
  CHECK(node::http_status(errc::body_too_large) == 413);
  CHECK(node::http_status(errc::timed_out) == 504);
  for (auto e : {errc::overloaded, errc::too_many_pending, errc::queue_full, errc::would_block, errc::not_started})
    CHECK(node::http_status(e) == 503);
  CHECK(node::http_status(errc::handler_error) == 500);
  CHECK(node::http_status(errc::transport_error) == 500);
  CHECK(node::http_status(std::make_error_code(std::errc::io_error)) == 500);  // not ours
}

TEST_CASE("node metrics: readiness turns after the grace, names the queue, and recovers", "[node][metrics]") {
  NodeOptions o;
  o.health_queue_threshold = 10;
  o.health_queue_grace = 2000ms;
  o.metrics_top_subscriptions = 1;
  node::NodeMetrics m(o);
  std::vector<std::string> logged;
  observe::Logger log([&](LogLevel, std::string_view, std::string_view text) { logged.emplace_back(text); },
                      LogLevel::info);
  const auto t0 = node::Clock::now();
  m.check_health(t0, {{"publish", 50}}, "", log);
  CHECK(m.readiness(false).first);  // over the threshold, not yet for the grace
  m.check_health(t0 + 2500ms, {{"publish", 50}}, "", log);
  auto [ready, why] = m.readiness(false);
  CHECK_FALSE(ready);
  CHECK(why.find("queue publish holds 50 items") != std::string::npos);
  m.check_health(t0 + 3000ms, {{"publish", 5}}, "", log);
  CHECK(m.readiness(false).first);
  m.check_health(t0 + 4000ms, {}, "lost all links to peers", log);
  CHECK(m.readiness(false).second == "lost all links to peers");
  CHECK(m.readiness(true).second == "stopping");
  REQUIRE(logged.size() == 3);  // not ready, ready again, not ready: transitions only
  CHECK(logged[1].find("ready again") != std::string::npos);

  const std::string text = m.render({{1, "a.#", 3, 7}, {2, "b.\"x\"", 9, 0}});
  CHECK(text.find("macula_subscription_dropped_total{subscription=\"2\",pattern=\"b.\\\"x\\\"\"} 9") != std::string::npos);
  CHECK(text.find("subscription=\"1\"") == std::string::npos);  // top 1 by drops only
}
