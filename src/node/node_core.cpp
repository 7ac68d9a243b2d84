#include "node/node_core.hpp"

#include <algorithm>
#include <exception>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>
#include <variant>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "macula/core/concurrent_cache.hpp"
#include "macula/core/pattern_trie.hpp"
#include "macula/core/provider_selector.hpp"
#include "macula/error.hpp"
#include "macula/names.hpp"
#include "macula/observe/metrics_registry.hpp"
#include "observe/logger.hpp"
#include "dht/dht_discovery.hpp"
#include "node/discovery.hpp"
#include "node/dispatch_queue.hpp"
#include "node/reply_slot.hpp"
#include "node/subscription.hpp"
#include "pubsub/dedup_window.hpp"
#include "pubsub/local_interest.hpp"
#include "pubsub/qos1_tracker.hpp"
#include "pubsub/remote_interest.hpp"
#include "rpc/pending_calls.hpp"
#include "transport/connection_pool.hpp"
#include "transport/realm_guard.hpp"
#include "transport/transport_metrics.hpp"
#include "wire/frame.hpp"
#include "wire/frame_reader.hpp"

namespace macula::node {

namespace asio = boost::asio;
using udp = asio::ip::udp;
using Clock = std::chrono::steady_clock;
using PeerKey = std::uint64_t;
using LinkId = std::uint64_t;
using BodyPtr = std::shared_ptr<const detail::MessageBody>;

namespace {
constexpr const char* kSessionPath = "/macula/v1/session";
constexpr const char* kDhtPath = "/macula/v1/dht";
constexpr PeerKey kLocal = 0;  // the "provider" key of this node itself
constexpr std::size_t kAckChunk = wire::kMaxListItems;

Bytes to_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }
}  // namespace

std::error_code parse_address(std::string_view text, udp::endpoint& out) {
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return errc::address_invalid;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return errc::address_invalid;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return errc::address_invalid;
  const unsigned long p = std::stoul(std::string(port));
  if (p > 65535) return errc::address_invalid;
  boost::system::error_code bec;
  auto addr = asio::ip::make_address(std::string(host), bec);
  if (bec) return errc::address_invalid;
  out = udp::endpoint(addr, static_cast<unsigned short>(p));
  return {};
}

