// Time source for the TTL-bearing core containers.
//
// Containers take the clock as a template parameter so that tests can drive expiry
// deterministically (ManualClock) while production uses std::chrono::steady_clock.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace macula::core {

/// Nanoseconds on `Clock`'s time line; 0 is reserved for "never expires".
template <class Clock>
inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

/// Deadline `ttl` from now, or 0 (never) for a non-positive ttl.
template <class Clock>
inline std::int64_t deadline_ns(std::chrono::nanoseconds ttl) noexcept {
  return ttl.count() > 0 ? now_ns<Clock>() + ttl.count() : 0;
}

/// A process-wide clock that only moves when a test advances it.
struct ManualClock {
  using duration = std::chrono::nanoseconds;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<ManualClock>;
  static constexpr bool is_steady = true;

  static time_point now() noexcept { return time_point(duration(ticks().load(std::memory_order_relaxed))); }
  static void advance(duration d) noexcept { ticks().fetch_add(d.count(), std::memory_order_relaxed); }
  static void reset() noexcept { ticks().store(1, std::memory_order_relaxed); }

 private:
  static std::atomic<rep>& ticks() noexcept {
    static std::atomic<rep> t{1};
    return t;
  }
};

}  // namespace macula::core
