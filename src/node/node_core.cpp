#include "node/node_core.hpp"

#include <algorithm>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "dht/dht_discovery.hpp"
#include "macula/error.hpp"
#include "macula/limits.hpp"
#include "macula/names.hpp"
#include "node/dht_requests.hpp"
#include "node/dispatch_queue.hpp"
#include "node/http_api.hpp"
#include "node/http_subscription.hpp"
#include "node/inbox.hpp"
#include "node/link_table.hpp"
#include "node/node_metrics.hpp"
#include "node/pubsub_engine.hpp"
#include "node/rpc_engine.hpp"
#include "node/subscription.hpp"
#include "observe/logger.hpp"
#include "transport/connection_pool.hpp"
#include "transport/realm_guard.hpp"
#include "transport/transport_metrics.hpp"

namespace macula::node {

namespace asio = boost::asio;
using udp = asio::ip::udp;

namespace {
constexpr const char* kSessionPath = "/macula/v1/session";
}  // namespace

class NodeCore::Impl : public std::enable_shared_from_this<NodeCore::Impl>, public LinkEvents {
 public:
  // The engines' wake-ups come from handler and consumer threads that may outlive the node (a
  // Subscriber destroyed after its Node, a handler keeping an RpcResponder): they reach the node
  // through a weak reference, filled in once the node is owned by a shared_ptr (init()).
  static RunOnStrand urgent_hand_over(const std::shared_ptr<std::weak_ptr<Impl>>& self) {
    return [self](core::detail::UniqueFunction<void()> f) {
      if (auto impl = self->lock()) impl->to_strand_urgent(std::move(f));
    };
  }

  Impl(asio::io_context& io, NodeOptions o)
      : options(std::move(o)),
        log(options.log_sink, options.log_level),
        metrics(options),
        io_(io),
        links(options, metrics, log, *this),
        pubsub(options, metrics, links, [this]() -> discovery::Discovery& { return *discovery; }, nullptr,
               urgent_hand_over(self_ref), [this](std::size_t n, std::size_t bytes) { inbox.released(n, bytes); }),
        rpc(options, metrics, links, [this]() -> discovery::Discovery& { return *discovery; }, nullptr,
            urgent_hand_over(self_ref)),
        inbox(options, metrics, [self = self_ref] {
          if (auto impl = self->lock())
            asio::post(*impl->strand, [weak = std::weak_ptr<Impl>(impl)] {
              if (auto i = weak.lock()) i->drain_inbox();
            });
        }) {}

  // The parts hold `this` in their callbacks; the executor-dependent ones are built here.
  void init() {
    *self_ref = weak_from_this();
    if (options.handler_executor) {
      executor = options.handler_executor;
    } else {
      workers = std::make_unique<asio::thread_pool>(options.worker_threads == 0 ? 1 : options.worker_threads);
      executor = [pool = workers.get()](core::detail::UniqueFunction<void()> f) { asio::post(*pool, std::move(f)); };
    }
    dispatch = std::make_shared<DispatchQueue>(executor, options.worker_threads);
    tasks = std::make_shared<TaskQueue>(executor, options.worker_threads);
    pubsub.set_dispatch(dispatch);
    pubsub.set_route_epoch(&route_epoch);
    links.set_route_epoch(&route_epoch);
    rpc.set_tasks(tasks);
    register_metrics();
  }

