// Publisher: publishes messages to topics through a Node.
//
// QoS 0 (at_most_once): the message is matched against local subscriptions and sent once per
// linked peer whose announced interest matches. Nothing is retried; every drop (a full
// publish queue, a peer's link pushing back, no live link to an interested peer) is counted
// in the node's metrics.
// QoS 1 (at_least_once): every interested peer acknowledges; unacknowledged messages are
// re-sent every `qos1_retry_period` up to `qos1_attempts` sends, also across a dropped and
// re-established link; receivers de-duplicate by (publisher, sequence), so a handler sees a
// message once in normal operation and at least once across failures. The completion runs
// when every interested peer acknowledged (or at once when none is interested), with
// errc::timed_out when attempts ran out.
// Per-publisher order is kept per link. A Publisher is a cheap handle; use one per thread or
// share it (it is thread-safe). It must not outlive its Node's stop().
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "macula/detail/completion.hpp"
#include "macula/message.hpp"
#include "macula/node.hpp"

namespace macula {

class Publisher {
 public:
  /// `topic`: a default topic for the overloads without one (validated on first use).
  explicit Publisher(Node& node, std::string topic = {});

  /// Fire-and-forget: returns at once. Errors: topic name errors, queue_full (the node's
  /// publish queue is full: the message is dropped and counted), not_started.
  std::error_code publish(std::string_view topic, std::span<const std::uint8_t> payload, Qos qos = Qos::at_most_once);
  std::error_code publish(std::span<const std::uint8_t> payload, Qos qos = Qos::at_most_once) {
    return publish(topic_, payload, qos);
  }

  /// Publishes and completes with void(std::error_code): QoS 0 once handed to local
  /// subscribers and to interested links; QoS 1 once acknowledged (see above). Errors: those
  /// of publish(), timed_out (QoS 1 gave up), too_many_pending (QoS 1 in-flight bound),
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
    return async_publish(topic_, std::move(payload), qos, std::forward<Token>(token));
  }

  const std::string& topic() const noexcept { return topic_; }

 private:
  void publish_impl(std::string topic, Bytes payload, Qos qos, detail::Completion<std::error_code> done);
  boost::asio::io_context::executor_type executor() const noexcept { return node_->get_executor(); }

  Node* node_;
  std::string topic_;
};

}  // namespace macula
