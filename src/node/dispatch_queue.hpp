// DispatchQueue: the WorkQueue that runs ready subscriptions' handlers (one batch of one
// subscription per turn; a subscription with messages left goes to the back of the line).
// TaskQueue: the WorkQueue that runs RPC handlers.
#pragma once

#include <memory>

#include "macula/core/unique_function.hpp"
#include "node/subscription.hpp"
#include "node/work_queue.hpp"

namespace macula::node {

struct DrainSubscription {
  bool operator()(std::shared_ptr<Subscription>& s) const { return s->drain_batch(); }
};
using DispatchQueue = WorkQueue<std::shared_ptr<Subscription>, DrainSubscription>;

struct RunTask {
  bool operator()(core::detail::UniqueFunction<void()>& task) const {
    task();
    return false;
  }
};
using TaskQueue = WorkQueue<core::detail::UniqueFunction<void()>, RunTask>;

}  // namespace macula::node
