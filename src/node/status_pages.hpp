// StatusPages: what a node answers on its status paths, /metrics, /health, /ready and /live,
// whichever server asks (the HTTP/3 routes on the QUIC port, the plain-HTTP server). One
// place decides the status codes, bodies and content types, so the two cannot drift apart.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace macula::node {

struct StatusPage {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct StatusPages {
  static constexpr std::array<std::string_view, 4> kPaths{"/metrics", "/health", "/ready", "/live"};

  std::function<std::string()> metrics;                  ///< Prometheus text 0.0.4
  std::function<std::pair<bool, std::string>()> health;  ///< (ready, why not)
  /// When set: 0 if a request with this `authorization` header value may read /metrics, else
  /// the status to refuse it with (the node's client token policy).
  std::function<int(std::string_view authorization)> guard_metrics;

  /// The page for a GET of `path`; 404 listing the pages for any other path.
  StatusPage answer(std::string_view path, std::string_view authorization = {}) const {
    if (path == "/metrics") {
      if (guard_metrics)
        if (const int refused = guard_metrics(authorization))
          return {refused, "text/plain; charset=utf-8", "a client token is required: authorization: Bearer <token>\n"};
      return {200, "text/plain; version=0.0.4; charset=utf-8", metrics()};
    }
    if (path == "/health" || path == "/ready") {
      auto [ok, why] = health();
      return {ok ? 200 : 503, "text/plain; charset=utf-8", ok ? "ok\n" : "not ready: " + why + "\n"};
    }
    if (path == "/live") return {200, "text/plain; charset=utf-8", "alive\n"};
    return {404, "text/plain; charset=utf-8", "not found: /metrics /health /ready /live\n"};
  }
};

}  // namespace macula::node
