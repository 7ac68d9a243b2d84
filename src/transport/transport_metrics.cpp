#include "transport/transport_metrics.hpp"

#include <string>
#include <vector>

namespace macula::transport {
namespace {

template <class Stats>
struct SeriesDef {
  const char* name;
  const char* help;
  bool counter;
  double (*field)(const Stats&);
};

// Registers each series as a callback reading `source->stats()` through a weak reference, and
// returns the function that removes them again.
template <class Source, class Stats>
std::function<void()> register_series(observe::MetricsRegistry& r, const std::shared_ptr<Source>& source,
                                      const std::vector<SeriesDef<Stats>>& defs, const observe::Labels& labels) {
  std::weak_ptr<Source> weak = source;
  std::vector<std::string> names;
  for (const auto& d : defs) {
    auto read = [weak, field = d.field] {
      auto s = weak.lock();
      return s ? field(s->stats()) : 0.0;
    };
    if (d.counter) r.counter_callback(d.name, d.help, labels, read);
    else r.gauge_callback(d.name, d.help, labels, read);
    names.emplace_back(d.name);
  }
  return [&r, names, labels] {
    for (const auto& n : names) r.remove_gauge_callback(n, labels);
  };
}

}  // namespace

std::function<void()> export_metrics(observe::MetricsRegistry& r, const std::shared_ptr<Endpoint>& ep,
                                     const observe::Labels& labels) {
  using S = EndpointStats;
  static const std::vector<SeriesDef<S>> defs = {
      {"macula_transport_connections", "Open QUIC connections (nodes and clients).", false,
       [](const S& s) { return double(s.connections); }},
      {"macula_transport_clients", "Connections from clients (peers without a node certificate).", false,
       [](const S& s) { return double(s.clients); }},
      {"macula_transport_datagrams_received_total", "UDP datagrams received.", true,
       [](const S& s) { return double(s.datagrams_received); }},
      {"macula_transport_datagrams_sent_total", "UDP datagrams sent.", true,
       [](const S& s) { return double(s.datagrams_sent); }},
      {"macula_transport_datagrams_dropped_total",
       "Datagrams dropped: garbage, unknown connection ids, truncated, over limits.", true,
       [](const S& s) { return double(s.datagrams_dropped); }},
      {"macula_transport_send_would_block_total", "Times the socket pushed back (the tail is kept, not dropped).",
       true, [](const S& s) { return double(s.send_would_block); }},
      {"macula_transport_handshakes_total", "Completed QUIC handshakes.", true,
       [](const S& s) { return double(s.handshakes_completed); }},
      {"macula_transport_clients_refused_total", "Clients refused past max_clients.", true,
       [](const S& s) { return double(s.clients_refused); }},
      {"macula_transport_retries_total", "Retry packets sent (address validation).", true,
       [](const S& s) { return double(s.retries_sent); }},
      {"macula_transport_stateless_resets_sent_total", "Stateless resets sent.", true,
       [](const S& s) { return double(s.stateless_resets_sent); }},
      {"macula_transport_stateless_resets_received_total", "Connections ended by a peer's stateless reset.", true,
       [](const S& s) { return double(s.stateless_resets_received); }},
      {"macula_transport_version_negotiations_sent_total",
       "Version Negotiation packets sent (answers to Initials of a QUIC version this endpoint does not speak).", true,
       [](const S& s) { return double(s.version_negotiations_sent); }},
      {"macula_transport_sessions", "Open session and streaming-route streams.", false,
       [](const S& s) { return double(s.sessions); }},
      {"macula_transport_session_bytes_buffered", "Unacknowledged bytes queued on all sessions (bounded per session).",
       false, [](const S& s) { return double(s.session_bytes_buffered); }},
      {"macula_transport_session_sends_refused_total", "Session sends refused by the buffer bound (backpressure).",
       true, [](const S& s) { return double(s.session_sends_refused); }},
      {"macula_transport_body_bytes_buffered",
       "Request-body bytes held in memory (bounded per connection and by max_buffered_body_bytes).", false,
       [](const S& s) { return double(s.body_bytes_buffered); }},
      {"macula_transport_bodies_refused_total", "Requests answered 503 because a request-body memory bound was reached.",
       true, [](const S& s) { return double(s.bodies_refused); }},
      {"macula_transport_requests_refused_total",
       "Requests refused at their head (no client token, no realm proof) before any body was kept.", true,
       [](const S& s) { return double(s.requests_refused); }},
      {"macula_transport_bodies_timed_out_total", "Uploads stopped (408): the body stalled past body_idle_timeout or passed body_deadline.",
       true, [](const S& s) { return double(s.bodies_timed_out); }},
  };
  return register_series(r, ep, defs, labels);
}

std::function<void()> export_metrics(observe::MetricsRegistry& r, const std::shared_ptr<ConnectionPool>& pool,
                                     const observe::Labels& labels) {
  using S = PoolStats;
  static const std::vector<SeriesDef<S>> defs = {
      {"macula_pool_size", "Pooled connections.", false, [](const S& s) { return double(s.size); }},
      {"macula_pool_hits_total", "get() answered by a pooled connection.", true,
       [](const S& s) { return double(s.hits); }},
      {"macula_pool_misses_total", "get() that started a dial.", true, [](const S& s) { return double(s.misses); }},
      {"macula_pool_collapsed_total", "get() that joined a dial already in flight.", true,
       [](const S& s) { return double(s.collapsed); }},
      {"macula_pool_evictions_total", "Connections closed to stay within max_size.", true,
       [](const S& s) { return double(s.evictions); }},
      {"macula_pool_reaped_total", "Idle connections closed by the reaper.", true,
       [](const S& s) { return double(s.reaped); }},
      {"macula_pool_dial_failures_total", "Dials that failed.", true, [](const S& s) { return double(s.failures); }},
  };
  return register_series(r, pool, defs, labels);
}

}  // namespace macula::transport