  // `why` names the option and the reason when it refuses to start (Node::last_start_error()).
  std::error_code start(transport::Identity identity, std::string& why) {
    auto refuse = [&](std::error_code code, std::string reason) {
      why = std::move(reason);
      log.log(LogLevel::error, "node", "not starting: " + why);
      return code;
    };
    std::error_code ec;
    const std::string realm = options.realm;
    options.realm = normalize_realm(realm, ec);
    if (ec) return refuse(ec, "realm \"" + realm + "\": " + ec.message());
    if (options.dht_record_ttl < std::chrono::seconds(30) || options.dht_record_ttl > std::chrono::hours(24))
      return refuse(errc::options_invalid, "dht_record_ttl " + std::to_string(options.dht_record_ttl.count()) +
                                               " s: must be 30 s to 1 day");
    std::string gate_why;
    if ((ec = ClientGate::resolve(options, gate, gate_why))) return refuse(ec, gate_why);
    udp::endpoint listen;
    if ((ec = resolve_address(options.listen, listen)))
      return refuse(ec, "listen " + options.listen + ": " + ec.message());
    transport::EndpointOptions eo;
    eo.identity = std::move(identity);
    eo.max_clients = options.max_clients;
    eo.max_buffered_body_bytes = options.max_request_body_bytes;
    eo.max_connection_body_bytes = options.max_connection_request_body_bytes;
    eo.body_idle_timeout = options.request_body_idle_timeout;
    eo.connect_timeout = options.connect_timeout;
    eo.idle_timeout = options.idle_timeout;
    eo.keep_alive = std::chrono::seconds(15);  // links are long-lived: keep NAT and idle timers alive
    if (!options.advertise_address.empty()) {
      udp::endpoint advertised;
      if (resolve_address(options.advertise_address, advertised) || advertised.address().is_unspecified() ||
          advertised.port() == 0)
        return refuse(errc::options_invalid,
                      "advertise_address " + options.advertise_address + " is not a host:port peers can dial");
      options.advertise_address = format_address(advertised);
    } else if (listen.address().is_unspecified() && !options.leaf) {
      return refuse(errc::options_invalid, "listening on " + options.listen +
                                               " (any address) needs advertise_address: the address peers should dial");
    }
    endpoint = transport::Endpoint::create(io_, std::move(eo), listen, ec);
    if (ec) return refuse(ec, "listen " + options.listen + ": " + ec.message());
    if (options.advertise_address.empty()) options.advertise_address = format_address(endpoint->local_endpoint());
    strand.emplace(endpoint->strand());
    housekeeping_timer.emplace(*strand);
    std::weak_ptr<void> owner = shared_from_this();
    links.start(endpoint, *strand, owner);
    pubsub.start(endpoint->node_id(), owner);
    rpc.start(*strand, owner);
    unexport_transport = transport::export_metrics(metrics.registry, endpoint, {});
    std::weak_ptr<Impl> weak = shared_from_this();
    endpoint->session_route(kSessionPath, [weak, policy = transport::RealmPolicy{options.realm, options.realm_secret},
                                           self_id = endpoint->node_id()](const transport::Request& head,
                                                                          std::shared_ptr<transport::Session> s,
                                                                          transport::SessionCallbacks& cb) {
      auto self = weak.lock();
      if (!self || !head.peer || self->stopping_flag) return 401;
      if (self->options.leaf) return 503;  // a leaf is reached only over the links it dials
      if (const int refused = transport::realm_admit(policy, self_id, head, cb.response_headers)) {
        self->metrics.realm_refusals->inc();
        // Another realm: say which is ours, so the dialer's error can name it. Not in a realm
        // with a secret, whose name is for members only.
        if (refused == 403 && !self->options.realm_secret) cb.response_headers.push_back({"macula-realm", self->options.realm});
        // At most one line a second: an outsider retrying must not flood the host's log
        // (macula_realm_refusals_total counts every one).
        const auto now = Clock::now();
        if (now - self->last_refusal_logged >= std::chrono::seconds(1)) {
          self->last_refusal_logged = now;
          self->log.log_with(LogLevel::warn, "link", [&] {
            return "refused a link from " + head.peer->to_hex().substr(0, 12) +
                   (refused == 403 ? ": it asked for another realm" : ": it did not prove the realm secret");
          });
        }
        return refused;
      }
      self->links.attach(std::move(s), *head.peer, nullptr, cb);
      return 200;
    });
    pages.metrics = [weak] {
      auto self = weak.lock();
      return self ? self->render_metrics() : std::string();
    };
    pages.health = [weak]() -> std::pair<bool, std::string> {
      auto self = weak.lock();
      return self ? self->readiness() : std::pair<bool, std::string>{false, "stopping"};
    };
    auto api = std::make_shared<HttpApi>();
    api->publish = [this](Outgoing&& m) { return publish_on_strand(std::move(m)); };
    api->call = [this](std::string p, Bytes a, detail::Completion<std::error_code, Bytes> d) {
      rpc.call(std::move(p), std::move(a), CallOptions{}, std::move(d));
      links.flush();
    };
    api->stopping = [this] { return stopping_flag.load(); };
    api->pages = pages;  // the HTTP/3 routes ask the gate themselves
    api->gate = gate;
    api->refusals = metrics.client_refusals;
    // Streaming subscriptions are counted against max_clients, as the clients they serve.
    http_subscriptions = std::make_shared<HttpSubscriptions>(
        HttpSubscriptions::Limits{.total = options.max_clients}, metrics.registry,
        [this](const std::shared_ptr<Subscription>& s) { return subscribe(s); },
        [this](const std::shared_ptr<Subscription>& s) { unsubscribe(s); }, owner);
    api->subscriptions = http_subscriptions;
    // The plain-HTTP port's /metrics: the token when there is one (closed and open serve it:
    // that port is the operator's, on loopback unless configured otherwise).
    if (gate.mode() == ClientAccess::token)
      pages.guard_metrics = [gate = gate, weak](std::string_view authorization) {
        const int refused = gate.check_authorization(authorization);
        if (auto self = weak.lock(); self && refused) self->metrics.client_refusals->inc();
        return refused;
      };
    // Every request's head passes the client policy (publish, call, /metrics) or the realm
    // check (DHT) before any of its body is kept: a request that will be refused cannot hold
    // the node's request-body memory, however slowly it uploads.
    endpoint->request_guard([weak, gate = gate, policy = transport::RealmPolicy{options.realm, options.realm_secret},
                             self_id = endpoint->node_id()](const transport::Request& head) -> int {
      auto self = weak.lock();
      if (!self) return 0;  // stopping: the routes answer 503
      if (head.path == DhtRequests::kPath) {
        std::vector<transport::Header> ignored;
        const int refused = !head.peer ? 401 : transport::realm_admit(policy, self_id, head, ignored);
        if (refused) self->metrics.realm_refusals->inc();
        return refused;
      }
      if (HttpApi::client_route(head.path)) {
        const int refused = gate.check(head.headers);
        if (refused) self->metrics.client_refusals->inc();
        return refused;
      }
      return 0;
    });
    HttpApi::install(*endpoint, std::move(api), owner);
    if (options.dht && !options.leaf) {
      dht_requests = std::make_unique<DhtRequests>(io_, endpoint, *strand, owner, stopping_flag, [this] { links.flush(); },
                                                   transport::RealmPolicy{options.realm, options.realm_secret},
                                                   *metrics.realm_refusals);
      unexport_pool = transport::export_metrics(metrics.registry, dht_requests->pool(), {});
      discovery = std::make_unique<dht::DhtDiscovery>(endpoint->node_id(), options.advertise_address,
                                                       options.realm, *dht_requests, discovery_options());
      dht_requests->serve([this]() -> discovery::Discovery& { return *discovery; });
    }
    asio::dispatch(*strand, [self = shared_from_this()] { self->housekeeping(); });
    log.log_with(LogLevel::info, "node", [&] {
      return "node " + endpoint->node_id().to_hex().substr(0, 12) + " started on " +
             format_address(endpoint->local_endpoint()) + " in realm " + options.realm +
             (options.leaf ? " as a leaf" : options.dht ? " with the DHT" : "");
    });
    return {};
  }