std::string format_address(const udp::endpoint& e) {
  const std::string host = e.address().to_string();
  return (e.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(e.port());
}

class NodeCore::Impl : public std::enable_shared_from_this<NodeCore::Impl>, public dht::DhtTransport {
 public:
  // ---- state types --------------------------------------------------------------------------
  struct Link {
    LinkId id = 0;
    PeerKey peer = 0;
    std::shared_ptr<transport::Session> session;
    std::shared_ptr<transport::Connection> connection;  // dialed links keep their connection
    wire::FrameReader reader;
    Bytes out;                 // frames batched for one send
    std::size_t out_qos0 = 0;  // QoS 0 publishes in `out` (dropped if the send is refused)
    std::vector<std::uint64_t> acks;
    bool interest_synced = false;
    bool dirty = false;  // listed in Impl::dirty, to be flushed at the end of the batch
    Clock::time_point refusing_since{};  // first refused send of the current full spell
    bool closing_slow = false;           // disconnect_slow_peer is on its way
  };
  struct Peer {
    PeerKey key = 0;
    NodeId id;
    std::vector<LinkId> links;  // newest last; the newest carries traffic
    std::optional<udp::endpoint> redial;
    std::chrono::milliseconds backoff{100};
    bool dialing = false;
    Clock::time_point gone_since{};
    std::set<std::string> provides;
    std::shared_ptr<asio::steady_timer> redial_timer;
  };
  struct Procedure {
    std::string name;
    RpcHandler handler;
    AdvertiseOptions options;
    std::size_t in_flight = 0;
  };
  struct Outgoing {
    std::string topic;
    Bytes payload;
    Qos qos;
    detail::Completion<std::error_code> done;
  };
  struct CallState {
    std::string procedure;
    std::shared_ptr<const Bytes> args;
    Clock::time_point started;
    Clock::time_point deadline;
    std::chrono::milliseconds attempt_timeout{0};
    unsigned max_attempts = 0;
    unsigned attempts = 0;
    SelectionStrategy strategy = SelectionStrategy::round_robin;
    std::vector<PeerKey> tried;
    std::error_code last_error = errc::no_provider;
    std::uint64_t pending_id = 0;
    bool finished = false;
    bool discovered = false;  // discovery was asked once already
    detail::Completion<std::error_code, Bytes> done;
  };
  struct ProviderSet;
  struct Attempt {
    std::shared_ptr<CallState> call;
    LinkId link = 0;
    PeerKey peer = 0;
    std::shared_ptr<ProviderSet> set;  // for the selector's outstanding-call count
    std::size_t index = 0;
  };
  using Tracker = pubsub::Qos1Tracker<BodyPtr, detail::Completion<std::error_code>>;

  Impl(asio::io_context& io, NodeOptions o)
      : options(std::move(o)),
        log(options.log_sink, options.log_level),
        io_(io),
        trie(options.shards),
        remote(options.max_patterns_per_link, options.shards),
        pending(options.max_pending_calls),
        qos1(options.max_qos1_in_flight),
        dedup(options.max_dedup_publishers),
        result_cache(core::CacheOptions{options.result_cache_capacity, options.shards, std::chrono::nanoseconds{0}}) {
    if (options.handler_executor) {
      executor = options.handler_executor;
    } else {
      workers = std::make_unique<asio::thread_pool>(options.worker_threads == 0 ? 1 : options.worker_threads);
      executor = [pool = workers.get()](core::detail::UniqueFunction<void()> f) { asio::post(*pool, std::move(f)); };
    }
    dispatch = std::make_shared<DispatchQueue>(executor, options.worker_threads);
    tasks = std::make_shared<TaskQueue>(executor, options.worker_threads);
    register_metrics();
  }

  std::error_code start(transport::Identity identity) {
    std::error_code ec;
    options.realm = normalize_realm(options.realm, ec);
    if (ec) return ec;
    udp::endpoint listen;
    if ((ec = parse_address(options.listen, listen))) return ec;
    transport::EndpointOptions eo;
    eo.identity = std::move(identity);
    eo.max_clients = options.max_clients;
    eo.connect_timeout = options.connect_timeout;
    eo.idle_timeout = options.idle_timeout;
    eo.keep_alive = std::chrono::seconds(15);  // links are long-lived: keep NAT and idle timers alive
    endpoint = transport::Endpoint::create(io_, std::move(eo), listen, ec);
    if (ec) return ec;
    strand.emplace(endpoint->strand());
    call_timer.emplace(*strand);
    qos1_timer.emplace(*strand);
    housekeeping_timer.emplace(*strand);
    unexport_transport = transport::export_metrics(metrics, endpoint, {});
    std::weak_ptr<Impl> weak = shared_from_this();
    endpoint->session_route(
        kSessionPath, transport::realm_guarded(policy(), endpoint->node_id(),
                                               [weak](const transport::Request& head, std::shared_ptr<transport::Session> s,
                                                      transport::SessionCallbacks& cb) {
                                                 auto self = weak.lock();
                                                 if (!self || !head.peer || self->stopping_flag) return 401;
                                                 self->attach(std::move(s), *head.peer, nullptr, cb);
                                                 return 200;
                                               }));
    std::weak_ptr<Impl> weak_self = shared_from_this();
    pages.metrics = [weak_self] {
      auto self = weak_self.lock();
      return self ? self->render_metrics() : std::string();
    };
    pages.health = [weak_self]() -> std::pair<bool, std::string> {
      auto self = weak_self.lock();
      return self ? self->readiness() : std::pair<bool, std::string>{false, "stopping"};
    };
    serve_http();
    if (options.dht) {
      pool = transport::ConnectionPool::create(io_, endpoint, transport::PoolOptions{});
      unexport_pool = transport::export_metrics(metrics, pool, {});
      discovery = std::make_unique<dht::DhtDiscovery>(self_id(), format_address(endpoint->local_endpoint()), options.realm,
                                                       *this, dht::DhtDiscovery::Options{});
      serve_dht();
    }
    asio::dispatch(*strand, [self = shared_from_this()] { self->housekeeping(); });
    log.log_with(LogLevel::info, "node", [&] {
      return "node " + short_id(self_id()) + " started on " + format_address(endpoint->local_endpoint()) +
             " in realm " + options.realm + (options.dht ? " with the DHT" : "");
    });
    return {};
  }

  static std::string short_id(const NodeId& id) { return id.to_hex().substr(0, 12); }

  transport::RealmPolicy policy() const { return {options.realm, options.realm_secret}; }
  const NodeId& self_id() const { return endpoint->node_id(); }

  // ---- metrics ------------------------------------------------------------------------------
  observe::MetricsRegistry metrics;
  core::Counter* published[2];
  core::Counter* delivered;
  core::Counter* forwarded;
  core::Counter* drop_queue_full;
  core::Counter* drop_backpressure;
  core::Counter* drop_no_link;
  core::Counter* drop_subscriber;
  core::Counter* duplicates;
  core::Counter* qos1_retries;
  core::Counter* qos1_expired;
  core::Counter* calls_started;
  core::Counter* calls_served;
  core::Counter* failovers;
  core::Counter* cache_hits;
  core::Counter* protocol_errors;
  core::Counter* slow_disconnects;
  core::Counter* qos1_deferred;
  core::Gauge* g_http_up;
  std::map<std::string, core::Counter*> call_outcomes;
  core::Histogram* call_latency;
  core::Gauge* g_links;
  core::Gauge* g_subscriptions;
  core::Gauge* g_pending;
  core::Gauge* g_qos1;
  core::Gauge* g_outbox;
  core::Gauge* g_outbox_hw;
  std::function<void()> unexport_transport, unexport_pool;

  void register_metrics() {
    auto& m = metrics;
    published[0] = &m.counter("macula_messages_published_total", "Publishes accepted by this node", {{"qos", "0"}});
    published[1] = &m.counter("macula_messages_published_total", "Publishes accepted by this node", {{"qos", "1"}});
    delivered = &m.counter("macula_messages_delivered_total", "Messages matched to local subscriptions (those their queues lost are in macula_messages_dropped_total)");
    forwarded = &m.counter("macula_messages_forwarded_total", "PUBLISH frames sent to peers, retries included");
    const char* dh = "Messages dropped, by reason";
    drop_queue_full = &m.counter("macula_messages_dropped_total", dh, {{"reason", "publish_queue_full"}});
    drop_backpressure = &m.counter("macula_messages_dropped_total", dh, {{"reason", "link_backpressure"}});
    drop_no_link = &m.counter("macula_messages_dropped_total", dh, {{"reason", "no_link"}});
    drop_subscriber = &m.counter("macula_messages_dropped_total", dh, {{"reason", "subscriber_overflow"}});
    duplicates = &m.counter("macula_qos1_duplicates_total", "QoS 1 re-sends recognised and not delivered again");
    qos1_retries = &m.counter("macula_qos1_retries_total", "QoS 1 messages re-sent to a peer that had not acknowledged");
    qos1_expired = &m.counter("macula_qos1_expired_total", "QoS 1 publishes that ran out of attempts");
    calls_started = &m.counter("macula_rpc_calls_started_total", "RPC calls made from this node");
    calls_served = &m.counter("macula_rpc_calls_served_total", "RPC calls this node's handlers answered");
    failovers = &m.counter("macula_rpc_failovers_total", "RPC attempts retried on another provider");
    cache_hits = &m.counter("macula_rpc_cache_hits_total", "Idempotent calls answered from the result cache");
    protocol_errors = &m.counter("macula_protocol_errors_total", "Links closed for a malformed or forged frame");
    slow_disconnects = &m.counter("macula_slow_peer_disconnects_total",
                                  "Links closed because the peer stopped reading (send buffer full past slow_peer_timeout)");
    qos1_deferred = &m.counter("macula_qos1_deferred_total",
                               "QoS 1 messages left unacknowledged because a matching subscription queue was full (re-sent later)");
    m.counter_callback("macula_qos1_too_old_total",
                       "QoS 1 messages delivered although older than the de-duplication window (possible duplicates; each second)",
                       {}, [this] { return static_cast<double>(dedup_too_old.load(std::memory_order_relaxed)); });
    g_http_up = &m.gauge("macula_http_status_up", "1 when the plain-HTTP status pages are listening");
    m.gauge_callback("macula_ready", "1 when /ready answers 200", {}, [this] { return readiness().first ? 1.0 : 0.0; });
    for (const char* o : {"ok", "handler_error", "no_provider", "timed_out", "cancelled", "overloaded", "error"})
      call_outcomes[o] = &m.counter("macula_rpc_calls_total", "RPC calls completed, by outcome", {{"outcome", o}});
    call_latency = &m.histogram("macula_rpc_latency_seconds", "RPC call latency as the caller saw it");
    g_links = &m.gauge("macula_links", "Live links to peer nodes");
    g_subscriptions = &m.gauge("macula_subscriptions", "Local subscriptions");
    g_pending = &m.gauge("macula_rpc_pending_calls", "RPC calls waiting for a reply (bounded by max_pending_calls)");
    g_qos1 = &m.gauge("macula_qos1_in_flight", "QoS 1 messages waiting for acks (bounded by max_qos1_in_flight)");
    g_outbox = &m.gauge("macula_queue_depth", "Depth of a bounded queue", {{"queue", "publish"}});
    g_outbox_hw = &m.gauge("macula_queue_high_water", "Most items a bounded queue held at once", {{"queue", "publish"}});
    for (const char* kind : {"hits", "misses", "evictions"}) {
      const std::string k = kind;
      m.counter_callback("macula_cache_" + k + "_total", "Cache " + k + ", per cache", {{"cache", "rpc_results"}}, [this, k] {
        const auto st = result_cache.stats();
        return static_cast<double>(k == "hits" ? st.hits : k == "misses" ? st.misses : st.evictions);
      });
      m.counter_callback("macula_cache_" + k + "_total", "Cache " + k + ", per cache", {{"cache", "dht_providers"}},
                         [this, k] {
                           const auto& a = k == "hits" ? dht_view.cache_hits : k == "misses" ? dht_view.cache_misses
                                                                                             : dht_view.cache_evictions;
                           return static_cast<double>(a.load(std::memory_order_relaxed));
                         });
    }
    m.gauge_callback("macula_cache_size", "Entries in a cache", {{"cache", "rpc_results"}},
                     [this] { return static_cast<double>(result_cache.stats().size); });
    m.gauge_callback("macula_dht_routing_table_size", "Contacts in the DHT routing table (updated each second)", {},
                     [this] { return static_cast<double>(dht_view.table_size.load(std::memory_order_relaxed)); });
    m.gauge_callback("macula_dht_records_stored", "DHT records this node stores for others (updated each second)", {},
                     [this] { return static_cast<double>(dht_view.records.load(std::memory_order_relaxed)); });
    m.gauge_callback("macula_queue_depth", "Depth of a bounded queue", {{"queue", "handler_tasks"}},
                     [this] { return static_cast<double>(tasks->depth()); });
    m.gauge_callback("macula_queue_high_water", "Most items a bounded queue held at once", {{"queue", "handler_tasks"}},
                     [this] { return static_cast<double>(tasks->high_water()); });
    m.gauge_callback("macula_queue_depth", "Depth of a bounded queue", {{"queue", "dispatch"}},
                     [this] { return static_cast<double>(dispatch->depth()); });
    m.gauge_callback("macula_queue_high_water", "Most items a bounded queue held at once", {{"queue", "dispatch"}},
                     [this] { return static_cast<double>(dispatch->high_water()); });
  }

  void update_gauges() {
    g_links->set(static_cast<double>(links.size()));
    g_subscriptions->set(static_cast<double>(subscriptions.size()));
    g_pending->set(static_cast<double>(pending.size()));
    g_qos1->set(static_cast<double>(qos1.size()));
  }

  // ---- HTTP/3 for external clients ----------------------------------------------------------
  void serve_http() {
    static const std::string kPub = "/macula/v1/pub/", kRpc = "/macula/v1/rpc/";
    std::weak_ptr<Impl> weak = shared_from_this();
    auto text_response = [](int status, const std::string& body) {
      transport::Response r;
      r.status = status;
      r.headers.push_back({"content-type", "text/plain"});
      r.body.assign(body.begin(), body.end());
      return r;
    };
    endpoint->route("POST", kPub, [weak, text_response](transport::Request&& req, transport::Responder respond) {
      auto self = weak.lock();
      if (!self || self->stopping_flag) return respond(text_response(503, "stopping\n"));
      const std::string topic = req.path.substr(kPub.size());
      if (auto ec = validate_topic(topic)) return respond(text_response(400, ec.message() + "\n"));
      // Runs on the strand already: publish inline, no queue hop.
      self->process(Outgoing{topic, std::move(req.body), Qos::at_most_once, {}});
      self->flush_links();
      respond(text_response(202, "published\n"));
    });
    endpoint->route("POST", kRpc, [weak, text_response](transport::Request&& req, transport::Responder respond) {
      auto self = weak.lock();
      if (!self || self->stopping_flag) return respond(text_response(503, "stopping\n"));
      const std::string procedure = req.path.substr(kRpc.size());
      auto done = detail::Completion<std::error_code, Bytes>(
          [respond, text_response](std::error_code ec, Bytes result) {
            if (!ec) {
              transport::Response r;
              r.body = std::move(result);
              return respond(std::move(r));
            }
            int status = 500;
            if (ec == errc::no_provider) status = 404;
            else if (ec == errc::timed_out) status = 504;
            else if (ec == errc::overloaded || ec == errc::too_many_pending) status = 503;
            else if (ec.category() == error_category() && ec.value() <= static_cast<int>(errc::name_wildcard_not_allowed))
              status = 400;
            const std::string msg = ec == errc::handler_error ? std::string(result.begin(), result.end()) : ec.message();
            respond(text_response(status, msg + "\n"));
          });
      self->start_call(procedure, std::move(req.body), CallOptions{}, std::move(done));
    });
    // The status pages over HTTP/3: the same StatusPages the plain-HTTP server answers from.
    for (std::string_view path : StatusPages::kPaths)
      endpoint->route("GET", std::string(path), [weak](transport::Request&& req, transport::Responder respond) {
        auto self = weak.lock();
        const StatusPage page = self ? self->pages.answer(req.path) : StatusPage{503, "text/plain", "not ready: stopping\n"};
        transport::Response r;
        r.status = page.status;
        r.headers.push_back({"content-type", page.content_type});
        r.body.assign(page.body.begin(), page.body.end());
        respond(std::move(r));
      });
  }

  // ---- health, per-subscription series, slow peers (docs/OPERATIONS.md) ---------------------
  // Any thread: the verdict housekeeping last reached, plus "stopping" at once.
  std::pair<bool, std::string> readiness() const {
    if (stopping_flag) return {false, "stopping"};
    std::lock_guard lock(health_mutex);
    return {not_ready_reason.empty(), not_ready_reason};
  }

  // Strand, once a second: which queue stayed past the threshold, or whether all links are gone.
  void check_health(Clock::time_point now) {
    std::vector<std::pair<std::string, std::size_t>> depths;
    {
      std::lock_guard lock(inbox_mutex);
      depths.emplace_back("publish", inbox_publishes);
    }
    depths.emplace_back("dispatch", dispatch->depth());
    depths.emplace_back("handler_tasks", tasks->depth());
    {
      std::lock_guard lock(subscriptions_mutex);
      for (const auto& [id, sub] : subscriptions)
        if (sub->queued() > options.health_queue_threshold)
          depths.emplace_back("subscription " + std::to_string(id) + " (" + *sub->pattern() + ")", sub->queued());
    }
    std::string reason;
    std::map<std::string, Clock::time_point> still_over;
    for (const auto& [name, depth] : depths) {
      if (depth <= options.health_queue_threshold) continue;
      auto it = over_since.find(name);
      const auto since = it == over_since.end() ? now : it->second;
      still_over.emplace(name, since);
      if (now - since >= options.health_queue_grace && reason.empty())
        reason = "queue " + name + " holds " + std::to_string(depth) + " items, past its threshold of " +
                 std::to_string(options.health_queue_threshold) + " for " +
                 std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - since).count()) + " s";
    }
    over_since.swap(still_over);
    // Only a node that dials peers (bootstrap or connect(), which keep re-dialing) expects
    // links: peers that dialed in and left (short-lived clients, tests) do not make a seed
    // node unready.
    const bool expects_links = std::any_of(peers.begin(), peers.end(), [](const auto& p) { return p.second.redial.has_value(); });
    if (reason.empty() && links.empty() && (expects_links || !options.bootstrap.empty()))
      reason = had_link ? "lost all links to peers" : "no link to any peer yet";
    std::string previous;
    {
      std::lock_guard lock(health_mutex);
      if (reason == not_ready_reason) return;
      previous = std::exchange(not_ready_reason, reason);
    }
    if (reason.empty()) log.log(LogLevel::info, "health", "ready again (was: " + previous + ")");
    else log.log(LogLevel::warn, "health", "not ready: " + reason);
  }

  // Any thread: the registry's series plus the top-N subscriptions by drops.
  std::string render_metrics() const {
    std::string out = metrics.render();
    struct Row {
      std::uint64_t id;
      std::string pattern;
      std::uint64_t dropped;
      std::size_t depth;
    };
    std::vector<Row> rows;
    {
      std::lock_guard lock(subscriptions_mutex);
      rows.reserve(subscriptions.size());
      for (const auto& [id, sub] : subscriptions) rows.push_back({id, *sub->pattern(), sub->dropped(), sub->queued()});
    }
    const std::size_t n = std::min(rows.size(), options.metrics_top_subscriptions);
    std::partial_sort(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(n), rows.end(),
                      [](const Row& a, const Row& b) { return a.dropped != b.dropped ? a.dropped > b.dropped : a.id < b.id; });
    rows.resize(n);
    auto series = [&](const char* name, const char* type, const char* help, auto value) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
      for (const auto& r : rows)
        out += std::string(name) + "{subscription=\"" + std::to_string(r.id) + "\",pattern=\"" +
               observe::escape_label_value(r.pattern) + "\"} " + std::to_string(value(r)) + "\n";
    };
    series("macula_subscription_dropped_total", "counter",
           "Messages a subscription's queue lost (the metrics_top_subscriptions subscriptions with most drops)",
           [](const Row& r) { return r.dropped; });
    series("macula_subscription_queue_depth", "gauge", "Messages waiting in a subscription's queue (same subscriptions)",
           [](const Row& r) { return r.depth; });
    return out;
  }

  // Strand: links whose peer stopped reading (its send buffer refused frames continuously for
  // slow_peer_timeout and is still more than half full) are closed.
  void check_slow_peers(Clock::time_point now) {
    const std::size_t half = transport::EndpointOptions{}.session_send_buffer / 2;
    std::vector<LinkId> slow;
    for (auto& [id, link] : links) {
      if (link.refusing_since == Clock::time_point{}) continue;
      if (link.session->buffered() < half) link.refusing_since = {};
      else if (now - link.refusing_since >= options.slow_peer_timeout) slow.push_back(id);
    }
    for (LinkId id : slow) disconnect_slow_peer(id, now);
  }

  void disconnect_slow_peer(LinkId id, Clock::time_point now) {
    auto it = links.find(id);
    if (it == links.end()) return;
    slow_disconnects->inc();
    auto session = it->second.session;
    auto connection = it->second.connection;
    const std::size_t buffered = session->buffered();
    const auto spell = std::chrono::duration_cast<std::chrono::milliseconds>(now - it->second.refusing_since).count();
    const auto peer = peers.find(it->second.peer);
    log.log_with(LogLevel::warn, "link", [&] {
      return "peer " + (peer == peers.end() ? std::string("?") : short_id(peer->second.id)) +
             " stopped reading: its send buffer held " + std::to_string(buffered) + " bytes and refused frames for " +
             std::to_string(spell) + " ms; closing its connection (slow_peer_timeout)";
    });
    drop_link(id);
    if (connection) connection->close(transport::CloseCode::slow_consumer, "slow consumer");
    else session->close_connection(transport::CloseCode::slow_consumer, "slow consumer");
  }

  // ---- peers and links ----------------------------------------------------------------------
  Peer& peer_for(const NodeId& id) {
    auto it = peer_keys.find(id);
    if (it != peer_keys.end()) return peers.at(it->second);
    const PeerKey key = ++last_peer;
    peer_keys.emplace(id, key);
    Peer& p = peers[key];
    p.key = key;
    p.id = id;
    return p;
  }

  PeerKey attach(std::shared_ptr<transport::Session> s, const NodeId& peer_id,
                 std::shared_ptr<transport::Connection> conn, transport::SessionCallbacks& cb) {
    const LinkId id = ++last_link;
    had_link = true;
    Peer& peer = peer_for(peer_id);
    peer.links.push_back(id);
    peer.backoff = std::chrono::milliseconds(100);
    Link& link = links[id];
    link.id = id;
    link.peer = peer.key;
    link.session = std::move(s);
    link.connection = std::move(conn);
    std::weak_ptr<Impl> weak = shared_from_this();
    cb.on_data = [weak, id](std::span<const std::uint8_t> bytes) {
      if (auto self = weak.lock()) self->on_data(id, bytes);
    };
    cb.on_close = [weak, id](std::error_code) {
      if (auto self = weak.lock()) self->drop_link(id);
    };
    wire::Hello hello;
    hello.node_id = self_id();
    hello.realm = options.realm;
    hello.capabilities = 0x3;
    hello.endpoints.push_back(format_address(endpoint->local_endpoint()));
    encode_to(link, hello);
    // Always a snapshot (even empty): the peer replaces what it knew of us with it.
    encode_to(link, wire::InterestAdd{local.snapshot()});
    if (!procedures.empty()) {
      wire::ProvideAdd p;
      for (const auto& [name, proc] : procedures) p.procedures.push_back(name);
      encode_to(link, p);
    }
    // QoS 1 messages this peer still owes an ack for go out again on the new link.
    qos1.for_peer(peer.key, [&](std::uint64_t, Tracker::Entry& e) {
      encode_publish(link, *e.message);
      forwarded->inc();
    });
    flush(link);
    update_gauges();
    log.log_with(LogLevel::info, "link", [&] {
      return "link " + std::to_string(id) + " to peer " + short_id(peer_id) + (link.connection ? " (dialed)" : " (accepted)") +
             " up";
    });
    return peer.key;
  }

  Link* live_link(PeerKey key) {
    auto p = peers.find(key);
    if (p == peers.end() || p->second.links.empty()) return nullptr;
    auto l = links.find(p->second.links.back());
    return l == links.end() ? nullptr : &l->second;
  }

  void drop_link(LinkId id) {
    auto it = links.find(id);
    if (it == links.end()) return;
    const PeerKey key = it->second.peer;
    links.erase(it);
    log.log_with(LogLevel::info, "link", [&] {
      auto p = peers.find(key);
      return "link " + std::to_string(id) + " to peer " + (p == peers.end() ? std::string("?") : short_id(p->second.id)) +
             " down";
    });
    auto p = peers.find(key);
    if (p != peers.end()) {
      auto& v = p->second.links;
      v.erase(std::remove(v.begin(), v.end(), id), v.end());
      if (v.empty()) {
        p->second.gone_since = Clock::now();
        if (p->second.redial && !stopping_flag) schedule_redial(p->second);
      }
    }
    // Calls waiting on this link fail over now rather than at their deadline.
    std::vector<std::pair<std::uint64_t, Attempt>> lost;
    pending.take_if([id](const Attempt& a) { return a.link == id; }, lost);
    for (auto& [cid, a] : lost) attempt_failed(a, errc::connection_closed);
    update_gauges();
  }

  void forget_peer_state(Peer& p) {
    remote.drop_link(p.key);
    routes.clear();
    for (const auto& proc : p.provides) {
      auto pv = providers.find(proc);
      if (pv == providers.end()) continue;
      providers_changed(proc);
      auto& v = pv->second;
      v.erase(std::remove(v.begin(), v.end(), p.key), v.end());
      if (v.empty()) providers.erase(pv);
    }
    p.provides.clear();
  }

  void schedule_redial(Peer& p) {
    if (p.dialing || !p.redial) return;
    p.dialing = true;
    if (!p.redial_timer) p.redial_timer = std::make_shared<asio::steady_timer>(*strand);
    p.redial_timer->expires_after(p.backoff);
    p.backoff = std::min(p.backoff * 2, options.reconnect_max_backoff);
    std::weak_ptr<Impl> weak = shared_from_this();
    const PeerKey key = p.key;
    p.redial_timer->async_wait([weak, key](boost::system::error_code ec) {
      auto self = weak.lock();
      if (!self || ec || self->stopping_flag) return;
      auto it = self->peers.find(key);
      if (it == self->peers.end()) return;
      it->second.dialing = false;
      if (!it->second.links.empty()) return;
      self->dial(*it->second.redial, it->second.id, [weak, key](std::error_code e, PeerKey) {
        auto s = weak.lock();
        if (!s || !e) return;
        auto p2 = s->peers.find(key);
        if (p2 != s->peers.end() && p2->second.links.empty()) s->schedule_redial(p2->second);
      });
    });
  }

  // Dials and opens the session; `done` runs on the strand.
  void dial(const udp::endpoint& address, std::optional<NodeId> expected,
            std::function<void(std::error_code, PeerKey)> done) {
    std::weak_ptr<Impl> weak = shared_from_this();
    endpoint->connect(address, expected, [weak, done](std::error_code ec, std::shared_ptr<transport::Connection> c) {
      auto self = weak.lock();
      if (!self) return done(errc::endpoint_closed, 0);
      if (ec) return done(ec, 0);
      transport::Request head;
      head.path = kSessionPath;
      head.headers = transport::realm_headers(self->policy(), self->self_id(), *c->peer_id());
      auto cb_slot = std::make_shared<transport::SessionCallbacks>();
      transport::SessionCallbacks forward;
      forward.on_data = [cb_slot](std::span<const std::uint8_t> b) {
        if (cb_slot->on_data) cb_slot->on_data(b);
      };
      forward.on_close = [cb_slot](std::error_code e) {
        if (cb_slot->on_close) cb_slot->on_close(e);
      };
      c->open_session(head, forward, self->options.connect_timeout,
                      [weak, c, cb_slot, done](std::error_code e, std::shared_ptr<transport::Session> s) {
                        auto node = weak.lock();
                        if (!node) return done(errc::endpoint_closed, 0);
                        if (e) {
                          c->close(transport::CloseCode::no_error, "session refused");
                          return done(e, 0);
                        }
                        done({}, node->attach(std::move(s), *c->peer_id(), c, *cb_slot));
                      });
    });
  }

  void housekeeping() {
    if (stopping_flag) return;
    const auto now = Clock::now();
    for (auto& [key, p] : peers)
      if (p.links.empty() && p.gone_since != Clock::time_point{} && now - p.gone_since > options.peer_grace) {
        forget_peer_state(p);
        p.gone_since = {};
      }
    check_slow_peers(now);
    check_health(now);
    dedup_too_old.store(dedup.too_old(), std::memory_order_relaxed);
    if (auto* d = dynamic_cast<dht::DhtDiscovery*>(discovery.get())) {
      const auto cs = d->provider_cache_stats();
      dht_view.table_size.store(d->table().size(), std::memory_order_relaxed);
      dht_view.records.store(d->records(), std::memory_order_relaxed);
      dht_view.cache_hits.store(cs.hits, std::memory_order_relaxed);
      dht_view.cache_misses.store(cs.misses, std::memory_order_relaxed);
      dht_view.cache_evictions.store(cs.evictions, std::memory_order_relaxed);
    }
    update_gauges();
    housekeeping_timer->expires_after(std::chrono::seconds(1));
    std::weak_ptr<Impl> weak = shared_from_this();
    housekeeping_timer->async_wait([weak](boost::system::error_code ec) {
      if (auto self = weak.lock(); self && !ec) self->housekeeping();
    });
  }

  // ---- frames -------------------------------------------------------------------------------
  void encode_to(Link& link, const wire::Frame& frame) { (void)wire::encode(frame, link.out); }

  void encode_publish(Link& link, const detail::MessageBody& b) {
    if (wire::encode_publish(b.publisher, b.sequence, b.sequence, static_cast<std::uint8_t>(b.qos), b.topic, b.payload,
                             link.out))
      return;  // too large: publish() refuses those before they get here
    if (b.qos == Qos::at_most_once) ++link.out_qos0;
    mark_dirty(link);
  }

  void mark_dirty(Link& link) {
    if (link.dirty) return;  // a flag, not a search of `dirty`: this runs once per frame
    link.dirty = true;
    dirty.push_back(link.id);
  }

  void flush(Link& link) {
    if (link.out.empty()) return;
    if (link.session->send(link.out)) {
      drop_backpressure->inc(link.out_qos0);  // QoS 1 is retried later
      const auto now = Clock::now();
      if (link.refusing_since == Clock::time_point{}) link.refusing_since = now;
      else if (now - link.refusing_since >= options.slow_peer_timeout && !link.closing_slow) {
        // Deferred: callers iterate links or are in the middle of reading this one.
        link.closing_slow = true;
        asio::post(*strand, [weak = weak_from_this(), id = link.id] {
          if (auto self = weak.lock()) self->disconnect_slow_peer(id, Clock::now());
        });
      }
    } else {
      link.refusing_since = {};
    }
    link.out.clear();
    link.out_qos0 = 0;
  }
  void flush_links() {
    for (LinkId id : dirty)
      if (auto it = links.find(id); it != links.end()) {
        it->second.dirty = false;
        flush(it->second);
      }
    dirty.clear();
  }

  void on_data(LinkId id, std::span<const std::uint8_t> bytes) {
    auto it = links.find(id);
    if (it == links.end()) return;
    // A frame may end the link while later frames of this read are still being decoded (a
    // protocol error, a close whose callback drops the link): the reader is taken out of the
    // link for the read, so that erasing the link cannot free it under its own feet.
    wire::FrameReader reader = std::move(it->second.reader);
    const std::error_code ec = reader.feed(bytes, [&](wire::Frame&& f) { on_frame(id, std::move(f)); });
    it = links.find(id);
    if (it == links.end()) return;  // the link ended during the read
    it->second.reader = std::move(reader);
    if (ec) return protocol_error(id);
    Link& link = it->second;
    for (std::size_t i = 0; i < link.acks.size(); i += kAckChunk) {
      const auto end = std::min(link.acks.size(), i + kAckChunk);
      encode_to(link, wire::PublishAck{{link.acks.begin() + static_cast<std::ptrdiff_t>(i),
                                        link.acks.begin() + static_cast<std::ptrdiff_t>(end)}});
    }
    link.acks.clear();
    flush(link);
  }

  void protocol_error(LinkId id) {
    protocol_errors->inc();
    auto it = links.find(id);
    if (it == links.end()) return;
    log.log_with(LogLevel::warn, "link", [&] {
      auto p = peers.find(it->second.peer);
      return "closing the link to " + (p == peers.end() ? std::string("?") : short_id(p->second.id)) +
             ": malformed or forged frame";
    });
    auto session = it->second.session;
    auto connection = it->second.connection;
    drop_link(id);
    if (connection) connection->close(transport::CloseCode::protocol_error, "malformed or forged frame");
    else session->close_connection(transport::CloseCode::protocol_error, "malformed or forged frame");
  }

  void on_frame(LinkId id, wire::Frame&& frame) {
    auto it = links.find(id);
    if (it == links.end()) return;
    Link& link = it->second;
    Peer& peer = peers.at(link.peer);
    if (auto* pub = std::get_if<wire::Publish>(&frame)) {
      // One hop: the publisher must be the peer at the other end (its certificate says so).
      if (pub->publisher != peer.id) return protocol_error(id);
      const Route& route = route_for(pub->topic);
      if (pub->qos == 1) {
        // A full subscription queue would drop the message after we acknowledged it: leave it
        // unacknowledged instead, and the publisher re-sends it after qos1_retry_period.
        for (const auto& sub : route.subscriptions)
          if (sub->queued() >= sub->capacity()) return qos1_deferred->inc();
        link.acks.push_back(pub->message_id);
        if (!dedup.first_time(pub->publisher, pub->message_id)) return duplicates->inc();
      }
      auto body = std::make_shared<detail::MessageBody>(detail::MessageBody{
          std::move(pub->topic), std::move(pub->payload), pub->publisher, pub->sequence, static_cast<Qos>(pub->qos)});
      deliver_local(body, route);
    } else if (auto* ack = std::get_if<wire::PublishAck>(&frame)) {
      for (auto mid : ack->message_ids)
        if (auto done = qos1.ack(mid, link.peer)) (*done)({});
      update_gauges();
    } else if (auto* h = std::get_if<wire::Hello>(&frame)) {
      if (h->node_id != peer.id || h->realm != options.realm) return protocol_error(id);
      if (!h->endpoints.empty()) discovery->on_peer(peer.id, h->endpoints.front());
    } else if (auto* ia = std::get_if<wire::InterestAdd>(&frame)) {
      if (!link.interest_synced) {
        // First announcement on a new link is the peer's full snapshot: replace what we had.
        link.interest_synced = true;
        remote.drop_link(link.peer);
      }
      routes.clear();
      for (const auto& p : ia->patterns)
        if (remote.add(link.peer, p)) return protocol_error(id);
    } else if (auto* ir = std::get_if<wire::InterestRemove>(&frame)) {
      for (const auto& p : ir->patterns) remote.remove(link.peer, p);
      routes.clear();
    } else if (auto* pa = std::get_if<wire::ProvideAdd>(&frame)) {
      for (auto& p : pa->procedures) {
        if (validate_procedure(p)) return protocol_error(id);
        if (peer.provides.insert(p).second) {
          providers[p].push_back(peer.key);
          providers_changed(p);
        }
      }
    } else if (auto* pr = std::get_if<wire::ProvideRemove>(&frame)) {
      for (const auto& p : pr->procedures) {
        if (!peer.provides.erase(p)) continue;
        providers_changed(p);
        if (auto pv = providers.find(p); pv != providers.end()) {
          auto& v = pv->second;
          v.erase(std::remove(v.begin(), v.end(), peer.key), v.end());
          if (v.empty()) providers.erase(pv);
        }
      }
    } else if (auto* ping = std::get_if<wire::Ping>(&frame)) {
      encode_to(link, wire::Pong{ping->nonce});
      flush(link);
    } else if (auto* pong = std::get_if<wire::Pong>(&frame)) {
      auto sy = syncs.find(pong->nonce);
      if (sy != syncs.end() && --sy->second.first == 0) {
        auto done = std::move(sy->second.second);
        syncs.erase(sy);
        done({});
      }
    } else if (auto* callf = std::get_if<wire::RpcCall>(&frame)) {
      serve(id, std::move(*callf));
    } else if (auto* reply = std::get_if<wire::RpcReply>(&frame)) {
      on_reply(id, std::move(*reply));
    }
    // Other frame types (DHT) are not served by this node yet: ignored.
  }

  // ---- pub/sub ------------------------------------------------------------------------------
  // Where a topic goes: the local subscriptions and the peers whose interest matches. Cached
  // per topic (most traffic repeats topics) and dropped whenever a subscription or a peer's
  // interest changes; bounded by kMaxRoutes (cleared when full).
  struct Route {
    std::vector<std::shared_ptr<Subscription>> subscriptions;
    std::vector<PeerKey> peers;
  };
  static constexpr std::size_t kMaxRoutes = 4096;

  const Route& route_for(const std::string& topic) {
    auto it = routes.find(topic);
    if (it != routes.end()) return it->second;
    if (routes.size() >= kMaxRoutes) routes.clear();
    Route r;
    match_scratch.clear();
    trie.match(topic, match_scratch);
    for (auto sub_id : match_scratch)
      if (auto s = subscriptions.find(sub_id); s != subscriptions.end()) r.subscriptions.push_back(s->second);
    remote.links_for(topic, r.peers);  // peer keys, ascending
    return routes.emplace(topic, std::move(r)).first->second;
  }


  // Subscribers beyond our links: one discovery lookup per topic per kDiscoveryTtl (DESIGN §7:
  // 60 s), then link to the nodes found; their interest arrives over the new links. Messages
  // published before a link is up reach only the subscribers already linked.
  static constexpr auto kDiscoveryTtl = std::chrono::seconds(60);
  void discover_subscribers(const std::string& topic) {
    const auto now = Clock::now();
    auto it = subscriber_lookups.find(topic);
    if (it != subscriber_lookups.end() && now - it->second < kDiscoveryTtl) return;
    if (subscriber_lookups.size() >= 10'000) subscriber_lookups.clear();  // bounded
    subscriber_lookups[topic] = now;
    std::weak_ptr<Impl> weak = shared_from_this();
    discovery->find_subscribers(topic, [weak, topic](std::vector<PeerAddress> found) {
      auto self = weak.lock();
      if (!self || self->stopping_flag) return;
      // Nobody (yet): ask again after a second rather than after the full TTL.
      if (found.empty()) self->subscriber_lookups[topic] = Clock::now() - kDiscoveryTtl + std::chrono::seconds(1);
      for (const auto& p : found) {
        if (auto k = self->peer_keys.find(p.id); k != self->peer_keys.end() && self->live_link(k->second)) continue;
        udp::endpoint address;
        if (parse_address(p.endpoint, address)) continue;
        self->dial(address, p.id, [](std::error_code, PeerKey) {});
      }
    });
  }
  void deliver_local(const BodyPtr& body, const Route& route) {
    std::uint64_t lost = 0;
    for (const auto& sub : route.subscriptions) {
      bool ready = false;
      lost += sub->deliver(body, ready);
      if (ready) ready_scratch.push_back(sub);
    }
    if (route.subscriptions.empty()) return;
    delivered->inc(route.subscriptions.size());
    if (lost) drop_subscriber->inc(lost);
    dispatch->push(ready_scratch);
  }

  // The strand's inbox: every hand-over from other threads (publishes, API calls, RPC answers)
  // goes through this one FIFO, so one thread's operations reach the strand in the order it
  // made them (subscribe, then publish: the publish sees the subscription), with one strand
  // post per batch and each link written once per batch. Publishes are bounded by
  // max_publish_queue; the other items are bounded by their own tables.
  using InboxItem = std::variant<Outgoing, core::detail::UniqueFunction<void()>>;

  std::error_code enqueue(Outgoing&& m) {
    bool post = false;
    {
      std::lock_guard lock(inbox_mutex);
      if (stopping_flag) return errc::not_started;
      if (inbox_publishes >= options.max_publish_queue) {
        drop_queue_full->inc();
        return errc::queue_full;
      }
      inbox.emplace_back(std::move(m));
      inbox_hw = std::max(inbox_hw, ++inbox_publishes);
      post = !inbox_scheduled;
      inbox_scheduled = true;
    }
    if (post) asio::post(*strand, [self = shared_from_this()] { self->drain_inbox(); });
    return {};
  }

  void to_strand(core::detail::UniqueFunction<void()> f) {
    bool post = false;
    {
      std::lock_guard lock(inbox_mutex);
      inbox.emplace_back(std::move(f));
      post = !inbox_scheduled;
      inbox_scheduled = true;
    }
    if (post) asio::post(*strand, [self = shared_from_this()] { self->drain_inbox(); });
  }

  void drain_inbox() {
    {
      std::lock_guard lock(inbox_mutex);
      inbox_batch.swap(inbox);
      inbox_scheduled = false;
      g_outbox->set(static_cast<double>(inbox_publishes));
      g_outbox_hw->set(static_cast<double>(inbox_hw));
      inbox_publishes = 0;
    }
    in_batch = true;
    for (auto& item : inbox_batch) {
      if (auto* m = std::get_if<Outgoing>(&item)) process(std::move(*m));
      else std::get<core::detail::UniqueFunction<void()>>(item)();
    }
    in_batch = false;
    inbox_batch.clear();
    flush_links();
    arm_qos1_timer();
    arm_call_timer();
    update_gauges();
  }

  void process(Outgoing&& m) {
    published[m.qos == Qos::at_least_once ? 1 : 0]->inc();
    auto body = std::make_shared<detail::MessageBody>(
        detail::MessageBody{std::move(m.topic), std::move(m.payload), self_id(), ++sequence, m.qos});
    const Route& route = route_for(body->topic);
    if (options.dht) discover_subscribers(body->topic);
    deliver_local(body, route);
    link_scratch.assign(route.peers.begin(), route.peers.end());  // the route may be dropped below
    if (m.qos == Qos::at_most_once) {
      for (PeerKey key : link_scratch) {
        if (Link* l = live_link(key)) {
          encode_publish(*l, *body);
          forwarded->inc();
        } else {
          drop_no_link->inc();
        }
      }
      if (m.done) m.done({});
      return;
    }
    if (link_scratch.empty()) {
      if (m.done) m.done({});
      return;
    }
    if (qos1.size() >= qos1.capacity()) {
      if (m.done) m.done(errc::too_many_pending);
      return;
    }
    const std::uint64_t id = body->sequence;
    std::vector<PeerKey> waiting(link_scratch.begin(), link_scratch.end());
    (void)qos1.track(id, body, waiting, Clock::now() + options.qos1_retry_period, std::move(m.done));
    for (PeerKey key : waiting)
      if (Link* l = live_link(key)) {
        encode_publish(*l, *body);
        forwarded->inc();
      }
  }

  void arm_qos1_timer() {
    const auto next = qos1.next_deadline();
    if (!next || *next >= qos1_armed) return;
    qos1_armed = *next;
    qos1_timer->expires_at(*next);
    std::weak_ptr<Impl> weak = shared_from_this();
    qos1_timer->async_wait([weak](boost::system::error_code ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      self->qos1_armed = Clock::time_point::max();
      self->qos1_tick();
    });
  }

  void qos1_tick() {
    std::vector<std::uint64_t> due;
    const auto now = Clock::now();
    qos1.due(now, due);
    for (auto id : due) {
      auto* e = qos1.find(id);
      if (!e) continue;
      if (e->sends >= options.qos1_attempts) {
        qos1_expired->inc();
        if (auto done = qos1.remove(id); done && *done) (*done)(errc::timed_out);
        continue;
      }
      for (PeerKey key : e->waiting)
        if (Link* l = live_link(key)) {
          encode_publish(*l, *e->message);
          forwarded->inc();
          qos1_retries->inc();
        }
      qos1.resent(id, now + options.qos1_retry_period);
    }
    flush_links();
    arm_qos1_timer();
    update_gauges();
  }

  void subscribe(const std::shared_ptr<Subscription>& s) {
    if (s->closed()) {
      --subscription_count;
      return;
    }
    const std::uint64_t id = ++last_subscription;
    sub_ids[s.get()] = id;
    {
      std::lock_guard lock(subscriptions_mutex);
      subscriptions[id] = s;
    }
    (void)trie.add(*s->pattern(), id);
    routes.clear();
    if (auto announce = local.add(*s->pattern()); !announce.empty()) {
      broadcast(wire::InterestAdd{{announce}});
      discovery->advertise_interest(announce);
    }
    update_gauges();
  }

  void unsubscribe(const std::shared_ptr<Subscription>& s) {
    auto it = sub_ids.find(s.get());
    if (it == sub_ids.end()) return;
    const std::uint64_t id = it->second;
    sub_ids.erase(it);
    --subscription_count;
    trie.remove(*s->pattern(), id);
    routes.clear();
    {
      std::lock_guard lock(subscriptions_mutex);
      subscriptions.erase(id);
    }
    if (auto withdraw = local.remove(*s->pattern()); !withdraw.empty()) {
      broadcast(wire::InterestRemove{{withdraw}});
      discovery->withdraw_interest(withdraw);
    }
    update_gauges();
  }

  void broadcast(const wire::Frame& frame) {
    for (auto& [id, link] : links) {
      encode_to(link, frame);
      flush(link);
    }
  }

  // ---- RPC: serving -------------------------------------------------------------------------
  static std::string cache_key(const std::string& procedure, const Bytes& args) {
    std::string k;
    k.reserve(procedure.size() + 1 + args.size());
    k.append(procedure).push_back('\0');
    k.append(args.begin(), args.end());
    return k;
  }

  // Runs the procedure's handler on the handler executor; `answer` runs on the strand.
  void run_procedure(const std::shared_ptr<Procedure>& proc, Bytes args,
                     std::function<void(wire::RpcStatus, Bytes)> answer) {
    std::string key;
    if (proc->options.idempotent) {
      key = cache_key(proc->name, args);
      if (auto hit = result_cache.get(key)) {
        cache_hits->inc();
        return answer(wire::RpcStatus::ok, std::move(*hit));
      }
    }
    if (proc->options.max_concurrency && proc->in_flight >= proc->options.max_concurrency)
      return answer(wire::RpcStatus::overloaded, {});
    ++proc->in_flight;
    ++serving;
    std::weak_ptr<Impl> weak = shared_from_this();
    auto slot = std::make_shared<detail::ReplySlot>(
        [weak, proc, key = std::move(key), answer = std::move(answer)](wire::RpcStatus st, Bytes b) mutable {
          auto owner = weak.lock();
          if (!owner) return;
          owner->to_strand([weak, proc, key = std::move(key), answer = std::move(answer), st, b = std::move(b)]() mutable {
            auto self = weak.lock();
            --proc->in_flight;
            if (!self) return;
            --self->serving;
            if (st == wire::RpcStatus::ok && proc->options.idempotent)
              self->result_cache.put(key, b, std::chrono::duration_cast<std::chrono::nanoseconds>(proc->options.cache_ttl));
            self->calls_served->inc();
            answer(st, std::move(b));
          });
        });
    tasks->push(core::detail::UniqueFunction<void()>([proc, slot, args = std::move(args)]() mutable {
      CallbackScope scope;
      try {
        proc->handler(std::move(args), RpcResponder(slot));
      } catch (const std::exception& e) {
        slot->give(wire::RpcStatus::handler_error, to_bytes(e.what()));
      } catch (...) {
        slot->give(wire::RpcStatus::handler_error, to_bytes("handler threw a non-standard exception"));
      }
    }));
  }

  void serve(LinkId id, wire::RpcCall call) {
    std::weak_ptr<Impl> weak = shared_from_this();
    auto answer = [weak, id, call_id = call.call_id](wire::RpcStatus st, Bytes bytes) {
      auto self = weak.lock();
      if (!self) return;
      auto it = self->links.find(id);
      if (it == self->links.end()) return;  // the caller's link is gone; it fails over
      self->encode_to(it->second, wire::RpcReply{call_id, st, std::move(bytes)});
      self->mark_dirty(it->second);  // flushed with the rest of this batch
    };
    auto proc = procedures.find(call.procedure);
    if (proc == procedures.end()) return answer(wire::RpcStatus::no_handler, {});
    run_procedure(proc->second, std::move(call.payload), answer);
  }

  // ---- RPC: calling -------------------------------------------------------------------------
  static std::error_code status_error(wire::RpcStatus st) {
    switch (st) {
      case wire::RpcStatus::ok: return {};
      case wire::RpcStatus::no_handler: return errc::no_provider;
      case wire::RpcStatus::handler_error: return errc::handler_error;
      case wire::RpcStatus::overloaded: return errc::overloaded;
      case wire::RpcStatus::timeout: return errc::timed_out;
    }
    return errc::transport_error;
  }

  std::size_t provider_count(const std::string& procedure) const {
    std::size_t n = procedures.count(procedure);
    if (auto pv = providers.find(procedure); pv != providers.end()) n += pv->second.size();
    return n;
  }

  void start_call(std::string procedure, Bytes args, CallOptions o, detail::Completion<std::error_code, Bytes> done) {
    if (auto ec = validate_procedure(procedure)) return done(ec, {});
    // Refusal for stopping happens where the call is made (NodeCore::call): a call accepted
    // before stop() began is work in flight and is carried out.
    if (o.cancel && o.cancel->cancelled()) return done(errc::cancelled, {});
    calls_started->inc();
    auto call = std::make_shared<CallState>();
    call->procedure = std::move(procedure);
    call->args = std::make_shared<const Bytes>(std::move(args));
    call->started = Clock::now();
    const auto timeout = o.timeout.count() > 0 ? o.timeout : options.rpc_timeout;
    call->deadline = call->started + timeout;
    const std::size_t n = provider_count(call->procedure);
    call->max_attempts = o.max_attempts ? o.max_attempts : static_cast<unsigned>(std::clamp<std::size_t>(n, 1, 3));
    call->attempt_timeout = o.attempt_timeout.count() > 0 ? o.attempt_timeout : timeout / call->max_attempts;
    call->strategy = o.strategy;
    call->done = std::move(done);
    if (o.cancel) {
      std::weak_ptr<Impl> weak = shared_from_this();
      std::weak_ptr<CallState> wc = call;
      o.cancel->on_cancel(call, [weak, wc, s = *strand] {
        asio::post(s, [weak, wc] {
          auto self = weak.lock();
          auto c = wc.lock();
          if (!self || !c || c->finished) return;
          if (c->pending_id) self->pending.take(c->pending_id);
          self->finish(*c, errc::cancelled, {});
        });
      });
    }
    next_attempt(call);
  }

  // The providers of one procedure as the selector sees them: this node (when it serves it)
  // and the peers that announced it. Built on first use and dropped whenever that procedure's
  // providers change; in-flight attempts keep theirs alive for the outstanding-call counts.
  struct ProviderSet {
    std::vector<PeerKey> keys;
    std::unordered_map<PeerKey, std::size_t> index;
    core::ProviderSelector selector;
    explicit ProviderSet(std::vector<core::ProviderInfo> infos) : selector(std::move(infos)) {}
  };

  std::shared_ptr<ProviderSet> provider_set(const std::string& procedure) {
    auto it = provider_sets.find(procedure);
    if (it != provider_sets.end()) return it->second;
    std::vector<core::ProviderInfo> infos;
    if (procedures.count(procedure)) infos.push_back({kLocal, true});
    if (auto pv = providers.find(procedure); pv != providers.end())
      for (PeerKey k : pv->second) infos.push_back({k, false});
    auto set = std::make_shared<ProviderSet>(infos);
    for (std::size_t i = 0; i < infos.size(); ++i) {
      set->keys.push_back(infos[i].id);
      set->index.emplace(infos[i].id, i);
    }
    provider_sets.emplace(procedure, set);
    return set;
  }
  void providers_changed(const std::string& procedure) { provider_sets.erase(procedure); }

  // O(1): the selector's pick, skipping (at most once each) providers already tried and
  // peers whose link is down during their grace period.
  std::optional<std::pair<std::shared_ptr<ProviderSet>, std::size_t>> choose(CallState& c) {
    auto set = provider_set(c.procedure);
    core::ExclusionSet excluded;
    for (PeerKey k : c.tried)
      if (auto it = set->index.find(k); it != set->index.end()) excluded.add(it->second);
    for (;;) {
      const auto idx = set->selector.select(c.strategy, excluded);
      if (!idx) return std::nullopt;
      const PeerKey k = set->keys[*idx];
      if (k == kLocal || live_link(k)) return std::make_pair(set, *idx);
      excluded.add(*idx);
    }
  }

  void next_attempt(const std::shared_ptr<CallState>& call) {
    CallState& c = *call;
    const auto now = Clock::now();
    if (now >= c.deadline) return finish(c, errc::timed_out, {});
    if (c.attempts >= c.max_attempts) return finish(c, c.last_error, {});
    const auto choice = choose(c);
    if (!choice) {
      if (c.attempts == 0 && !c.discovered) return discover_providers(call);
      return finish(c, c.last_error, {});
    }
    const auto& [set, index] = *choice;
    const PeerKey pick = set->keys[index];
    ++c.attempts;
    c.tried.push_back(pick);
    set->selector.begin_call(index);
    if (c.attempts > 1) failovers->inc();
    if (pick == kLocal) {
      // The answer keeps the call alive (no pending-table entry does for local attempts).
      return run_procedure(procedures.at(c.procedure), *c.args,
                           [this, call, set = set, index = index](wire::RpcStatus st, Bytes b) {
                             set->selector.end_call(index);
                             if (!call->finished) attempt_answered(call, st, std::move(b));
                           });
    }
    Link* link = live_link(pick);
    if (pending.size() >= pending.capacity()) {
      set->selector.end_call(index);
      return finish(c, errc::too_many_pending, {});
    }
    std::error_code ec;
    const auto attempt_deadline = std::min(c.deadline, now + c.attempt_timeout);
    c.pending_id = pending.insert(attempt_deadline, Attempt{call, link->id, pick, set, index}, ec);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(attempt_deadline - now).count();
    encode_to(*link, wire::RpcCall{c.pending_id, static_cast<std::uint32_t>(std::max<std::int64_t>(ms, 1)),
                                   c.procedure, *c.args});
    if (in_batch) mark_dirty(*link);  // drain_inbox() writes each link once per batch
    else flush(*link);
    arm_call_timer();
    update_gauges();
  }

  // Nobody linked serves the procedure: ask discovery for providers, link to them, retry.
  void discover_providers(const std::shared_ptr<CallState>& call) {
    call->discovered = true;
    std::weak_ptr<Impl> weak = shared_from_this();
    discovery->find_providers(call->procedure, [weak, call](std::vector<PeerAddress> found) {
      auto self = weak.lock();
      if (!self || call->finished) return;
      auto remaining = std::make_shared<std::size_t>(found.size());
      if (found.empty()) return self->next_attempt(call);
      for (const auto& peer : found) {
        udp::endpoint address;
        auto linked = [weak, call, remaining, id = peer.id](std::error_code ec, PeerKey key) {
          auto s = weak.lock();
          if (!s) return;
          if (!ec && key) {  // the record says it serves the procedure
            auto& v = s->providers[call->procedure];
            if (std::find(v.begin(), v.end(), key) == v.end()) v.push_back(key);
            s->providers_changed(call->procedure);
            s->peers.at(key).provides.insert(call->procedure);
          }
          if (--*remaining == 0 && !call->finished) s->next_attempt(call);
        };
        if (self->peer_keys.count(peer.id) && self->live_link(self->peer_keys.at(peer.id)))
          linked({}, self->peer_keys.at(peer.id));
        else if (parse_address(peer.endpoint, address))
          linked(errc::address_invalid, 0);
        else
          self->dial(address, peer.id, linked);
      }
    });
  }

  void attempt_answered(const std::shared_ptr<CallState>& call, wire::RpcStatus st, Bytes b) {
    switch (st) {
      case wire::RpcStatus::ok: return finish(*call, {}, std::move(b));
      case wire::RpcStatus::handler_error: return finish(*call, errc::handler_error, std::move(b));
      default:
        call->last_error = status_error(st);
        return next_attempt(call);
    }
  }

  void attempt_failed(Attempt& a, std::error_code ec) {
    a.set->selector.end_call(a.index);
    a.call->pending_id = 0;
    if (a.call->finished) return;
    a.call->last_error = ec;
    next_attempt(a.call);
  }

  void on_reply(LinkId, wire::RpcReply reply) {
    auto a = pending.take(reply.call_id);
    if (!a) return;  // late, duplicate or unknown: the caller already had its answer
    a->set->selector.end_call(a->index);
    a->call->pending_id = 0;
    if (!a->call->finished) attempt_answered(a->call, reply.status, std::move(reply.payload));
    update_gauges();
  }

  void finish(CallState& c, std::error_code ec, Bytes result) {
    if (c.finished) return;
    c.finished = true;
    const double secs = std::chrono::duration<double>(Clock::now() - c.started).count();
    call_latency->observe(secs);
    std::string outcome = "error";
    if (!ec) outcome = "ok";
    else if (ec == errc::handler_error) outcome = "handler_error";
    else if (ec == errc::no_provider) outcome = "no_provider";
    else if (ec == errc::timed_out) outcome = "timed_out";
    else if (ec == errc::cancelled) outcome = "cancelled";
    else if (ec == errc::overloaded) outcome = "overloaded";
    call_outcomes[outcome]->inc();
    if (c.done) c.done(ec, std::move(result));
  }

  void arm_call_timer() {
    const auto next = pending.next_deadline();
    if (!next || *next >= call_armed) return;
    call_armed = *next;
    call_timer->expires_at(*next);
    std::weak_ptr<Impl> weak = shared_from_this();
    call_timer->async_wait([weak](boost::system::error_code ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      self->call_armed = Clock::time_point::max();
      std::vector<std::pair<std::uint64_t, Attempt>> expired;
      self->pending.expire(Clock::now(), expired);
      for (auto& [id, a] : expired) self->attempt_failed(a, errc::timed_out);
      self->arm_call_timer();
      self->update_gauges();
    });
  }

  // ---- DHT transport (dht::DhtTransport): requests over links, dialing contacts not linked -----
  static constexpr auto kDhtRequestTimeout = std::chrono::seconds(2);

  // DHT requests are HTTP/3 requests (POST /macula/v1/dht, body = one frame, response body =
  // the reply frame) on pooled connections: discovery traffic needs no session link, and the
  // pool bounds and reuses the connections (node-certificate on both ends, so the responder
  // knows who asks and STORE can only store records for their owner).
  void request(const dht::Contact& to, wire::Frame req, std::function<void(std::optional<wire::Frame>)> done) override {
    if (stopping_flag) return done(std::nullopt);
    udp::endpoint address;
    Bytes body;
    if (parse_address(to.endpoint, address) || wire::encode(req, body)) return done(std::nullopt);
    // Answers come back on the strand.
    auto on_strand = [s = *strand, done = std::move(done)](std::optional<wire::Frame> f) mutable {
      asio::post(s, [done = std::move(done), f = std::move(f)]() mutable { done(std::move(f)); });
    };
    pool->get(to.id, address, [body = std::move(body), on_strand](std::error_code ec,
                                                                   std::shared_ptr<transport::Connection> c) mutable {
      if (ec || !c) return on_strand(std::nullopt);
      transport::Request r;
      r.method = "POST";
      r.path = kDhtPath;
      r.body = std::move(body);
      c->request(std::move(r), kDhtRequestTimeout, [on_strand](std::error_code e, transport::Response resp) mutable {
        wire::Frame reply;
        if (e || resp.status != 200 || wire::decode(resp.body, reply).error) return on_strand(std::nullopt);
        on_strand(std::move(reply));
      });
    });
  }

  void serve_dht() {
    std::weak_ptr<Impl> weak = shared_from_this();
    endpoint->route("POST", kDhtPath, [weak](transport::Request&& req, transport::Responder respond) {
      auto self = weak.lock();
      transport::Response r;
      wire::Frame frame;
      if (!self || !req.peer || wire::decode(req.body, frame).error) {
        r.status = !self ? 503 : !req.peer ? 401 : 400;  // node-to-node only; a malformed frame
        return respond(std::move(r));
      }
      auto reply = self->discovery->handle(*req.peer, frame);
      if (!reply || wire::encode(*reply, r.body)) r.status = 404;
      respond(std::move(r));
    });
  }

  void after(std::chrono::nanoseconds delay, std::function<void()> f) override {
    auto timer = std::make_shared<asio::steady_timer>(*strand);
    timer->expires_after(delay);
    std::weak_ptr<Impl> weak = shared_from_this();
    timer->async_wait([weak, timer, f = std::move(f)](boost::system::error_code ec) {
      if (auto self = weak.lock(); self && !ec && !self->stopping_flag) f();
    });
  }

  std::shared_ptr<transport::ConnectionPool> pool;

  // ---- stop ---------------------------------------------------------------------------------
  bool drained() const { return qos1.size() == 0 && pending.size() == 0 && serving == 0 && inbox_empty(); }
  bool inbox_empty() const {
    std::lock_guard lock(inbox_mutex);
    return inbox.empty();
  }

  void fail_everything() {
    housekeeping_timer->cancel();
    call_timer->cancel();
    qos1_timer->cancel();
    for (auto& [k, p] : peers)
      if (p.redial_timer) p.redial_timer->cancel();
    std::vector<std::pair<std::uint64_t, Attempt>> calls;
    pending.expire(Clock::time_point::max(), calls);
    for (auto& [id, a] : calls) finish(*a.call, errc::cancelled, {});
    for (auto id : qos1.ids())
      if (auto done = qos1.remove(id); done && *done) (*done)(errc::cancelled);
    if (pool) pool->close();
    // Closing may call back into drop_link(): take the links out of the map first.
    auto closing = std::move(links);
    links.clear();
    for (auto& [id, link] : closing) {
      if (link.connection) link.connection->close(transport::CloseCode::no_error, "node stopping");
      else link.session->close();
    }
    update_gauges();
  }

  // ---- members ------------------------------------------------------------------------------
  NodeOptions options;
  observe::Logger log;
  asio::io_context& io_;
  std::unique_ptr<asio::thread_pool> workers;
  HandlerExecutor executor;
  std::shared_ptr<DispatchQueue> dispatch;
  std::shared_ptr<TaskQueue> tasks;
  std::unique_ptr<Discovery> discovery = std::make_unique<LinkDiscovery>();
  std::shared_ptr<transport::Endpoint> endpoint;
  std::optional<asio::strand<asio::io_context::executor_type>> strand;
  std::optional<asio::steady_timer> call_timer, qos1_timer, housekeeping_timer;
  Clock::time_point call_armed = Clock::time_point::max();
  Clock::time_point qos1_armed = Clock::time_point::max();
  std::atomic<bool> stopping_flag{false};

  std::map<LinkId, Link> links;
  LinkId last_link = 0;
  std::map<PeerKey, Peer> peers;
  std::unordered_map<NodeId, PeerKey> peer_keys;
  PeerKey last_peer = 0;

  core::PatternTrie trie;
  // Changed on the strand only, under the mutex; the strand reads without it, readers off the
  // strand (/metrics, health) take it.
  mutable std::mutex subscriptions_mutex;
  std::unordered_map<std::uint64_t, std::shared_ptr<Subscription>> subscriptions;
  StatusPages pages;
  // The DHT's figures, copied off the strand once a second for scrapes from any thread.
  struct DhtView {
    std::atomic<std::size_t> table_size{0}, records{0};
    std::atomic<std::uint64_t> cache_hits{0}, cache_misses{0}, cache_evictions{0};
  } dht_view;
  std::atomic<std::uint64_t> dedup_too_old{0};  // dedup.too_old(), copied off the strand each second
  mutable std::mutex health_mutex;
  std::string not_ready_reason;  // empty: ready
  std::map<std::string, Clock::time_point> over_since;  // strand: queues past the threshold
  bool had_link = false;
  std::unordered_map<const Subscription*, std::uint64_t> sub_ids;
  std::uint64_t last_subscription = 0;
  std::atomic<std::size_t> subscription_count{0};
  pubsub::LocalInterest local;
  pubsub::RemoteInterest remote;

  std::map<std::string, std::shared_ptr<Procedure>> procedures;
  std::map<std::string, std::vector<PeerKey>> providers;
  std::unordered_map<std::string, std::shared_ptr<ProviderSet>> provider_sets;
  rpc::PendingCalls<Attempt> pending;
  std::size_t serving = 0;
  Tracker qos1;
  pubsub::DedupWindow dedup;
  core::ConcurrentCache<std::string, Bytes> result_cache;

  mutable std::mutex inbox_mutex;
  std::vector<InboxItem> inbox, inbox_batch;
  std::size_t inbox_publishes = 0, inbox_hw = 0;
  bool inbox_scheduled = false;
  bool in_batch = false;  // on the strand inside drain_inbox()

  std::map<std::uint64_t, std::pair<std::size_t, detail::Completion<std::error_code>>> syncs;
  std::uint64_t last_nonce = 0;
  std::uint64_t sequence = 0;
  std::vector<core::SubscriberId> match_scratch;
  std::vector<std::shared_ptr<Subscription>> ready_scratch;
  std::unordered_map<std::string, Route> routes;
  std::unordered_map<std::string, Clock::time_point> subscriber_lookups;
  std::vector<PeerKey> link_scratch;
  std::vector<LinkId> dirty;
};

