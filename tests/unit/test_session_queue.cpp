// Session::Impl's byte queue (src/transport/session.cpp), driven without a connection:
// chunks nghttp3 reads without copying, freed only once acknowledged, and the aggregates the
// endpoint's metrics read.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <numeric>
#include <vector>

#include "transport/endpoint_impl.hpp"

using macula::transport::Session;

namespace {

constexpr std::size_t kChunk = Session::Impl::kChunk;

std::vector<std::uint8_t> pattern(std::size_t n, std::uint8_t start = 0) {
  std::vector<std::uint8_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

struct Totals {
  std::atomic<std::size_t> buffered{0}, sessions{0};
  std::atomic<std::uint64_t> refused{0};
};

}  // namespace

TEST_CASE("session queue: bytes go into fixed chunks and are read once, in order", "[transport][session]") {
  Session::Impl s;
  const auto bytes = pattern(kChunk + 1000);
  s.queue(bytes);
  CHECK(s.buffered == bytes.size());
  CHECK(s.chunks.size() == 2);

  std::array<nghttp3_vec, 16> vec{};
  std::uint32_t flags = 0;
  REQUIRE(s.read(vec.data(), vec.size(), &flags) == 2);
  CHECK(vec[0].len == kChunk);
  CHECK(vec[1].len == 1000);
  CHECK(std::equal(vec[0].base, vec[0].base + vec[0].len, bytes.begin()));
  CHECK(std::equal(vec[1].base, vec[1].base + vec[1].len, bytes.begin() + kChunk));
  CHECK(flags == 0);
  // Everything has been handed over: nothing new until the next send.
  CHECK(s.read(vec.data(), vec.size(), &flags) == NGHTTP3_ERR_WOULDBLOCK);

  // More bytes fill the tail chunk first; only they are handed over.
  const auto more = pattern(10, 200);
  s.queue(more);
  CHECK(s.chunks.size() == 2);
  REQUIRE(s.read(vec.data(), vec.size(), &flags) == 1);
  CHECK(vec[0].len == 10);
  CHECK(vec[0].base[0] == 200);
}

TEST_CASE("session queue: read respects the vector count it is given", "[transport][session]") {
  Session::Impl s;
  s.queue(pattern(3 * kChunk));
  std::array<nghttp3_vec, 2> vec{};
  std::uint32_t flags = 0;
  CHECK(s.read(vec.data(), vec.size(), &flags) == 2);
  CHECK(s.read(vec.data(), vec.size(), &flags) == 1);
  CHECK(vec[0].len == kChunk);
}

TEST_CASE("session queue: a finished session reads as end of stream once drained", "[transport][session]") {
  Session::Impl s;
  s.queue(pattern(10));
  s.fin_requested = true;
  std::array<nghttp3_vec, 4> vec{};
  std::uint32_t flags = 0;
  CHECK(s.read(vec.data(), vec.size(), &flags) == 1);
  CHECK((flags & NGHTTP3_DATA_FLAG_EOF) == 0);  // the bytes first
  CHECK(s.read(vec.data(), vec.size(), &flags) == 0);
  CHECK((flags & NGHTTP3_DATA_FLAG_EOF) != 0);
}

TEST_CASE("session queue: acknowledged chunks are freed, the open tail is kept", "[transport][session]") {
  Session::Impl s;
  s.queue(pattern(kChunk + 100));
  std::array<nghttp3_vec, 4> vec{};
  std::uint32_t flags = 0;
  REQUIRE(s.read(vec.data(), vec.size(), &flags) == 2);
  s.on_acked(kChunk - 1);
  CHECK(s.chunks.size() == 2);  // one byte of the first chunk is still unacknowledged
  s.on_acked(1);
  CHECK(s.chunks.size() == 1);
  CHECK(s.buffered == 100);
  s.on_acked(100);
  // Fully acknowledged but not full: it stays, as the next send appends to it.
  CHECK(s.chunks.size() == 1);
  CHECK(s.buffered == 0);
  s.queue(pattern(5));
  CHECK(s.chunks.size() == 1);
  CHECK(s.read(vec.data(), vec.size(), &flags) == 1);
  CHECK(vec[0].len == 5);
}

TEST_CASE("session queue: the writable callback runs once, when drained to its level", "[transport][session]") {
  Session::Impl s;
  s.queue(pattern(1000));
  std::array<nghttp3_vec, 4> vec{};
  std::uint32_t flags = 0;
  REQUIRE(s.read(vec.data(), vec.size(), &flags) == 1);
  int calls = 0;
  s.writable = [&] { ++calls; };
  s.writable_below = 400;
  s.on_acked(500);
  CHECK(calls == 0);  // 500 left, above 400
  s.on_acked(100);
  CHECK(calls == 1);  // 400 left
  s.on_acked(100);
  CHECK(calls == 1);  // once
  CHECK_FALSE(s.writable);
}

TEST_CASE("session queue: endpoint totals follow attach, acks and detach", "[transport][session]") {
  Totals t;
  auto s = std::make_unique<Session::Impl>();
  s->queue(pattern(300));  // queued before the session is attached (an acceptor's first bytes)
  s->attach(t.buffered, t.sessions, t.refused);
  CHECK(t.sessions.load() == 1);
  CHECK(t.buffered.load() == 300);
  s->queue(pattern(200));
  CHECK(t.buffered.load() == 500);
  std::array<nghttp3_vec, 4> vec{};
  std::uint32_t flags = 0;
  REQUIRE(s->read(vec.data(), vec.size(), &flags) == 1);
  s->on_acked(150);
  CHECK(t.buffered.load() == 350);
  s->finish({});
  CHECK(t.sessions.load() == 0);
  CHECK(t.buffered.load() == 0);  // what was still queued leaves the total with the session
  s->on_acked(350);                // late acks after the end do not take the total below zero
  CHECK(t.buffered.load() == 0);
  s.reset();
  CHECK(t.sessions.load() == 0);
}
