// A small per-thread index for spreading per-thread state (reader slots, counter cells) over
// cache lines. Each live thread holds the lowest free index and gives it back when it exits,
// so any N live threads have the N distinct indexes 0..N-1 (as long as N <= 64): a monotonic
// counter would drift and, modulo the slot count, hand two live threads the same slot — the
// cache line bouncing these slots exist to avoid. Past 64 live threads indexes are shared,
// which is correct, only slower.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace macula::core::detail {

class ThreadSlot {
 public:
  ThreadSlot() noexcept {
    std::uint64_t used = taken().load(std::memory_order_relaxed);
    while (~used != 0) {
      const auto bit = static_cast<std::size_t>(std::countr_one(used));
      if (taken().compare_exchange_weak(used, used | (std::uint64_t{1} << bit), std::memory_order_acq_rel)) {
        index_ = bit;
        owned_ = true;
        return;
      }
    }
    index_ = overflow().fetch_add(1, std::memory_order_relaxed) % 64;
  }
  ~ThreadSlot() {
    if (owned_) taken().fetch_and(~(std::uint64_t{1} << index_), std::memory_order_acq_rel);
  }
  ThreadSlot(const ThreadSlot&) = delete;
  ThreadSlot& operator=(const ThreadSlot&) = delete;

  std::size_t index() const noexcept { return index_; }

 private:
  static std::atomic<std::uint64_t>& taken() noexcept {
    static std::atomic<std::uint64_t> bits{0};
    return bits;
  }
  static std::atomic<std::size_t>& overflow() noexcept {
    static std::atomic<std::size_t> n{0};
    return n;
  }
  std::size_t index_ = 0;
  bool owned_ = false;
};

inline std::size_t thread_slot() noexcept {
  thread_local const ThreadSlot slot;
  return slot.index();
}

}  // namespace macula::core::detail
