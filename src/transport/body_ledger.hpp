// BodyLedger: bytes of request bodies held in memory, against a bound. The endpoint keeps one
// per connection and two endpoint-wide (clients', nodes'); each request stream holds its
// connection's and one endpoint-wide ledger and gives its bytes back when it goes, whoever
// destroys it last (shared ownership: a connection's streams may outlive the endpoint's
// strand), so the count is atomic although charges happen on the strand.
#pragma once

#include <atomic>
#include <cstddef>

namespace macula::transport {

struct BodyLedger {
  explicit BodyLedger(std::size_t c) : cap(c) {}
  const std::size_t cap;
  std::atomic<std::size_t> bytes{0};
  /// Takes `n` bytes if that keeps the total at or below `cap`; false (nothing taken) if not.
  bool charge(std::size_t n) {
    std::size_t cur = bytes.load(std::memory_order_relaxed);
    do {
      if (cur + n > cap) return false;
    } while (!bytes.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed));
    return true;
  }
  void refund(std::size_t n) { bytes.fetch_sub(n, std::memory_order_relaxed); }
};

}  // namespace macula::transport
