#include "node/pubsub_engine.hpp"

#include <algorithm>

#include "macula/error.hpp"
#include "node/address.hpp"

namespace macula::node {

namespace {
std::size_t body_bytes(const detail::MessageBody& b) { return b.payload.size() + b.topic.size(); }
constexpr auto kDiscoveryTtl = std::chrono::seconds(60);  // one subscriber lookup per topic per minute
}  // namespace

PubSubEngine::PubSubEngine(const NodeOptions& options, NodeMetrics& metrics, LinkTable& links, DiscoveryRef discovery,
                           std::shared_ptr<DispatchQueue> dispatch, RunOnStrand to_strand, Released released)
    : options_(options),
      m_(metrics),
      links_(links),
      discovery_(std::move(discovery)),
      dispatch_(std::move(dispatch)),
      to_strand_(std::move(to_strand)),
      released_(std::move(released)),
      trie_(options.shards),
      remote_(options.max_patterns_per_link, options.shards),
      tracker_(options.max_qos1_in_flight, options.max_qos1_in_flight_bytes),
      dedup_(options.max_dedup_publishers),
      discovers_(options.dht && !options.leaf) {}

// ---- subscriptions ----------------------------------------------------------------------------

void PubSubEngine::subscribe(const std::shared_ptr<Subscription>& s) {
  const std::uint64_t id = ++last_subscription_;
  subscription_ids_[s.get()] = id;
  {
    std::lock_guard lock(subscriptions_mutex_);
    subscriptions_[id] = s;
  }
  // A held QoS 1 message waits for room in this queue: the consumer tells us when it frees.
  s->set_room_callback([to_strand = to_strand_, this] { to_strand([this] { release_held(); }); });
  (void)trie_.add(*s->pattern(), id);
  invalidate_routes();
  announce(*s->pattern());
}

// A leaf tells only its primary gateway: two gateways announcing it would each relay every
// message to it, and the copies (each gateway's own message) would arrive twice.
void PubSubEngine::announce(std::string_view pattern) {
  if (auto fresh = local_.add(pattern); !fresh.empty()) {
    if (!options_.leaf) links_.broadcast(wire::InterestAdd{{fresh}});
    else if (primary_ && links_.linked(primary_)) (void)links_.send(primary_, wire::InterestAdd{{fresh}});
    discovery_().advertise_interest(fresh);
  }
}

void PubSubEngine::withdraw(std::string_view pattern) {
  if (auto gone = local_.remove(pattern); !gone.empty()) {
    if (!options_.leaf) links_.broadcast(wire::InterestRemove{{gone}});
    else if (primary_ && links_.linked(primary_)) (void)links_.send(primary_, wire::InterestRemove{{gone}});
    discovery_().withdraw_interest(gone);
  }
}

// What we announced for the leaf stops being ours (its snapshot replaces it, or it is gone):
// exactly that, whatever its HELLO says now.
void PubSubEngine::withdraw_leaf(PeerKey leaf) {
  auto it = leaf_patterns_.find(leaf);
  if (it == leaf_patterns_.end()) return;
  const auto patterns = std::move(it->second);
  leaf_patterns_.erase(it);
  for (const auto& p : patterns) withdraw(p);
}

// The first INTEREST_ADD on a link is the snapshot (even empty); a long one goes on in more.
void PubSubEngine::send_interest_snapshot(LinkId link, bool empty) {
  const auto all = empty ? std::vector<std::string>{} : local_.snapshot();
  std::size_t i = 0;
  do {
    const auto end = std::min(all.size(), i + wire::kMaxListItems);
    (void)links_.send_on(link, wire::InterestAdd{{all.begin() + static_cast<std::ptrdiff_t>(i),
                                                  all.begin() + static_cast<std::ptrdiff_t>(end)}});
    i = end;
  } while (i < all.size());
}

bool PubSubEngine::unsubscribe(const std::shared_ptr<Subscription>& s) {
  auto it = subscription_ids_.find(s.get());
  if (it == subscription_ids_.end()) return false;
  const std::uint64_t id = it->second;
  subscription_ids_.erase(it);
  trie_.remove(*s->pattern(), id);
  invalidate_routes();
  {
    std::lock_guard lock(subscriptions_mutex_);
    subscriptions_.erase(id);
  }
  withdraw(*s->pattern());
  release_held();  // messages held for this queue no longer wait for it
  return true;
}

std::vector<NodeMetrics::SubscriptionRow> PubSubEngine::subscription_rows() const {
  std::vector<NodeMetrics::SubscriptionRow> rows;
  std::lock_guard lock(subscriptions_mutex_);
  rows.reserve(subscriptions_.size());
  for (const auto& [id, sub] : subscriptions_) rows.push_back({id, *sub->pattern(), sub->dropped(), sub->queued()});
  return rows;
}

void PubSubEngine::deep_subscriptions(std::size_t threshold, std::vector<std::pair<std::string, std::size_t>>& out) const {
  std::lock_guard lock(subscriptions_mutex_);
  for (const auto& [id, sub] : subscriptions_)
    if (sub->queued() > threshold) out.emplace_back("subscription " + std::to_string(id) + " (" + *sub->pattern() + ")", sub->queued());
}

// ---- routes and local delivery ----------------------------------------------------------------

BodyPtr PubSubEngine::stamp(Outgoing& m) {
  m.body->publisher = self_;
  m.body->sequence = ++sequence_;
  m.body->qos = m.qos;
  return std::move(m.body);
}

void PubSubEngine::invalidate_routes() {
  routes_.clear();
  if (epoch_) epoch_->bump();
}

const PubSubEngine::Route& PubSubEngine::route_for(std::string_view topic) {
  auto it = routes_.find(topic);
  if (it != routes_.end()) return it->second;
  if (routes_.size() >= kMaxRoutes) routes_.clear();  // eviction: no route changed
  Route r;
  match_scratch_.clear();
  trie_.match(topic, match_scratch_);
  {
    // subscriptions_ changes only on this strand: reading it here needs no lock.
    for (auto sub_id : match_scratch_)
      if (auto s = subscriptions_.find(sub_id); s != subscriptions_.end()) r.subscriptions.push_back(s->second);
  }
  remote_.links_for(topic, r.peers);  // peer keys, ascending
  if (options_.leaf && r.peers.size() > 1) {
    // Every gateway relays to the whole mesh: two would deliver the message twice.
    auto live = std::find_if(r.peers.begin(), r.peers.end(), [this](PeerKey p) { return links_.linked(p); });
    r.peers.assign(1, live != r.peers.end() ? *live : r.peers.front());
  }
  return routes_.emplace(std::string(topic), std::move(r)).first->second;
}

void PubSubEngine::deliver_local(const BodyPtr& body, const Route& route) {
  if (route.subscriptions.empty()) return;
  std::uint64_t lost = 0;
  for (const auto& sub : route.subscriptions) {
    bool ready = false;
    lost += sub->deliver(body, ready);
    if (ready) ready_scratch_.push_back(sub);
  }
  m_.delivered->inc(route.subscriptions.size());
  if (lost) m_.drop_subscriber->inc(lost);
  dispatch_->push(ready_scratch_);
}

// Subscribers beyond our links: one lookup per topic per kDiscoveryTtl (a second after an
// empty answer); the nodes found are dialed and their interest arrives over the new links.
// A lookup is finished when every dial failed or its link's interest snapshot came, or at
// discovery_hold.
bool PubSubEngine::discovery_pending(std::string_view topic) {
  const auto now = Clock::now();
  auto it = lookups_.find(topic);
  if (it == lookups_.end() || (!it->second.pending && now - it->second.at >= kDiscoveryTtl)) {
    start_lookup(std::string(topic));
    it = lookups_.find(topic);
  }
  return it != lookups_.end() && it->second.pending && now < it->second.hold_until;
}

void PubSubEngine::start_lookup(const std::string& topic) {
  if (lookups_.size() >= kMaxLookups) {
    for (auto it = lookups_.begin(); it != lookups_.end();) it = it->second.pending ? std::next(it) : lookups_.erase(it);
    if (lookups_.size() >= kMaxLookups) return;  // that many in flight: publish to what is known
  }
  const auto now = Clock::now();
  Lookup& l = lookups_[topic];
  if (!l.pending) ++lookups_pending_;
  l = Lookup{now, now + options_.discovery_hold, 0, true};
  starting_lookup_ = true;
  discovery_().find_subscribers(topic, [this, owner = owner_, topic](std::vector<discovery::PeerAddress> found) {
    if (owner.lock() && !stopped_) lookup_found(topic, std::move(found));
  });
  starting_lookup_ = false;
}

void PubSubEngine::lookup_found(const std::string& topic, std::vector<discovery::PeerAddress> found) {
  auto it = lookups_.find(topic);
  if (it == lookups_.end()) return;
  // Nobody (yet): ask again after a second rather than after the full TTL.
  if (found.empty()) it->second.at = Clock::now() - kDiscoveryTtl + std::chrono::seconds(1);
  // An answer after discovery_hold no longer holds publishes, but its nodes are still linked:
  // the next publishes reach them.
  const bool holding = it->second.pending;
  for (const auto& p : found) {
    if (auto k = links_.find_peer(p.id); k && links_.linked(*k)) continue;  // its interest is known
    boost::asio::ip::udp::endpoint address;
    if (parse_address(p.endpoint, address)) continue;
    if (!holding) {
      links_.dial(address, p.id, [](std::error_code, PeerKey) {});
      continue;
    }
    ++it->second.waiting;
    links_.dial(address, p.id, [this, owner = owner_, topic](std::error_code ec, PeerKey key) {
      if (!owner.lock() || stopped_) return;
      if (!ec && key && !interest_synced_.count(links_.current_link(key))) {
        auto& topics = lookups_awaiting_interest_[key];
        if (topics.size() < 64) return topics.push_back(topic);  // finished by the snapshot
      }
      lookup_step(topic);
    });
  }
  if (holding && it->second.waiting == 0) finish_lookup(topic);
}

void PubSubEngine::lookup_step(const std::string& topic) {
  auto it = lookups_.find(topic);
  if (it == lookups_.end() || !it->second.pending) return;
  if (it->second.waiting > 0 && --it->second.waiting > 0) return;
  finish_lookup(topic);
}

void PubSubEngine::finish_lookup(const std::string& topic) {
  auto it = lookups_.find(topic);
  if (it == lookups_.end() || !it->second.pending) return;
  it->second.pending = false;
  --lookups_pending_;
  invalidate_routes();
  if (!starting_lookup_) retry_blocked();  // else the publish that started it is still deciding
}

// ---- publishing -------------------------------------------------------------------------------

void PubSubEngine::publish(Outgoing&& m) {
  if (stopped_) {  // handed over before stop() and reached after it failed everything
    release(m);
    if (m.done) m.done(errc::cancelled);
    return;
  }
  // Behind the ones already waiting, so order holds: every block-policy publish, and a
  // drop-policy one whose topic has publishes waiting (for discovery or room).
  if (!blocked_.empty() && (m.congestion == CongestionControl::block || blocked_topics_.count(m.topic())))
    return push_blocked(std::move(m));
  if (try_publish(m)) return;
  if (held_now_) {
    m_.held_discovery->inc();
  } else {
    m_.publish_blocked->inc();
  }
  push_blocked(std::move(m));
}

void PubSubEngine::push_blocked(Outgoing&& m) {
  if (m.from && m.qos == Qos::at_most_once) {
    // A leaf's QoS 0 messages are not in our publish queue: bound what waits of them here.
    const std::size_t bytes = body_bytes(*m.body);
    if (relay_held_bytes_ + bytes > options_.max_publish_queue_bytes) {
      m_.drop_queue_full->inc();
      return;
    }
    relay_held_bytes_ += bytes;
  }
  if (++blocked_topics_[std::string(m.topic())] == 1 && epoch_) epoch_->bump();  // see try_publish's memo
  blocked_.push_back(std::move(m));
}

// `m` left blocked_ (its topic and size as they were when it waited).
void PubSubEngine::popped_blocked(const std::string& topic, const Outgoing& m, std::size_t bytes) {
  if (auto it = blocked_topics_.find(topic); it != blocked_topics_.end() && --it->second == 0) blocked_topics_.erase(it);
  if (m.from && m.qos == Qos::at_most_once) relay_held_bytes_ -= std::min(relay_held_bytes_, bytes);
}

// Leaves the publish queue: this node's own publishes were counted in it, a leaf's were not.
void PubSubEngine::release(const Outgoing& m) {
  if (m.from) return;
  ++released_count_;
  released_bytes_ += m.payload_size();
}

void PubSubEngine::report_released() {
  if (released_count_ == 0) return;
  released_(released_count_, released_bytes_);
  released_count_ = released_bytes_ = 0;
}

void PubSubEngine::retry_blocked() {
  while (!blocked_.empty()) {
    Outgoing& front = blocked_.front();
    const std::string topic(front.topic());  // try_publish moves the body out
    const std::size_t bytes = body_bytes(*front.body);
    if (!try_publish(front)) break;
    popped_blocked(topic, front, bytes);
    blocked_.pop_front();
  }
  report_released();
}

// False: a block-policy publish found no room, or the publish waits for its topic's lookup
// (held_now_); nothing done, try again later.
bool PubSubEngine::try_publish(Outgoing& m) {
  held_now_ = false;
  const Route* route = &route_for(m.topic());
  if (discovers_) {
    // Only a topic with nobody known, here or elsewhere, waits; a known one refreshes its
    // lookup in the background.
    const bool pending = discovery_pending(m.topic());
    if (pending && route->peers.empty() && route->subscriptions.empty()) {
      held_now_ = true;
      return false;
    }
    route = &route_for(m.topic());  // a lookup answered at once may have changed it
  } else if (options_.leaf && route->peers.empty() && Clock::now() < gateway_hold_until_ && !links_.linked_peers().empty()) {
    // The gateway's "#" is on its way (released when it arrives, or by housekeeping). Also with
    // a local subscriber: delivered only here, the message would miss the mesh.
    held_now_ = true;
    return false;
  }
  peer_scratch_.assign(route->peers.begin(), route->peers.end());  // the route may be dropped below
  if (m.from) peer_scratch_.erase(std::remove(peer_scratch_.begin(), peer_scratch_.end(), m.from), peer_scratch_.end());
  const std::size_t bytes = body_bytes(*m.body);
  const bool qos1 = m.qos == Qos::at_least_once;
  const bool block = m.congestion == CongestionControl::block;
  if (block) {
    if (qos1 && !peer_scratch_.empty() && !tracker_.has_room(bytes)) return false;
    if (!qos1)
      for (PeerKey p : peer_scratch_)
        if (!links_.has_room(p)) return false;
  }
  release(m);
  if (qos1 && !peer_scratch_.empty() && !tracker_.has_room(bytes)) {  // drop policy
    m_.drop_queue_full->inc();
    m.count_drop();
    if (m.done) m.done(errc::queue_full);
    return true;
  }
  if (m.from) m_.relayed->inc();
  else m_.published[qos1 ? 1 : 0]->inc();
  const bool no_route = peer_scratch_.empty() && route->subscriptions.empty();
  if (no_route) {
    // Nobody anywhere wants it (discovery, when on, found no one): said, never a silent success.
    m_.drop_no_route->inc();
    if (m.done) m.done(qos1 ? std::error_code(errc::no_subscribers) : std::error_code());
    return true;
  }
  if (!qos1) {
    // Decide per peer first: a message no link can take and no local subscriber wants is
    // counted and gone without being built (an overloaded node drops most of what it gets).
    std::size_t kept = 0, full = 0;
    for (PeerKey p : peer_scratch_) {
      const auto room = links_.room(p, !block);
      if (room == LinkTable::Room::no_link) {
        m_.drop_no_link->inc();
        m.count_drop();
      } else if (!block && room == LinkTable::Room::full) {
        m_.drop_backpressure->inc();
        m.count_drop();
        ++full;
      } else {
        peer_scratch_[kept++] = p;
      }
    }
    // Lost entirely to full links: the publisher drops the next ones of this topic itself until
    // the epoch moves (a full link drained to half, a route changed). Not while publishes of
    // this topic wait in blocked_: the next one would wait behind them, not be dropped now.
    if (full != 0 && full == peer_scratch_.size() && route->subscriptions.empty() && m.publisher && !m.from && epoch_ &&
        !blocked_topics_.contains(m.topic()))
      m.publisher->remember_full(detail::topic_hash(m.topic()), epoch_->value.load(std::memory_order_acquire),
                                 static_cast<std::uint32_t>(full));
    peer_scratch_.resize(kept);
    if (!peer_scratch_.empty() || !route->subscriptions.empty()) {
      const BodyPtr body = stamp(m);
      deliver_local(body, *route);
      for (PeerKey p : peer_scratch_) links_.queue_publish(p, body);
    }
    if (m.done) m.done({});
    return true;
  }
  const BodyPtr body = stamp(m);
  deliver_local(body, *route);
  if (peer_scratch_.empty()) {
    if (m.done) m.done({});
    return true;
  }
  const std::uint64_t id = body->sequence;
  std::vector<PeerKey> waiting(peer_scratch_.begin(), peer_scratch_.end());
  (void)tracker_.track(id, body, bytes, std::move(waiting), std::move(m.done));  // room checked above
  for (PeerKey p : peer_scratch_) send_qos1(p, id, body);
  return true;
}

void PubSubEngine::send_qos1(PeerKey peer, std::uint64_t id, const BodyPtr& body) {
  if (!links_.linked(peer)) return;  // goes out when a link to it is up (on_link_up)
  PeerFlow& f = flow_[peer];
  if (f.backlog.empty() && f.messages < wire::kQos1WindowMessages && f.bytes < wire::kQos1WindowBytes &&
      links_.queue_publish(peer, body)) {
    ++f.messages;
    f.bytes += body_bytes(*body);
  } else {
    f.backlog.push_back(id);
  }
}

void PubSubEngine::send_backlog(PeerKey peer) {
  auto it = flow_.find(peer);
  if (it == flow_.end() || !links_.linked(peer)) return;
  PeerFlow& f = it->second;
  while (!f.backlog.empty() && f.messages < wire::kQos1WindowMessages && f.bytes < wire::kQos1WindowBytes) {
    const std::uint64_t id = f.backlog.front();
    f.backlog.pop_front();
    auto* e = tracker_.find(id);
    if (!e || std::find(e->waiting.begin(), e->waiting.end(), peer) == e->waiting.end()) continue;
    if (!links_.queue_publish(peer, e->message)) {
      f.backlog.push_front(id);
      return;
    }
    ++f.messages;
    f.bytes += body_bytes(*e->message);
  }
}

// ---- link events ------------------------------------------------------------------------------

void PubSubEngine::on_link_up(PeerKey peer, LinkId link) {
  if (epoch_) epoch_->bump();  // a peer whose link was missing or full has a fresh one
  if (options_.leaf) {
    invalidate_routes();  // a leaf's routes name one live gateway
    gateway_hold_until_ = Clock::now() + options_.discovery_hold;
    if (!primary_ || primary_ == peer || !links_.linked(primary_)) primary_ = peer;
  }
  // Always a snapshot (even empty): the peer replaces what it knew of us with it. A leaf's
  // other gateways get an empty one.
  send_interest_snapshot(link, options_.leaf && primary_ != peer);
  resend_owed(peer);
  if (auto in = inbound_.find(peer); in != inbound_.end()) send_acks(peer, in->second);
}

// What `peer` still owes an acknowledgement for goes (again) on its current link, in order;
// the credit starts afresh with it. The receiver's de-duplication absorbs copies that did
// arrive over the old link.
void PubSubEngine::resend_owed(PeerKey peer) {
  PeerFlow& f = flow_[peer];
  f = PeerFlow{};
  tracker_.for_peer(peer, [&](std::uint64_t id, Tracker::Entry&) {
    f.backlog.push_back(id);
    m_.qos1_resent->inc();
  });
  send_backlog(peer);
}

void PubSubEngine::on_link_down(PeerKey peer, LinkId link, bool last) {
  interest_synced_.erase(link);
  if (epoch_) epoch_->bump();  // the full link is gone: what it held no longer decides
  if (options_.leaf) {
    invalidate_routes();
    if (last && peer == primary_) {
      // Another live gateway takes over the leaf's interest (it had an empty snapshot: adds).
      const auto live = links_.linked_peers();
      primary_ = live.empty() ? 0 : live.front();
      const auto all = local_.snapshot();
      for (std::size_t i = 0; primary_ && i < all.size(); i += wire::kMaxListItems)
        (void)links_.send(primary_, wire::InterestAdd{{all.begin() + static_cast<std::ptrdiff_t>(i),
                                                      all.begin() + static_cast<std::ptrdiff_t>(std::min(all.size(), i + wire::kMaxListItems))}});
    }
  }
  if (last) {
    flow_.erase(peer);  // credit and backlog are rebuilt from the tracker when the peer is back
  } else {
    resend_owed(peer);  // what went out on the dropped link goes on the one that is left
  }
  retry_blocked();  // publishes that waited for the dropped link wait no more
}

void PubSubEngine::on_hello(PeerKey peer) {
  // A leaf sends us everything it publishes: we carry it into the mesh (its only way there).
  if (!options_.leaf && links_.leaf(peer)) (void)links_.send(peer, wire::InterestAdd{{"#"}});
}

void PubSubEngine::on_peer_gone(PeerKey peer) {
  withdraw_leaf(peer);  // its interest leaves the DHT and our peers with it
  remote_.drop_link(peer);
  lookups_awaiting_interest_.erase(peer);
  invalidate_routes();
  flow_.erase(peer);
  tracker_.forget_peer(peer, [&](detail::Completion<std::error_code> done) {
    m_.qos1_expired->inc();
    if (done) done(errc::timed_out);
  });
  retry_blocked();
}

bool PubSubEngine::on_frame(PeerKey peer, LinkId link, wire::Frame& frame) {
  if (auto* pub = std::get_if<wire::Publish>(&frame)) {
    on_publish(peer, link, *pub);
  } else if (auto* ack = std::get_if<wire::PublishAck>(&frame)) {
    auto f = flow_.find(peer);
    for (auto mid : ack->message_ids) {
      const auto* e = tracker_.find(mid);
      const std::size_t n = e ? body_bytes(*e->message) : 0;
      std::optional<detail::Completion<std::error_code>> done;
      if (!tracker_.ack(mid, peer, done)) continue;
      if (f != flow_.end()) {
        // Clamped: an ack may answer a message sent on an earlier link.
        f->second.messages -= std::min<std::size_t>(f->second.messages, 1);
        f->second.bytes -= std::min(f->second.bytes, n);
      }
      if (done && *done) (*done)({});
    }
    send_backlog(peer);
    if (!blocked_.empty()) retry_blocked();
  } else if (auto* ia = std::get_if<wire::InterestAdd>(&frame)) {
    const bool leaf = !options_.leaf && links_.leaf(peer);
    const bool snapshot = interest_synced_.insert(link).second;
    if (snapshot) {  // the snapshot replaces what we knew
      withdraw_leaf(peer);
      remote_.drop_link(peer);
    }
    invalidate_routes();
    for (const auto& p : ia->patterns) {
      if (remote_.add(peer, p)) {
        links_.protocol_error(link);
        return true;
      }
      if (!leaf) continue;
      // A gateway announces its leaves' interest as its own, within what its peers accept.
      std::string key = canonical_pattern(p);
      auto& mine = leaf_patterns_[peer];
      if (mine.count(key)) continue;
      if (!local_.subscribers(key) && local_.distinct_patterns() >= options_.max_patterns_per_link) {
        links_.protocol_error(link);
        return true;
      }
      mine.insert(key);
      announce(key);
    }
    if (options_.leaf && !blocked_.empty()) retry_blocked();  // publishes waited for a gateway's "#"
    if (snapshot) {
      // Lookups that dialed this peer wait for exactly this.
      if (auto w = lookups_awaiting_interest_.find(peer); w != lookups_awaiting_interest_.end()) {
        const auto topics = std::move(w->second);
        lookups_awaiting_interest_.erase(w);
        for (const auto& t : topics) lookup_step(t);
      }
    }
  } else if (auto* ir = std::get_if<wire::InterestRemove>(&frame)) {
    auto mine = leaf_patterns_.find(peer);
    for (const auto& p : ir->patterns) {
      remote_.remove(peer, p);
      if (mine != leaf_patterns_.end() && mine->second.erase(canonical_pattern(p))) withdraw(p);
    }
    invalidate_routes();
  } else {
    return false;
  }
  return true;
}

// The decoder's body (the message's one allocation), or one built from a frame made in memory.
std::shared_ptr<detail::MessageBody> PubSubEngine::received_body(wire::Publish& pub) {
  if (pub.body) return std::move(pub.body);
  auto body = detail::make_message_body(pub.topic, std::move(pub.payload), static_cast<Qos>(pub.qos));
  body->publisher = pub.publisher;
  body->sequence = pub.sequence;
  return body;
}

void PubSubEngine::on_publish(PeerKey peer, LinkId link, wire::Publish& pub) {
  // One hop: the publisher must be the peer at the other end (its certificate says so).
  if (pub.publisher != links_.peer_id(peer)) return links_.protocol_error(link);
  if (!options_.leaf && links_.leaf(peer)) return publish_for_leaf(peer, link, pub);
  const std::uint64_t message_id = pub.message_id;
  const BodyPtr body = received_body(pub);
  const Route& route = route_for(body->topic);
  if (body->qos == Qos::at_most_once) {
    deliver_local(body, route);
    return relay_to_leaves(body, route);
  }
  const std::size_t bytes = body_bytes(*body);
  PeerInbound& in = inbound_[peer];
  if (in.held.empty() && queues_have_room(route, bytes)) return accept_qos1(in, body, message_id, route);
  if (!in.held.empty() && message_id <= in.held.back().message_id) {
    // A copy sent again on a new link. Older than everything held: already delivered (the
    // de-duplication acknowledges it again); otherwise the held original answers for it.
    if (message_id < in.held.front().message_id) accept_qos1(in, body, message_id, route);
    return;
  }
  // A matching queue (or, for leaves, the QoS 1 tracker) is full: hold it unacknowledged. The
  // publisher's window bounds what a well-behaved peer can make us hold.
  if (in.held.size() >= 2 * wire::kQos1WindowMessages || in.held_bytes >= 2 * wire::kQos1WindowBytes)
    return links_.protocol_error(link);
  m_.qos1_deferred->inc();
  in.held_bytes += bytes;
  in.held.push_back({std::move(body), message_id});
}

// A leaf's message goes into the mesh as this gateway's own publish (local subscriptions,
// peers, other leaves, discovery), never back to the leaf. QoS 1: acknowledged to the leaf once
// that publish is complete here (every peer it went to acknowledged it, or nobody wanted it),
// so the leaf's credit window bounds what it can make us hold.
void PubSubEngine::publish_for_leaf(PeerKey leaf, LinkId link, wire::Publish& pub) {
  const std::uint64_t message_id = pub.message_id;
  Outgoing m{received_body(pub), static_cast<Qos>(pub.qos), CongestionControl::drop, nullptr, {}, leaf};
  if (m.qos == Qos::at_least_once) {
    PeerInbound& in = inbound_[leaf];
    if (!dedup_.first_time(pub.publisher, message_id)) {
      m_.duplicates->inc();
      in.acks.push_back(message_id);  // sent again on a new link: we have (or had) it already
      return;
    }
    // Its credit window bounds a well-behaved leaf; past twice that it is not one.
    if (in.relaying >= 2 * wire::kQos1WindowMessages) return links_.protocol_error(link);
    ++in.relaying;
    m.congestion = CongestionControl::block;
    m.done = detail::Completion<std::error_code>([this, leaf, message_id](std::error_code) {
      if (stopped_) return;
      PeerInbound& acks = inbound_[leaf];
      if (acks.relaying) --acks.relaying;
      acks.acks.push_back(message_id);
      send_acks(leaf, acks);
    });
  }
  publish(std::move(m));
}

bool PubSubEngine::has_leaves(const Route& route) const {
  return !options_.leaf && std::any_of(route.peers.begin(), route.peers.end(), [this](PeerKey p) { return links_.leaf(p); });
}

// A message from a (non-leaf) peer goes on to the leaves that want it, as this gateway's own
// message (a leaf knows only its gateways). QoS 1 is tracked here until each leaf acknowledged
// it; the caller checked that the tracker has room.
void PubSubEngine::relay_to_leaves(const BodyPtr& body, const Route& route) {
  if (!has_leaves(route)) return;
  peer_scratch_.clear();
  for (PeerKey p : route.peers)
    if (links_.leaf(p)) peer_scratch_.push_back(p);
  auto fresh = detail::make_message_body(body->topic, body->payload, body->qos);
  fresh->publisher = self_;
  fresh->sequence = ++sequence_;
  const BodyPtr relay = std::move(fresh);
  m_.relayed->inc();
  if (body->qos == Qos::at_most_once) {
    for (PeerKey p : peer_scratch_) {
      const auto room = links_.room(p, true);
      if (room == LinkTable::Room::no_link) m_.drop_no_link->inc();
      else if (room == LinkTable::Room::full) m_.drop_backpressure->inc();
      else links_.queue_publish(p, relay);
    }
    return;
  }
  const std::uint64_t id = relay->sequence;
  (void)tracker_.track(id, relay, body_bytes(*relay), std::vector<PeerKey>(peer_scratch_.begin(), peer_scratch_.end()), {});
  for (PeerKey p : peer_scratch_) send_qos1(p, id, relay);
}

bool PubSubEngine::queues_have_room(const Route& route, std::size_t bytes) {
  bool room = true;
  for (const auto& sub : route.subscriptions)
    if (sub->queued() >= sub->capacity() && !sub->want_room()) room = false;
  // Relayed to leaves, it is tracked here: held (unacknowledged) while the tracker is full.
  if (has_leaves(route) && !tracker_.has_room(bytes)) room = false;
  return room;
}

void PubSubEngine::accept_qos1(PeerInbound& in, const BodyPtr& body, std::uint64_t message_id, const Route& route) {
  in.acks.push_back(message_id);
  if (!dedup_.first_time(body->publisher, message_id)) return m_.duplicates->inc();
  deliver_local(body, route);
  relay_to_leaves(body, route);
}

// A subscription freed room (or went away): held messages go in, in arrival order.
void PubSubEngine::release_held() {
  for (auto& [peer, in] : inbound_) {
    while (!in.held.empty()) {
      Held& h = in.held.front();
      const Route& route = route_for(h.body->topic);
      if (!queues_have_room(route, body_bytes(*h.body))) break;
      in.held_bytes -= body_bytes(*h.body);
      const Held taken = std::move(h);
      in.held.pop_front();
      accept_qos1(in, taken.body, taken.message_id, route);
    }
    send_acks(peer, in);
  }
}

void PubSubEngine::send_acks(PeerKey peer, PeerInbound& in) {
  // Acks that find no link are dropped: the publisher sends those messages again on the next
  // link, and the de-duplication window acknowledges them without a second delivery.
  for (std::size_t i = 0; i < in.acks.size(); i += wire::kMaxListItems) {
    const auto end = std::min(in.acks.size(), i + wire::kMaxListItems);
    if (links_.send(peer, wire::PublishAck{{in.acks.begin() + static_cast<std::ptrdiff_t>(i),
                                            in.acks.begin() + static_cast<std::ptrdiff_t>(end)}}))
      break;
  }
  in.acks.clear();
}

void PubSubEngine::on_read_done(PeerKey peer) {
  if (auto in = inbound_.find(peer); in != inbound_.end() && !in->second.acks.empty()) send_acks(peer, in->second);
}

void PubSubEngine::on_room(PeerKey) { retry_blocked(); }

void PubSubEngine::housekeeping() {
  // Lookups past discovery_hold stop holding publishes: they go to whom we know by now.
  const auto now = Clock::now();
  for (auto& [topic, l] : lookups_)
    if (l.pending && now >= l.hold_until) {
      l.pending = false;
      --lookups_pending_;
      invalidate_routes();
    }
  for (auto it = lookups_awaiting_interest_.begin(); it != lookups_awaiting_interest_.end();)
    it = links_.linked(it->first) ? std::next(it) : lookups_awaiting_interest_.erase(it);
  // Safety nets for wake-ups that raced: both are no-ops when nothing waits.
  retry_blocked();
  release_held();
  for (auto it = inbound_.begin(); it != inbound_.end();)
    it = it->second.held.empty() && it->second.acks.empty() && !it->second.relaying && !links_.linked(it->first)
             ? inbound_.erase(it)
             : std::next(it);
}

void PubSubEngine::fail_all() {
  stopped_ = true;
  for (auto& m : blocked_) {
    release(m);
    if (m.done) m.done(errc::cancelled);
  }
  blocked_topics_.clear();
  relay_held_bytes_ = 0;
  blocked_.clear();
  for (auto id : tracker_.ids())
    if (auto done = tracker_.remove(id); done && *done) (*done)(errc::cancelled);
  report_released();
}

}  // namespace macula::node
