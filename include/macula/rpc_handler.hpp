// What a node runs when it serves a procedure: the handler type, the responder it answers
// through, and the options of an advertisement.
//
// A handler receives the call's argument bytes and an RpcResponder. It may answer at once
// (before returning) or later from any thread (keep a copy of the responder). The first
// reply() or fail() wins; later ones are ignored. A handler that throws answers the caller
// with errc::handler_error and the exception's what() as the message; a handler that drops
// every copy of its responder without answering answers with errc::handler_error too
// ("handler did not answer"), so a caller never waits for a reply that cannot come.
// Handlers run on the node's handler executor (default: its worker pool), never on the
// network strand.
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

class RpcResponder {
 public:
  RpcResponder() = default;
  explicit RpcResponder(std::shared_ptr<detail::ReplySlot> slot) noexcept : slot_(std::move(slot)) {}

  /// Answers with a result. Thread-safe; only the first answer counts.
  void reply(Bytes result) const;
  /// Answers with an application error; the caller gets errc::handler_error and `message`.
  void fail(std::string message) const;
  /// Whether an answer was already given (by this or another copy).
  bool answered() const noexcept;

 private:
  std::shared_ptr<detail::ReplySlot> slot_;
};

/// Serves one call: `args` is the caller's payload (owned by the handler).
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
};

}  // namespace macula
