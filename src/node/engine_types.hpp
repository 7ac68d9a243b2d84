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

/// A publish handed to the node, until the strand has matched it and every link took it.
struct Outgoing {
  std::string topic;
  Bytes payload;
  Qos qos = Qos::at_most_once;
  CongestionControl congestion = CongestionControl::drop;
  std::shared_ptr<std::atomic<std::uint64_t>> drops;  ///< the publisher's counter (may be null)
  detail::Completion<std::error_code> done;           ///< may be empty
  /// kLocalPeer for this node's own publishes; otherwise the leaf this gateway relays it for
  /// (never sent back to it, and not counted in the publish queue).
  PeerKey from = 0;

  void count_drop() const {
    if (drops) drops->fetch_add(1, std::memory_order_relaxed);
  }
};

/// The congestion policy a publish gets when its publisher did not choose one.
inline CongestionControl default_congestion(Qos qos) {
  return qos == Qos::at_least_once ? CongestionControl::block : CongestionControl::drop;
}

}  // namespace macula::node