// ============================================================================ NodeCore

std::shared_ptr<NodeCore> NodeCore::create(asio::io_context& io, const NodeOptions& options,
                                           transport::Identity identity, std::error_code& ec) {
  auto impl = std::make_shared<Impl>(io, options);
  ec = impl->start(std::move(identity));
  if (ec) {
    if (impl->workers) impl->workers->join();
    return nullptr;
  }
  return std::shared_ptr<NodeCore>(new NodeCore(impl));
}

NodeCore::~NodeCore() { stop(); }

const NodeId& NodeCore::node_id() const noexcept { return impl_->endpoint->node_id(); }
udp::endpoint NodeCore::local_endpoint() const { return impl_->endpoint->local_endpoint(); }
const HandlerExecutor& NodeCore::handler_executor() const noexcept { return impl_->executor; }
bool NodeCore::stopping() const noexcept { return impl_->stopping_flag; }

void NodeCore::connect(const udp::endpoint& address, std::optional<NodeId> expected, bool redial,
                       detail::Completion<std::error_code> done) {
  auto shared_done = std::make_shared<detail::Completion<std::error_code>>(std::move(done));
  impl_->to_strand([impl = impl_, address, expected, redial, shared_done] {
    if (impl->stopping_flag) return (*shared_done)(errc::not_started);
    impl->dial(address, expected, [impl, address, redial, shared_done](std::error_code ec, PeerKey key) {
      if (!ec && redial) impl->peers.at(key).redial = address;  // how to get the link back
      (*shared_done)(ec);
    });
  });
}

