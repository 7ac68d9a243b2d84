#include <catch2/catch.hpp>

#include <chrono>
#include <random>

#include "macula/error.hpp"
#include "wire/frame.hpp"

using namespace macula;
using namespace macula::wire;

namespace {

NodeId id_of(std::uint8_t b) {
  NodeId::Bytes x{};
  x.fill(b);
  return NodeId(x);
}

std::vector<Frame> samples() {
  return {
      Hello{id_of(1), "macula.default", 7, std::vector<std::uint8_t>(32, 9), {"127.0.0.1:9443", "[::1]:9443"}},
      HelloAck{id_of(2), {"127.0.0.1:9444"}},
      GoAway{0x101, "shutting down"},
      Ping{42},
      Pong{42},
      InterestAdd{{"sensors.#", "a.*.c", "x"}},
      InterestRemove{{"sensors.#"}},
      Publish{id_of(3), 77, 5, 1, "sensors.temp", {1, 2, 3}},
      Publish{id_of(3), 78, 6, 0, "t", {}},
      PublishAck{{1, 2, 3, 0xFFFFFFFFFFFFFFFFULL}},
      RpcCall{9, 5000, "math.add", {4, 5}},
      RpcReply{9, RpcStatus::handler_error, {'b', 'a', 'd'}},
      ProvideAdd{{"math.add", "math.mul"}},
      ProvideRemove{{"math.add"}},
      DhtFindNode{1, id_of(4)},
      DhtFindValue{2, id_of(5)},
      DhtStore{3, id_of(6), Record{id_of(7), 300, {1}}},
      DhtNodes{4, {{id_of(8), "127.0.0.1:1"}, {id_of(9), "[::1]:2"}}},
      DhtValues{5, {Record{id_of(7), 300, {1, 2}}}, {{id_of(8), "h:1"}}},
      DhtStoreAck{6, 0},
  };
}

std::vector<std::uint8_t> enc(const Frame& f) {
  std::vector<std::uint8_t> out;
  REQUIRE_FALSE(encode(f, out));
  return out;
}

}  // namespace

TEST_CASE("wire: every frame type round-trips, back to back in one buffer", "[wire]") {
  std::vector<std::uint8_t> stream;
  const auto frames = samples();
  for (const auto& f : frames) REQUIRE_FALSE(encode(f, stream));
  std::span<const std::uint8_t> in(stream);
  for (const auto& expected : frames) {
    Frame got;
    const auto r = decode(in, got);
    REQUIRE_FALSE(r.error);
    CHECK(frame_type(got) == frame_type(expected));
    CHECK(enc(got) == enc(expected));  // same bytes: every field survived
    in = in.subspan(r.consumed);
  }
  CHECK(in.empty());
  const auto p = std::get<Publish>([&] { Frame f; decode(enc(frames[7]), f); return f; }());
  CHECK(p.topic_view() == "sensors.temp");
  CHECK(std::vector<std::uint8_t>(p.payload_view().begin(), p.payload_view().end()) == std::vector<std::uint8_t>{1, 2, 3});
  REQUIRE(p.body);  // decoded straight into a shareable message body
  CHECK(p.body->publisher == id_of(3));
  CHECK(p.body->sequence == 5);
  CHECK(p.body->qos == Qos::at_least_once);
  CHECK(p.message_id == 77);
  CHECK(p.publisher == id_of(3));
}

TEST_CASE("wire: every proper prefix is 'truncated', never an error or a frame", "[wire]") {
  for (const auto& f : samples()) {
    const auto bytes = enc(f);
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      Frame got;
      const auto r = decode(std::span<const std::uint8_t>(bytes.data(), n), got);
      REQUIRE(r.error == errc::frame_truncated);
      REQUIRE(r.consumed == 0);
    }
  }
}

TEST_CASE("wire: protocol errors", "[wire]") {
  auto bytes = enc(Ping{1});
  Frame got;
  auto bad = bytes;
  bad[0] = 2;
  CHECK(decode(bad, got).error == errc::frame_unknown_version);
  bad = bytes;
  bad[1] = 0x7F;
  CHECK(decode(bad, got).error == errc::frame_unknown_type);
  bad = bytes;
  bad[3] = 1;  // flags
  CHECK(decode(bad, got).error == errc::frame_malformed);
  bad = bytes;
  bad[7] += 1;  // declares one more byte than the ping has: trailing byte inside payload
  bad.push_back(0);
  CHECK(decode(bad, got).error == errc::frame_malformed);
  // A header that declares 1 GiB is refused at once, without waiting for the bytes.
  std::vector<std::uint8_t> huge = {kVersion, 0x12, 0, 0, 0x40, 0, 0, 0};
  CHECK(decode(huge, got).error == errc::frame_too_large);
  // The receiver's limit applies.
  const auto big = enc(Publish{id_of(1), 1, 1, 0, "t", std::vector<std::uint8_t>(5000)});
  CHECK(decode(big, got, 4096).error == errc::frame_too_large);
  CHECK_FALSE(decode(big, got, 8192).error);
  std::vector<std::uint8_t> out;
  CHECK(encode(Publish{id_of(1), 1, 1, 0, "t", std::vector<std::uint8_t>(5000)}, out, 4096) == errc::frame_too_large);
  CHECK(out.empty());
}

