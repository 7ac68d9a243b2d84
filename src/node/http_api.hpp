// HttpApi: the node's HTTP/3 routes for clients — POST /macula/v1/pub/<topic>, POST
// /macula/v1/rpc/<procedure>, the streaming GET /macula/v1/sub/<pattern> (HttpSubscriptions)
// — and the status pages (/metrics, /health, /ready, /live) on the QUIC port. Errors map to
// HTTP statuses through one table (http_status), tested on its own.
// Publish, call, subscribe and /metrics pass the client access policy (ClientGate) first.
//
// Threading: route handlers run on the endpoint's strand (the node's strand).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <system_error>

#include "macula/detail/completion.hpp"
#include "macula/core/metrics.hpp"
#include "macula/message.hpp"
#include "node/client_gate.hpp"
#include "node/engine_types.hpp"
#include "node/status_pages.hpp"
#include "transport/endpoint.hpp"

namespace macula::node {

class HttpSubscriptions;

/// The HTTP status a client gets for a library error (200 for none).
int http_status(std::error_code ec);

struct HttpApi {
  /// Runs a publish on the strand (the route is on it already): QoS 0, drop policy. Errors:
  /// queue_full.
  std::function<std::error_code(Outgoing&&)> publish;
  std::function<void(std::string procedure, Bytes args, detail::Completion<std::error_code, Bytes> done)> call;
  std::function<bool()> stopping;
  std::shared_ptr<HttpSubscriptions> subscriptions;  ///< the streaming GETs (strand)
  StatusPages pages;
  ClientGate gate;
  core::Counter* refusals = nullptr;  ///< client requests the gate refused

  /// 0, or the refusal (401/403) `req` gets from the gate, counted.
  int refuse(const transport::Request& req) const;
  /// Whether `path` is part of the client API the gate guards (publish, call, subscribe,
  /// /metrics).
  static bool client_route(std::string_view path);

  /// Registers the routes; they hold `api` and check `alive` before each use.
  static void install(transport::Endpoint& endpoint, std::shared_ptr<const HttpApi> api, std::weak_ptr<void> alive);
};

}  // namespace macula::node
