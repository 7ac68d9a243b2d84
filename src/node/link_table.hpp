// LinkTable: the node's links to peer nodes — one HTTP/3 session each, carrying wire frames —
// and the peers behind them: dialing and re-dialing, the HELLO check, per-link send queues
// with flow control, and slow peers.
//
// Events go up through LinkEvents (declared here, implemented by the node's composition root),
// so this part knows nothing of pub/sub or RPC.
//
// Sending. Each link has two queues in front of its session's bounded send buffer:
// - control frames (acknowledgements, interest and procedure announcements, RPC requests and
//   results, PING/PONG): never dropped, always written ahead of queued publishes, and allowed
//   to use the whole send buffer;
// - publishes: kept as shared message bodies and encoded only when written; a bounded amount
//   of them (bytes and frames) sits in the session unacknowledged — a tight bound while the
//   link carries control traffic, so control frames never wait behind much, a wide one for
//   throughput otherwise. A link
//   whose publish queue holds link_queue_bytes has no room (has_room): a drop-policy publish
//   is dropped for it, a block-policy one waits, and LinkEvents::on_room tells when room is
//   back.
// Writes go out as the session takes them (a prefix at a time: the session is a byte stream,
// so a frame may span writes), and resume when the session reports it is writable. Nothing a
// link accepted is discarded while the link lives.
//
// Slow peers: a link that had bytes waiting and could write none of them for
// slow_peer_timeout (its peer acknowledges nothing) is closed (CloseCode slow_consumer), as is
// one whose control queue passes kMaxControlBytes. A peer that reads slowly but steadily is
// not slow: every write that goes through starts the clock again.
//
// Threading: everything runs on the node's strand.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>
#include <vector>

#include "macula/detail/asio.hpp"
#include "macula/node_options.hpp"
#include "node/engine_types.hpp"
#include "node/node_metrics.hpp"
#include "observe/logger.hpp"
#include "transport/endpoint.hpp"
#include "transport/realm_guard.hpp"
#include "wire/frame.hpp"
#include "wire/frame_reader.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

namespace macula::node {

/// What the LinkTable reports to the node. Every call is made on the strand.
class LinkEvents {
 public:
  virtual ~LinkEvents() = default;
  /// A link to `peer` is up; the HELLO is queued on it. The node queues its announcements.
  virtual void on_link_up(PeerKey peer, LinkId link) = 0;
  /// A link ended; `last`: the peer has no live link left (its state waits out peer_grace).
  virtual void on_link_down(PeerKey peer, LinkId link, bool last) = 0;
  /// A peer stayed without a link past peer_grace: forget what it announced.
  virtual void on_peer_gone(PeerKey peer) = 0;
  /// A frame from `peer` (HELLO already checked, PING already answered).
  virtual void on_frame(PeerKey peer, LinkId link, wire::Frame&& frame) = 0;
  /// Every frame of one read from `peer` was handled (the point to batch acknowledgements).
  virtual void on_read_done(PeerKey peer) = 0;
  /// The link to `peer` has room for publishes again after has_room() said no.
  virtual void on_room(PeerKey peer) = 0;
};

class LinkTable {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;
  using Dialed = std::function<void(std::error_code, PeerKey)>;
  /// Control bytes one link may queue before the peer counts as not reading.
  static constexpr std::size_t kMaxControlBytes = 16u << 20;

  LinkTable(const NodeOptions& options, NodeMetrics& metrics, const observe::Logger& log, LinkEvents& events);

  /// Binds to the endpoint once it exists (the session route and dialing need it).
  void start(std::shared_ptr<transport::Endpoint> endpoint, Strand strand, std::weak_ptr<void> owner);

  /// An accepted or dialed session becomes a link to `peer_id`; fills `cb`.
  PeerKey attach(std::shared_ptr<transport::Session> s, const NodeId& peer_id,
                 std::shared_ptr<transport::Connection> conn, transport::SessionCallbacks& cb);
  /// Dials `address` and opens the session; `done` runs on the strand.
  void dial(const boost::asio::ip::udp::endpoint& address, std::optional<NodeId> expected, Dialed done);
  /// Re-dial `peer` at `address` with backoff whenever its last link drops.
  void keep_linked(PeerKey peer, const boost::asio::ip::udp::endpoint& address);

  bool linked(PeerKey peer) const;
  /// Whether `peer` said in its HELLO that it is a leaf (this node is its gateway).
  bool leaf(PeerKey peer) const;
  /// Every peer with a live link.
  std::vector<PeerKey> linked_peers() const;
  /// The link carrying traffic to `peer` now (0: none).
  LinkId current_link(PeerKey peer) const;
  std::optional<PeerKey> find_peer(const NodeId& id) const;
  const NodeId& peer_id(PeerKey peer) const;
  std::size_t size() const noexcept { return links_.size(); }
  bool had_link() const noexcept { return had_link_; }
  /// Whether this node dials peers (bootstrap or connect()) and so expects links.
  bool dials() const;

