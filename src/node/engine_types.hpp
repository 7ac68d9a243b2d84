// The vocabulary the node engine's parts share: keys of peers and links, shared message
// bodies, and a publish on its way from the API to the links.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>

#include "discovery/discovery.hpp"
#include "macula/core/unique_function.hpp"
#include "macula/detail/completion.hpp"
#include "macula/message.hpp"
#include "macula/publisher.hpp"

namespace macula::node {

using Clock = std::chrono::steady_clock;
/// A peer node, stable for the life of this node whatever links come and go (never reused).
using PeerKey = std::uint64_t;
/// One link (session) to a peer; a peer may be reached over a new link after the old drops.
using LinkId = std::uint64_t;
/// A message body shared by every local subscriber and every link it goes out on.
using BodyPtr = std::shared_ptr<const detail::MessageBody>;

/// Hands work to the node's strand from any thread (the engines' wake-ups).
using RunOnStrand = std::function<void(core::detail::UniqueFunction<void()>)>;
/// The node's current discovery (it may be replaced while the node runs).
using DiscoveryRef = std::function<discovery::Discovery&()>;

/// The "provider" key of this node itself in provider choices.
inline constexpr PeerKey kLocalPeer = 0;

/// Versions everything that decides where a publish goes and whether its links have room:
/// routes (subscriptions, peers' interest, links up and down) and a full link getting room
/// again. A PublisherState memo of "every link full" holds only at the epoch it was taken at.
/// `pending` counts subscriptions made on user threads and not yet applied on the strand: while
/// any is pending no memo is trusted, so a thread that subscribes and then publishes never has
/// that publish dropped on a verdict reached before its subscription.
/// Threading: `value` is bumped on the strand only; `pending` on any thread; both read anywhere.
struct RouteEpoch {
  // Each node starts from its own range: a memo a Publisher kept from an earlier node that lived
  // at the same address never matches a new one.
  std::atomic<std::uint64_t> value{next_base()};
  std::atomic<std::uint32_t> pending{0};

  void bump() noexcept { value.fetch_add(1, std::memory_order_acq_rel); }
  static std::uint64_t next_base() noexcept {
    static std::atomic<std::uint64_t> base{0};
    return base.fetch_add(std::uint64_t{1} << 40, std::memory_order_relaxed) + 1;
  }
  /// Any thread: the epoch a memo must carry to be trusted now; 0 (no memo carries it) while a
  /// subscription is on its way to the strand.
  std::uint64_t trusted() const noexcept {
    if (pending.load(std::memory_order_acquire) != 0) return 0;
    return value.load(std::memory_order_acquire);
  }
};

/// A publish handed to the node, until the strand has matched it and every link took it.
struct Outgoing {
  /// Topic and payload, in the one allocation every delivery and link will share; the strand
  /// stamps publisher, sequence and QoS on it before sharing it.
  std::shared_ptr<detail::MessageBody> body;
  Qos qos = Qos::at_most_once;
  CongestionControl congestion = CongestionControl::drop;
  std::shared_ptr<detail::PublisherState> publisher;  ///< its drop counter and memo (may be null)
  detail::Completion<std::error_code> done;           ///< may be empty
  /// kLocalPeer for this node's own publishes; otherwise the leaf this gateway relays it for
  /// (never sent back to it, and not counted in the publish queue).
  PeerKey from = 0;

  std::string_view topic() const noexcept { return body->topic; }
  std::size_t payload_size() const noexcept { return body->payload.size(); }
  void count_drop() const {
    if (publisher) publisher->drops.fetch_add(1, std::memory_order_relaxed);
  }
};

/// The congestion policy a publish gets when its publisher did not choose one.
inline CongestionControl default_congestion(Qos qos) {
  return qos == Qos::at_least_once ? CongestionControl::block : CongestionControl::drop;
}

}  // namespace macula::node
