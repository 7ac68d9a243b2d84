#include "node/node_core.hpp"

#include <exception>
#include <future>
#include <map>
#include <set>
#include <unordered_map>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "macula/core/pattern_trie.hpp"
#include "macula/error.hpp"
#include "macula/names.hpp"
#include "pubsub/local_interest.hpp"
#include "pubsub/remote_interest.hpp"
#include "rpc/pending_calls.hpp"
#include "transport/realm_guard.hpp"
#include "wire/frame.hpp"
#include "wire/frame_reader.hpp"

namespace macula::node {

namespace asio = boost::asio;
using udp = asio::ip::udp;

namespace {
constexpr const char* kSessionPath = "/macula/v1/session";
}

class NodeCore::Impl : public std::enable_shared_from_this<NodeCore::Impl> {
 public:
  struct Link {
    pubsub::LinkId id = 0;
    std::shared_ptr<transport::Session> session;
    std::shared_ptr<transport::Connection> connection;  // dialed links keep their connection
    std::optional<NodeId> peer;
    wire::FrameReader reader;
    std::set<std::string> provides;
    bool hello_seen = false;
  };
  struct Subscription {
    std::string pattern;
    std::shared_ptr<DeliveryHandler> handler;
  };

  Impl(asio::io_context& io, NodeCoreOptions o)
      : options(std::move(o)), workers(options.worker_threads == 0 ? 1 : options.worker_threads), io_(io),
        remote(options.max_patterns_per_link), pending(options.max_pending_calls) {}

  std::error_code start() {
    std::error_code ec;
    options.realm = normalize_realm(options.realm, ec);
    if (ec) return ec;
    endpoint = transport::Endpoint::create(io_, options.endpoint, options.listen, ec);
    if (ec) return ec;
    strand.emplace(endpoint->strand());
    deadline_timer.emplace(*strand);
    std::weak_ptr<Impl> weak = shared_from_this();
    endpoint->session_route(
        kSessionPath, transport::realm_guarded(policy(), endpoint->node_id(),
                                               [weak](const transport::Request& head, std::shared_ptr<transport::Session> s,
                                                      transport::SessionCallbacks& cb) {
                                                 auto self = weak.lock();
                                                 if (!self || !head.peer) return 401;  // links are node to node
                                                 self->attach(s, head.peer, nullptr, cb);
                                                 return 200;
                                               }));
    serve_http();
    return {};
  }