TEST_CASE("wire: invalid field values are refused both ways", "[wire]") {
  std::vector<std::uint8_t> out;
  CHECK(encode(Publish{id_of(1), 1, 1, 2, "t", {}}, out) == errc::frame_malformed);          // qos 2
  CHECK(encode(Publish{id_of(1), 1, 1, 0, "a..b", {}}, out) == errc::frame_malformed);       // topic
  CHECK(encode(Publish{id_of(1), 1, 1, 0, "a.*", {}}, out) == errc::frame_malformed);        // wildcard topic
  CHECK(encode(InterestAdd{{"ok.#", "bad..p"}}, out) == errc::frame_malformed);
  CHECK(encode(RpcCall{1, 1, "", {}}, out) == errc::frame_malformed);
  CHECK(encode(ProvideAdd{{"math.*"}}, out) == errc::frame_malformed);
  CHECK(encode(Hello{id_of(1), "Macula.Default", 0, {}, {}}, out) == errc::frame_malformed);  // not normalized
  CHECK(encode(Hello{id_of(1), "r", 0, {1, 2}, {}}, out) == errc::frame_malformed);           // proof length
  CHECK(encode(RpcReply{1, static_cast<RpcStatus>(9), {}}, out) == errc::frame_malformed);
  CHECK(out.empty());

  // Same rules on decode: patch qos in an encoded publish to 2.
  auto bytes = enc(Publish{id_of(1), 1, 1, 1, "t", {}});
  bytes[kHeaderSize + 32 + 16] = 2;
  Frame got;
  CHECK(decode(bytes, got).error == errc::frame_malformed);
  // A list count larger than the bytes could hold is refused before allocating.
  std::vector<std::uint8_t> lie = {kVersion, 0x13, 0, 0, 0, 0, 0, 2, 0x0F, 0xFF};
  CHECK(decode(lie, got).error == errc::frame_malformed);
}

TEST_CASE("wire: bounded random and mutated input never crashes", "[wire][random]") {
  std::mt19937_64 rng(12345);
  const auto frames = samples();
  std::size_t decoded = 0, errors = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (int i = 0; i < 300'000 && std::chrono::steady_clock::now() < deadline; ++i) {
    std::vector<std::uint8_t> buf;
    if (i % 2 == 0) {
      buf.resize(rng() % 96);
      for (auto& b : buf) b = static_cast<std::uint8_t>(rng());
      if (!buf.empty() && (rng() & 1)) buf[0] = kVersion;  // get past the version check often
    } else {
      buf = enc(frames[rng() % frames.size()]);
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < flips; ++k) buf[rng() % buf.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
      if (rng() % 4 == 0) buf.resize(rng() % (buf.size() + 1));
    }
    Frame got;
    const auto r = decode(buf, got);
    if (r.error) {
      ++errors;
      REQUIRE(r.consumed == 0);
      REQUIRE(r.error.category() == macula::error_category());
    } else {
      ++decoded;
      REQUIRE(r.consumed <= buf.size());
      std::vector<std::uint8_t> again;
      REQUIRE_FALSE(encode(got, again));  // whatever decodes is valid and re-encodes
      REQUIRE(std::equal(again.begin(), again.end(), buf.begin()));
    }
  }
  CHECK(errors > 0);
  CHECK(decoded > 0);  // mutations of the payload bytes often still decode
}

TEST_CASE("wire: encode_publish writes exactly what encode(Publish) writes", "[wire]") {
  const std::vector<std::uint8_t> payload = {9, 8, 7, 6};
  std::vector<std::uint8_t> a, b = {0xAA};  // appends after existing bytes
  REQUIRE_FALSE(encode(Publish{id_of(5), 41, 42, 1, "sensors.kitchen.temp", payload}, a));
  REQUIRE_FALSE(encode_publish(id_of(5), 41, 42, 1, "sensors.kitchen.temp", payload, b));
  CHECK(std::vector<std::uint8_t>(b.begin() + 1, b.end()) == a);
  std::vector<std::uint8_t> out;
  CHECK(encode_publish(id_of(1), 1, 1, 0, "t", std::vector<std::uint8_t>(5000), out, 4096) == errc::frame_too_large);
  CHECK(out.empty());
}
