// PubSubEngine: the node's publish/subscribe — local subscriptions and the interest peers
// announced, the route of each topic, local delivery, QoS 1 both ways, and the flow control
// between a publisher and its subscribers.
//
// Publishing (strand): a publish is matched once (the route: local subscriptions and
// interested peers, cached per topic), delivered to local subscriptions and queued on the
// interested peers' links (LinkTable). With the block policy a publish that finds no room —
// a full link (QoS 0) or full QoS 1 bounds — waits in a FIFO and is retried when room comes
// back (LinkEvents::on_room, acknowledgements, links going down); later block-policy publishes
// wait behind it, so each publisher's order holds. With drop, a full link loses the message
// (counted on the node and on the publisher) and a full QoS 1 bound answers queue_full.
//
// QoS 1, sending: a tracked message goes once on each interested peer's live link, within a
// per-peer credit window (wire::kQos1WindowMessages / kQos1WindowBytes); what is past the window
// waits in a per-peer backlog and goes as acknowledgements return. When a peer's last link
// drops, everything it still owes goes again, in order, on its next link; a peer gone past
// peer_grace ends its messages with timed_out.
// QoS 1, receiving: a message is acknowledged once it is in every matching subscription's
// queue. While one of those queues is full the message is held (not acknowledged; later QoS 1
// messages from that peer wait behind it), so the publisher's window closes and it slows down
// instead of timing out. The subscription calls back when it has room.
//
// Gateways and leaves: a node relays for the leaves linked to it (peers whose HELLO says they
// accept no inbound links). It announces its leaves' interest as its own (to its peers and in
// the DHT), passes messages from the mesh on to matching leaves, and publishes a leaf's
// messages into the mesh as its own (never back to that leaf). Nothing else is forwarded: a
// message from a non-leaf peer goes only to local subscriptions and leaves, so a message
// crosses at most leaf -> gateway -> node -> gateway -> leaf, and never loops. A leaf sends
// each publish to one gateway only (two would deliver it twice).
//
// Discovery (with the DHT): the first publish to a topic with no known subscriber waits
// (at most discovery_hold) for the topic's lookup, the links to the subscribers found and
// their interest; later publishes to that topic wait behind it. A publish that then has no
// route is counted as dropped (no_route); a QoS 1 one completes with errc::no_subscribers.
//
// Threading: every member runs on the strand, except those marked "any thread".
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "discovery/discovery.hpp"
#include "macula/core/pattern_trie.hpp"
#include "node/dispatch_queue.hpp"
#include "node/engine_types.hpp"
#include "node/link_table.hpp"
#include "node/node_metrics.hpp"
#include "node/subscription.hpp"
#include "pubsub/dedup_window.hpp"
#include "pubsub/local_interest.hpp"
#include "pubsub/qos1_tracker.hpp"
#include "pubsub/remote_interest.hpp"

namespace macula::node {

class PubSubEngine {
 public:
  /// Publishes that left the publish queue (accepted or failed): count and payload bytes.
  using Released = std::function<void(std::size_t count, std::size_t bytes)>;

  PubSubEngine(const NodeOptions& options, NodeMetrics& metrics, LinkTable& links, DiscoveryRef discovery,
               std::shared_ptr<DispatchQueue> dispatch, RunOnStrand to_strand, Released released);

  void start(const NodeId& self, std::weak_ptr<void> owner) {
    self_ = self;
    owner_ = std::move(owner);
  }
  void set_dispatch(std::shared_ptr<DispatchQueue> dispatch) { dispatch_ = std::move(dispatch); }
  /// The node's route epoch (it outlives this engine): bumped whenever a route or a full
  /// link's room changes, so publishers' "every link full" memos stop holding.
  void set_route_epoch(RouteEpoch* epoch) { epoch_ = epoch; }

  // ---- the API's side
  void subscribe(const std::shared_ptr<Subscription>& s);
  /// False when `s` was not registered.
  bool unsubscribe(const std::shared_ptr<Subscription>& s);
  /// Carries out or holds one publish from the publish queue. Call report_released() after a
  /// batch.
  void publish(Outgoing&& m);
  void report_released();