  // External HTTP/3 clients (DESIGN §5, §6: clients may publish, call and read health):
  // POST /macula/v1/pub/<topic> -> 202; POST /macula/v1/rpc/<procedure> -> 200 with the
  // result, 400 bad name, 404 no provider, 500 handler error (message), 504 timeout.
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
      if (!self) return respond(text_response(503, "stopping\n"));
      const std::string topic = req.path.substr(kPub.size());
      self->publish(topic, std::move(req.body), [&](std::error_code ec) {
        respond(ec ? text_response(400, ec.message() + "\n") : text_response(202, "published\n"));
      });
    });
    endpoint->route("POST", kRpc, [weak, text_response](transport::Request&& req, transport::Responder respond) {
      auto self = weak.lock();
      if (!self) return respond(text_response(503, "stopping\n"));
      const std::string procedure = req.path.substr(kRpc.size());
      self->call(procedure, std::move(req.body), std::chrono::milliseconds(5000),
                 [respond, text_response](std::error_code ec, std::vector<std::uint8_t> result) {
                   if (!ec) {
                     transport::Response r;
                     r.body = std::move(result);
                     return respond(std::move(r));
                   }
                   int status = 500;
                   if (ec == errc::no_provider) status = 404;
                   else if (ec == errc::timed_out) status = 504;
                   else if (ec.category() == error_category() && ec.value() <= static_cast<int>(errc::name_wildcard_not_allowed))
                     status = 400;
                   const std::string msg = ec == errc::handler_error ? std::string(result.begin(), result.end()) : ec.message();
                   respond(text_response(status, msg + "\n"));
                 });
    });
    endpoint->route("GET", "/health", [text_response](transport::Request&&, transport::Responder respond) {
      respond(text_response(200, "ok\n"));
    });
  }

  transport::RealmPolicy policy() const { return {options.realm, options.realm_secret}; }

  // ---- links ------------------------------------------------------------------------------

  Link& attach(std::shared_ptr<transport::Session> s, std::optional<NodeId> peer,
               std::shared_ptr<transport::Connection> conn, transport::SessionCallbacks& cb) {
    const pubsub::LinkId id = ++last_link;
    Link& link = links[id];
    link.id = id;
    link.session = std::move(s);
    link.connection = std::move(conn);
    link.peer = peer;
    std::weak_ptr<Impl> weak = shared_from_this();
    cb.on_data = [weak, id](std::span<const std::uint8_t> bytes) {
      if (auto self = weak.lock()) self->on_data(id, bytes);
    };
    cb.on_close = [weak, id](std::error_code) {
      if (auto self = weak.lock()) self->drop_link(id);
    };
    // Greet: who we are, what we want, what we serve.
    wire::Hello hello;
    hello.node_id = endpoint->node_id();
    hello.realm = options.realm;
    hello.capabilities = 0x3;
    send(link, hello);
    if (auto patterns = local.snapshot(); !patterns.empty()) send(link, wire::InterestAdd{std::move(patterns)});
    if (!procedures.empty()) {
      wire::ProvideAdd p;
      for (const auto& [name, h] : procedures) p.procedures.push_back(name);
      send(link, p);
    }
    return link;
  }

  void drop_link(pubsub::LinkId id) {
    auto it = links.find(id);
    if (it == links.end()) return;
    remote.drop_link(id);
    for (const auto& proc : it->second.provides) {
      auto p = providers.find(proc);
      if (p == providers.end()) continue;
      p->second.erase(id);
      if (p->second.empty()) providers.erase(p);
    }
    links.erase(it);
  }

  bool send(Link& link, const wire::Frame& frame) {
    scratch.clear();
    if (wire::encode(frame, scratch)) return false;
    return !link.session->send(scratch);
  }
  void broadcast(const wire::Frame& frame) {
    for (auto& [id, link] : links) send(link, frame);
  }

  void on_data(pubsub::LinkId id, std::span<const std::uint8_t> bytes) {
    auto it = links.find(id);
    if (it == links.end()) return;
    const std::error_code ec = it->second.reader.feed(bytes, [&](wire::Frame&& f) { on_frame(id, std::move(f)); });
    if (ec) protocol_error(id);
  }

  void protocol_error(pubsub::LinkId id) {
    ++stats.protocol_errors;
    auto it = links.find(id);
    if (it == links.end()) return;
    auto session = it->second.session;
    drop_link(id);
    session->close();
  }

  void on_frame(pubsub::LinkId id, wire::Frame&& frame) {
    auto it = links.find(id);
    if (it == links.end()) return;
    Link& link = it->second;
    if (auto* h = std::get_if<wire::Hello>(&frame)) {
      // The id a node claims must be the one its certificate proved, and its realm ours.
      if ((link.peer && h->node_id != *link.peer) || h->realm != options.realm) return protocol_error(id);
      link.hello_seen = true;
    } else if (auto* ia = std::get_if<wire::InterestAdd>(&frame)) {
      for (const auto& p : ia->patterns)
        if (remote.add(id, p)) return protocol_error(id);  // over the per-link bound
    } else if (auto* ir = std::get_if<wire::InterestRemove>(&frame)) {
      for (const auto& p : ir->patterns) remote.remove(id, p);
    } else if (auto* pa = std::get_if<wire::ProvideAdd>(&frame)) {
      for (const auto& p : pa->procedures) {
        link.provides.insert(p);
        providers[p].insert(id);
      }
    } else if (auto* pr = std::get_if<wire::ProvideRemove>(&frame)) {
      for (const auto& p : pr->procedures) {
        link.provides.erase(p);
        if (auto pv = providers.find(p); pv != providers.end()) {
          pv->second.erase(id);
          if (pv->second.empty()) providers.erase(pv);
        }
      }
    } else if (auto* pub = std::get_if<wire::Publish>(&frame)) {
      deliver_local(pub->topic, pub->payload, pub->publisher, pub->sequence);
    } else if (auto* callf = std::get_if<wire::RpcCall>(&frame)) {
      serve(id, std::move(*callf));
    } else if (auto* reply = std::get_if<wire::RpcReply>(&frame)) {
      on_reply(std::move(*reply));
    }
    // Other frame types (DHT) are not served by this node yet: ignored.
  }

  // ---- pub/sub ----------------------------------------------------------------------------

  void deliver_local(const std::string& topic, const std::vector<std::uint8_t>& payload, const NodeId& publisher,
                     std::uint64_t seq) {
    match_scratch.clear();
    trie.match(topic, match_scratch);
    if (match_scratch.empty()) return;
    auto shared_payload = std::make_shared<const std::vector<std::uint8_t>>(payload);
    for (auto sub_id : match_scratch) {
      auto s = subscriptions.find(sub_id);
      if (s == subscriptions.end()) continue;
      ++stats.delivered_local;
      asio::post(workers, [h = s->second.handler, topic, pattern = s->second.pattern, shared_payload, publisher,
                           seq] { (*h)(Delivery{topic, pattern, *shared_payload, publisher, seq}); });
    }
  }

  void publish(std::string topic, std::vector<std::uint8_t> payload, Done done) {
    if (auto ec = validate_topic(topic)) return done(ec);
    ++stats.published;
    const std::uint64_t seq = ++sequence;
    deliver_local(topic, payload, endpoint->node_id(), seq);
    link_scratch.clear();
    remote.links_for(topic, link_scratch);
    if (!link_scratch.empty()) {
      const wire::Frame frame = wire::Publish{endpoint->node_id(), seq, seq, 0, topic, std::move(payload)};
      for (auto id : link_scratch) {
        auto it = links.find(id);
        if (it == links.end()) continue;
        if (send(it->second, frame)) ++stats.forwarded;
        else ++stats.dropped_backpressure;  // QoS 0 under backpressure: dropped, counted
      }
    }
    done({});
  }

  std::uint64_t subscribe(const std::string& pattern, DeliveryHandler handler) {
    const std::uint64_t id = ++last_subscription;
    (void)trie.add(pattern, id);
    subscriptions[id] = Subscription{pattern, std::make_shared<DeliveryHandler>(std::move(handler))};
    if (auto announce = local.add(pattern); !announce.empty()) broadcast(wire::InterestAdd{{announce}});
    return id;
  }

  void unsubscribe(std::uint64_t id) {
    auto it = subscriptions.find(id);
    if (it == subscriptions.end()) return;
    trie.remove(it->second.pattern, id);
    if (auto withdraw = local.remove(it->second.pattern); !withdraw.empty())
      broadcast(wire::InterestRemove{{withdraw}});
    subscriptions.erase(it);
  }

  // ---- RPC --------------------------------------------------------------------------------

  // Runs a handler on the worker pool; the reply comes back to the strand.
  void run_handler(const std::shared_ptr<RpcHandler>& h, std::vector<std::uint8_t> args,
                   std::function<void(wire::RpcStatus, std::vector<std::uint8_t>)> answer) {
    auto strand_answer = [s = *strand, answer = std::move(answer)](wire::RpcStatus st, std::vector<std::uint8_t> bytes) {
      asio::post(s, [answer, st, b = std::move(bytes)]() mutable { answer(st, std::move(b)); });
    };
    asio::post(workers, [h, args = std::move(args), strand_answer]() mutable {
      auto once = std::make_shared<std::atomic<bool>>(false);
      RpcReply reply = [strand_answer, once](std::error_code ec, std::vector<std::uint8_t> bytes) {
        if (once->exchange(true)) return;  // a handler answers once
        strand_answer(ec ? wire::RpcStatus::handler_error : wire::RpcStatus::ok, std::move(bytes));
      };
      try {
        (*h)(std::move(args), reply);
      } catch (const std::exception& e) {
        const std::string what = e.what();
        reply(make_error_code(errc::handler_error), std::vector<std::uint8_t>(what.begin(), what.end()));
      } catch (...) {
        const std::string what = "handler threw a non-standard exception";
        reply(make_error_code(errc::handler_error), std::vector<std::uint8_t>(what.begin(), what.end()));
      }
    });
  }

  void serve(pubsub::LinkId id, wire::RpcCall call) {
    auto proc = procedures.find(call.procedure);
    std::weak_ptr<Impl> weak = shared_from_this();
    auto answer = [weak, id, call_id = call.call_id](wire::RpcStatus st, std::vector<std::uint8_t> bytes) {
      auto self = weak.lock();
      if (!self) return;
      auto it = self->links.find(id);
      if (it != self->links.end()) self->send(it->second, wire::RpcReply{call_id, st, std::move(bytes)});
    };
    if (proc == procedures.end()) return answer(wire::RpcStatus::no_handler, {});
    ++stats.calls_served;
    run_handler(proc->second, std::move(call.payload), answer);
  }

  static std::error_code status_error(wire::RpcStatus st) {
    switch (st) {
      case wire::RpcStatus::ok: return {};
      case wire::RpcStatus::no_handler: return errc::no_provider;
      case wire::RpcStatus::handler_error: return errc::handler_error;
      case wire::RpcStatus::overloaded: return errc::too_many_pending;
      case wire::RpcStatus::timeout: return errc::timed_out;
    }
    return errc::transport_error;
  }

  void call(std::string procedure, std::vector<std::uint8_t> args, std::chrono::milliseconds timeout, CallHandler done) {
    if (auto ec = validate_procedure(procedure)) return done(ec, {});
    if (auto local_proc = procedures.find(procedure); local_proc != procedures.end()) {
      return run_handler(local_proc->second, std::move(args),
                         [done](wire::RpcStatus st, std::vector<std::uint8_t> b) { done(status_error(st), std::move(b)); });
    }
    auto pv = providers.find(procedure);
    if (pv == providers.end() || pv->second.empty()) return done(errc::no_provider, {});
    // Round robin over the links that serve it (the Node issue brings ProviderSelector here).
    auto pick = pv->second.begin();
    std::advance(pick, static_cast<std::ptrdiff_t>(round_robin++ % pv->second.size()));
    auto link = links.find(*pick);
    if (link == links.end()) return done(errc::not_connected, {});
    if (pending.size() >= pending.capacity()) return done(errc::too_many_pending, {});
    std::error_code ec;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const std::uint64_t call_id = pending.insert(deadline, std::move(done), ec);
    if (ec) return;  // cannot happen: capacity was checked above on this strand
    ++stats.calls_sent;
    if (!send(link->second, wire::RpcCall{call_id, static_cast<std::uint32_t>(timeout.count()), procedure,
                                          std::move(args)})) {
      if (auto h = pending.take(call_id)) (*h)(errc::queue_full, {});
      return;
    }
    arm_deadline();
  }

  void on_reply(wire::RpcReply reply) {
    auto h = pending.take(reply.call_id);
    if (!h) return;  // late, duplicate or unknown: the caller already had its answer
    (*h)(status_error(reply.status), std::move(reply.payload));
    arm_deadline();
  }

  void arm_deadline() {
    const auto next = pending.next_deadline();
    if (!next || *next >= armed_deadline) return;
    armed_deadline = *next;
    deadline_timer->expires_at(*next);
    std::weak_ptr<Impl> weak = shared_from_this();
    deadline_timer->async_wait([weak](boost::system::error_code ec) {
      if (ec) return;
      auto self = weak.lock();
      if (!self) return;
      self->armed_deadline = std::chrono::steady_clock::time_point::max();
      std::vector<std::pair<std::uint64_t, CallHandler>> expired;
      self->pending.expire(std::chrono::steady_clock::now(), expired);
      for (auto& [id, h] : expired) h(errc::timed_out, {});
      self->arm_deadline();
    });
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    if (deadline_timer) deadline_timer->cancel();
    std::vector<std::pair<std::uint64_t, CallHandler>> expired;
    pending.expire(std::chrono::steady_clock::time_point::max(), expired);
    for (auto& [id, h] : expired) h(errc::connection_closed, {});
    links.clear();
  }

  NodeCoreOptions options;
  asio::thread_pool workers;
  asio::io_context& io_;
  std::shared_ptr<transport::Endpoint> endpoint;
  std::optional<asio::strand<asio::io_context::executor_type>> strand;
  std::optional<asio::steady_timer> deadline_timer;
  std::chrono::steady_clock::time_point armed_deadline = std::chrono::steady_clock::time_point::max();

  std::map<pubsub::LinkId, Link> links;
  pubsub::LinkId last_link = 0;
  core::PatternTrie trie;
  std::unordered_map<std::uint64_t, Subscription> subscriptions;
  std::uint64_t last_subscription = 0;
  pubsub::LocalInterest local;
  pubsub::RemoteInterest remote;
  std::map<std::string, std::shared_ptr<RpcHandler>> procedures;
  std::map<std::string, std::set<pubsub::LinkId>> providers;
  rpc::PendingCalls<CallHandler> pending;
  std::uint64_t sequence = 0;
  std::uint64_t round_robin = 0;
  bool stopped = false;
  NodeCoreStats stats;
  std::vector<std::uint8_t> scratch;
  std::vector<core::SubscriberId> match_scratch;
  std::vector<pubsub::LinkId> link_scratch;
};

