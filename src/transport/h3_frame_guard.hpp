// H3FrameGuard: looks at the frame headers of an HTTP/3 request stream before nghttp3 does.
//
// nghttp3 0.8 gives up on the whole connection's QPACK decoder (decoder->ctx.bad, every
// later header block fails with NGHTTP3_ERR_QPACK_FATAL) when one field value is longer than
// 65536 encoded bytes (NGHTTP3_ERR_QPACK_HEADER_TOO_LARGE, lib/nghttp3_qpack.c). So a HEADERS
// frame longer than we accept must never reach nghttp3: only the frame headers of a request
// stream are looked at here, payloads pass through untouched. Pure (no I/O, no nghttp3), so
// it is tested on its own bytes.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

namespace macula::transport {

struct H3FrameGuard {
  std::array<std::uint8_t, 16> hdr{};  // type and length varints of the next frame, partial
  std::size_t hdr_len = 0;
  std::uint64_t left = 0;  // payload bytes of the current frame still to pass
  bool rejected = false;
};

/// A QUIC variable-length integer (RFC 9000 16) of `n` bytes, the length its first byte says.
inline std::uint64_t quic_varint(const std::uint8_t* p, std::size_t n) {
  std::uint64_t v = p[0] & 0x3f;
  for (std::size_t k = 1; k < n; ++k) v = (v << 8) | p[k];
  return v;
}

/// How many of `len` bytes may go to nghttp3: all of them, or up to the first byte of a
/// HEADERS frame payload longer than `limit`, in which case `g.rejected` is set. Frame headers
/// split across calls are carried in `g`, so the stream may arrive in any chunking; a chunk
/// may end right after the refused frame's header, so only `g.rejected` tells a refusal from
/// a chunk that passes whole.
inline std::size_t h3_guard_scan(H3FrameGuard& g, const std::uint8_t* data, std::size_t len, std::uint64_t limit) {
  if (g.rejected) return 0;  // nothing more of a refused stream goes to nghttp3
  std::size_t i = 0;
  while (i < len) {
    if (g.left > 0) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(g.left, len - i));
      g.left -= n;
      i += n;
      continue;
    }
    g.hdr[g.hdr_len++] = data[i++];
    const std::size_t tlen = std::size_t{1} << (g.hdr[0] >> 6);
    if (g.hdr_len <= tlen) continue;
    const std::size_t llen = std::size_t{1} << (g.hdr[tlen] >> 6);
    if (g.hdr_len < tlen + llen) continue;
    const std::uint64_t type = quic_varint(g.hdr.data(), tlen);
    const std::uint64_t length = quic_varint(g.hdr.data() + tlen, llen);
    g.hdr_len = 0;
    if (type == 0x01 /* HEADERS */ && length > limit) {
      g.rejected = true;
      return i;
    }
    g.left = length;
  }
  return len;
}

}  // namespace macula::transport
