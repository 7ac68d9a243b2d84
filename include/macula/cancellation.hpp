// Cancellation: lets a caller abandon an asynchronous operation (an RPC call) it started.
//
// Boost 1.74 (Debian 12) predates Asio's per-operation cancellation slots (Boost 1.77), so
// libmacula carries its own small signal: create one, pass it in the operation's options,
// call cancel() from any thread. The operation then completes once, with errc::cancelled,
// unless it had already completed. One Cancellation may be shared by many operations; it
// cancels all of them. Cheap to copy (a shared handle).
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace macula {

class Cancellation {
 public:
  Cancellation() : state_(std::make_shared<State>()) {}

  /// Cancels every operation registered so far and any registered later. Thread-safe.
  void cancel() const {
    std::vector<Entry> run;
    {
      std::lock_guard lock(state_->mutex);
      if (state_->cancelled) return;
      state_->cancelled = true;
      run.swap(state_->callbacks);
    }
    for (auto& e : run)
      if (!e.alive.expired()) e.call();
  }
  bool cancelled() const {
    std::lock_guard lock(state_->mutex);
    return state_->cancelled;
  }

  /// Library side: runs `f` on cancel() (at once, on this thread, when already cancelled)
  /// while `alive` has not expired. Registrations whose `alive` expired are pruned, so a
  /// long-lived Cancellation reused for many operations stays bounded by the live ones.
  /// `f` must be cheap and must not block: it runs on the thread that calls cancel().
  void on_cancel(std::weak_ptr<void> alive, std::function<void()> f) const {
    {
      std::lock_guard lock(state_->mutex);
      if (!state_->cancelled) {
        auto& v = state_->callbacks;
        if (v.size() >= state_->prune_at) {
          std::erase_if(v, [](const Entry& e) { return e.alive.expired(); });
          state_->prune_at = std::max<std::size_t>(16, v.size() * 2);
        }
        v.push_back({std::move(alive), std::move(f)});
        return;
      }
    }
    if (!alive.expired()) f();
  }

 private:
  struct Entry {
    std::weak_ptr<void> alive;
    std::function<void()> call;
  };
  struct State {
    std::mutex mutex;
    bool cancelled = false;
    std::size_t prune_at = 16;
    std::vector<Entry> callbacks;
  };
  std::shared_ptr<State> state_;
};

}  // namespace macula
