// H3FrameGuard (src/transport/h3_frame_guard.hpp): which bytes of an HTTP/3 request stream
// may reach nghttp3, whatever the chunking, and QUIC varints (RFC 9000 A.1's examples).
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "transport/h3_frame_guard.hpp"

using macula::transport::H3FrameGuard;
using macula::transport::h3_guard_scan;
using macula::transport::quic_varint;

namespace {

constexpr std::uint64_t kLimit = 100;

// A frame: type and length as varints (the shortest encoding unless `len_bytes` says), then
// `payload_len` bytes of `fill`.
std::vector<std::uint8_t> frame(std::uint64_t type, std::uint64_t payload_len, std::uint8_t fill = 0xaa,
                                int len_bytes = 0) {
  auto varint = [](std::vector<std::uint8_t>& out, std::uint64_t v, int bytes) {
    if (bytes == 0) bytes = v < 64 ? 1 : v < 16384 ? 2 : v < (1u << 30) ? 4 : 8;
    const std::uint8_t prefix = bytes == 1 ? 0x00 : bytes == 2 ? 0x40 : bytes == 4 ? 0x80 : 0xc0;
    for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    out[out.size() - static_cast<std::size_t>(bytes)] |= prefix;
  };
  std::vector<std::uint8_t> out;
  varint(out, type, 0);
  varint(out, payload_len, len_bytes);
  out.insert(out.end(), payload_len, fill);
  return out;
}

std::vector<std::uint8_t> concat(std::initializer_list<std::vector<std::uint8_t>> parts) {
  std::vector<std::uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Feeds `bytes` in chunks of `step`; the offset of the first byte held back, or the size.
std::size_t scan_chunked(const std::vector<std::uint8_t>& bytes, std::size_t step) {
  H3FrameGuard g;
  std::size_t off = 0;
  while (off < bytes.size()) {
    const std::size_t n = std::min(step, bytes.size() - off);
    const std::size_t pass = h3_guard_scan(g, bytes.data() + off, n, kLimit);
    if (g.rejected) return off + pass;
    REQUIRE(pass == n);
    off += n;
  }
  return off;
}

}  // namespace

TEST_CASE("quic varint: RFC 9000 A.1 examples", "[transport][h3guard]") {
  const std::uint8_t one[] = {0x25};
  const std::uint8_t two[] = {0x7b, 0xbd};
  const std::uint8_t four[] = {0x9d, 0x7f, 0x3e, 0x7d};
  const std::uint8_t eight[] = {0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c};
  CHECK(quic_varint(one, 1) == 37);
  CHECK(quic_varint(two, 2) == 15293);
  CHECK(quic_varint(four, 4) == 494878333);
  CHECK(quic_varint(eight, 8) == 151288809941952652ull);
}

TEST_CASE("h3 guard: frames within the limit pass whole", "[transport][h3guard]") {
  const auto bytes = concat({frame(0x01, kLimit), frame(0x00, 5000), frame(0x01, 3)});
  H3FrameGuard g;
  CHECK(h3_guard_scan(g, bytes.data(), bytes.size(), kLimit) == bytes.size());
  CHECK(g.left == 0);
  CHECK(g.hdr_len == 0);
}

TEST_CASE("h3 guard: an over-long HEADERS frame stops at its first payload byte", "[transport][h3guard]") {
  const auto data = frame(0x00, 10);
  const auto big = frame(0x01, kLimit + 1);  // type (1 byte) + length (2 bytes)
  const auto bytes = concat({data, big});
  H3FrameGuard g;
  CHECK(h3_guard_scan(g, bytes.data(), bytes.size(), kLimit) == data.size() + 3);
  CHECK(g.rejected);
}

TEST_CASE("h3 guard: DATA frames are not bounded, and their payload is never parsed", "[transport][h3guard]") {
  // The payload is full of bytes that would read as an over-long HEADERS frame header.
  std::vector<std::uint8_t> data = frame(0x00, 64);  // type (1 byte), length (2 bytes), payload
  for (std::size_t i = 3; i + 2 < data.size(); i += 3) {
    data[i] = 0x01;
    data[i + 1] = 0x7f;
    data[i + 2] = 0xff;
  }
  const auto bytes = concat({frame(0x00, 1'000'000, 0x01), data, frame(0x01, 10)});
  H3FrameGuard g;
  CHECK(h3_guard_scan(g, bytes.data(), bytes.size(), kLimit) == bytes.size());
  CHECK_FALSE(g.rejected);
  CHECK(g.left == 0);  // the last frame ended where the bytes end: every frame was framed right
  CHECK(g.hdr_len == 0);
}

TEST_CASE("h3 guard: the answer does not depend on how the stream is chunked", "[transport][h3guard]") {
  // A long length encoding (8 bytes for a small value) and a 2-byte frame type (a reserved
  // type, 0x21 + 0x1f * 3) make frame headers that straddle chunk boundaries.
  const auto ok = concat({frame(0x00, 7, 0x01, 8), frame(0x21 + 0x1f * 3, 70), frame(0x01, 50, 0x01, 4)});
  const auto bad = concat({ok, frame(0x01, 5000, 0x01, 8)});
  const std::size_t reject_at = ok.size() + 1 + 8;
  for (std::size_t step : {1u, 2u, 3u, 7u, 64u, 100000u}) {
    INFO("chunk size " << step);
    CHECK(scan_chunked(ok, step) == ok.size());
    CHECK(scan_chunked(bad, step) == reject_at);
  }
}

TEST_CASE("h3 guard: a refusal is seen when the chunk ends right after the frame header", "[transport][h3guard]") {
  // The length varint's last byte is the chunk's last byte: every byte may pass (nghttp3
  // sees a frame header and nothing of the payload), and the refusal is in the guard.
  const auto big = frame(0x01, 5000);
  H3FrameGuard g;
  CHECK(h3_guard_scan(g, big.data(), 3, kLimit) == 3);
  CHECK(g.rejected);
}

TEST_CASE("h3 guard: the limit is inclusive", "[transport][h3guard]") {
  for (std::uint64_t limit : {0ull, 1ull, 16384ull}) {
    INFO("limit " << limit);
    const auto at = frame(0x01, limit);
    const auto over = frame(0x01, limit + 1);
    H3FrameGuard g1, g2;
    CHECK(h3_guard_scan(g1, at.data(), at.size(), limit) == at.size());
    CHECK_FALSE(g1.rejected);
    CHECK(h3_guard_scan(g2, over.data(), over.size(), limit) < over.size());
    CHECK(g2.rejected);
  }
}
