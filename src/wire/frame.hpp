// Wire frames between nodes (docs/PROTOCOL.md documents every field).
//
// A frame is an 8-byte header — version (u8), type (u8), flags (u16), payload length (u32),
// all big-endian — followed by the payload. Frames are concatenated on a session stream and
// many are batched into one HTTP/3 DATA frame; they never span anything but byte boundaries.
// Everything here is a pure function of its input: no I/O, no allocation beyond the decoded
// values, every length checked against what is left and against the maximum frame size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <variant>
#include <vector>

#include "macula/message.hpp"
#include "macula/node_id.hpp"

namespace macula::wire {

inline constexpr std::uint8_t kVersion = 1;
inline constexpr std::size_t kHeaderSize = 8;
/// Default cap on a frame's payload; a receiver may configure up to kMaxFrameSizeLimit.
inline constexpr std::size_t kDefaultMaxFrameSize = 1 << 20;
inline constexpr std::size_t kMaxFrameSizeLimit = 16 << 20;
/// HELLO capability bits.
inline constexpr std::uint32_t kCapabilityPubSub = 1u << 0;
inline constexpr std::uint32_t kCapabilityRpc = 1u << 1;
inline constexpr std::uint32_t kCapabilityDht = 1u << 2;
/// The sender accepts no inbound links: the receiver is its gateway (relays for it).
inline constexpr std::uint32_t kCapabilityLeaf = 1u << 3;
/// Caps on list fields, so a small frame cannot declare a huge allocation.
inline constexpr std::size_t kMaxListItems = 4096;
/// QoS 1 credit: a publisher has at most this many messages, and this many payload bytes (one
/// message always fits), sent to one peer and not yet acknowledged. A receiver may hold those
/// unacknowledged while a subscription queue is full (the publisher is slowed meanwhile), so
/// it can bound what it holds per peer; holding twice the window marks a misbehaving peer.
inline constexpr std::size_t kQos1WindowMessages = 16384;
inline constexpr std::size_t kQos1WindowBytes = 8u << 20;

enum class FrameType : std::uint8_t {
  hello = 0x01,
  hello_ack = 0x02,
  goaway = 0x03,
  ping = 0x04,
  pong = 0x05,
  interest_add = 0x10,
  interest_remove = 0x11,
  publish = 0x12,
  publish_ack = 0x13,
  rpc_call = 0x20,
  rpc_reply = 0x21,
  provide_add = 0x22,
  provide_remove = 0x23,
  dht_find_node = 0x30,
  dht_find_value = 0x31,
  dht_store = 0x32,
  dht_nodes = 0x33,
  dht_values = 0x34,
  dht_store_ack = 0x35,
};

/// First frame on a session stream, from the dialing node.
struct Hello {
  NodeId node_id;                       ///< must equal the id proven by the TLS certificate
  std::string realm;                    ///< normalized realm name
  std::uint32_t capabilities = 0;       ///< kCapability* bits
  std::vector<std::uint8_t> realm_proof;  ///< HMAC-SHA256 proof of the realm secret, or empty
  std::vector<std::string> endpoints;   ///< "host:port" where this node accepts connections
};
struct HelloAck {
  NodeId node_id;
  std::vector<std::string> endpoints;
};
struct GoAway {
  std::uint32_t code = 0;
  std::string reason;
};
struct Ping {
  std::uint64_t nonce = 0;
};
struct Pong {
  std::uint64_t nonce = 0;
};
/// Patterns the sender has local interest in (aggregated: one entry per distinct pattern).
struct InterestAdd {
  std::vector<std::string> patterns;
};
struct InterestRemove {
  std::vector<std::string> patterns;
};
struct Publish {
  NodeId publisher;
  std::uint64_t message_id = 0;  ///< unique per publisher; QoS 1 de-duplication key
  std::uint64_t sequence = 0;    ///< per-publisher order
  std::uint8_t qos = 0;          ///< 0 or 1
  std::string topic;             ///< frames built to encode; empty in decoded ones (see body)
  std::vector<std::uint8_t> payload;
  /// Decoded frames: topic and payload already in the message body every local delivery will
  /// share (one allocation, with publisher, sequence and QoS stamped), so a received message is
  /// copied out of the stream once and allocated once.
  std::shared_ptr<detail::MessageBody> body{};

