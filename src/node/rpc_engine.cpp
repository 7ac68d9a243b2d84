#include "node/rpc_engine.hpp"

#include <algorithm>
#include <thread>

#include "macula/error.hpp"
#include "macula/limits.hpp"
#include "macula/names.hpp"
#include "node/address.hpp"
#include "node/reply_slot.hpp"
#include "node/subscription.hpp"

namespace macula::node {

namespace {
Bytes to_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

std::string cache_key(const std::string& procedure, const Bytes& args) {
  std::string k;
  k.reserve(procedure.size() + 1 + args.size());
  k.append(procedure).push_back('\0');
  k.append(args.begin(), args.end());
  return k;
}

// What a relaying gateway answers for its own call's outcome.
wire::RpcStatus error_status(std::error_code ec) {
  if (!ec) return wire::RpcStatus::ok;
  if (ec == errc::handler_error) return wire::RpcStatus::handler_error;
  if (ec == errc::payload_too_large) return wire::RpcStatus::result_too_large;
  if (ec == errc::timed_out) return wire::RpcStatus::timeout;
  if (ec == errc::overloaded || ec == errc::too_many_pending || ec == errc::cancelled) return wire::RpcStatus::overloaded;
  return wire::RpcStatus::no_handler;
}

std::error_code status_error(wire::RpcStatus st) {
  switch (st) {
    case wire::RpcStatus::ok: return {};
    case wire::RpcStatus::no_handler: return errc::no_provider;
    case wire::RpcStatus::handler_error: return errc::handler_error;
    case wire::RpcStatus::overloaded: return errc::overloaded;
    case wire::RpcStatus::timeout: return errc::timed_out;
    case wire::RpcStatus::result_too_large: return errc::payload_too_large;
  }
  return errc::transport_error;
}
}  // namespace

struct RpcEngine::CallState {
  std::string procedure;
  std::shared_ptr<const Bytes> args;
  Clock::time_point started;
  Clock::time_point deadline;
  std::chrono::milliseconds attempt_timeout{0};
  unsigned max_attempts = 0;
  unsigned attempts = 0;
  bool auto_attempts = false;  // max_attempts and attempt_timeout follow the providers known
  SelectionStrategy strategy = SelectionStrategy::round_robin;
  std::vector<PeerKey> tried;
  std::error_code last_error = errc::no_provider;
  std::uint64_t pending_id = 0;
  bool finished = false;
  bool discovered = false;  // discovery was asked once already
  std::size_t dials = 0;    // links to discovered providers still being opened
  bool waiting = false;     // for discovery or one of those dials (a placeholder holds the deadline)
  PeerKey relay_from = 0;   // a gateway's relayed call: the peer it came from
  bool leaves_only = false;
  detail::Completion<std::error_code, Bytes> done;
};

// The providers of one procedure as the selector sees them: this node (when it serves it)
// and the peers that announced it. Built on first use and dropped whenever that procedure's
// providers change; in-flight attempts keep theirs alive for the outstanding-call counts.
struct RpcEngine::ProviderSet {
  std::vector<PeerKey> keys;
  std::unordered_map<PeerKey, std::size_t> index;
  core::ProviderSelector selector;
  explicit ProviderSet(std::vector<core::ProviderInfo> infos) : selector(std::move(infos)) {}
};

RpcEngine::RpcEngine(const NodeOptions& options, NodeMetrics& metrics, LinkTable& links, DiscoveryRef discovery,
                     std::shared_ptr<TaskQueue> tasks, RunOnStrand to_strand)
    : options_(options),
      m_(metrics),
      links_(links),
      discovery_(std::move(discovery)),
      tasks_(std::move(tasks)),
      to_strand_(std::move(to_strand)),
      pending_(options.max_pending_calls),
      result_cache_(core::CacheOptions{options.result_cache_capacity, options.shards, std::chrono::nanoseconds{0}}) {}

void RpcEngine::start(LinkTable::Strand strand, std::weak_ptr<void> owner) {
  strand_.emplace(strand);
  timer_.emplace(strand);
  owner_ = std::move(owner);
}

// ---- procedures -------------------------------------------------------------------------------

void RpcEngine::advertise(std::shared_ptr<Procedure> proc) {
  const bool fresh = procedures_.find(proc->name) == procedures_.end();
  const std::string name = proc->name;
  procedures_[name] = std::move(proc);
  providers_changed(name);
  if (!fresh || relayed_.count(name)) return;  // announced already for a leaf
  links_.broadcast(wire::ProvideAdd{{name}});
  discovery_().advertise_procedure(name);
}

void RpcEngine::unadvertise(const std::string& procedure) {
  if (!procedures_.erase(procedure)) return;
  providers_changed(procedure);
  if (relayed_.count(procedure)) return;  // still served by a leaf of ours
  links_.broadcast(wire::ProvideRemove{{procedure}});
  discovery_().withdraw_procedure(procedure);
}

void RpcEngine::on_link_up(LinkId link) {
  if (options_.leaf) provider_sets_.clear();  // gateways are a leaf's providers of last resort
  wire::ProvideAdd p;
  for (const auto& [name, proc] : procedures_) p.procedures.push_back(name);
  for (const auto& [name, n] : relayed_)
    if (!procedures_.count(name)) p.procedures.push_back(name);
  for (std::size_t i = 0; i < p.procedures.size(); i += wire::kMaxListItems) {
    const auto end = std::min(p.procedures.size(), i + wire::kMaxListItems);
    (void)links_.send_on(link, wire::ProvideAdd{{p.procedures.begin() + static_cast<std::ptrdiff_t>(i),
                                                 p.procedures.begin() + static_cast<std::ptrdiff_t>(end)}});
  }
}

void RpcEngine::on_hello(PeerKey) {
  if (options_.leaf) provider_sets_.clear();
}

// A gateway serves what its leaves serve: announced as its own while one of them does.
void RpcEngine::relay_announce(const std::string& procedure) {
  if (++relayed_[procedure] > 1 || procedures_.count(procedure)) return;
  links_.broadcast(wire::ProvideAdd{{procedure}});
  discovery_().advertise_procedure(procedure);
}

void RpcEngine::relay_withdraw(const std::string& procedure) {
  auto it = relayed_.find(procedure);
  if (it == relayed_.end() || --it->second > 0) return;
  relayed_.erase(it);
  if (procedures_.count(procedure)) return;
  links_.broadcast(wire::ProvideRemove{{procedure}});
  discovery_().withdraw_procedure(procedure);
}

void RpcEngine::add_provider(PeerKey peer, const std::string& procedure) {
  if (!provides_[peer].insert(procedure).second) return;
  if (!options_.leaf && links_.leaf(peer) && relay_provided_[peer].insert(procedure).second) relay_announce(procedure);
  auto& v = providers_[procedure];
  if (std::find(v.begin(), v.end(), peer) == v.end()) v.push_back(peer);
  providers_changed(procedure);
}

void RpcEngine::remove_provider(PeerKey peer, const std::string& procedure) {
  providers_changed(procedure);
  if (auto r = relay_provided_.find(peer); r != relay_provided_.end() && r->second.erase(procedure)) {
    if (r->second.empty()) relay_provided_.erase(r);
    relay_withdraw(procedure);
  }
  if (auto pv = providers_.find(procedure); pv != providers_.end()) {
    auto& v = pv->second;
    v.erase(std::remove(v.begin(), v.end(), peer), v.end());
    if (v.empty()) providers_.erase(pv);
  }
}

void RpcEngine::on_peer_gone(PeerKey peer) {
  auto it = provides_.find(peer);
  if (it == provides_.end()) return;
  for (const auto& proc : it->second) remove_provider(peer, proc);
  provides_.erase(it);
}

bool RpcEngine::on_frame(PeerKey peer, LinkId link, wire::Frame& frame) {
  if (auto* callf = std::get_if<wire::RpcCall>(&frame)) {
    serve(peer, link, std::move(*callf));
  } else if (auto* reply = std::get_if<wire::RpcReply>(&frame)) {
    // Late, duplicate or unknown: the caller already had its answer. From a peer the call was
    // not sent to: not an answer (call ids are sequential, so easy to guess).
    if (const Attempt* waiting = pending_.find(reply->call_id); !waiting || waiting->peer != peer) return true;
    auto a = pending_.take(reply->call_id);
    a->set->selector.end_call(a->index);
    a->call->pending_id = 0;
    if (!a->call->finished) attempt_answered(a->call, reply->status, std::move(reply->payload));
  } else if (auto* pa = std::get_if<wire::ProvideAdd>(&frame)) {
    for (auto& p : pa->procedures) {
      // Bounded like interest patterns: a gateway announces its leaves' procedures as its own.
      if (validate_procedure(p) || provides_[peer].size() >= options_.max_patterns_per_link) {
        links_.protocol_error(link);
        return true;
      }
      add_provider(peer, p);
    }
  } else if (auto* pr = std::get_if<wire::ProvideRemove>(&frame)) {
    auto it = provides_.find(peer);
    for (const auto& p : pr->procedures)
      if (it != provides_.end() && it->second.erase(p)) remove_provider(peer, p);
  } else {
    return false;
  }
  return true;
}

// ---- serving ----------------------------------------------------------------------------------

// Runs the procedure's handler on the handler executor, or inline on the strand when the
// procedure asked for it; `answer` runs on the strand.
void RpcEngine::run_procedure(const std::shared_ptr<Procedure>& proc, Bytes args, Answer answer) {
  std::string key;
  if (proc->options.idempotent) {
    key = cache_key(proc->name, args);
    if (auto hit = result_cache_.get(key)) {
      m_.cache_hits->inc();
      return answer(wire::RpcStatus::ok, std::move(*hit));
    }
  }
  if (proc->options.max_concurrency && proc->in_flight >= proc->options.max_concurrency)
    return answer(wire::RpcStatus::overloaded, {});
  ++proc->in_flight;
  ++serving_;
  // An inline handler that answers before it returns is on the strand already: its answer is
  // finished right after it, in this turn, so the call stops counting against max_concurrency
  // (and its result is cached) before the next call of the same read is looked at.
  struct AnsweredInline {
    std::thread::id strand_thread = std::this_thread::get_id();
    bool running = true;
    core::detail::UniqueFunction<void()> finish;
  };
  auto now = proc->options.inline_handler ? std::make_shared<AnsweredInline>() : nullptr;
  auto slot = std::make_shared<detail::ReplySlot>(
      [this, owner = owner_, to_strand = to_strand_, proc, key = std::move(key), answer = std::move(answer), now](
          wire::RpcStatus st, Bytes b) mutable {
        core::detail::UniqueFunction<void()> finish([this, owner, proc, key = std::move(key), answer = std::move(answer), st,
                                                     b = std::move(b)]() mutable {
          --proc->in_flight;
          if (!owner.lock()) return;
          --serving_;
          if (st == wire::RpcStatus::ok && b.size() > kMaxPayloadBytes) {
            m_.payload_refused->inc();
            st = wire::RpcStatus::result_too_large;
            b.clear();
          }
          if (st == wire::RpcStatus::ok && proc->options.idempotent)
            result_cache_.put(key, b, std::chrono::duration_cast<std::chrono::nanoseconds>(proc->options.cache_ttl));
          m_.calls_served->inc();
          answer(st, std::move(b));
        });
        // The thread test first: a responder answered from another thread never reads `running`.
        if (now && now->strand_thread == std::this_thread::get_id() && now->running) {
          now->finish = std::move(finish);
          return;
        }
        to_strand(std::move(finish));
      });
  auto task = [proc, slot, args = std::move(args)]() mutable {
    CallbackScope scope;
    try {
      proc->handler(std::move(args), RpcResponder(slot));
    } catch (const std::exception& e) {
      slot->give(wire::RpcStatus::handler_error, to_bytes(e.what()));
    } catch (...) {
      slot->give(wire::RpcStatus::handler_error, to_bytes("handler threw a non-standard exception"));
    }
  };
  if (!now) {
    tasks_->push(core::detail::UniqueFunction<void()>(std::move(task)));
    return;
  }
  task();  // on the strand (AdvertiseOptions::inline_handler)
  now->running = false;
  if (now->finish) now->finish();
}

void RpcEngine::serve(PeerKey peer, LinkId link, wire::RpcCall call) {
  // The caller's link may be gone by the time the handler answers: then it fails over.
  auto answer = [this, link, call_id = call.call_id](wire::RpcStatus st, Bytes bytes) {
    (void)links_.send_on(link, wire::RpcReply{call_id, st, std::move(bytes)});
  };
  auto proc = procedures_.find(call.procedure);
  if (proc != procedures_.end()) return run_procedure(proc->second, std::move(call.payload), answer);
  // Not ours: relay it as a gateway — a leaf's call into the mesh, or a call for a leaf.
  const bool from_leaf = !options_.leaf && links_.leaf(peer);
  const bool for_leaf = !options_.leaf && relayed_.count(call.procedure);
  if (!from_leaf && !for_leaf) return answer(wire::RpcStatus::no_handler, {});
  m_.calls_relayed->inc();
  CallOptions o;
  o.timeout = std::chrono::milliseconds(std::max<std::uint32_t>(call.timeout_ms, 1));
  start_call(std::move(call.procedure), std::move(call.payload), o,
             detail::Completion<std::error_code, Bytes>([answer](std::error_code ec, Bytes result) {
               const auto st = error_status(ec);
               answer(st, st == wire::RpcStatus::ok || st == wire::RpcStatus::handler_error ? std::move(result) : Bytes{});
             }),
             Relay{peer, !from_leaf});
}

// ---- calling ----------------------------------------------------------------------------------

std::size_t RpcEngine::provider_count(const std::string& procedure) const {
  std::size_t n = procedures_.count(procedure);
  if (auto pv = providers_.find(procedure); pv != providers_.end()) n += pv->second.size();
  return n;
}

void RpcEngine::call(std::string procedure, Bytes args, CallOptions o, detail::Completion<std::error_code, Bytes> done) {
  start_call(std::move(procedure), std::move(args), std::move(o), std::move(done), Relay{});
}

void RpcEngine::start_call(std::string procedure, Bytes args, CallOptions o, detail::Completion<std::error_code, Bytes> done,
                           Relay relay) {
  if (auto ec = validate_procedure(procedure)) return done(ec, {});
  if (args.size() > kMaxPayloadBytes) {
    m_.payload_refused->inc();
    m_.count_call(errc::payload_too_large);
    return done(errc::payload_too_large, {});
  }
  // Refusal for stopping happens where the call is made (NodeCore::call): a call accepted
  // before stop() began is work in flight and is carried out.
  if (o.cancel && o.cancel->cancelled()) return done(errc::cancelled, {});
  m_.calls_started->inc();
  auto call = std::make_shared<CallState>();
  call->procedure = std::move(procedure);
  call->args = std::make_shared<const Bytes>(std::move(args));
  call->started = Clock::now();
  const auto timeout = o.timeout.count() > 0 ? o.timeout : options_.rpc_timeout;
  call->deadline = call->started + timeout;
  const std::size_t n = provider_count(call->procedure);
  call->max_attempts = o.max_attempts ? o.max_attempts : static_cast<unsigned>(std::clamp<std::size_t>(n, 1, 3));
  call->attempt_timeout = o.attempt_timeout.count() > 0 ? o.attempt_timeout : timeout / call->max_attempts;
  call->auto_attempts = !o.max_attempts && o.attempt_timeout.count() <= 0;
  call->strategy = o.strategy;
  call->relay_from = relay.from;
  call->leaves_only = relay.leaves_only;
  call->done = std::move(done);
  if (o.cancel) {
    std::weak_ptr<CallState> wc = call;
    o.cancel->on_cancel(call, [this, owner = owner_, wc, to_strand = to_strand_] {
      to_strand([this, owner, wc] {
        auto c = wc.lock();
        if (!owner.lock() || !c || c->finished) return;
        if (c->pending_id) pending_.take(c->pending_id);
        finish(*c, errc::cancelled, {});
      });
    });
  }
  next_attempt(call);
}

std::shared_ptr<RpcEngine::ProviderSet> RpcEngine::provider_set(const std::string& procedure) {
  auto it = provider_sets_.find(procedure);
  if (it != provider_sets_.end()) return it->second;
  std::vector<core::ProviderInfo> infos;
  if (procedures_.count(procedure)) infos.push_back({kLocalPeer, true});
  if (auto pv = providers_.find(procedure); pv != providers_.end())
    for (PeerKey k : pv->second) infos.push_back({k, false});
  // A leaf that knows no provider asks its gateways: they reach the whole mesh.
  if (infos.empty() && options_.leaf)
    for (PeerKey k : links_.linked_peers()) infos.push_back({k, false});
  auto set = std::make_shared<ProviderSet>(infos);
  for (std::size_t i = 0; i < infos.size(); ++i) {
    set->keys.push_back(infos[i].id);
    set->index.emplace(infos[i].id, i);
  }
  provider_sets_.emplace(procedure, set);
  return set;
}

// O(1): the selector's pick, skipping (at most once each) providers already tried and peers
// whose link is down during their grace period.
std::optional<std::pair<std::shared_ptr<RpcEngine::ProviderSet>, std::size_t>> RpcEngine::choose(CallState& c) {
  auto set = provider_set(c.procedure);
  core::ExclusionSet excluded;
  for (PeerKey k : c.tried)
    if (auto it = set->index.find(k); it != set->index.end()) excluded.add(it->second);
  for (;;) {
    const auto idx = set->selector.select(c.strategy, excluded);
    if (!idx) return std::nullopt;
    const PeerKey k = set->keys[*idx];
    if (allowed(c, k) && (k == kLocalPeer || links_.linked(k))) return std::make_pair(set, *idx);
    excluded.add(*idx);
  }
}

// A relayed call never goes back to where it came from, and one from a non-leaf peer goes only
// to leaves (the mesh forwards nothing between non-leaf nodes: no loops).
bool RpcEngine::allowed(const CallState& c, PeerKey k) const {
  if (c.relay_from && k == c.relay_from) return false;
  return !c.leaves_only || (k != kLocalPeer && links_.leaf(k));
}

void RpcEngine::next_attempt(const std::shared_ptr<CallState>& call) {
  CallState& c = *call;
  const auto now = Clock::now();
  if (now >= c.deadline) return finish(c, errc::timed_out, {});
  if (c.attempts >= c.max_attempts) return finish(c, c.last_error, {});
  const auto choice = choose(c);
  if (!choice) {
    if (c.attempts == 0 && !c.discovered && !c.leaves_only) return discover_providers(call);
    if (c.dials > 0) {
      (void)wait_for_providers(call);  // a provider discovery found may still link
      return;
    }
    return finish(c, c.last_error, {});
  }
  const auto& [set, index] = *choice;
  const PeerKey pick = set->keys[index];
  ++c.attempts;
  c.tried.push_back(pick);
  set->selector.begin_call(index);
  if (c.attempts > 1) m_.failovers->inc();
  if (pick == kLocalPeer) {
    // The answer keeps the call alive (no pending-table entry does for local attempts).
    return run_procedure(procedures_.at(c.procedure), *c.args,
                         [this, call, set = set, index = index](wire::RpcStatus st, Bytes b) {
                           set->selector.end_call(index);
                           if (!call->finished) attempt_answered(call, st, std::move(b));
                         });
  }
  std::error_code ec;
  const auto attempt_deadline = std::min(c.deadline, now + c.attempt_timeout);
  c.pending_id = pending_.insert(attempt_deadline, Attempt{call, links_.current_link(pick), pick, set, index}, ec);
  if (ec) {
    set->selector.end_call(index);
    return finish(c, ec, {});
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(attempt_deadline - now).count();
  if (auto send_ec = links_.send(pick, wire::RpcCall{c.pending_id, static_cast<std::uint32_t>(std::max<std::int64_t>(ms, 1)),
                                                      c.procedure, *c.args})) {
    auto a = pending_.take(c.pending_id);
    if (a) attempt_failed(*a, send_ec);
    return;
  }
  arm_timer();
}

// Nobody linked serves the procedure: ask discovery for providers and link to them. The call
// goes on as soon as a dial brings a provider it may use, and waits for the others only when
// it has nobody left to try: a record of a dead node (kept until its TTL) costs a dial in the
// background, not the call's deadline. While it waits, a placeholder attempt (no peer, no
// set) in the pending table holds its deadline.
void RpcEngine::discover_providers(const std::shared_ptr<CallState>& call) {
  call->discovered = true;
  if (!wait_for_providers(call)) return;
  discovery_().find_providers(call->procedure, [this, owner = owner_, call](std::vector<discovery::PeerAddress> found) {
    if (!owner.lock() || call->finished) return;
    std::vector<std::pair<boost::asio::ip::udp::endpoint, NodeId>> to_dial;
    for (const auto& peer : found) {
      // A linked peer's own announcements win over its record: it does not serve the
      // procedure (else this call would not be discovering), whatever a stale record says.
      if (auto k = links_.find_peer(peer.id); k && links_.linked(*k)) continue;
      boost::asio::ip::udp::endpoint address;
      if (!parse_address(peer.endpoint, address)) to_dial.emplace_back(address, peer.id);
    }
    call->dials = to_dial.size();
    if (to_dial.empty()) return resume(call);
    for (const auto& [address, id] : to_dial) {
      links_.dial(address, id, [this, owner, call, count = to_dial.size()](std::error_code ec, PeerKey key) {
        if (!owner.lock()) return;
        if (!ec && key) add_provider(key, call->procedure);  // the record says it serves the procedure
        else call->last_error = ec ? ec : errc::no_provider;
        if (call->dials) --call->dials;
        if (call->finished || !call->waiting) return;
        if (!choose(*call) && call->dials > 0) return;  // nobody usable yet: wait for the next dial
        if (call->auto_attempts && call->attempts == 0) {
          // Chosen when no provider was known: as many attempts as records (at most 3), the
          // first with the whole remaining time when it is the only provider linked so far.
          call->max_attempts = static_cast<unsigned>(std::clamp<std::size_t>(count, 1, 3));
          const auto linked = std::clamp<std::size_t>(provider_count(call->procedure), 1, call->max_attempts);
          call->attempt_timeout =
              std::chrono::duration_cast<std::chrono::milliseconds>(call->deadline - Clock::now()) / linked;
        }
        resume(call);
      });
    }
  });
}

// The call waits (discovery, or dials) with its deadline in the pending table; false when the
// table is full (the call is finished).
bool RpcEngine::wait_for_providers(const std::shared_ptr<CallState>& call) {
  std::error_code full;
  call->pending_id = pending_.insert(call->deadline, Attempt{call, 0, 0, nullptr, 0}, full);
  if (full) {
    finish(*call, full, {});
    return false;
  }
  call->waiting = true;
  arm_timer();
  return true;
}

void RpcEngine::resume(const std::shared_ptr<CallState>& call) {
  if (!call->waiting) return;
  call->waiting = false;
  if (call->pending_id) pending_.take(call->pending_id);
  call->pending_id = 0;
  next_attempt(call);
}

void RpcEngine::attempt_answered(const std::shared_ptr<CallState>& call, wire::RpcStatus st, Bytes b) {
  switch (st) {
    case wire::RpcStatus::ok: return finish(*call, {}, std::move(b));
    case wire::RpcStatus::handler_error: return finish(*call, errc::handler_error, std::move(b));
    case wire::RpcStatus::result_too_large: return finish(*call, errc::payload_too_large, {});
    default:
      call->last_error = status_error(st);
      return next_attempt(call);
  }
}

void RpcEngine::attempt_failed(Attempt& a, std::error_code ec) {
  if (a.set) a.set->selector.end_call(a.index);
  a.call->pending_id = 0;
  a.call->waiting = false;  // a placeholder (no set) expired: the deadline passed
  if (a.call->finished) return;
  a.call->last_error = ec;
  next_attempt(a.call);
}

void RpcEngine::on_link_down(LinkId link) {
  // Calls waiting on this link fail over now rather than at their deadline.
  std::vector<std::pair<std::uint64_t, Attempt>> lost;
  pending_.take_if([link](const Attempt& a) { return a.link == link; }, lost);
  for (auto& [cid, a] : lost) attempt_failed(a, errc::connection_closed);
}

void RpcEngine::finish(CallState& c, std::error_code ec, Bytes result) {
  if (c.finished) return;
  c.finished = true;
  m_.call_latency->observe(std::chrono::duration<double>(Clock::now() - c.started).count());
  m_.count_call(ec);
  if (c.done) c.done(ec, std::move(result));
}

void RpcEngine::arm_timer() {
  const auto next = pending_.next_deadline();
  if (!next || *next >= armed_) return;
  armed_ = *next;
  timer_->expires_at(*next);
  timer_->async_wait([this, owner = owner_](boost::system::error_code ec) {
    auto o = owner.lock();
    if (!o || ec) return;
    armed_ = Clock::time_point::max();
    std::vector<std::pair<std::uint64_t, Attempt>> expired;
    pending_.expire(Clock::now(), expired);
    for (auto& [id, a] : expired) attempt_failed(a, errc::timed_out);
    arm_timer();
    links_.flush();
  });
}

void RpcEngine::fail_all() {
  if (timer_) timer_->cancel();
  std::vector<std::pair<std::uint64_t, Attempt>> calls;
  pending_.expire(Clock::time_point::max(), calls);
  for (auto& [id, a] : calls) finish(*a.call, errc::cancelled, {});
}

}  // namespace macula::node