std::error_code NodeCore::publish(std::string topic, Bytes payload, Qos qos, detail::Completion<std::error_code> done) {
  if (auto ec = validate_topic(topic)) return ec;
  if (payload.size() + topic.size() + 128 > wire::kDefaultMaxFrameSize) return errc::frame_too_large;
  return impl_->enqueue(Impl::Outgoing{std::move(topic), std::move(payload), qos, std::move(done)});
}

std::error_code NodeCore::subscribe(const std::shared_ptr<Subscription>& s) {
  if (impl_->stopping_flag) return errc::not_started;
  // Counted here, registered on the strand: subscribing never waits for the io_context, so a
  // host may subscribe before it runs its io_context.
  if (impl_->subscription_count.fetch_add(1) >= impl_->options.max_subscriptions) {
    --impl_->subscription_count;
    return errc::too_many_subscriptions;
  }
  impl_->to_strand([impl = impl_.get(), s] { impl->subscribe(s); });
  return {};
}

void NodeCore::unsubscribe(const std::shared_ptr<Subscription>& s) {
  impl_->to_strand([impl = impl_.get(), s] { impl->unsubscribe(s); });
}

std::error_code NodeCore::advertise(std::string procedure, RpcHandler handler, AdvertiseOptions options) {
  if (auto ec = validate_procedure(procedure)) return ec;
  if (impl_->stopping_flag) return errc::not_started;
  auto proc = std::make_shared<Impl::Procedure>();
  proc->name = procedure;
  proc->handler = std::move(handler);
  proc->options = options;
  impl_->to_strand([impl = impl_.get(), proc] {
    const bool fresh = impl->procedures.find(proc->name) == impl->procedures.end();
    impl->procedures[proc->name] = proc;
    impl->providers_changed(proc->name);
    if (!fresh) return;
    impl->broadcast(wire::ProvideAdd{{proc->name}});
    impl->discovery->advertise_procedure(proc->name);
  });
  return {};
}