// ============================================================================ public API

std::shared_ptr<NodeCore> NodeCore::create(asio::io_context& io, NodeCoreOptions options, std::error_code& ec) {
  auto impl = std::make_shared<Impl>(io, std::move(options));
  ec = impl->start();
  if (ec) return nullptr;
  return std::shared_ptr<NodeCore>(new NodeCore(impl));
}

NodeCore::~NodeCore() { stop(); }

const NodeId& NodeCore::node_id() const noexcept { return impl_->endpoint->node_id(); }
udp::endpoint NodeCore::local_endpoint() const { return impl_->endpoint->local_endpoint(); }

void NodeCore::connect(const udp::endpoint& address, std::optional<NodeId> expected, Done done) {
  std::weak_ptr<Impl> weak = impl_;
  impl_->endpoint->connect(address, expected, [weak, done](std::error_code ec, std::shared_ptr<transport::Connection> c) {
    auto self = weak.lock();
    if (!self) return done(errc::endpoint_closed);
    if (ec) return done(ec);
    transport::Request head;
    head.path = kSessionPath;
    head.headers = transport::realm_headers(self->policy(), self->endpoint->node_id(), *c->peer_id());
    // The link's callbacks are set once the session exists; until then bytes cannot arrive
    // (the acceptor speaks only after answering 200, which completes the open first).
    auto cb_slot = std::make_shared<transport::SessionCallbacks>();
    transport::SessionCallbacks forward;
    forward.on_data = [cb_slot](std::span<const std::uint8_t> b) {
      if (cb_slot->on_data) cb_slot->on_data(b);
    };
    forward.on_close = [cb_slot](std::error_code e) {
      if (cb_slot->on_close) cb_slot->on_close(e);
    };
    c->open_session(head, forward, std::chrono::seconds(5),
                    [weak, c, cb_slot, done](std::error_code e, std::shared_ptr<transport::Session> s) {
                      auto node = weak.lock();
                      if (!node) return done(errc::endpoint_closed);
                      if (e) return done(e);
                      node->attach(s, c->peer_id(), c, *cb_slot);
                      done({});
                    });
  });
}

