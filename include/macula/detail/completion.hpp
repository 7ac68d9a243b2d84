// Turns an Asio completion handler into a type-erased, move-only callable the library can
// keep and call from any thread (internal to the public async_* templates).
//
// Calling the result posts the handler, with its arguments, to the handler's associated
// executor — by default the node's io_context, never the network strand inline — and holds
// outstanding work on that executor until then, so `use_future` and coroutine callers on a
// host-run io_context complete even when nothing else keeps it running.
#pragma once

#include <type_traits>
#include <utility>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "macula/core/unique_function.hpp"

namespace macula::detail {

template <class... Args>
using Completion = core::detail::UniqueFunction<void(Args...)>;

template <class... Args, class Handler>
Completion<Args...> wrap_completion(Handler&& handler, const boost::asio::io_context::executor_type& fallback) {
  using H = std::decay_t<Handler>;
  auto work = boost::asio::make_work_guard(boost::asio::get_associated_executor(handler, fallback));
  return [h = H(std::forward<Handler>(handler)), work = std::move(work)](Args... args) mutable {
    auto ex = work.get_executor();
    boost::asio::post(ex, [h = std::move(h), ... a = std::move(args)]() mutable { std::move(h)(std::move(a)...); });
    work.reset();
  };
}

}  // namespace macula::detail
