// Message: one publication as a subscriber receives it.
//
// A Message is a cheap, immutable, shareable view: every subscription that matched the same
// publication shares one body (topic, payload, publisher, sequence), so a fan-out to 1,000
// local subscriptions copies no payload. Copying a Message costs two reference-count
// increments. Any thread may read a Message; it stays valid as long as any copy lives.
//
// Lifetime: a Message owns its body jointly with its copies; nothing else (not the Node, the
// Subscriber or the link it came on) has to outlive it. What topic(), pattern() and payload()
// return are views into that body: valid while this Message (or a copy sharing the body) lives,
// so keep the Message, not the view. A callback Subscriber's handler gets a `const Message&`
// that is valid only during the call: copy the Message (cheap) to keep it, e.g. to hand it to
// another thread. A pull-mode Subscriber hands out Messages by value. The bytes are shared with
// the other subscriptions that received the same publication: never write through them.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "macula/limits.hpp"
#include "macula/node_id.hpp"

namespace macula {

/// Payloads are bytes; libmacula imposes no encoding.
using Bytes = std::vector<std::uint8_t>;

/// Delivery guarantee of one publish.
enum class Qos : std::uint8_t {
  at_most_once = 0,   ///< QoS 0: fire-and-forget; a drop anywhere is counted, not retried
  at_least_once = 1,  ///< QoS 1: acknowledged per receiving node, retried, de-duplicated
};

namespace detail {
/// The shared, immutable part of a publication: one heap allocation per publication holds the
/// reference counts, these fields, and the topic and payload bytes they view, whatever the
/// number of deliveries. Made only by make_message_body(); not copyable (the views point into
/// its own allocation).
struct MessageBody {
  MessageBody() = default;
  MessageBody(const MessageBody&) = delete;
  MessageBody& operator=(const MessageBody&) = delete;

  std::string_view topic;
  std::span<const std::uint8_t> payload;
  NodeId publisher;
  std::uint64_t sequence = 0;
  Qos qos = Qos::at_most_once;
  Bytes owned_payload;  ///< the payload when it was moved in rather than copied
};

/// A body holding copies of `topic` and `payload`, in one allocation. Mutable until shared:
/// the node stamps publisher and sequence before any other thread sees it.
std::shared_ptr<MessageBody> make_message_body(std::string_view topic, std::span<const std::uint8_t> payload,
                                               Qos qos = Qos::at_most_once);
/// The same, keeping a payload the caller hands over (no copy of a large payload; its buffer
/// is a second allocation, made by the caller).
std::shared_ptr<MessageBody> make_message_body(std::string_view topic, Bytes&& payload, Qos qos = Qos::at_most_once);
}  // namespace detail

class Message {
 public:
  Message() = default;
  Message(std::shared_ptr<const detail::MessageBody> body, std::shared_ptr<const std::string> pattern) noexcept
      : body_(std::move(body)), pattern_(std::move(pattern)) {}

  /// The concrete topic it was published to, e.g. "sensors.kitchen.temp".
  std::string_view topic() const noexcept { return body_ ? body_->topic : std::string_view(); }
  /// The subscription's pattern that matched, e.g. "sensors.*.temp".
  std::string_view pattern() const noexcept { return pattern_ ? std::string_view(*pattern_) : std::string_view(); }
  std::span<const std::uint8_t> payload() const noexcept {
    return body_ ? body_->payload : std::span<const std::uint8_t>();
  }
  /// The payload as text, for payloads that are text (a copy).
  std::string payload_string() const { return {payload().begin(), payload().end()}; }
  /// The node that published it (certificate-verified for remote publishers). A message a
  /// gateway relayed to or from a leaf carries the gateway: it published it on the leaf's behalf.
  const NodeId& publisher() const noexcept { return body_ ? body_->publisher : kNoPublisher; }
  /// The publisher's message number: increases by publish order on that node.
  std::uint64_t sequence() const noexcept { return body_ ? body_->sequence : 0; }
  Qos qos() const noexcept { return body_ ? body_->qos : Qos::at_most_once; }
  explicit operator bool() const noexcept { return body_ != nullptr; }

 private:
  static inline const NodeId kNoPublisher{};
  std::shared_ptr<const detail::MessageBody> body_;
  std::shared_ptr<const std::string> pattern_;
};

}  // namespace macula