  // ---- metrics and health -------------------------------------------------------------------
  void register_metrics() {
    auto& m = metrics.registry;
    m.counter_callback("macula_qos1_too_old_total",
                       "QoS 1 messages delivered although older than the de-duplication window (possible duplicates; each second)",
                       {}, [this] { return static_cast<double>(dedup_too_old.load(std::memory_order_relaxed)); });
    m.gauge_callback("macula_ready", "1 when /ready answers 200", {}, [this] { return readiness().first ? 1.0 : 0.0; });
    for (const char* kind : {"hits", "misses", "evictions"}) {
      const std::string k = kind;
      m.counter_callback("macula_cache_" + k + "_total", "Cache " + k + ", per cache", {{"cache", "rpc_results"}}, [this, k] {
        const auto st = rpc.cache_stats();
        return static_cast<double>(k == "hits" ? st.hits : k == "misses" ? st.misses : st.evictions);
      });
      m.counter_callback("macula_cache_" + k + "_total", "Cache " + k + ", per cache", {{"cache", "dht_providers"}}, [this, k] {
        const auto& a = k == "hits" ? dht_view.cache_hits : k == "misses" ? dht_view.cache_misses : dht_view.cache_evictions;
        return static_cast<double>(a.load(std::memory_order_relaxed));
      });
    }
    m.gauge_callback("macula_cache_size", "Entries in a cache", {{"cache", "rpc_results"}},
                     [this] { return static_cast<double>(rpc.cache_stats().size); });
    m.gauge_callback("macula_dht_routing_table_size", "Contacts in the DHT routing table (updated each second)", {},
                     [this] { return static_cast<double>(dht_view.table_size.load(std::memory_order_relaxed)); });
    m.gauge_callback("macula_dht_records_stored", "DHT keys this node stores records under, its own and others' (updated each second)", {},
                     [this] { return static_cast<double>(dht_view.records.load(std::memory_order_relaxed)); });
    for (const char* name : {"handler_tasks", "dispatch"}) {
      const bool d = std::string_view(name) == "dispatch";
      m.gauge_callback("macula_queue_depth", "Depth of a bounded queue", {{"queue", name}},
                       [this, d] { return static_cast<double>(d ? dispatch->depth() : tasks->depth()); });
      m.gauge_callback("macula_queue_high_water", "Most items a bounded queue held at once", {{"queue", name}},
                       [this, d] { return static_cast<double>(d ? dispatch->high_water() : tasks->high_water()); });
    }
  }

