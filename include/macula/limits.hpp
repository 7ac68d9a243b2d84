// Limits every node enforces alike, whatever its options: they are part of the wire protocol
// (docs/PROTOCOL.md), so two nodes always agree on them.
#pragma once

#include <cstddef>

namespace macula {

/// The largest message payload, RPC argument or RPC result, in bytes. Anything larger is
/// refused where it enters with errc::payload_too_large (HTTP/3 API: 413), never truncated or
/// silently lost. It leaves room for the frame's header, topic or procedure name (at most
/// kMaxNameLength bytes) and ids inside the protocol's 1 MiB maximum frame.
inline constexpr std::size_t kMaxPayloadBytes = (std::size_t{1} << 20) - 1024;

}  // namespace macula