  // ---- link events
  void on_link_up(PeerKey peer, LinkId link);
  void on_link_down(PeerKey peer, LinkId link, bool last);
  /// The peer's HELLO arrived: LinkTable::leaf(peer) now says whether it is our leaf.
  void on_hello(PeerKey peer);
  void on_peer_gone(PeerKey peer);
  /// PUBLISH, PUBLISH_ACK, INTEREST_ADD / _REMOVE; false for other frames.
  bool on_frame(PeerKey peer, LinkId link, wire::Frame& frame);
  void on_read_done(PeerKey peer);
  void on_room(PeerKey peer);

  // ---- housekeeping, stop, views
  void housekeeping();
  bool drained() const { return tracker_.size() == 0 && blocked_.empty(); }
  /// Topic lookups publishes may be waiting for (metrics).
  std::size_t lookups_pending() const noexcept { return lookups_pending_; }
  void fail_all();
  std::size_t qos1_in_flight() const noexcept { return tracker_.size(); }
  std::size_t subscriptions() const noexcept { return subscription_ids_.size(); }
  std::uint64_t dedup_too_old() const noexcept { return dedup_.too_old(); }
  /// Any thread: each subscription's id, pattern, drops and depth.
  std::vector<NodeMetrics::SubscriptionRow> subscription_rows() const;
  /// Any thread: subscriptions whose queue holds more than `threshold`.
  void deep_subscriptions(std::size_t threshold, std::vector<std::pair<std::string, std::size_t>>& out) const;

 private:
  using Tracker = pubsub::Qos1Tracker<BodyPtr, detail::Completion<std::error_code>>;

  // Where a topic goes: the local subscriptions and the peers whose interest matches. Cached
  // per topic (most traffic repeats topics) and dropped whenever a subscription or a peer's
  // interest changes; bounded by kMaxRoutes (cleared when full).
  struct Route {
    std::vector<std::shared_ptr<Subscription>> subscriptions;
    std::vector<PeerKey> peers;
  };
  static constexpr std::size_t kMaxRoutes = 4096;

  /// Sending side, per peer: QoS 1 credit in use and what waits for credit or a link.
  struct PeerFlow {
    std::size_t messages = 0, bytes = 0;
    std::deque<std::uint64_t> backlog;
  };
  /// Receiving side, per peer: QoS 1 messages held for full queues, acks to send.
  struct Held {
    BodyPtr body;
    std::uint64_t message_id;
  };
  struct PeerInbound {
    std::deque<Held> held;
    std::size_t held_bytes = 0;
    std::vector<std::uint64_t> acks;
    std::size_t relaying = 0;  // a leaf's QoS 1 messages this gateway has not finished
  };

  const Route& route_for(std::string_view topic);
  bool try_publish(Outgoing& m);
  void retry_blocked();
  void deliver_local(const BodyPtr& body, const Route& route);
  void send_qos1(PeerKey peer, std::uint64_t id, const BodyPtr& body);
  void send_backlog(PeerKey peer);
  void resend_owed(PeerKey peer);
  bool queues_have_room(const Route& route, std::size_t bytes);
  void accept_qos1(PeerInbound& in, const BodyPtr& body, std::uint64_t message_id, const Route& route);
  void on_publish(PeerKey peer, LinkId link, wire::Publish& pub);
  static std::shared_ptr<detail::MessageBody> received_body(wire::Publish& pub);
  void release_held();
  void send_acks(PeerKey peer, PeerInbound& in);
  // Subscriber discovery per topic (see the header comment).
  struct Lookup {
    Clock::time_point at;          // when it was asked (fresh for kDiscoveryTtl)
    Clock::time_point hold_until;  // publishes wait for it until then
    std::size_t waiting = 0;       // dials and interest snapshots still to come
    bool pending = false;
  };
  static constexpr std::size_t kMaxLookups = 10'000;
  /// Starts a lookup of `topic` when none is fresh; true while publishes should wait for it.
  bool discovery_pending(std::string_view topic);
  void start_lookup(const std::string& topic);
  void lookup_found(const std::string& topic, std::vector<discovery::PeerAddress> found);
  void lookup_step(const std::string& topic);
  void finish_lookup(const std::string& topic);