void NodeCore::unadvertise(const std::string& procedure) {
  impl_->to_strand([impl = impl_.get(), procedure] {
    if (!impl->procedures.erase(procedure)) return;
    impl->providers_changed(procedure);
    impl->broadcast(wire::ProvideRemove{{procedure}});
    impl->discovery->withdraw_procedure(procedure);
  });
}

void NodeCore::call(std::string procedure, Bytes args, CallOptions options, detail::Completion<std::error_code, Bytes> done) {
  if (impl_->stopping_flag) return done(errc::cancelled, {});
  // Batched with other calls and RPC answers: one strand post and one link write per batch.
  impl_->to_strand([impl = impl_.get(), pr = std::move(procedure), a = std::move(args), o = std::move(options),
                    d = std::move(done)]() mutable { impl->start_call(std::move(pr), std::move(a), std::move(o), std::move(d)); });
}

void NodeCore::sync(detail::Completion<std::error_code> done) {
  auto slot = std::make_shared<detail::Completion<std::error_code>>(std::move(done));
  impl_->to_strand([impl = impl_.get(), slot] {
    if (impl->links.empty()) return (*slot)({});
    const std::uint64_t nonce = ++impl->last_nonce;
    impl->syncs.emplace(nonce, std::make_pair(impl->links.size(), std::move(*slot)));
    for (auto& [id, link] : impl->links) {
      impl->encode_to(link, wire::Ping{nonce});
      impl->flush(link);
    }
  });
}

