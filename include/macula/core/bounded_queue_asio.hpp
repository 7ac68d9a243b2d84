// Asio completion-token adapters for BoundedQueue: async_push and async_pop.
//
// One API serves callbacks, boost::asio::use_future and boost::asio::use_awaitable. The
// completion handler is always posted to its associated executor (defaulting to `ex`), never
// run inline inside the thread that freed space or pushed an item.
#pragma once

#include <memory>
#include <system_error>
#include <utility>

#include "macula/core/bounded_queue.hpp"
#include "macula/detail/asio.hpp"

namespace macula::core {
namespace detail {

template <class T, class Executor, class Handler>
struct PushOperation : std::enable_shared_from_this<PushOperation<T, Executor, Handler>> {
  PushOperation(BoundedQueue<T>& q, Executor e, Handler h, T v)
      : queue(q), ex(std::move(e)), handler(std::move(h)), value(std::move(v)) {}

  void attempt() {
    std::error_code ec = queue.try_push(value);
    if (ec == errc::queue_full && queue.policy() == OverflowPolicy::wait) {
      auto self = this->shared_from_this();
      ec = queue.wait_for_space([self](std::error_code wait_ec) {
        if (wait_ec) {
          self->complete(wait_ec);
        } else {
          self->attempt();  // another producer may have taken the space: wait again then
        }
      });
      if (!ec) return;
    }
    complete(ec);
  }

  void complete(std::error_code ec) {
    auto target = boost::asio::get_associated_executor(handler, ex);
    boost::asio::post(target, [h = std::move(handler), ec]() mutable { h(ec); });
  }

  BoundedQueue<T>& queue;
  Executor ex;
  Handler handler;
  T value;
};

template <class T, class Executor, class Handler>
struct PopOperation : std::enable_shared_from_this<PopOperation<T, Executor, Handler>> {
  PopOperation(BoundedQueue<T>& q, Executor e, Handler h) : queue(q), ex(std::move(e)), handler(std::move(h)) {}

  void attempt() {
    if (auto item = queue.try_pop()) return complete({}, std::move(*item));
    auto self = this->shared_from_this();
    const std::error_code ec = queue.wait_for_item([self](std::error_code wait_ec) {
      if (wait_ec) {
        self->complete(wait_ec, T{});
      } else {
        self->attempt();
      }
    });
    if (ec) complete(ec, T{});
  }

  void complete(std::error_code ec, T item) {
    auto target = boost::asio::get_associated_executor(handler, ex);
    boost::asio::post(target, [h = std::move(handler), ec, v = std::move(item)]() mutable { h(ec, std::move(v)); });
  }

  BoundedQueue<T>& queue;
  Executor ex;
  Handler handler;
};

}  // namespace detail

/// Pushes `value`; with the wait policy, completes when it was queued. Completion signature
/// `void(std::error_code)`: empty, queue_full (reject policy), queue_closed, too_many_waiters.
/// The queue must outlive the operation.
template <class T, class Executor, class CompletionToken>
auto async_push(BoundedQueue<T>& queue, const Executor& ex, T value, CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, void(std::error_code)>(
      [&queue, ex](auto handler, T v) {
        using Op = detail::PushOperation<T, Executor, std::decay_t<decltype(handler)>>;
        std::make_shared<Op>(queue, ex, std::move(handler), std::move(v))->attempt();
      },
      token, std::move(value));
}

/// Pops one item, waiting until one is available. Completion signature
/// `void(std::error_code, T)`; on error (queue_closed, too_many_waiters) T is value-initialized.
template <class T, class Executor, class CompletionToken>
auto async_pop(BoundedQueue<T>& queue, const Executor& ex, CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, void(std::error_code, T)>(
      [&queue, ex](auto handler) {
        using Op = detail::PopOperation<T, Executor, std::decay_t<decltype(handler)>>;
        std::make_shared<Op>(queue, ex, std::move(handler))->attempt();
      },
      token);
}

}  // namespace macula::core