  // Interest this node announces: its subscriptions' patterns and, as a gateway, its leaves'.
  void announce(std::string_view pattern);
  void withdraw(std::string_view pattern);
  void withdraw_leaf(PeerKey leaf);
  void relay_to_leaves(const BodyPtr& body, const Route& route);
  void publish_for_leaf(PeerKey leaf, LinkId link, wire::Publish& pub);
  void send_interest_snapshot(LinkId link, bool empty);
  void push_blocked(Outgoing&& m);
  void popped_blocked(const std::string& topic, const Outgoing& m, std::size_t bytes);
  bool has_leaves(const Route& route) const;
  void release(const Outgoing& m);

  const NodeOptions& options_;
  NodeMetrics& m_;
  LinkTable& links_;
  DiscoveryRef discovery_;
  std::shared_ptr<DispatchQueue> dispatch_;
  RunOnStrand to_strand_;
  Released released_;
  NodeId self_;
  std::uint64_t sequence_ = 0;

  core::PatternTrie trie_;
  // Changed on the strand only, under the mutex; the strand reads without it, readers off the
  // strand (/metrics, health) take it.
  mutable std::mutex subscriptions_mutex_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Subscription>> subscriptions_;
  std::unordered_map<const Subscription*, std::uint64_t> subscription_ids_;
  std::uint64_t last_subscription_ = 0;
  pubsub::LocalInterest local_;
  pubsub::RemoteInterest remote_;
  std::set<LinkId> interest_synced_;  // links whose peer's snapshot arrived

  // Looked up by the topic's view (a publish's topic lives in its message body): no string is
  // built per publish.
  struct TopicHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  template <class V>
  using TopicMap = std::unordered_map<std::string, V, TopicHash, std::equal_to<>>;
  TopicMap<Route> routes_;
  RouteEpoch* epoch_ = nullptr;
  void invalidate_routes();
  // The publish's body, stamped with this node, the next sequence number and its QoS: ready
  // to share. Moves it out of `m`.
  BodyPtr stamp(Outgoing& m);
  std::vector<core::SubscriberId> match_scratch_;
  std::vector<std::shared_ptr<Subscription>> ready_scratch_;
  std::vector<PeerKey> peer_scratch_;
  TopicMap<Lookup> lookups_;
  std::unordered_map<PeerKey, std::vector<std::string>> lookups_awaiting_interest_;
  std::size_t lookups_pending_ = 0;
  bool starting_lookup_ = false;  // a lookup answering at once must not re-enter retry_blocked
  bool held_now_ = false;         // try_publish said "wait" for discovery, not for room
  std::size_t relay_held_bytes_ = 0;  // QoS 0 relays for leaves waiting in blocked_
  TopicMap<std::size_t> blocked_topics_;  // entries of blocked_ per topic
  // Patterns announced on behalf of each leaf (exactly these are withdrawn when it goes).
  std::unordered_map<PeerKey, std::set<std::string>> leaf_patterns_;
  PeerKey primary_ = 0;  // a leaf: the one gateway its interest goes to
  // A leaf: a gateway's "#" follows its HELLO, so a link is up a moment before the leaf has any
  // route. Until then (at most discovery_hold after the link came up) a publish with no route
  // waits rather than failing as no_route.
  Clock::time_point gateway_hold_until_{};
  std::weak_ptr<void> owner_;  // the node: callbacks from dials and lookups do nothing once it is gone

  Tracker tracker_;
  std::unordered_map<PeerKey, PeerFlow> flow_;
  std::deque<Outgoing> blocked_;
  std::size_t released_count_ = 0, released_bytes_ = 0;

  pubsub::DedupWindow dedup_;
  std::unordered_map<PeerKey, PeerInbound> inbound_;
  bool stopped_ = false;
  const bool discovers_;  // DHT on and not a leaf
};

}  // namespace macula::node
