// AnswerBudget: a token bucket for answers to packets that belong to no connection
// (stateless resets, Version Negotiation). Those go to whatever source address the packet
// claims, so without a bound a spoofed flood would turn the endpoint into a reflector.
#pragma once

#include <algorithm>
#include <chrono>

namespace macula::transport {

struct AnswerBudget {
  static constexpr double kBurst = 100;      // answers at once
  static constexpr double kPerSecond = 100;  // refill rate
  double tokens = kBurst;
  std::chrono::steady_clock::time_point refill = std::chrono::steady_clock::now();
  bool take() { return take(std::chrono::steady_clock::now()); }
  /// The clock is a parameter so that the refill can be tested without sleeping.
  bool take(std::chrono::steady_clock::time_point now) {
    tokens = std::min(kBurst, tokens + kPerSecond * std::chrono::duration<double>(now - refill).count());
    refill = now;
    if (tokens < 1.0) return false;
    tokens -= 1.0;
    return true;
  }
};

}  // namespace macula::transport
