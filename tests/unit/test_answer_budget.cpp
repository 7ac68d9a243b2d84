// AnswerBudget (src/transport/answer_budget.hpp): stateless resets and Version Negotiation
// packets go to unverified addresses, so they are rate-limited: a burst of 100, then 100/s.
#include <catch2/catch.hpp>

#include <chrono>

#include "transport/answer_budget.hpp"

using macula::transport::AnswerBudget;
using namespace std::chrono_literals;

TEST_CASE("answer budget: a burst of 100, then nothing until time passes", "[transport][budget]") {
  AnswerBudget b;
  const auto t0 = b.refill;
  for (int i = 0; i < 100; ++i) REQUIRE(b.take(t0));
  CHECK_FALSE(b.take(t0));
  CHECK_FALSE(b.take(t0 + 5ms));  // half a token
}

TEST_CASE("answer budget: refills at 100 per second", "[transport][budget]") {
  AnswerBudget b;
  auto t = b.refill;
  for (int i = 0; i < 100; ++i) REQUIRE(b.take(t));
  t += 100ms;  // 10 answers' worth
  int granted = 0;
  while (b.take(t)) ++granted;
  CHECK(granted == 10);
}

TEST_CASE("answer budget: idle time never buys more than the burst", "[transport][budget]") {
  AnswerBudget b;
  const auto t = b.refill + 1h;
  int granted = 0;
  while (b.take(t)) ++granted;
  CHECK(granted == 100);
}