  std::string_view topic_view() const noexcept { return body ? body->topic : std::string_view(topic); }
  std::span<const std::uint8_t> payload_view() const noexcept {
    return body ? body->payload : std::span<const std::uint8_t>(payload);
  }
};
struct PublishAck {
  std::vector<std::uint64_t> message_ids;
};
struct RpcCall {
  std::uint64_t call_id = 0;
  std::uint32_t timeout_ms = 0;
  std::string procedure;
  std::vector<std::uint8_t> payload;
};
enum class RpcStatus : std::uint8_t {
  ok = 0,
  no_handler = 1,
  handler_error = 2,
  overloaded = 3,
  timeout = 4,
  result_too_large = 5,  ///< the handler's result is above kMaxPayloadBytes (the caller gets payload_too_large)
};
struct RpcReply {
  std::uint64_t call_id = 0;
  RpcStatus status = RpcStatus::ok;
  std::vector<std::uint8_t> payload;  ///< result bytes, or the error message for errors
};
/// Procedures the sender serves (until the DHT carries provider records, links announce them).
struct ProvideAdd {
  std::vector<std::string> procedures;
};
struct ProvideRemove {
  std::vector<std::string> procedures;
};
struct Contact {
  NodeId id;
  std::string endpoint;
};
struct Record {
  NodeId owner;
  std::uint32_t ttl_s = 0;
  std::vector<std::uint8_t> data;
};
struct DhtFindNode {
  std::uint64_t request_id = 0;
  NodeId target;
};
struct DhtFindValue {
  std::uint64_t request_id = 0;
  NodeId key;
};
struct DhtStore {
  std::uint64_t request_id = 0;
  NodeId key;
  Record record;
};
struct DhtNodes {
  std::uint64_t request_id = 0;
  std::vector<Contact> contacts;
};
struct DhtValues {
  std::uint64_t request_id = 0;
  std::vector<Record> records;
  std::vector<Contact> closer;  ///< contacts closer to the key, when the sender has no value
};
struct DhtStoreAck {
  std::uint64_t request_id = 0;
  std::uint32_t status = 0;  ///< 0 stored; otherwise a macula::errc value (e.g. registry_full)
};

using Frame = std::variant<Hello, HelloAck, GoAway, Ping, Pong, InterestAdd, InterestRemove, Publish, PublishAck,
                           RpcCall, RpcReply, ProvideAdd, ProvideRemove, DhtFindNode, DhtFindValue, DhtStore, DhtNodes, DhtValues, DhtStoreAck>;

FrameType frame_type(const Frame& frame) noexcept;

/// Appends the encoded frame to `out`. Errors: frame_too_large when the payload would exceed
/// `max_frame_size`, frame_malformed when a field breaks a rule the decoder enforces
/// (invalid topic, too many list items, qos > 1); `out` is unchanged on error.
std::error_code encode(const Frame& frame, std::vector<std::uint8_t>& out,
                       std::size_t max_frame_size = kDefaultMaxFrameSize);

/// Appends a PUBLISH frame built from views, without an intermediate Publish value (the hot
/// path: no copy of topic or payload besides the one into `out`). The caller has validated
/// `topic` and `qos`. Errors: frame_too_large (`out` unchanged).
std::error_code encode_publish(const NodeId& publisher, std::uint64_t message_id, std::uint64_t sequence,
                               std::uint8_t qos, std::string_view topic, std::span<const std::uint8_t> payload,
                               std::vector<std::uint8_t>& out, std::size_t max_frame_size = kDefaultMaxFrameSize);

struct DecodeResult {
  std::error_code error;     ///< empty on success
  std::size_t consumed = 0;  ///< bytes of the input this frame used (header + payload)
};

/// Decodes one frame from the front of `data`. When `data` holds less than a whole frame,
/// returns frame_truncated with consumed = 0 — a stream reader then waits for more bytes; any
/// other error is a protocol error and the stream must be closed.
DecodeResult decode(std::span<const std::uint8_t> data, Frame& out,
                    std::size_t max_frame_size = kDefaultMaxFrameSize);

}  // namespace macula::wire
