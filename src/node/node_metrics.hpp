// NodeMetrics: the node's counters and gauges, the Prometheus rendering with the top-N
// subscriptions, and the readiness verdict.
//
// The engine parts hold pointers to the counters they bump (core::Counter writes per-thread
// cells: no shared line on the hot path). The verdict is computed once a second on the strand
// (check_health) from depths the composition root gathers, and read from any thread under a
// small mutex, so a scrape never waits for a busy strand: a busy strand is what it reports.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "macula/core/metrics.hpp"
#include "macula/node_options.hpp"
#include "macula/observe/metrics_registry.hpp"
#include "node/engine_types.hpp"
#include "observe/logger.hpp"

namespace macula::node {

class NodeMetrics {
 public:
  explicit NodeMetrics(const NodeOptions& options);

  observe::MetricsRegistry registry;

  // Pub/sub.
  core::Counter* published[2];  ///< by QoS
  core::Counter* delivered;
  core::Counter* forwarded;
  core::Counter* drop_queue_full;
  core::Counter* drop_backpressure;
  core::Counter* edge_drops;  ///< the part of drop_backpressure dropped in publish() itself
  core::Counter* drop_no_link;
  core::Counter* drop_subscriber;
  core::Counter* drop_no_route;      ///< no local subscriber and no peer wanted it (after discovery)
  core::Counter* held_discovery;     ///< publishes that waited for their topic's subscriber lookup
  core::Counter* relayed;            ///< messages this gateway relayed for its leaves (both ways)
  core::Counter* calls_relayed;      ///< RPC calls this gateway relayed for its leaves (both ways)
  core::Counter* duplicates;
  core::Counter* qos1_resent;
  core::Counter* qos1_expired;
  core::Counter* qos1_deferred;
  core::Counter* publish_blocked;
  core::Counter* payload_refused;
  // RPC.
  core::Counter* calls_started;
  core::Counter* calls_served;
  core::Counter* failovers;
  core::Counter* cache_hits;
  core::Histogram* call_latency;
  // Links.
  core::Counter* protocol_errors;
  core::Counter* realm_refusals;    ///< peers refused for lacking the realm proof (links and DHT)
  core::Counter* client_refusals;   ///< client requests refused by the client access policy
  core::Counter* slow_disconnects;
  core::Counter* dials_failed;
  // Gauges the strand sets (update_gauges) and scrapes read.
  core::Gauge* links;
  core::Gauge* subscriptions;
  core::Gauge* pending_calls;
  core::Gauge* qos1_in_flight;
  core::Gauge* publish_queue;
  core::Gauge* publish_queue_hw;
  core::Gauge* link_queue_bytes;
  core::Gauge* http_up;

  /// The outcome label of a finished call ("ok", "timed_out", ...), counted.
  void count_call(std::error_code ec);

  /// One subscription as the top-N series show it.
  struct SubscriptionRow {
    std::uint64_t id;
    std::string pattern;
    std::uint64_t dropped;
    std::size_t depth;
  };
  /// The registry's series plus the `metrics_top_subscriptions` rows with most drops.
  std::string render(std::vector<SubscriptionRow> rows) const;

  /// Strand, once a second. `depths`: every queue's name and depth; `links_lost`: the node
  /// expects links and has none (the reason says which). Logs transitions.
  void check_health(Clock::time_point now, const std::vector<std::pair<std::string, std::size_t>>& depths,
                    std::string links_lost, const observe::Logger& log);
  /// Any thread: (ready, why not).
  std::pair<bool, std::string> readiness(bool stopping) const;

 private:
  const NodeOptions& options_;
  std::map<std::string, core::Counter*> call_outcomes_;
  mutable std::mutex health_mutex_;
  std::string not_ready_reason_;                         // empty: ready
  std::map<std::string, Clock::time_point> over_since_;  // strand: queues past the threshold
};

}  // namespace macula::node
