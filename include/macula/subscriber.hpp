// Subscriber: receives the messages whose topic matches a pattern, from this node and from
// every linked peer of its realm.
//
// Patterns: '*' matches one segment, '#' (or '**') any number of segments including none,
// anywhere in the pattern ("sensors.#.temp"). See macula/names.hpp.
// Each subscription has its own bounded queue: a slow subscriber fills only its own queue
// and never delays others; past its capacity the overflow policy drops (oldest or newest)
// and counts the drop on this subscription (dropped()) and in the node's metrics.
// Two modes:
// - callback: `handler` runs on the node's handler executor, one message at a time per
//   subscription (in order), concurrently with other subscriptions' handlers; or, with
//   SubscribeOptions::inline_handler, on the io thread that matched the message, unqueued;
// - pull: async_receive() / try_receive() take messages from the queue.
// Destroying the Subscriber (or unsubscribe()) stops delivery: no handler call starts after
// it returns (one already running may finish), and a pending async_receive completes with
// errc::cancelled. Movable, not copyable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

#include "macula/detail/completion.hpp"
#include "macula/message.hpp"
#include "macula/node.hpp"

namespace macula {

namespace node {
class Subscription;  // the shared queue and handler state (internal)
}

enum class SubscriberOverflow {
  drop_oldest,  ///< make room by dropping the oldest queued message (fresh data wins)
  drop_newest,  ///< refuse the arriving message (queued data wins)
};

struct SubscribeOptions {
  std::size_t queue_capacity = 1024;
  SubscriberOverflow overflow = SubscriberOverflow::drop_oldest;
  std::size_t batch = 64;  ///< messages one handler task takes before yielding its thread
  /// Callback mode only. false (the default): the handler runs on the handler executor (the
  /// worker pool), after the message went through this subscription's bounded queue, so a
  /// slow handler delays only itself. true: the handler runs *inline*, on the node's io thread
  /// that matched the message, with no queue and no thread hand-over (as Zenoh runs subscriber
  /// callbacks on its receive thread) — for handlers that return quickly and never block.
  /// While an inline handler runs, that io thread does nothing else: every link, request and
  /// timer of the node waits for it. Blocking calls made from it fail with would_deadlock,
  /// as from any handler (connect, RpcClient::call); it must not stop or destroy any Node,
  /// nor call another node's stats() (on a shared io thread that waits for itself). Keep it
  /// short: a Node::stop() elsewhere waits at most 2 s for the node's io thread. queue_capacity,
  /// overflow and batch do not apply (nothing is queued, so nothing is dropped for it).
  bool inline_handler = false;
};

/// Runs once per delivered message, on the handler executor (or inline: see
/// SubscribeOptions::inline_handler). May throw: the exception is counted
/// (Subscriber::handler_errors()) and the next message is delivered.
using MessageHandler = std::function<void(const Message&)>;

class Subscriber {
 public:
  Subscriber() = default;
  /// Callback mode. Errors: pattern name errors, too_many_subscriptions, not_started.
  Subscriber(Node& node, std::string pattern, MessageHandler handler, SubscribeOptions options, std::error_code& ec);
  Subscriber(Node& node, std::string pattern, MessageHandler handler, SubscribeOptions options = {});  ///< throws
  /// Pull mode. Same errors.
  Subscriber(Node& node, std::string pattern, SubscribeOptions options, std::error_code& ec);
  Subscriber(Node& node, std::string pattern, SubscribeOptions options);  ///< throws
  Subscriber(Subscriber&&) noexcept;
  Subscriber& operator=(Subscriber&&) noexcept;
  ~Subscriber();

  void unsubscribe() noexcept;

  /// Pull mode: completes with void(std::error_code, Message) when a message is queued.
  /// Errors: cancelled (unsubscribed or node stopped), too_many_waiters, invalid_argument
  /// (a callback-mode subscriber).
  template <class Token>
  auto async_receive(Token&& token) {
    return boost::asio::async_initiate<Token, void(std::error_code, Message)>(
        [this](auto handler) {
          receive_impl(detail::wrap_completion<std::error_code, Message>(std::move(handler), io_->get_executor()));
        },
        token);
  }
  /// Pull mode: a queued message, or nothing.
  std::optional<Message> try_receive();

  const std::string& pattern() const noexcept;
  std::size_t queued() const noexcept;      ///< messages waiting in this subscription's queue
  std::size_t high_water() const noexcept;  ///< the most ever queued at once
  std::uint64_t dropped() const noexcept;   ///< messages this subscription lost to overflow
  std::uint64_t received() const noexcept;  ///< messages queued to it (inline: handed to its handler)
  std::uint64_t handler_errors() const noexcept;  ///< handler calls that threw
  explicit operator bool() const noexcept { return state_ != nullptr; }

 private:
  void init(Node& node, std::string pattern, MessageHandler handler, SubscribeOptions options, std::error_code& ec);
  void receive_impl(detail::Completion<std::error_code, Message> done);

  std::shared_ptr<node::Subscription> state_;
  std::weak_ptr<node::NodeCore> core_;
  boost::asio::io_context* io_ = nullptr;
};

}  // namespace macula
