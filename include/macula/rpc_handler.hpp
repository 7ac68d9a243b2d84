// What a node runs when it serves a procedure: the handler type, the responder it answers
// through, and the options of an advertisement.
//
// A handler receives the call's argument bytes (its own: a Bytes by value) and an RpcResponder.
// It may answer at once (before returning) or later from any thread (keep a copy of the
// responder). The first reply() or fail() wins; later ones are ignored. A handler that throws
// answers the caller with errc::handler_error and the exception's what() as the message; a
// handler that drops every copy of its responder without answering answers with
// errc::handler_error too ("handler did not answer"), so a caller never waits for a reply that
// cannot come. Handlers run on the node's handler executor (default: its worker pool), never on
// the network strand unless advertised with AdvertiseOptions::inline_handler. The lifetime of
// a responder is RpcResponder's comment.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "macula/message.hpp"

namespace macula {

namespace detail {
struct ReplySlot;  // defined by the library: carries the answer back to the caller
}

/// The right to answer one call. Copies share it: the first reply() or fail() of any copy is
/// the answer, and when the last copy is destroyed unanswered (the library's own goes when the
/// handler returns) the caller gets handler_error ("handler did not answer") at once.
///
/// Lifetime: a responder may be kept and used from any thread for as long as you like: after
/// the handler returned, after its Advertisement was destroyed (the answer still reaches the
/// caller), and after its Node stopped or was destroyed (the answer is then dropped: nobody
/// waits for it; this is safe). reply() and fail() never block: they hand the answer to the
/// node's strand, and the caller may have it before they return, so they may be called from
/// any library callback.
///
/// Until answered, the call counts as running on the serving node (Node::stop() waits up to
/// NodeOptions::stop_timeout for it), and the responder keeps the procedure's handler alive,
/// with what it captured: a handler that stores responders in its own captures must answer or
/// drop them, or they and the handler keep each other alive. A responder that is never
/// answered nor dropped leaves the caller to time out (it fails over to another provider when
/// there is one). Once answered, a responder holds nothing of the node's.
///
/// A default-constructed responder answers nothing: reply() and fail() do nothing,
/// answered() is false.
class RpcResponder {
 public:
  RpcResponder() = default;
  explicit RpcResponder(std::shared_ptr<detail::ReplySlot> slot) noexcept : slot_(std::move(slot)) {}

  /// Answers with a result (moved; an oversized one reaches the caller as payload_too_large).
  /// Thread-safe; only the first answer counts.
  void reply(Bytes result) const;
  /// Answers with an application error; the caller gets errc::handler_error and `message`.
  void fail(std::string message) const;
  /// Whether an answer was already given (by this or another copy).
  bool answered() const noexcept;

 private:
  std::shared_ptr<detail::ReplySlot> slot_;
};

/// Serves one call: `args` is the caller's payload (owned by the handler: keep or move it);
/// `responder` as above.
using RpcHandler = std::function<void(Bytes args, RpcResponder responder)>;

/// Adapts a synchronous function (args -> result; throw to fail) into an RpcHandler.
inline RpcHandler sync_handler(std::function<Bytes(const Bytes&)> f) {
  return [f = std::move(f)](Bytes args, RpcResponder responder) { responder.reply(f(args)); };
}

struct AdvertiseOptions {
  /// Results depend only on the arguments: identical calls within `cache_ttl` are answered
  /// from the node's result cache without running the handler.
  bool idempotent = false;
  std::chrono::milliseconds cache_ttl{5000};
  /// Calls of this procedure running at once on this node; past it the caller is told
  /// errc::overloaded and fails over to another provider. 0: no limit but the node's.
  std::size_t max_concurrency = 0;
  /// false (the default): the handler runs on the handler executor (the worker pool), so a
  /// slow handler holds a worker, never the node. true: it runs *inline*, on the node's io
  /// thread that received the call, with no hand-over, which saves two thread wake-ups per
  /// call — for handlers that answer quickly (or keep the responder and answer later) and never
  /// block. While it runs, that io thread does nothing else for the node. Blocking calls made
  /// from it fail with would_deadlock, as from any handler; it must not stop or destroy any
  /// Node, nor call another node's stats() (SubscribeOptions::inline_handler says why). An
  /// answer given before the handler returns goes out in the same strand turn, so
  /// max_concurrency counts only calls still unanswered when their handler returned.
  bool inline_handler = false;
};

}  // namespace macula