NodeStats NodeCore::stats() const {
  std::promise<NodeStats> p;
  auto f = p.get_future();
  asio::dispatch(*impl_->strand, [&] {
    const Impl& i = *impl_;
    NodeStats s;
    s.links = i.links.size();
    s.subscriptions = i.subscriptions.size();
    s.published = i.published[0]->value() + i.published[1]->value();
    s.delivered = i.delivered->value();
    s.forwarded = i.forwarded->value();
    s.dropped = i.drop_queue_full->value() + i.drop_backpressure->value() + i.drop_no_link->value() +
                i.drop_subscriber->value();
    s.duplicates = i.duplicates->value();
    s.qos1_in_flight = i.qos1.size();
    s.qos1_retries = i.qos1_retries->value();
    s.qos1_expired = i.qos1_expired->value();
    s.calls_started = i.calls_started->value();
    s.calls_served = i.calls_served->value();
    s.calls_failed_over = i.failovers->value();
    s.pending_calls = i.pending.size();
    s.protocol_errors = i.protocol_errors->value();
    p.set_value(s);
  });
  return f.get();
}

std::string NodeCore::metrics_text() const { return impl_->render_metrics(); }
std::pair<bool, std::string> NodeCore::readiness() const { return impl_->readiness(); }
StatusPages NodeCore::status_pages() const { return impl_->pages; }
void NodeCore::note_http_status(bool up, const std::string& detail) {
  impl_->g_http_up->set(up ? 1.0 : 0.0);
  impl_->log.log(up ? LogLevel::info : LogLevel::warn, "http", detail);
}
std::size_t NodeCore::links_now() const noexcept { return static_cast<std::size_t>(impl_->g_links->value()); }

