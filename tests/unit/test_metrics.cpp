#include <catch2/catch.hpp>

#include <thread>
#include <vector>

#include "macula/core/metrics.hpp"
#include "macula/error.hpp"
#include "macula/observe/metrics_registry.hpp"

using macula::observe::MetricsRegistry;

TEST_CASE("metrics: exact Prometheus text for a small registry", "[metrics]") {
  MetricsRegistry r;
  r.counter("macula_messages_published_total", "Messages accepted for publishing.").inc(3);
  r.counter("macula_messages_dropped_total", "Messages dropped, by reason.", {{"reason", "queue_full"}}).inc(2);
  r.counter("macula_messages_dropped_total", "Messages dropped, by reason.", {{"reason", "say \"hi\"\\\n"}}).inc();
  r.gauge("macula_links", "Open links.\nTwo lines \\ backslash.").set(1.5);
  std::size_t depth = 7;
  r.gauge_callback("macula_queue_depth", "Items queued.", {{"queue", "delivery"}}, [&] { return double(depth); });
  auto& h = r.histogram("macula_rpc_latency_seconds", "RPC latency.", {{"outcome", "ok"}}, {0.001, 0.01});
  h.observe(0.0005);
  h.observe(0.005);
  h.observe(0.5);

  const std::string expected =
      "# HELP macula_links Open links.\\nTwo lines \\\\ backslash.\n"
      "# TYPE macula_links gauge\n"
      "macula_links 1.5\n"
      "# HELP macula_messages_dropped_total Messages dropped, by reason.\n"
      "# TYPE macula_messages_dropped_total counter\n"
      "macula_messages_dropped_total{reason=\"queue_full\"} 2\n"
      "macula_messages_dropped_total{reason=\"say \\\"hi\\\"\\\\\\n\"} 1\n"
      "# HELP macula_messages_published_total Messages accepted for publishing.\n"
      "# TYPE macula_messages_published_total counter\n"
      "macula_messages_published_total 3\n"
      "# HELP macula_queue_depth Items queued.\n"
      "# TYPE macula_queue_depth gauge\n"
      "macula_queue_depth{queue=\"delivery\"} 7\n"
      "# HELP macula_rpc_latency_seconds RPC latency.\n"
      "# TYPE macula_rpc_latency_seconds histogram\n"
      "macula_rpc_latency_seconds_bucket{outcome=\"ok\",le=\"0.001\"} 1\n"
      "macula_rpc_latency_seconds_bucket{outcome=\"ok\",le=\"0.01\"} 2\n"
      "macula_rpc_latency_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 3\n"
      "macula_rpc_latency_seconds_sum{outcome=\"ok\"} 0.5055\n"
      "macula_rpc_latency_seconds_count{outcome=\"ok\"} 3\n";
  CHECK(r.render() == expected);
  depth = 9;
  CHECK(r.render().find("macula_queue_depth{queue=\"delivery\"} 9\n") != std::string::npos);
  r.remove_gauge_callback("macula_queue_depth", {{"queue", "delivery"}});
  CHECK(r.render().find("macula_queue_depth") == std::string::npos);
}

TEST_CASE("metrics: same series returns the same object; conflicts and bad names are errors", "[metrics]") {
  MetricsRegistry r(3);
  auto& a = r.counter("macula_x_total", "x");
  auto& b = r.counter("macula_x_total", "x");
  CHECK(&a == &b);
  CHECK_THROWS_AS(r.gauge("macula_x_total", "x"), std::system_error);
  CHECK_THROWS_AS(r.counter("macula_x_total", "other help"), std::system_error);
  CHECK_THROWS_AS(r.counter("9bad", "x"), std::system_error);
  CHECK_THROWS_AS(r.counter("macula_y_total", "y", {{"bad-label", "v"}}), std::system_error);
  CHECK_THROWS_AS(r.histogram("macula_h", "h", {{"le", "1"}}), std::system_error);
  r.counter("macula_x_total", "x", {{"a", "1"}});
  r.counter("macula_x_total", "x", {{"a", "2"}});
  try {
    r.counter("macula_x_total", "x", {{"a", "3"}});
    FAIL("series cap not enforced");
  } catch (const std::system_error& e) {
    CHECK(e.code() == macula::errc::metrics_series_limit);
  }
  CHECK(r.series_count() == 3);
}

TEST_CASE("metrics: counters and histograms are exact under concurrent updates", "[metrics][concurrency]") {
  macula::core::Counter c;
  macula::core::Histogram h({1.0});
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 100'000; ++i) {
        c.inc();
        h.observe(i % 2 ? 0.5 : 2.0);
      }
    });
  for (auto& t : ts) t.join();
  CHECK(c.value() == 400'000);
  const auto s = h.snapshot();
  CHECK(s.count == 400'000);
  CHECK(s.cumulative[0] == 200'000);
  CHECK(s.sum == Approx(200'000 * 0.5 + 200'000 * 2.0));
}