  /// Queues a control frame on `peer`'s live link (or on link `link`). Errors: not_connected,
  /// frame_too_large (nothing queued).
  std::error_code send(PeerKey peer, const wire::Frame& frame);
  std::error_code send_on(LinkId link, const wire::Frame& frame);
  void broadcast(const wire::Frame& frame);
  /// PINGs every link with `nonce`, behind the publishes already queued on it (a barrier:
  /// the PONG means the peer processed them); returns how many.
  std::size_t ping_all(std::uint64_t nonce);

  /// Whether `peer`'s live link can take another publish now. A no is remembered: on_room
  /// follows when it can.
  bool has_room(PeerKey peer);
  enum class Room { no_link, full, ok };
  /// linked() and has_room() in one look-up. For a drop-policy publish (`drop`) a link that
  /// filled up stays full until it drained to half its bound (high and low water marks, as
  /// Netty's writability): publishers' "link full" memos then hold for a burst's worth of
  /// draining, not one packet, and the route epoch moves when the link is open to them again.
  Room room(PeerKey peer, bool drop);
  /// The node's route epoch (outlives this table).
  void set_route_epoch(RouteEpoch* epoch) { epoch_ = epoch; }
  /// Queues a PUBLISH of `body` on `peer`'s live link; false when there is none.
  bool queue_publish(PeerKey peer, const BodyPtr& body);

  /// Writes what the links touched since the last flush queued. Callers flush once per
  /// batch of strand work.
  void flush();

  /// Closes `link`'s connection for a malformed or forged frame (counted, logged).
  void protocol_error(LinkId link);
  /// Once a second: slow peers closed, peers without a link past peer_grace forgotten.
  void housekeeping(Clock::time_point now);
  /// Bytes waiting in every link's publish queue (metrics).
  std::size_t queued_publish_bytes() const noexcept { return queued_bytes_; }

  /// Stop: cancels re-dials and closes every link cleanly.
  void close_all();
  /// Closes every link's connection as if the network dropped it (tests).
  void drop_all();

 private:
  struct Link {
    LinkId id = 0;
    PeerKey peer = 0;
    std::shared_ptr<transport::Session> session;
    std::shared_ptr<transport::Connection> connection;  // dialed links keep their connection
    wire::FrameReader reader;
    Bytes control;               // encoded control frames not yet written
    // Publishes not yet written, and PING barriers (no body) that must follow them.
    struct Queued {
      BodyPtr body;
      std::uint64_t ping = 0;
    };
    std::deque<Queued> data;
    std::size_t data_bytes = 0;  // their payload and topic bytes
    Bytes wire;                  // encoded bytes being written
    std::size_t wire_off = 0;    // how much of `wire` the session took
    std::uint64_t sent = 0;      // bytes the session took, in all
    // Publish frames sent and not yet acknowledged: (stream offset ending a batch, frames in it).
    std::deque<std::pair<std::uint64_t, std::size_t>> marks;
    std::size_t frames_in_flight = 0;
    Clock::time_point last_control{};  // the last control frame queued (picks the in-flight bound)
    bool hello = false;          // the peer's HELLO arrived (one per link)
    bool dirty = false;          // listed in dirty_
    bool writable_armed = false;
    bool room_wanted = false;
    bool drop_hold = false;  // refused a drop-policy publish when full: refuses them until half
    bool closing = false;
    Clock::time_point stuck_since{};  // bytes waiting and none written since then
  };
  struct Peer {
    PeerKey key = 0;
    NodeId id;
    std::vector<LinkId> links;  // newest last; the newest carries traffic
    struct Link* traffic = nullptr;  // links_ entry of links.back() (map nodes do not move)
    std::optional<boost::asio::ip::udp::endpoint> redial;
    std::chrono::milliseconds backoff{100};
    bool dialing = false;
    bool leaf = false;  // its HELLO said so
    Clock::time_point gone_since{};
    std::shared_ptr<boost::asio::steady_timer> redial_timer;
  };

  Peer& peer_for(const NodeId& id);
  Link* live_link(PeerKey key);
  void on_data(LinkId id, std::span<const std::uint8_t> bytes);
  void handle(Link& link, wire::Frame&& frame);
  void drop_link(LinkId id);
  void schedule_redial(Peer& p);
  void mark_dirty(Link& link);
  void pump(Link& link);
  bool refill(Link& link);
  void disconnect_slow(LinkId id, const char* why);
  void close_link(Link& link, transport::CloseCode code, const std::string& reason);
  std::string peer_name(PeerKey key) const;

  const NodeOptions& options_;
  NodeMetrics& metrics_;
  const observe::Logger& log_;
  LinkEvents& events_;
  RouteEpoch* epoch_ = nullptr;
  std::shared_ptr<transport::Endpoint> endpoint_;
  std::optional<Strand> strand_;
  std::weak_ptr<void> owner_;  // the node: callbacks do nothing once it is gone
  std::size_t session_bound_ = 0;
  std::map<LinkId, Link> links_;
  LinkId last_link_ = 0;
  std::unordered_map<PeerKey, Peer> peers_;
  std::unordered_map<NodeId, PeerKey> peer_keys_;
  PeerKey last_peer_ = 0;
  std::vector<LinkId> dirty_;
  std::size_t queued_bytes_ = 0;
  bool had_link_ = false;
  bool closed_ = false;
};

}  // namespace macula::node