  void update_gauges() {
    metrics.links->set(static_cast<double>(links.size()));
    metrics.subscriptions->set(static_cast<double>(pubsub.subscriptions()));
    metrics.pending_calls->set(static_cast<double>(rpc.pending()));
    metrics.qos1_in_flight->set(static_cast<double>(pubsub.qos1_in_flight()));
    metrics.link_queue_bytes->set(static_cast<double>(links.queued_publish_bytes()));
  }

  std::pair<bool, std::string> readiness() const { return metrics.readiness(stopping_flag); }

  dht::DhtDiscovery::Options discovery_options() const {
    dht::DhtDiscovery::Options o;
    o.record_ttl = options.dht_record_ttl;
    // At least 10 s before expiry: a refresh is a lookup plus STOREs, each request up to 2 s.
    o.republish = std::min(options.dht_record_ttl * 4 / 5, options.dht_record_ttl - std::chrono::seconds(10));
    // Records of nodes with the default TTL must not expire here before their refresh.
    o.max_record_ttl = std::max(o.max_record_ttl, options.dht_record_ttl);
    // A cached provider list must not outlive the records it came from.
    o.provider_cache_ttl = std::min(o.provider_cache_ttl, options.dht_record_ttl);
    return o;
  }
  std::string render_metrics() const { return metrics.render(pubsub.subscription_rows()); }