std::uint64_t NodeCore::subscribe(const std::string& pattern, DeliveryHandler handler, std::error_code& ec) {
  ec = validate_pattern(pattern);
  if (ec) return 0;
  std::promise<std::uint64_t> p;
  asio::dispatch(*impl_->strand, [&] { p.set_value(impl_->subscribe(pattern, std::move(handler))); });
  return p.get_future().get();
}

void NodeCore::unsubscribe(std::uint64_t id) {
  asio::dispatch(*impl_->strand, [impl = impl_, id] { impl->unsubscribe(id); });
}

void NodeCore::publish(std::string topic, std::vector<std::uint8_t> payload, Done done) {
  asio::dispatch(*impl_->strand, [impl = impl_, t = std::move(topic), p = std::move(payload), d = std::move(done)]() mutable {
    impl->publish(std::move(t), std::move(p), std::move(d));
  });
}

std::error_code NodeCore::advertise(const std::string& procedure, RpcHandler handler) {
  if (auto ec = validate_procedure(procedure)) return ec;
  asio::dispatch(*impl_->strand, [impl = impl_, procedure, h = std::make_shared<RpcHandler>(std::move(handler))] {
    impl->procedures[procedure] = h;
    impl->broadcast(wire::ProvideAdd{{procedure}});
  });
  return {};
}