void NodeCore::dht_find_value(const NodeId& key, std::function<void(std::error_code, std::size_t)> done) {
  impl_->to_strand([impl = impl_.get(), key, done = std::move(done)]() mutable {
    auto* d = dynamic_cast<dht::DhtDiscovery*>(impl->discovery.get());
    if (!d) return done(errc::not_found, 0);
    d->find_value(key, [done = std::move(done)](std::vector<wire::Record> r) { done({}, r.size()); });
  });
}

void NodeCore::set_discovery(std::unique_ptr<Discovery> discovery) {
  std::promise<void> p;
  auto f = p.get_future();
  asio::dispatch(*impl_->strand, [&] {
    impl_->discovery = std::move(discovery);
    p.set_value();
  });
  f.get();
}

void NodeCore::drop_links_for_test() {
  std::promise<void> p;
  auto f = p.get_future();
  asio::dispatch(*impl_->strand, [&] {
    std::vector<std::shared_ptr<transport::Connection>> conns;
    std::vector<std::shared_ptr<transport::Session>> sessions;
    for (auto& [id, l] : impl_->links) {
      if (l.connection) conns.push_back(l.connection);
      else sessions.push_back(l.session);
    }
    for (auto& c : conns) c->close(transport::CloseCode::no_error, "test: link dropped");
    for (auto& s : sessions) s->close();
    p.set_value();
  });
  f.get();
}