  void housekeeping() {
    if (stopping_flag) return;
    const auto now = Clock::now();
    links.housekeeping(now);
    pubsub.housekeeping();
    std::vector<std::pair<std::string, std::size_t>> depths;
    depths.emplace_back("publish", inbox.depth());
    depths.emplace_back("dispatch", dispatch->depth());
    depths.emplace_back("handler_tasks", tasks->depth());
    pubsub.deep_subscriptions(options.health_queue_threshold, depths);
    // Only a node that dials peers (bootstrap or connect(), which keep re-dialing) expects
    // links: peers that dialed in and left (short-lived clients, tests) do not make a seed
    // node unready.
    std::string links_lost;
    if (links.size() == 0 && links.dials()) links_lost = links.had_link() ? "lost all links to peers" : "no link to any peer yet";
    metrics.check_health(now, depths, std::move(links_lost), log);
    dedup_too_old.store(pubsub.dedup_too_old(), std::memory_order_relaxed);
    const auto ds = discovery->stats();
    dht_view.table_size.store(ds.routing_table_size, std::memory_order_relaxed);
    dht_view.records.store(ds.records_stored, std::memory_order_relaxed);
    dht_view.cache_hits.store(ds.cache_hits, std::memory_order_relaxed);
    dht_view.cache_misses.store(ds.cache_misses, std::memory_order_relaxed);
    dht_view.cache_evictions.store(ds.cache_evictions, std::memory_order_relaxed);
    links.flush();
    update_gauges();
    housekeeping_timer->expires_after(std::chrono::seconds(1));
    housekeeping_timer->async_wait([weak = weak_from_this()](boost::system::error_code ec) {
      if (auto self = weak.lock(); self && !ec) self->housekeeping();
    });
  }

  // ---- link events (LinkEvents) -------------------------------------------------------------
  void on_link_up(PeerKey peer, LinkId link) override {
    pubsub.on_link_up(peer, link);
    rpc.on_link_up(link);
    update_gauges();
  }
  void on_link_down(PeerKey peer, LinkId link, bool last) override {
    pubsub.on_link_down(peer, link, last);
    rpc.on_link_down(link);
    update_gauges();
  }
  void on_peer_gone(PeerKey peer) override {
    pubsub.on_peer_gone(peer);
    rpc.on_peer_gone(peer);
  }
  void on_frame(PeerKey peer, LinkId link, wire::Frame&& frame) override {
    if (pubsub.on_frame(peer, link, frame) || rpc.on_frame(peer, link, frame)) return;
    if (auto* h = std::get_if<wire::Hello>(&frame)) {
      if (!h->endpoints.empty()) discovery->on_peer(h->node_id, h->endpoints.front());
      pubsub.on_hello(peer);
      rpc.on_hello(peer);
    } else if (auto* pong = std::get_if<wire::Pong>(&frame)) {
      auto sy = syncs.find(pong->nonce);
      if (sy != syncs.end() && --sy->second.first == 0) {
        auto done = std::move(sy->second.second);
        syncs.erase(sy);
        done({});
      }
    }
    // Other frame types (DHT) travel as HTTP/3 requests, not on links: ignored.
  }
  void on_read_done(PeerKey peer) override { pubsub.on_read_done(peer); }
  void on_room(PeerKey peer) override { pubsub.on_room(peer); }

  // ---- the inbox -----------------------------------------------------------------------------
  void to_strand(core::detail::UniqueFunction<void()> f) { inbox.push(std::move(f), false); }
  void to_strand_urgent(core::detail::UniqueFunction<void()> f) { inbox.push(std::move(f), true); }

  // Strand (HTTP/3 API): a publish that is on the strand already skips the inbox, but counts
  // in the publish queue like any other.
  std::error_code publish_on_strand(Outgoing&& m) {
    if (auto ec = inbox.count_publish(m.payload_size())) return ec;
    pubsub.publish(std::move(m));
    pubsub.report_released();
    links.flush();
    return {};
  }

  void drain_inbox() {
    inbox.turn([this](Outgoing&& m) { pubsub.publish(std::move(m)); },
               [this] {
                 pubsub.report_released();
                 links.flush();
                 update_gauges();
               });
  }

