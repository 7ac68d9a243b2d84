#include <catch2/catch.hpp>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "macula/core/bounded_queue.hpp"
#include "macula/core/bounded_queue_asio.hpp"

#include <boost/asio/io_context.hpp>

using macula::errc;
using macula::core::BoundedQueue;
using macula::core::OverflowPolicy;

TEST_CASE("queue: reject policy refuses when full and counts rejections", "[queue]") {
  BoundedQueue<std::string> q(2, OverflowPolicy::reject);
  CHECK_FALSE(q.try_push("a"));
  CHECK_FALSE(q.try_push("b"));
  std::string c = "c";
  CHECK(q.try_push(c) == errc::queue_full);
  CHECK(c == "c");  // the caller still owns the rejected item
  CHECK(q.rejected() == 1);
  CHECK(q.dropped() == 0);
  CHECK(q.try_pop() == "a");
  CHECK(q.try_pop() == "b");
  CHECK_FALSE(q.try_pop());
  CHECK(q.high_water() == 2);
}

TEST_CASE("queue: drop_oldest keeps the newest and counts drops", "[queue]") {
  BoundedQueue<int> q(3, OverflowPolicy::drop_oldest);
  for (int i = 0; i < 10; ++i) CHECK_FALSE(q.try_push(i));
  CHECK(q.dropped() == 7);
  CHECK(q.size() == 3);
  std::vector<int> out;
  CHECK(q.pop_batch(out, 10) == 3);
  CHECK(out == std::vector<int>{7, 8, 9});
  CHECK(q.size() == 0);
  CHECK(q.high_water() == 3);
}

TEST_CASE("queue: wait policy wakes a waiting producer when space frees", "[queue]") {
  BoundedQueue<int> q(1, OverflowPolicy::wait, 2);
  CHECK_FALSE(q.try_push(1));
  CHECK(q.try_push(2) == errc::queue_full);
  int woken = 0;
  CHECK_FALSE(q.wait_for_space([&](std::error_code ec) { CHECK_FALSE(ec); ++woken; }));
  CHECK_FALSE(q.wait_for_space([&](std::error_code ec) { CHECK(ec == errc::queue_closed); ++woken; }));
  CHECK(q.wait_for_space([](std::error_code) { FAIL("must not run"); }) == errc::too_many_waiters);
  CHECK(q.waiters() == 2);
  CHECK(q.try_pop() == 1);
  CHECK(woken == 1);
  q.close();
  CHECK(woken == 2);
  CHECK(q.try_push(5) == errc::queue_closed);
  CHECK(q.wait_for_item([](std::error_code) {}) == errc::queue_closed);
}

TEST_CASE("queue: MPMC with many threads loses and duplicates nothing", "[queue][concurrency]") {
  BoundedQueue<int> q(64, OverflowPolicy::reject);
  constexpr int kPerProducer = 50'000;
  std::atomic<long long> sum{0};
  std::atomic<int> popped{0};
  std::vector<std::thread> ts;
  for (int p = 0; p < 2; ++p)
    ts.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        int v = p * kPerProducer + i;
        while (q.try_push(v)) std::this_thread::yield();
      }
    });
  for (int c = 0; c < 2; ++c)
    ts.emplace_back([&] {
      std::vector<int> batch;
      while (popped.load() < 2 * kPerProducer) {
        batch.clear();
        if (q.pop_batch(batch, 16) == 0) std::this_thread::yield();
        for (int v : batch) sum += v;
        popped += static_cast<int>(batch.size());
      }
    });
  for (auto& t : ts) t.join();
  const long long n = 2LL * kPerProducer;
  CHECK(popped.load() == n);
  CHECK(sum.load() == n * (n - 1) / 2);
  CHECK(q.high_water() <= 64);
}

TEST_CASE("queue: Asio async_push waits for space, async_pop waits for items", "[queue][asio]") {
  boost::asio::io_context io;
  BoundedQueue<int> q(2, OverflowPolicy::wait);
  std::vector<std::string> log;
  for (int i = 0; i < 4; ++i)
    macula::core::async_push(q, io.get_executor(), i, [&, i](std::error_code ec) {
      CHECK_FALSE(ec);
      log.push_back("pushed " + std::to_string(i));
    });
  io.poll();
  CHECK(log == std::vector<std::string>{"pushed 0", "pushed 1"});  // 2 and 3 wait for space
  CHECK(q.waiters() == 2);
  for (int i = 0; i < 5; ++i)
    macula::core::async_pop(q, io.get_executor(), [&](std::error_code ec, int v) {
      log.push_back(ec ? "pop error" : "popped " + std::to_string(v));
    });
  io.restart();  // the first poll ran out of work, which stops the io_context
  io.poll();
  CHECK(log.size() == 8);  // four pushes and four pops; the fifth pop waits
  CHECK(std::count(log.begin(), log.end(), "popped 3") == 1);
  q.close();
  io.restart();
  io.poll();
  CHECK(log.back() == "pop error");
}
