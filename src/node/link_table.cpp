#include "node/link_table.hpp"

#include <algorithm>

#include <boost/asio/post.hpp>

#include "macula/error.hpp"
#include "node/address.hpp"

namespace macula::node {

namespace asio = boost::asio;

namespace {
constexpr const char* kSessionPath = "/macula/v1/session";
// Bytes encoded per write batch: large enough to amortise the session call, small enough that
// a control frame queued meanwhile waits behind little.
constexpr std::size_t kWriteBatch = 64 * 1024;
// Publishes a link keeps in its session (sent, not yet acknowledged), by bytes and by frames
// (a receiver spends per frame, so 256 KiB of 64-byte messages, ~2,400 frames, holds a control
// frame back far longer than 256 KiB of large ones). Control frames share the session's byte
// stream and queue behind these, so while a link carries control traffic (an RPC, acks) the
// tight bounds keep their wait short; a link that carried none for kControlQuiet runs with the
// wide ones for throughput. Measured trade-off in docs/ARCHITECTURE.md ("Flow control").
struct InFlightBound {
  std::size_t bytes, frames;
};
constexpr InFlightBound kLatencyBound{256 * 1024, 512};
constexpr InFlightBound kThroughputBound{2048 * 1024, 16384};
constexpr auto kControlQuiet = std::chrono::milliseconds(250);

std::string short_id(const NodeId& id) { return id.to_hex().substr(0, 12); }
std::size_t body_bytes(const detail::MessageBody& b) { return b.payload.size() + b.topic.size(); }
}  // namespace

LinkTable::LinkTable(const NodeOptions& options, NodeMetrics& metrics, const observe::Logger& log, LinkEvents& events)
    : options_(options), metrics_(metrics), log_(log), events_(events) {}

void LinkTable::start(std::shared_ptr<transport::Endpoint> endpoint, Strand strand, std::weak_ptr<void> owner) {
  endpoint_ = std::move(endpoint);
  strand_.emplace(strand);
  owner_ = std::move(owner);
  session_bound_ = transport::EndpointOptions{}.session_send_buffer;
}

// ---- peers and links --------------------------------------------------------------------------

LinkTable::Peer& LinkTable::peer_for(const NodeId& id) {
  auto it = peer_keys_.find(id);
  if (it != peer_keys_.end()) return peers_.at(it->second);
  const PeerKey key = ++last_peer_;
  peer_keys_.emplace(id, key);
  Peer& p = peers_[key];
  p.key = key;
  p.id = id;
  return p;
}

LinkTable::Link* LinkTable::live_link(PeerKey key) {
  auto p = peers_.find(key);
  return p == peers_.end() ? nullptr : p->second.traffic;
}

bool LinkTable::leaf(PeerKey peer) const {
  auto it = peers_.find(peer);
  return it != peers_.end() && it->second.leaf;
}

std::vector<PeerKey> LinkTable::linked_peers() const {
  std::vector<PeerKey> out;
  for (const auto& [key, p] : peers_)
    if (!p.links.empty()) out.push_back(key);
  std::sort(out.begin(), out.end());
  return out;
}

bool LinkTable::linked(PeerKey peer) const {
  auto p = peers_.find(peer);
  return p != peers_.end() && !p->second.links.empty();
}

LinkId LinkTable::current_link(PeerKey peer) const {
  auto p = peers_.find(peer);
  return p == peers_.end() || p->second.links.empty() ? 0 : p->second.links.back();
}

std::optional<PeerKey> LinkTable::find_peer(const NodeId& id) const {
  auto it = peer_keys_.find(id);
  if (it == peer_keys_.end()) return std::nullopt;
  return it->second;
}

const NodeId& LinkTable::peer_id(PeerKey peer) const { return peers_.at(peer).id; }

bool LinkTable::dials() const {
  return !options_.bootstrap.empty() ||
         std::any_of(peers_.begin(), peers_.end(), [](const auto& p) { return p.second.redial.has_value(); });
}

std::string LinkTable::peer_name(PeerKey key) const {
  auto p = peers_.find(key);
  return p == peers_.end() ? std::string("?") : short_id(p->second.id);
}

PeerKey LinkTable::attach(std::shared_ptr<transport::Session> s, const NodeId& peer_id,
                          std::shared_ptr<transport::Connection> conn, transport::SessionCallbacks& cb) {
  const LinkId id = ++last_link_;
  had_link_ = true;
  Peer& peer = peer_for(peer_id);
  peer.links.push_back(id);
  peer.backoff = std::chrono::milliseconds(100);
  Link& link = links_[id];
  peer.traffic = &link;
  link.id = id;
  link.peer = peer.key;
  link.session = std::move(s);
  link.connection = std::move(conn);
  std::weak_ptr<void> owner = owner_;
  cb.on_data = [this, owner, id](std::span<const std::uint8_t> bytes) {
    if (auto o = owner.lock()) on_data(id, bytes);
  };
  cb.on_close = [this, owner, id](std::error_code) {
    if (auto o = owner.lock()) {
      drop_link(id);
      flush();
    }
  };
  wire::Hello hello;
  hello.node_id = endpoint_->node_id();
  hello.realm = options_.realm;
  hello.capabilities = wire::kCapabilityPubSub | wire::kCapabilityRpc | (options_.dht && !options_.leaf ? wire::kCapabilityDht : 0) |
                       (options_.leaf ? wire::kCapabilityLeaf : 0);
  // A leaf cannot be dialed: it names no address, so no routing table learns one.
  if (!options_.leaf) hello.endpoints.push_back(options_.advertise_address);  // resolved at start
  (void)send_on(id, hello);
  log_.log_with(LogLevel::info, "link", [&] {
    return "link " + std::to_string(id) + " to peer " + short_id(peer_id) + (link.connection ? " (dialed)" : " (accepted)") +
           " up";
  });
  const PeerKey key = peer.key;
  events_.on_link_up(key, id);
  flush();
  return key;
}

void LinkTable::drop_link(LinkId id) {
  auto it = links_.find(id);
  if (it == links_.end()) return;
  const PeerKey key = it->second.peer;
  queued_bytes_ -= it->second.data_bytes;
  // QoS 0 publishes still waiting on the link go with it, counted; QoS 1 ones are owed by the
  // tracker and go again on the peer's next link.
  for (const auto& q : it->second.data)
    if (q.body && q.body->qos == Qos::at_most_once) metrics_.drop_no_link->inc();
  links_.erase(it);
  log_.log_with(LogLevel::info, "link", [&] { return "link " + std::to_string(id) + " to peer " + peer_name(key) + " down"; });
  bool last = true;
  if (auto p = peers_.find(key); p != peers_.end()) {
    auto& v = p->second.links;
    v.erase(std::remove(v.begin(), v.end(), id), v.end());
    last = v.empty();
    p->second.traffic = last ? nullptr : &links_.at(v.back());
    if (last) {
      p->second.gone_since = Clock::now();
      if (p->second.redial && !closed_) schedule_redial(p->second);
    }
  }
  events_.on_link_down(key, id, last);
}

void LinkTable::keep_linked(PeerKey peer, const asio::ip::udp::endpoint& address) {
  if (auto p = peers_.find(peer); p != peers_.end()) p->second.redial = address;
}

void LinkTable::schedule_redial(Peer& p) {
  if (p.dialing || !p.redial) return;
  p.dialing = true;
  if (!p.redial_timer) p.redial_timer = std::make_shared<asio::steady_timer>(*strand_);
  p.redial_timer->expires_after(p.backoff);
  p.backoff = std::min(p.backoff * 2, options_.reconnect_max_backoff);
  const PeerKey key = p.key;
  p.redial_timer->async_wait([this, owner = owner_, key](boost::system::error_code ec) {
    auto o = owner.lock();
    if (!o || ec || closed_) return;
    auto it = peers_.find(key);
    if (it == peers_.end()) return;
    it->second.dialing = false;
    if (!it->second.links.empty()) return;
    dial(*it->second.redial, it->second.id, [this, owner, key](std::error_code e, PeerKey) {
      auto o2 = owner.lock();
      if (!o2 || !e) return;
      auto p2 = peers_.find(key);
      if (p2 != peers_.end() && p2->second.links.empty()) schedule_redial(p2->second);
    });
  });
}

void LinkTable::dial(const asio::ip::udp::endpoint& address, std::optional<NodeId> expected, Dialed done) {
  std::weak_ptr<void> owner = owner_;
  // Every way a dial ends without a link is counted and logged: a peer that cannot be reached
  // (a dead node's DHT record, a firewall) is otherwise invisible.
  auto failed = [this, address, done](std::error_code ec, std::string detail = {}) {
    metrics_.dials_failed->inc();
    log_.log_with(LogLevel::warn, "link", [&] {
      return "could not link to " + format_address(address) + ": " + ec.message() + detail;
    });
    done(ec, 0);
  };
  endpoint_->connect(address, expected, [this, owner, done, failed](std::error_code ec, std::shared_ptr<transport::Connection> c) {
    auto o = owner.lock();
    if (!o || closed_) return done(errc::endpoint_closed, 0);
    if (ec) return failed(ec);
    transport::Request head;
    head.path = kSessionPath;
    head.headers =
        transport::realm_headers({options_.realm, options_.realm_secret}, endpoint_->node_id(), *c->peer_id(), c->channel_binding());
    // The session's callbacks are known only once attach() made the link: forward to a slot.
    auto cb_slot = std::make_shared<transport::SessionCallbacks>();
    transport::SessionCallbacks forward;
    forward.on_data = [cb_slot](std::span<const std::uint8_t> b) {
      if (cb_slot->on_data) cb_slot->on_data(b);
    };
    forward.on_close = [cb_slot](std::error_code e) {
      if (cb_slot->on_close) cb_slot->on_close(e);
    };
    // A refusal's status says why: 403 is another realm (and a node without a secret names its
    // own), 401 a secret it did not accept, 503 no room or a leaf.
    struct Refusal {
      int status = 0;
      std::string realm;
    };
    auto refusal = std::make_shared<Refusal>();
    forward.on_refused = [refusal](int status, const std::vector<transport::Header>& headers) {
      refusal->status = status;
      for (const auto& h : headers)
        if (h.name == "macula-realm") refusal->realm = h.value.substr(0, 256);
    };
    c->open_session(head, forward, options_.connect_timeout,
                    [this, owner, c, cb_slot, done, failed, refusal](std::error_code e, std::shared_ptr<transport::Session> s) {
                      auto o2 = owner.lock();
                      if (!o2 || closed_) return done(errc::endpoint_closed, 0);
                      if (e) {
                        c->close(transport::CloseCode::no_error, "session refused");
                        if (refusal->status == 403)
                          return failed(errc::realm_mismatch,
                                        refusal->realm.empty() ? " (not " + options_.realm + ")"
                                                               : " (its realm is " + refusal->realm + ", not " + options_.realm + ")");
                        if (refusal->status == 401) return failed(e, " (it did not accept our realm proof: another realm secret?)");
                        return failed(e);
                      }
                      // However this peer was found (bootstrap, DHT, a record), it is used
                      // only once it has proven the realm's secret in its answer.
                      if (!transport::acceptor_proof_valid({options_.realm, options_.realm_secret}, endpoint_->node_id(),
                                                           *c->peer_id(), c->channel_binding(), s->response_headers())) {
                        metrics_.realm_refusals->inc();
                        log_.log_with(LogLevel::warn, "link", [&] {
                          return "refusing peer " + short_id(*c->peer_id()) + " at " + format_address(c->remote_endpoint()) +
                                 ": it did not prove the realm secret";
                        });
                        s->close_connection(transport::CloseCode::realm_refused, "no realm proof");
                        return failed(errc::realm_proof_failed);
                      }
                      done({}, attach(std::move(s), *c->peer_id(), c, *cb_slot));
                      flush();  // what `done` queued (an RPC call to a provider just found)
                    });
  });
}

// ---- receiving --------------------------------------------------------------------------------

void LinkTable::on_data(LinkId id, std::span<const std::uint8_t> bytes) {
  auto it = links_.find(id);
  if (it == links_.end()) return;
  const PeerKey peer = it->second.peer;
  // A frame may end the link while later frames of this read are still being decoded (a
  // protocol error, a close whose callback drops the link): the reader is taken out of the
  // link for the read, so that erasing the link cannot free it under its own feet.
  wire::FrameReader reader = std::move(it->second.reader);
  const std::error_code ec = reader.feed(bytes, [&](wire::Frame&& f) {
    auto l = links_.find(id);
    if (l != links_.end() && !l->second.closing) handle(l->second, std::move(f));
  });
  it = links_.find(id);
  if (it != links_.end()) {
    it->second.reader = std::move(reader);
    if (ec) protocol_error(id);
  }
  events_.on_read_done(peer);
  flush();
}

void LinkTable::handle(Link& link, wire::Frame&& frame) {
  if (auto* h = std::get_if<wire::Hello>(&frame)) {
    Peer& p = peers_.at(link.peer);
    if (link.hello || h->node_id != p.id || h->realm != options_.realm) return protocol_error(link.id);
    link.hello = true;
    p.leaf = (h->capabilities & wire::kCapabilityLeaf) != 0;
  } else if (auto* ping = std::get_if<wire::Ping>(&frame)) {
    (void)send_on(link.id, wire::Pong{ping->nonce});
    return;
  }
  events_.on_frame(link.peer, link.id, std::move(frame));
}

void LinkTable::protocol_error(LinkId id) {
  auto it = links_.find(id);
  if (it == links_.end() || it->second.closing) return;
  metrics_.protocol_errors->inc();
  log_.log_with(LogLevel::warn, "link", [&] {
    return "closing the link to " + peer_name(it->second.peer) + ": malformed or forged frame";
  });
  close_link(it->second, transport::CloseCode::protocol_error, "malformed or forged frame");
}

// Takes the link out at once (its frames are no longer read or written) and closes its
// connection; the close is posted because callers may be iterating links or reading this one.
void LinkTable::close_link(Link& link, transport::CloseCode code, const std::string& reason) {
  link.closing = true;
  auto session = link.session;
  auto connection = link.connection;
  drop_link(link.id);
  asio::post(*strand_, [owner = owner_, session, connection, code, reason] {
    if (!owner.lock()) return;
    if (connection) connection->close(code, reason);
    else session->close_connection(code, reason);
  });
}

// ---- sending ----------------------------------------------------------------------------------

std::error_code LinkTable::send(PeerKey peer, const wire::Frame& frame) {
  Link* l = live_link(peer);
  if (!l) return errc::not_connected;
  return send_on(l->id, frame);
}

std::error_code LinkTable::send_on(LinkId id, const wire::Frame& frame) {
  auto it = links_.find(id);
  if (it == links_.end() || it->second.closing) return errc::not_connected;
  Link& link = it->second;
  if (auto ec = wire::encode(frame, link.control)) return ec;
  link.last_control = Clock::now();
  if (link.control.size() > kMaxControlBytes && !link.closing) {
    // Posted: a send must not end the link under its caller (an RPC attempt being made).
    asio::post(*strand_, [this, owner = owner_, id] {
      if (owner.lock()) disconnect_slow(id, "its control queue passed 16 MiB");
    });
  }
  mark_dirty(link);
  return {};
}

void LinkTable::broadcast(const wire::Frame& frame) {
  std::vector<LinkId> ids;
  for (const auto& [id, l] : links_) ids.push_back(id);
  for (LinkId id : ids) (void)send_on(id, frame);
}

std::size_t LinkTable::ping_all(std::uint64_t nonce) {
  std::size_t n = 0;
  for (auto& [id, l] : links_) {
    if (l.closing) continue;
    l.data.push_back({nullptr, nonce});
    mark_dirty(l);
    ++n;
  }
  return n;
}

LinkTable::Room LinkTable::room(PeerKey peer, bool drop) {
  Link* l = live_link(peer);
  if (!l) return Room::no_link;
  if (l->data_bytes >= options_.link_queue_bytes) {
    l->room_wanted = true;
    l->drop_hold = l->drop_hold || drop;
    return Room::full;
  }
  return drop && l->drop_hold ? Room::full : Room::ok;
}

bool LinkTable::has_room(PeerKey peer) {
  Link* l = live_link(peer);
  if (!l) return true;  // nothing to wait for: the caller handles a missing link
  if (l->data_bytes < options_.link_queue_bytes) return true;
  l->room_wanted = true;
  return false;
}

bool LinkTable::queue_publish(PeerKey peer, const BodyPtr& body) {
  Link* l = live_link(peer);
  if (!l || l->closing) return false;
  const std::size_t n = body_bytes(*body);
  l->data.push_back({body, 0});
  l->data_bytes += n;
  queued_bytes_ += n;
  mark_dirty(*l);
  return true;
}

void LinkTable::mark_dirty(Link& link) {
  if (link.dirty) return;  // a flag, not a search of dirty_: this runs once per frame
  link.dirty = true;
  dirty_.push_back(link.id);
}

void LinkTable::flush() {
  // pump() may report room (on_room), whose publishes dirty links again: loop until quiet.
  while (!dirty_.empty()) {
    std::vector<LinkId> batch;
    batch.swap(dirty_);
    for (LinkId id : batch)
      if (auto it = links_.find(id); it != links_.end()) {
        it->second.dirty = false;
        pump(it->second);
      }
  }
}

// Moves queued bytes into `wire`: every control frame first, then publishes while the
// session holds less than half its bound (the other half stays for control frames).
bool LinkTable::refill(Link& link) {
  link.wire.clear();
  link.wire_off = 0;
  // Appended, not swapped: both buffers keep their capacity (a swap would hand the large one
  // to the control queue and make `wire` grow again for every batch).
  link.wire.insert(link.wire.end(), link.control.begin(), link.control.end());
  link.control.clear();
  const std::size_t in_flight = link.session->buffered();
  // Frames the peer acknowledged leave the in-flight count.
  const std::uint64_t acked = link.sent - in_flight;
  while (!link.marks.empty() && link.marks.front().first <= acked) {
    link.frames_in_flight -= link.marks.front().second;
    link.marks.pop_front();
  }
  const InFlightBound bound = Clock::now() - link.last_control < kControlQuiet ? kLatencyBound : kThroughputBound;
  std::size_t frames = 0;
  while (!link.data.empty() && link.wire.size() < kWriteBatch && in_flight + link.wire.size() < bound.bytes &&
         link.frames_in_flight + frames < bound.frames) {
    const auto& q = link.data.front();
    if (!q.body) {
      (void)wire::encode(wire::Ping{q.ping}, link.wire);
      link.data.pop_front();
      continue;
    }
    const detail::MessageBody& b = *q.body;
    // Sizes were checked where the publish entered the node, so encoding cannot fail here.
    (void)wire::encode_publish(b.publisher, b.sequence, b.sequence, static_cast<std::uint8_t>(b.qos), b.topic, b.payload,
                               link.wire);
    const std::size_t n = body_bytes(b);
    link.data_bytes -= n;
    queued_bytes_ -= n;
    link.data.pop_front();
    ++frames;
  }
  if (frames) {
    metrics_.forwarded->inc(frames);
    link.frames_in_flight += frames;
    link.marks.emplace_back(link.sent + link.wire.size(), frames);  // `wire` goes out next, whole
  }
  return !link.wire.empty();
}

void LinkTable::pump(Link& link) {
  if (link.closing) return;
  for (;;) {
    if (link.wire_off == link.wire.size() && !refill(link)) break;
    const std::size_t buffered = link.session->buffered();
    const std::size_t room = session_bound_ > buffered ? session_bound_ - buffered : 0;
    if (room == 0) break;
    const std::size_t n = std::min(room, link.wire.size() - link.wire_off);
    const auto ec = link.session->send(std::span<const std::uint8_t>(link.wire).subspan(link.wire_off, n));
    if (ec) break;  // closed: on_close drops the link; full: wait for writable
    link.wire_off += n;
    link.sent += n;
    link.stuck_since = {};
  }
  const bool pending = link.wire_off < link.wire.size() || !link.control.empty() || !link.data.empty();
  if (pending) {
    // Stuck from the first write that could not go out, until one does.
    if (link.stuck_since == Clock::time_point{}) link.stuck_since = Clock::now();
    if (!link.writable_armed) {
      link.writable_armed = true;
      // Control bytes wait for any room; publishes for the in-flight level to fall. May run
      // inline (already below): post, never recurse into pump.
      const bool control_waits = link.wire_off < link.wire.size() || !link.control.empty();
      // Publishes wait for half of what is in flight to be acknowledged (bytes or frames).
      const std::size_t below = control_waits ? session_bound_ / 2 : link.session->buffered() / 2;
      link.session->on_writable([this, owner = owner_, id = link.id] {
        asio::post(*strand_, [this, owner, id] {
          if (!owner.lock()) return;
          auto it = links_.find(id);
          if (it == links_.end()) return;
          it->second.writable_armed = false;
          mark_dirty(it->second);
          flush();
        });
      }, below);
    }
  } else {
    link.stuck_since = {};
  }
  if (link.drop_hold && link.data_bytes <= options_.link_queue_bytes / 2) {
    link.drop_hold = false;
    if (epoch_) epoch_->bump();  // memos of this link being full no longer hold
  }
  if (link.room_wanted && link.data_bytes < options_.link_queue_bytes) {
    link.room_wanted = false;
    events_.on_room(link.peer);
  }
}

// ---- slow peers, housekeeping, stop -----------------------------------------------------------

void LinkTable::disconnect_slow(LinkId id, const char* why) {
  auto it = links_.find(id);
  if (it == links_.end() || it->second.closing) return;
  metrics_.slow_disconnects->inc();
  Link& link = it->second;
  log_.log_with(LogLevel::warn, "link", [&] {
    return "peer " + peer_name(link.peer) + " stopped reading: " + why + " (send buffer " +
           std::to_string(link.session->buffered()) + " bytes); closing its connection (slow_peer_timeout)";
  });
  close_link(link, transport::CloseCode::slow_consumer, "slow consumer");
}

void LinkTable::housekeeping(Clock::time_point now) {
  std::vector<LinkId> slow;
  for (auto& [id, link] : links_)
    if (link.stuck_since != Clock::time_point{} && now - link.stuck_since >= options_.slow_peer_timeout) slow.push_back(id);
  for (LinkId id : slow) disconnect_slow(id, "nothing could be written to it for slow_peer_timeout");
  std::vector<PeerKey> gone;
  for (auto& [key, p] : peers_)
    if (p.links.empty() && p.gone_since != Clock::time_point{} && now - p.gone_since > options_.peer_grace) {
      p.gone_since = {};
      gone.push_back(key);
    }
  for (PeerKey key : gone) events_.on_peer_gone(key);
}

void LinkTable::close_all() {
  closed_ = true;
  for (auto& [k, p] : peers_) {
    if (p.redial_timer) p.redial_timer->cancel();
    p.links.clear();
    p.traffic = nullptr;
  }
  // Closing may call back into drop_link(): take the links out of the map first.
  auto closing = std::move(links_);
  links_.clear();
  queued_bytes_ = 0;
  for (auto& [id, link] : closing) {
    if (link.connection) link.connection->close(transport::CloseCode::no_error, "node stopping");
    else link.session->close();
  }
}

void LinkTable::drop_all() {
  std::vector<std::shared_ptr<transport::Connection>> conns;
  std::vector<std::shared_ptr<transport::Session>> sessions;
  for (auto& [id, l] : links_) {
    if (l.connection) conns.push_back(l.connection);
    else sessions.push_back(l.session);
  }
  for (auto& c : conns) c->close(transport::CloseCode::no_error, "test: link dropped");
  for (auto& s : sessions) s->close();
}

}  // namespace macula::node
