#include "node/node_metrics.hpp"

#include <algorithm>

#include "macula/error.hpp"

namespace macula::node {

NodeMetrics::NodeMetrics(const NodeOptions& options) : options_(options) {
  auto& m = registry;
  published[0] = &m.counter("macula_messages_published_total", "Publishes accepted by this node", {{"qos", "0"}});
  published[1] = &m.counter("macula_messages_published_total", "Publishes accepted by this node", {{"qos", "1"}});
  delivered = &m.counter("macula_messages_delivered_total",
                         "Messages matched to local subscriptions (those their queues lost are in macula_messages_dropped_total)");
  forwarded = &m.counter("macula_messages_forwarded_total", "PUBLISH frames sent to peers, re-sends included");
  const char* dh = "Messages dropped, by reason";
  drop_queue_full = &m.counter("macula_messages_dropped_total", dh, {{"reason", "publish_queue_full"}});
  drop_backpressure = &m.counter("macula_messages_dropped_total", dh, {{"reason", "link_backpressure"}});
  edge_drops = &m.counter("macula_publish_edge_drops_total",
                          "Publishes dropped in publish() itself, before any copy, because the publisher's last message "
                          "of that topic found every interested link full (also in macula_messages_dropped_total)");
  drop_no_link = &m.counter("macula_messages_dropped_total", dh, {{"reason", "no_link"}});
  drop_subscriber = &m.counter("macula_messages_dropped_total", dh, {{"reason", "subscriber_overflow"}});
  drop_no_route = &m.counter("macula_messages_dropped_total", dh, {{"reason", "no_route"}});
  held_discovery = &m.counter("macula_publish_held_for_discovery_total",
                              "Publishes that waited for their topic's subscriber lookup (bounded by discovery_hold)");
  relayed = &m.counter("macula_messages_relayed_total", "Messages this node relayed as a gateway, from or to its leaves");
  calls_relayed = &m.counter("macula_rpc_calls_relayed_total", "RPC calls this node relayed as a gateway, from or to its leaves");
  duplicates = &m.counter("macula_qos1_duplicates_total", "QoS 1 re-sends recognised and not delivered again");
  qos1_resent = &m.counter("macula_qos1_retries_total",
                           "QoS 1 messages sent again on a re-established link because the old one dropped before the ack");
  qos1_expired = &m.counter("macula_qos1_expired_total",
                            "QoS 1 publishes that gave up: a peer stayed unreachable past peer_grace");
  qos1_deferred = &m.counter("macula_qos1_deferred_total",
                             "QoS 1 messages held unacknowledged because a matching subscription queue was full (the publisher is slowed)");
  publish_blocked = &m.counter("macula_publish_blocked_total",
                               "Block-policy publishes that had to wait for room on a link or in the QoS 1 bounds");
  payload_refused = &m.counter("macula_payload_too_large_total",
                               "Publishes, RPC arguments and results refused for exceeding kMaxPayloadBytes");
  calls_started = &m.counter("macula_rpc_calls_started_total", "RPC calls made from this node");
  calls_served = &m.counter("macula_rpc_calls_served_total", "RPC calls this node's handlers answered");
  failovers = &m.counter("macula_rpc_failovers_total", "RPC attempts retried on another provider");
  cache_hits = &m.counter("macula_rpc_cache_hits_total", "Idempotent calls answered from the result cache");
  call_latency = &m.histogram("macula_rpc_latency_seconds", "RPC call latency as the caller saw it");
  for (const char* o : {"ok", "handler_error", "no_provider", "timed_out", "cancelled", "overloaded", "payload_too_large", "error"})
    call_outcomes_[o] = &m.counter("macula_rpc_calls_total", "RPC calls completed, by outcome", {{"outcome", o}});
  protocol_errors = &m.counter("macula_protocol_errors_total", "Links closed for a malformed or forged frame");
  realm_refusals = &m.counter("macula_realm_refusals_total",
                              "Peers refused because they did not prove the realm secret (links dialed, DHT answers)");
  client_refusals = &m.counter("macula_client_refusals_total",
                               "Client requests refused by the client access policy (no or a wrong token, or closed)");
  slow_disconnects = &m.counter("macula_slow_peer_disconnects_total",
                                "Links closed because the peer stopped reading (send buffer full past slow_peer_timeout)");
  dials_failed = &m.counter("macula_link_dials_failed_total",
                            "Links this node tried to open that did not come up (the peer did not answer, refused, or failed its proof)");
  links = &m.gauge("macula_links", "Live links to peer nodes");
  subscriptions = &m.gauge("macula_subscriptions", "Local subscriptions");
  pending_calls = &m.gauge("macula_rpc_pending_calls", "RPC calls waiting for a reply (bounded by max_pending_calls)");
  qos1_in_flight = &m.gauge("macula_qos1_in_flight", "QoS 1 messages waiting for acks (bounded by max_qos1_in_flight)");
  publish_queue = &m.gauge("macula_queue_depth", "Depth of a bounded queue", {{"queue", "publish"}});
  publish_queue_hw = &m.gauge("macula_queue_high_water", "Most items a bounded queue held at once", {{"queue", "publish"}});
  link_queue_bytes = &m.gauge("macula_link_queue_bytes",
                              "Payload bytes of publishes waiting on links for send-buffer room (each link bounded by link_queue_bytes)");
  http_up = &m.gauge("macula_http_status_up", "1 when the plain-HTTP status pages are listening");
}

void NodeMetrics::count_call(std::error_code ec) {
  const char* outcome = "error";
  if (!ec) outcome = "ok";
  else if (ec == errc::handler_error) outcome = "handler_error";
  else if (ec == errc::no_provider) outcome = "no_provider";
  else if (ec == errc::timed_out) outcome = "timed_out";
  else if (ec == errc::cancelled) outcome = "cancelled";
  else if (ec == errc::overloaded) outcome = "overloaded";
  else if (ec == errc::payload_too_large) outcome = "payload_too_large";
  call_outcomes_.at(outcome)->inc();
}

std::string NodeMetrics::render(std::vector<SubscriptionRow> rows) const {
  std::string out = registry.render();
  const std::size_t n = std::min(rows.size(), options_.metrics_top_subscriptions);
  std::partial_sort(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(n), rows.end(),
                    [](const SubscriptionRow& a, const SubscriptionRow& b) {
                      return a.dropped != b.dropped ? a.dropped > b.dropped : a.id < b.id;
                    });
  rows.resize(n);
  auto series = [&](const char* name, const char* type, const char* help, auto value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    for (const auto& r : rows)
      out += std::string(name) + "{subscription=\"" + std::to_string(r.id) + "\",pattern=\"" +
             observe::escape_label_value(r.pattern) + "\"} " + std::to_string(value(r)) + "\n";
  };
  series("macula_subscription_dropped_total", "counter",
         "Messages a subscription's queue lost (the metrics_top_subscriptions subscriptions with most drops)",
         [](const SubscriptionRow& r) { return r.dropped; });
  series("macula_subscription_queue_depth", "gauge", "Messages waiting in a subscription's queue (same subscriptions)",
         [](const SubscriptionRow& r) { return r.depth; });
  return out;
}

void NodeMetrics::check_health(Clock::time_point now, const std::vector<std::pair<std::string, std::size_t>>& depths,
                               std::string links_lost, const observe::Logger& log) {
  std::string reason;
  std::map<std::string, Clock::time_point> still_over;
  for (const auto& [name, depth] : depths) {
    if (depth <= options_.health_queue_threshold) continue;
    auto it = over_since_.find(name);
    const auto since = it == over_since_.end() ? now : it->second;
    still_over.emplace(name, since);
    if (now - since >= options_.health_queue_grace && reason.empty())
      reason = "queue " + name + " holds " + std::to_string(depth) + " items, past its threshold of " +
               std::to_string(options_.health_queue_threshold) + " for " +
               std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - since).count()) + " s";
  }
  over_since_.swap(still_over);
  if (reason.empty()) reason = std::move(links_lost);
  std::string previous;
  {
    std::lock_guard lock(health_mutex_);
    if (reason == not_ready_reason_) return;
    previous = std::exchange(not_ready_reason_, reason);
  }
  if (reason.empty()) log.log(LogLevel::info, "health", "ready again (was: " + previous + ")");
  else log.log(LogLevel::warn, "health", "not ready: " + reason);
}

std::pair<bool, std::string> NodeMetrics::readiness(bool stopping) const {
  if (stopping) return {false, "stopping"};
  std::lock_guard lock(health_mutex_);
  return {not_ready_reason_.empty(), not_ready_reason_};
}

}  // namespace macula::node