void NodeCore::stop() {
  auto impl = impl_;
  if (!impl->endpoint || impl->stopping_flag.exchange(true)) return;
  // Runs f on the strand and waits for it, up to 2 s (the io_context may not be running).
  // Everything the strand task touches is owned by the task, never by this stack frame.
  auto on_strand = [&impl](std::function<bool(Impl&)> f) -> std::optional<bool> {
    auto p = std::make_shared<std::promise<bool>>();
    auto fut = p->get_future();
    asio::dispatch(*impl->strand, [impl, p, f = std::move(f)] { p->set_value(f(*impl)); });
    if (fut.wait_for(std::chrono::seconds(2)) != std::future_status::ready) return std::nullopt;
    return fut.get();
  };
  // New work is refused from here (stopping_flag); wait, bounded, for QoS 1 acks, RPC replies
  // and running handlers, sending whatever was queued meanwhile.
  const bool blocking_ok = !CallbackScope::active();
  const auto deadline = Clock::now() + impl->options.stop_timeout;
  bool strand_alive = true;
  while (blocking_ok) {
    const auto r = on_strand([](Impl& i) {
      i.drain_inbox();
      return i.drained();
    });
    if (!r) {
      strand_alive = false;
      break;
    }
    if (*r || Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Fail what is left, close links and the endpoint, finish the handlers.
  if (!strand_alive || !on_strand([](Impl& i) {
        i.fail_everything();
        return true;
      }))
    impl->fail_everything();
  if (impl->unexport_transport) impl->unexport_transport();
  if (impl->unexport_pool) impl->unexport_pool();
  impl->endpoint->close();
  if (impl->workers && blocking_ok) impl->workers->join();
}

}  // namespace macula::node