  // Any thread (the Subscriber API, HttpSubscriptions on the strand).
  std::error_code subscribe(const std::shared_ptr<Subscription>& s) {
    if (stopping_flag) return errc::not_started;
    // Counted here, registered on the strand: subscribing never waits for the io_context, so a
    // host may subscribe before it runs its io_context.
    if (subscription_count.fetch_add(1) >= options.max_subscriptions) {
      --subscription_count;
      return errc::too_many_subscriptions;
    }
    // Publishers' "every link full" memos are not trusted until the strand has the
    // subscription (and moved the route epoch): this thread's next publish must see it.
    route_epoch.pending.fetch_add(1, std::memory_order_acq_rel);
    to_strand([this, s] {
      if (s->closed()) --subscription_count;
      else pubsub.subscribe(s);
      route_epoch.pending.fetch_sub(1, std::memory_order_acq_rel);
    });
    return {};
  }

  void unsubscribe(const std::shared_ptr<Subscription>& s) {
    to_strand([this, s] {
      if (pubsub.unsubscribe(s)) --subscription_count;
    });
  }

  // ---- stop -----------------------------------------------------------------------------------
  bool drained() const { return pubsub.drained() && rpc.drained() && inbox.empty(); }

  void fail_everything() {
    housekeeping_timer->cancel();
    if (http_subscriptions) http_subscriptions->close_all();
    // What was handed over before stop() began is carried out, then failed with the rest.
    while (!inbox.empty()) drain_inbox();
    pubsub.fail_all();
    rpc.fail_all();
    if (dht_requests) dht_requests->close();
    links.close_all();
    update_gauges();
  }

  void begin_stop() {
    stopping_flag = true;
    inbox.stop();
  }

  // ---- members --------------------------------------------------------------------------------
  std::shared_ptr<std::weak_ptr<Impl>> self_ref = std::make_shared<std::weak_ptr<Impl>>();
  NodeOptions options;
  observe::Logger log;
  NodeMetrics metrics;
  asio::io_context& io_;
  std::unique_ptr<asio::thread_pool> workers;
  HandlerExecutor executor;
  std::shared_ptr<DispatchQueue> dispatch;
  std::shared_ptr<TaskQueue> tasks;
  std::unique_ptr<discovery::Discovery> discovery = std::make_unique<discovery::LinkDiscovery>();
  std::shared_ptr<transport::Endpoint> endpoint;
  std::unique_ptr<DhtRequests> dht_requests;
  std::optional<LinkTable::Strand> strand;
  std::optional<asio::steady_timer> housekeeping_timer;
  std::atomic<bool> stopping_flag{false};
  RouteEpoch route_epoch;  // before links and pubsub, which point at it
  LinkTable links;
  PubSubEngine pubsub;
  RpcEngine rpc;
  Inbox inbox;
  StatusPages pages;
  std::shared_ptr<HttpSubscriptions> http_subscriptions;
  ClientGate gate;  // resolved at start
  Clock::time_point last_refusal_logged{};  // strand: refused links are logged once a second at most
  std::function<void()> unexport_transport, unexport_pool;

  // The DHT's figures, copied off the strand once a second for scrapes from any thread.
  struct DhtView {
    std::atomic<std::size_t> table_size{0}, records{0};
    std::atomic<std::uint64_t> cache_hits{0}, cache_misses{0}, cache_evictions{0};
  } dht_view;
  std::atomic<std::uint64_t> dedup_too_old{0};
  std::atomic<std::size_t> subscription_count{0};

