// Publisher: publishes messages to topics through a Node.
//
// QoS 0 (at_most_once): the message is matched against local subscriptions and sent once per
// linked peer whose announced interest matches. Nothing is retried.
// QoS 1 (at_least_once): every interested peer acknowledges once the message is in its
// subscribers' queues; receivers de-duplicate by (publisher, sequence), so a handler sees a
// message once in normal operation and at least once across failures. A message is sent once
// per live link (QUIC retransmits what the network loses); it is sent again only when the
// link it went out on dropped before the acknowledgement, on the re-established link. The
// completion runs when every interested peer acknowledged (at once when only local
// subscriptions match), with errc::timed_out when a peer stayed unreachable past `peer_grace`,
// and with errc::no_subscribers when no subscription anywhere matched (never a silent success).
//
// Reach: with the DHT (the default) the first publish to a topic no subscriber is known for
// waits, with later publishes to that topic, up to `discovery_hold` for the lookup and the
// links to the subscribers found; subscribers behind a gateway (leaves) are reached through it.
//
// Congestion (PublisherOptions::congestion), as Zenoh users know it:
// - block: a message waits for room on every interested link (and, for QoS 1, in the node's
//   in-flight bounds); nothing is dropped and a fast publisher is slowed to what the links and
//   the slowest subscriber take. async_publish completes once every link accepted the message
//   (QoS 0) or every peer acknowledged it (QoS 1); the synchronous publish() waits at most
//   `block_timeout` for room in the node's publish queue, then returns errc::would_block.
// - drop: a message a full link cannot take is dropped for that link; publish() returns
//   queue_full at once when the node's publish queue is full. Every drop is counted in the
//   node's metrics (macula_messages_dropped_total by reason) and in this Publisher's dropped().
//   A link that filled up refuses drop-policy messages until it drained to half its bound
//   (NodeOptions::link_queue_bytes), so losses come in runs. When this publisher's message of
//   a topic found every interested link full (and no subscriber on this node), later ones of
//   that topic are dropped in publish() itself, without copying the payload, until one of those
//   links drained to half or a route changed; they are counted exactly as the node would have
//   counted them. A producer faster than its links pays for its own drops instead of the
//   node's io thread.
// Default: block for QoS 1, drop for QoS 0.
//
// Order: one publisher's block-policy messages reach each subscriber in publish order;
// drop-policy ones in publish order per topic (a publish waiting for its topic's discovery does
// not hold up other topics). A re-sent QoS 1 message can arrive after newer ones, across a link
// failure.
// A Publisher is a cheap handle (thread-safe; copies share the drop counter). It must not
// outlive its Node's stop().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "macula/detail/completion.hpp"
#include "macula/detail/publisher_state.hpp"
#include "macula/message.hpp"
#include "macula/node.hpp"

namespace macula {

enum class CongestionControl {
  drop,   ///< a full link or queue loses the message (counted); the publisher never waits
  block,  ///< the message waits for room; nothing is dropped
};

struct PublisherOptions {
  std::string topic;  ///< default topic for the overloads without one (validated on first use)
  /// Unset: block for QoS 1 messages, drop for QoS 0 ones.
  std::optional<CongestionControl> congestion;
  /// How long a blocking synchronous publish() waits for room before errc::would_block.
  std::chrono::milliseconds block_timeout{5000};
};

class Publisher {
 public:
  explicit Publisher(Node& node, std::string topic = {});
  Publisher(Node& node, PublisherOptions options);

  /// Hands the message to the node. With drop it returns at once; with block it may wait up
  /// to block_timeout for room in the node's publish queue (never call it with block from a
  /// thread that runs the node's io_context: it would wait for itself). Errors: topic name
  /// errors, payload_too_large, queue_full (drop: the publish queue is full; counted),
  /// would_block (block: still no room after block_timeout), not_started.
  std::error_code publish(std::string_view topic, std::span<const std::uint8_t> payload, Qos qos = Qos::at_most_once);
  std::error_code publish(std::span<const std::uint8_t> payload, Qos qos = Qos::at_most_once) {
    return publish(options_.topic, payload, qos);
  }

  /// Publishes and completes with void(std::error_code): QoS 0 once handed to local
  /// subscribers and accepted by every interested link (or dropped there, with drop); QoS 1
  /// once acknowledged (see above). Never blocks the caller. Errors: topic name errors,
  /// payload_too_large, queue_full (the publish queue is full, either policy: bound your own
  /// outstanding completions), timed_out (a QoS 1 peer stayed unreachable), no_subscribers (QoS
  /// 1: nobody anywhere subscribes to the topic, after discovery; nobody received it),
  /// cancelled (the node stopped first).
  template <class Token>
  auto async_publish(std::string topic, Bytes payload, Qos qos, Token&& token) {
    return boost::asio::async_initiate<Token, void(std::error_code)>(
        [this](auto handler, std::string t, Bytes p, Qos q) {
          publish_impl(std::move(t), std::move(p), q,
                       detail::wrap_completion<std::error_code>(std::move(handler), executor()));
        },
        token, std::move(topic), std::move(payload), qos);
  }
  template <class Token>
  auto async_publish(Bytes payload, Qos qos, Token&& token) {
    return async_publish(options_.topic, std::move(payload), qos, std::forward<Token>(token));
  }

  const std::string& topic() const noexcept { return options_.topic; }
  const PublisherOptions& options() const noexcept { return options_; }
  /// Messages of this publisher (and its copies) lost to the drop policy: refused by a full
  /// publish queue, a full link, or sent while an interested peer had no link.
  std::uint64_t dropped() const noexcept { return state_->drops.load(std::memory_order_relaxed); }

 private:
  void publish_impl(std::string topic, Bytes payload, Qos qos, detail::Completion<std::error_code> done);
  boost::asio::io_context::executor_type executor() const noexcept { return node_->get_executor(); }

  Node* node_;
  PublisherOptions options_;
  std::shared_ptr<detail::PublisherState> state_ = std::make_shared<detail::PublisherState>();
};

}  // namespace macula