void NodeCore::unadvertise(const std::string& procedure) {
  asio::dispatch(*impl_->strand, [impl = impl_, procedure] {
    if (impl->procedures.erase(procedure)) impl->broadcast(wire::ProvideRemove{{procedure}});
  });
}

void NodeCore::call(std::string procedure, std::vector<std::uint8_t> args, std::chrono::milliseconds timeout,
                    CallHandler done) {
  asio::dispatch(*impl_->strand, [impl = impl_, pr = std::move(procedure), a = std::move(args), timeout,
                                  d = std::move(done)]() mutable {
    impl->call(std::move(pr), std::move(a), timeout, std::move(d));
  });
}

NodeCoreStats NodeCore::stats() const {
  std::promise<NodeCoreStats> p;
  asio::dispatch(*impl_->strand, [&] {
    NodeCoreStats s = impl_->stats;
    s.links = impl_->links.size();
    p.set_value(s);
  });
  return p.get_future().get();
}

void NodeCore::stop() {
  if (!impl_->endpoint) return;
  std::promise<void> p;
  auto f = p.get_future();
  asio::dispatch(*impl_->strand, [&] {
    impl_->stop();
    p.set_value();
  });
  if (f.wait_for(std::chrono::seconds(2)) != std::future_status::ready) impl_->stop();
  impl_->endpoint->close();
  impl_->workers.join();
}

}  // namespace macula::node