  std::map<std::uint64_t, std::pair<std::size_t, detail::Completion<std::error_code>>> syncs;
  std::uint64_t last_nonce = 0;
};

// ============================================================================ NodeCore

std::shared_ptr<NodeCore> NodeCore::create(asio::io_context& io, const NodeOptions& options,
                                           transport::Identity identity, std::error_code& ec, std::string& why) {
  auto impl = std::make_shared<Impl>(io, options);
  impl->init();
  ec = impl->start(std::move(identity), why);
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
  impl_->to_strand([impl = impl_.get(), address, expected, redial, shared_done] {
    if (impl->stopping_flag) return (*shared_done)(errc::not_started);
    impl->links.dial(address, expected, [impl, address, redial, shared_done](std::error_code ec, PeerKey key) {
      if (!ec && redial) impl->links.keep_linked(key, address);  // how to get the link back
      (*shared_done)(ec);
    });
  });
}

std::error_code NodeCore::publish(Outgoing&& m, std::optional<Clock::time_point> wait_until) {
  if (auto ec = validate_topic(m.topic())) return ec;
  if (m.payload_size() > kMaxPayloadBytes) {
    impl_->metrics.payload_refused->inc();
    impl_->log.log_with(LogLevel::warn, "publish", [&] {
      return "publish to " + std::string(m.topic()) + " refused: payload of " + std::to_string(m.payload_size()) +
             " bytes is larger than the maximum of " + std::to_string(kMaxPayloadBytes) + " bytes";
    });
    return errc::payload_too_large;
  }
  return impl_->inbox.push_publish(std::move(m), wait_until, impl_->strand->running_in_this_thread());
}

bool NodeCore::refuses(std::size_t bytes, std::atomic<std::uint64_t>* drops) const {
  return !impl_->stopping_flag && impl_->inbox.refuse_if_full(bytes, drops);
}

bool NodeCore::drops_for_full_links(std::string_view topic, detail::PublisherState& publisher) const {
  const std::uint64_t epoch = impl_->route_epoch.trusted();
  if (epoch == 0 || impl_->stopping_flag) return false;
  const std::uint32_t links = publisher.full_links_at(topic, epoch);
  if (links == 0) return false;
  // Counted as the strand counts it: published, and dropped once per full link.
  impl_->metrics.published[0]->inc();
  impl_->metrics.drop_backpressure->inc(links);
  impl_->metrics.edge_drops->inc();
  publisher.drops.fetch_add(links, std::memory_order_relaxed);
  return true;
}

std::error_code NodeCore::subscribe(const std::shared_ptr<Subscription>& s) { return impl_->subscribe(s); }
void NodeCore::unsubscribe(const std::shared_ptr<Subscription>& s) { impl_->unsubscribe(s); }

std::error_code NodeCore::advertise(std::string procedure, RpcHandler handler, AdvertiseOptions options) {
  if (auto ec = validate_procedure(procedure)) return ec;
  if (impl_->stopping_flag) return errc::not_started;
  auto proc = std::make_shared<RpcEngine::Procedure>();
  proc->name = std::move(procedure);
  proc->handler = std::move(handler);
  proc->options = options;
  impl_->to_strand([impl = impl_.get(), proc] { impl->rpc.advertise(proc); });
  return {};
}

void NodeCore::unadvertise(const std::string& procedure) {
  impl_->to_strand([impl = impl_.get(), procedure] { impl->rpc.unadvertise(procedure); });
}

void NodeCore::call(std::string procedure, Bytes args, CallOptions options, detail::Completion<std::error_code, Bytes> done) {
  if (impl_->stopping_flag) return done(errc::cancelled, {});
  if (args.size() > kMaxPayloadBytes)
    impl_->log.log_with(LogLevel::warn, "rpc", [&] {
      return "call to " + procedure + " refused: arguments of " + std::to_string(args.size()) +
             " bytes are larger than the maximum of " + std::to_string(kMaxPayloadBytes) + " bytes";
    });
  // Batched with other calls and RPC answers: one strand post and one link write per batch.
  impl_->to_strand([impl = impl_.get(), pr = std::move(procedure), a = std::move(args), o = std::move(options),
                    d = std::move(done)]() mutable { impl->rpc.call(std::move(pr), std::move(a), std::move(o), std::move(d)); });
}

void NodeCore::sync(detail::Completion<std::error_code> done) {
  auto slot = std::make_shared<detail::Completion<std::error_code>>(std::move(done));
  impl_->to_strand([impl = impl_.get(), slot] {
    const std::uint64_t nonce = ++impl->last_nonce;
    const std::size_t n = impl->links.ping_all(nonce);
    if (n == 0) return (*slot)({});
    impl->syncs.emplace(nonce, std::make_pair(n, std::move(*slot)));
  });
}

NodeStats NodeCore::stats() const {
  std::promise<NodeStats> p;
  auto f = p.get_future();
  asio::dispatch(*impl_->strand, [&] {
    const Impl& i = *impl_;
    const NodeMetrics& m = i.metrics;
    NodeStats s;
    s.links = i.links.size();
    s.subscriptions = i.pubsub.subscriptions();
    s.published = m.published[0]->value() + m.published[1]->value();
    s.delivered = m.delivered->value();
    s.forwarded = m.forwarded->value();
    s.dropped = m.drop_queue_full->value() + m.drop_backpressure->value() + m.drop_no_link->value() + m.drop_subscriber->value() +
                m.drop_no_route->value();
    s.duplicates = m.duplicates->value();
    s.qos1_in_flight = i.pubsub.qos1_in_flight();
    s.qos1_retries = m.qos1_resent->value();
    s.qos1_expired = m.qos1_expired->value();
    s.calls_started = m.calls_started->value();
    s.calls_served = m.calls_served->value();
    s.calls_failed_over = m.failovers->value();
    s.pending_calls = i.rpc.pending();
    s.protocol_errors = m.protocol_errors->value();
    p.set_value(s);
  });
  return f.get();
}

std::string NodeCore::metrics_text() const { return impl_->render_metrics(); }
std::pair<bool, std::string> NodeCore::readiness() const { return impl_->readiness(); }
StatusPages NodeCore::status_pages() const { return impl_->pages; }
void NodeCore::add_counter_callback(const std::string& name, const std::string& help, const std::string& reason,
                                    std::function<double()> read) {
  impl_->metrics.registry.counter_callback(name, help, {{"reason", reason}}, std::move(read));
}

void NodeCore::note_http_status(bool up, const std::string& detail) {
  impl_->metrics.http_up->set(up ? 1.0 : 0.0);
  impl_->log.log(up ? LogLevel::info : LogLevel::warn, "http", detail);
}

void NodeCore::stop() {
  auto impl = impl_;
  if (!impl->endpoint || impl->stopping_flag) return;
  impl->begin_stop();
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
      while (!i.inbox.empty()) i.drain_inbox();
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

// ============================================================================ test hooks

void TestHooks::drop_links(const Node& node) {
  auto core = NodeAccess::core(node);
  std::promise<void> p;
  auto f = p.get_future();
  asio::dispatch(*core->impl_->strand, [&] {
    core->impl_->links.drop_all();
    p.set_value();
  });
  f.get();
}

void TestHooks::set_discovery(const Node& node, std::unique_ptr<discovery::Discovery> d) {
  auto core = NodeAccess::core(node);
  std::promise<void> p;
  auto f = p.get_future();
  asio::dispatch(*core->impl_->strand, [&] {
    core->impl_->discovery = std::move(d);
    p.set_value();
  });
  f.get();
}

void TestHooks::find_value(const Node& node, const NodeId& key, std::function<void(std::error_code, std::size_t)> done) {
  auto core = NodeAccess::core(node);
  core->impl_->to_strand([impl = core->impl_.get(), key, done = std::move(done)]() mutable {
    auto shared = std::make_shared<std::function<void(std::error_code, std::size_t)>>(std::move(done));
    if (!impl->discovery->find_value(key, [shared](std::size_t n) { (*shared)({}, n); })) (*shared)(errc::not_found, 0);
  });
}

}  // namespace macula::node
