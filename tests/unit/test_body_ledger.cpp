// BodyLedger (src/transport/body_ledger.hpp): the bound on request-body bytes held, shared by
// a connection's streams and charged from more than one thread's destructors.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "transport/body_ledger.hpp"

using macula::transport::BodyLedger;

TEST_CASE("body ledger: charges up to the cap, not past it", "[transport][ledger]") {
  BodyLedger l(1000);
  CHECK(l.charge(600));
  CHECK(l.charge(400));  // exactly at the cap
  CHECK(l.bytes.load() == 1000);
  CHECK_FALSE(l.charge(1));
  CHECK(l.bytes.load() == 1000);  // a refused charge takes nothing
}

TEST_CASE("body ledger: a refused charge leaves room for a smaller one", "[transport][ledger]") {
  BodyLedger l(1000);
  REQUIRE(l.charge(900));
  CHECK_FALSE(l.charge(200));
  CHECK(l.charge(100));
  CHECK(l.bytes.load() == 1000);
}

TEST_CASE("body ledger: refunds make room again", "[transport][ledger]") {
  BodyLedger l(100);
  REQUIRE(l.charge(100));
  REQUIRE_FALSE(l.charge(50));
  l.refund(60);
  CHECK(l.bytes.load() == 40);
  CHECK(l.charge(50));
  CHECK_FALSE(l.charge(11));
  CHECK(l.charge(10));
}

TEST_CASE("body ledger: concurrent charges never pass the cap together", "[transport][ledger]") {
  constexpr std::size_t kCap = 100'000;
  BodyLedger l(kCap);
  std::atomic<std::size_t> granted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      while (l.charge(7)) granted.fetch_add(7);
      for (int i = 0; i < 1000; ++i)
        if (l.charge(1)) granted.fetch_add(1);
    });
  for (auto& t : threads) t.join();
  CHECK(l.bytes.load() == granted.load());
  // The last thread out of its 7-byte loop saw less than 7 bytes of room; its single bytes
  // then fill the rest, so the ledger ends exactly full, never over.
  CHECK(granted.load() == kCap);
}
