// ReplySlot: where an RPC handler's answer goes (behind every copy of an RpcResponder).
//
// The first answer wins; later ones are ignored. When the last responder copy dies without an
// answer, the slot answers handler_error itself, so a caller never waits for a reply a
// handler forgot to give.
#pragma once

#include <atomic>
#include <string>
#include <utility>

#include "macula/core/unique_function.hpp"
#include "macula/message.hpp"
#include "wire/frame.hpp"

namespace macula::detail {

struct ReplySlot {
  using Answer = core::detail::UniqueFunction<void(wire::RpcStatus, Bytes)>;
  explicit ReplySlot(Answer a) : answer(std::move(a)) {}
  ReplySlot(const ReplySlot&) = delete;
  ReplySlot& operator=(const ReplySlot&) = delete;
  ~ReplySlot() {
    static const std::string kMsg = "handler did not answer";
    give(wire::RpcStatus::handler_error, Bytes(kMsg.begin(), kMsg.end()));
  }
  void give(wire::RpcStatus status, Bytes bytes) {
    if (answered.exchange(true, std::memory_order_acq_rel)) return;
    // Release the route back to the caller once used: a handler that keeps responders (in a
    // structure its own closure owns) must not keep the node's state alive through them.
    Answer a = std::move(answer);
    answer = Answer();
    if (a) a(status, std::move(bytes));
  }

  std::atomic<bool> answered{false};
  Answer answer;
};

}  // namespace macula::detail
