// RpcClient: calls procedures served anywhere in the realm.
//
// A call goes to a provider chosen in O(1) by the strategy (this node first when it serves
// the procedure and the strategy is local_first). On a transport error, a closed link, an
// attempt timeout, an overloaded or vanished provider, it fails over to a provider not yet
// tried, up to `max_attempts` attempts, within one overall `timeout`. An application error
// (errc::handler_error) is final: it is not retried.
// Completion: void(std::error_code, Bytes) — the result; or for handler_error the handler's
// message as the bytes; otherwise empty bytes. Errors: procedure name errors, no_provider
// (nobody serves it), timed_out, handler_error, overloaded, connection_closed (the last
// attempt's link closed), too_many_pending (the pending-call bound), cancelled (the
// Cancellation fired or the node stopped), not_started.
// Thread-safe; a cheap handle. Must not outlive its Node's stop().
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <system_error>

#include "macula/cancellation.hpp"
#include "macula/core/provider_selector.hpp"
#include "macula/detail/completion.hpp"
#include "macula/message.hpp"
#include "macula/node.hpp"

namespace macula {

using core::SelectionStrategy;

struct CallOptions {
  std::chrono::milliseconds timeout{0};          ///< whole call; 0: the node's rpc_timeout
  /// One attempt's deadline before failing over; 0: timeout / max_attempts.
  std::chrono::milliseconds attempt_timeout{0};
  unsigned max_attempts = 0;                     ///< 0: min(3, providers)
  SelectionStrategy strategy = SelectionStrategy::round_robin;
  std::optional<Cancellation> cancel;            ///< cancel() completes the call with cancelled
};

class RpcClient {
 public:
  explicit RpcClient(Node& node) noexcept : node_(&node) {}

  template <class Token>
  auto async_call(std::string procedure, Bytes args, CallOptions options, Token&& token) {
    return boost::asio::async_initiate<Token, void(std::error_code, Bytes)>(
        [this](auto handler, std::string p, Bytes a, CallOptions o) {
          call_impl(std::move(p), std::move(a), std::move(o),
                    detail::wrap_completion<std::error_code, Bytes>(std::move(handler), node_->get_executor()));
        },
        token, std::move(procedure), std::move(args), std::move(options));
  }
  template <class Token>
  auto async_call(std::string procedure, Bytes args, Token&& token) {
    return async_call(std::move(procedure), std::move(args), CallOptions{}, std::forward<Token>(token));
  }

  /// Blocking call. Not from library callbacks (would_deadlock).
  Bytes call(std::string procedure, Bytes args, std::error_code& ec, CallOptions options = {});

 private:
  void call_impl(std::string procedure, Bytes args, CallOptions options, detail::Completion<std::error_code, Bytes> done);
  Node* node_;
};

}  // namespace macula
