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
      dedup_(options.max_dedup_publishers) {}

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
  routes_.clear();
  if (auto announce = local_.add(*s->pattern()); !announce.empty()) {
    links_.broadcast(wire::InterestAdd{{announce}});
    discovery_().advertise_interest(announce);
  }
}

bool PubSubEngine::unsubscribe(const std::shared_ptr<Subscription>& s) {
  auto it = subscription_ids_.find(s.get());
  if (it == subscription_ids_.end()) return false;
  const std::uint64_t id = it->second;
  subscription_ids_.erase(it);
  trie_.remove(*s->pattern(), id);
  routes_.clear();
  {
    std::lock_guard lock(subscriptions_mutex_);
    subscriptions_.erase(id);
  }
  if (auto withdraw = local_.remove(*s->pattern()); !withdraw.empty()) {
    links_.broadcast(wire::InterestRemove{{withdraw}});
    discovery_().withdraw_interest(withdraw);
  }
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

const PubSubEngine::Route& PubSubEngine::route_for(const std::string& topic) {
  auto it = routes_.find(topic);
  if (it != routes_.end()) return it->second;
  if (routes_.size() >= kMaxRoutes) routes_.clear();
  Route r;
  match_scratch_.clear();
  trie_.match(topic, match_scratch_);
  {
    // subscriptions_ changes only on this strand: reading it here needs no lock.
    for (auto sub_id : match_scratch_)
      if (auto s = subscriptions_.find(sub_id); s != subscriptions_.end()) r.subscriptions.push_back(s->second);
  }
  remote_.links_for(topic, r.peers);  // peer keys, ascending
  return routes_.emplace(topic, std::move(r)).first->second;
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

// Subscribers beyond our links: one discovery lookup per topic per kDiscoveryTtl, then link to
// the nodes found; their interest arrives over the new links. Messages published before a
// link is up reach only the subscribers already linked.
void PubSubEngine::discover_subscribers(const std::string& topic) {
  const auto now = Clock::now();
  auto it = subscriber_lookups_.find(topic);
  if (it != subscriber_lookups_.end() && now - it->second < kDiscoveryTtl) return;
  if (subscriber_lookups_.size() >= 10'000) subscriber_lookups_.clear();  // bounded
  subscriber_lookups_[topic] = now;
  discovery_().find_subscribers(topic, [this, topic](std::vector<discovery::PeerAddress> found) {
    if (stopped_) return;
    // Nobody (yet): ask again after a second rather than after the full TTL.
    if (found.empty()) subscriber_lookups_[topic] = Clock::now() - kDiscoveryTtl + std::chrono::seconds(1);
    for (const auto& p : found) {
      if (auto k = links_.find_peer(p.id); k && links_.linked(*k)) continue;
      boost::asio::ip::udp::endpoint address;
      if (parse_address(p.endpoint, address)) continue;
      links_.dial(address, p.id, [](std::error_code, PeerKey) {});
    }
  });
}

// ---- publishing -------------------------------------------------------------------------------

void PubSubEngine::publish(Outgoing&& m) {
  if (stopped_) {  // handed over before stop() and reached after it failed everything
    ++released_count_;
    released_bytes_ += m.payload.size();
    if (m.done) m.done(errc::cancelled);
    return;
  }
  if (m.congestion == CongestionControl::block && !blocked_.empty()) {
    blocked_.push_back(std::move(m));  // behind the ones already waiting: order holds
    return;
  }
  if (try_publish(m)) return;
  m_.publish_blocked->inc();
  blocked_.push_back(std::move(m));
}

void PubSubEngine::report_released() {
  if (released_count_ == 0) return;
  released_(released_count_, released_bytes_);
  released_count_ = released_bytes_ = 0;
}

void PubSubEngine::retry_blocked() {
  while (!blocked_.empty() && try_publish(blocked_.front())) blocked_.pop_front();
  report_released();
}

// False: a block-policy publish found no room (nothing done; try again later).
bool PubSubEngine::try_publish(Outgoing& m) {
  const Route& route = route_for(m.topic);
  peer_scratch_.assign(route.peers.begin(), route.peers.end());  // the route may be dropped below
  const std::size_t bytes = m.payload.size() + m.topic.size();
  const bool qos1 = m.qos == Qos::at_least_once;
  const bool block = m.congestion == CongestionControl::block;
  if (block) {
    if (qos1 && !peer_scratch_.empty() && !tracker_.has_room(bytes)) return false;
    if (!qos1)
      for (PeerKey p : peer_scratch_)
        if (!links_.has_room(p)) return false;
  }
  ++released_count_;
  released_bytes_ += m.payload.size();
  if (qos1 && !peer_scratch_.empty() && !tracker_.has_room(bytes)) {  // drop policy
    m_.drop_queue_full->inc();
    m.count_drop();
    if (m.done) m.done(errc::queue_full);
    return true;
  }
  m_.published[qos1 ? 1 : 0]->inc();
  if (!qos1) {
    // Decide per peer first: a message no link can take and no local subscriber wants is
    // counted and gone without being built (an overloaded node drops most of what it gets).
    std::size_t kept = 0;
    for (PeerKey p : peer_scratch_) {
      const auto room = links_.room(p);
      if (room == LinkTable::Room::no_link) {
        m_.drop_no_link->inc();
        m.count_drop();
      } else if (!block && room == LinkTable::Room::full) {
        m_.drop_backpressure->inc();
        m.count_drop();
      } else {
        peer_scratch_[kept++] = p;
      }
    }
    peer_scratch_.resize(kept);
    if (!peer_scratch_.empty() || !route.subscriptions.empty()) {
      auto body = std::make_shared<detail::MessageBody>(
          detail::MessageBody{std::move(m.topic), std::move(m.payload), self_, ++sequence_, m.qos});
      if (options_.dht) discover_subscribers(body->topic);
      deliver_local(body, route);
      for (PeerKey p : peer_scratch_) links_.queue_publish(p, body);
    } else if (options_.dht) {
      discover_subscribers(m.topic);
    }
    if (m.done) m.done({});
    return true;
  }
  auto body = std::make_shared<detail::MessageBody>(
      detail::MessageBody{std::move(m.topic), std::move(m.payload), self_, ++sequence_, m.qos});
  if (options_.dht) discover_subscribers(body->topic);
  deliver_local(body, route);
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
  // Always a snapshot (even empty): the peer replaces what it knew of us with it.
  (void)links_.send_on(link, wire::InterestAdd{local_.snapshot()});
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
  if (last) {
    flow_.erase(peer);  // credit and backlog are rebuilt from the tracker when the peer is back
  } else {
    resend_owed(peer);  // what went out on the dropped link goes on the one that is left
  }
  retry_blocked();  // publishes that waited for the dropped link wait no more
}

void PubSubEngine::on_peer_gone(PeerKey peer) {
  remote_.drop_link(peer);
  routes_.clear();
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
    if (interest_synced_.insert(link).second) remote_.drop_link(peer);  // the snapshot replaces what we knew
    routes_.clear();
    for (const auto& p : ia->patterns)
      if (remote_.add(peer, p)) {
        links_.protocol_error(link);
        return true;
      }
  } else if (auto* ir = std::get_if<wire::InterestRemove>(&frame)) {
    for (const auto& p : ir->patterns) remote_.remove(peer, p);
    routes_.clear();
  } else {
    return false;
  }
  return true;
}

void PubSubEngine::on_publish(PeerKey peer, LinkId link, wire::Publish& pub) {
  // One hop: the publisher must be the peer at the other end (its certificate says so).
  if (pub.publisher != links_.peer_id(peer)) return links_.protocol_error(link);
  const std::uint64_t message_id = pub.message_id;
  auto body = std::make_shared<detail::MessageBody>(
      detail::MessageBody{std::move(pub.topic), std::move(pub.payload), pub.publisher, pub.sequence, static_cast<Qos>(pub.qos)});
  const Route& route = route_for(body->topic);
  if (body->qos == Qos::at_most_once) return deliver_local(body, route);
  PeerInbound& in = inbound_[peer];
  if (in.held.empty() && queues_have_room(route)) return accept_qos1(in, body, message_id, route);
  if (!in.held.empty() && message_id <= in.held.back().message_id) {
    // A copy sent again on a new link. Older than everything held: already delivered (the
    // de-duplication acknowledges it again); otherwise the held original answers for it.
    if (message_id < in.held.front().message_id) accept_qos1(in, body, message_id, route);
    return;
  }
  // A matching queue is full: hold it unacknowledged. The publisher's window bounds what a
  // well-behaved peer can make us hold.
  if (in.held.size() >= 2 * wire::kQos1WindowMessages || in.held_bytes >= 2 * wire::kQos1WindowBytes)
    return links_.protocol_error(link);
  m_.qos1_deferred->inc();
  in.held_bytes += body_bytes(*body);
  in.held.push_back({std::move(body), message_id});
}

bool PubSubEngine::queues_have_room(const Route& route) {
  bool room = true;
  for (const auto& sub : route.subscriptions)
    if (sub->queued() >= sub->capacity() && !sub->want_room()) room = false;
  return room;
}

void PubSubEngine::accept_qos1(PeerInbound& in, const BodyPtr& body, std::uint64_t message_id, const Route& route) {
  in.acks.push_back(message_id);
  if (!dedup_.first_time(body->publisher, message_id)) return m_.duplicates->inc();
  deliver_local(body, route);
}

// A subscription freed room (or went away): held messages go in, in arrival order.
void PubSubEngine::release_held() {
  for (auto& [peer, in] : inbound_) {
    while (!in.held.empty()) {
      Held& h = in.held.front();
      const Route& route = route_for(h.body->topic);
      if (!queues_have_room(route)) break;
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
  // Safety nets for wake-ups that raced: both are no-ops when nothing waits.
  retry_blocked();
  release_held();
  for (auto it = inbound_.begin(); it != inbound_.end();)
    it = it->second.held.empty() && it->second.acks.empty() && !links_.linked(it->first) ? inbound_.erase(it) : std::next(it);
}

void PubSubEngine::fail_all() {
  stopped_ = true;
  for (auto& m : blocked_) {
    ++released_count_;
    released_bytes_ += m.payload.size();
    if (m.done) m.done(errc::cancelled);
  }
  blocked_.clear();
  for (auto id : tracker_.ids())
    if (auto done = tracker_.remove(id); done && *done) (*done)(errc::cancelled);
  report_released();
}

}  // namespace macula::node
