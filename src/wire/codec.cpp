#include <cstring>
#include <type_traits>

#include "macula/error.hpp"
#include "macula/names.hpp"
#include "wire/frame.hpp"

namespace macula::wire {
namespace {

constexpr std::size_t kMaxEndpointLength = 255;

// ---- encoding -------------------------------------------------------------------------

class Writer {
 public:
  explicit Writer(std::vector<std::uint8_t>& out) : out_(out) {}
  void u8(std::uint8_t v) { out_.push_back(v); }
  void u16(std::uint16_t v) { put(v, 2); }
  void u32(std::uint32_t v) { put(v, 4); }
  void u64(std::uint64_t v) { put(v, 8); }
  void id(const NodeId& v) { out_.insert(out_.end(), v.bytes().begin(), v.bytes().end()); }
  void str(std::string_view s) {
    u16(static_cast<std::uint16_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void bytes(std::span<const std::uint8_t> b) {
    u32(static_cast<std::uint32_t>(b.size()));
    out_.insert(out_.end(), b.begin(), b.end());
  }

 private:
  void put(std::uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  std::vector<std::uint8_t>& out_;
};

// Field rules shared by encoder (refuse to send) and decoder (refuse to accept).
bool endpoint_ok(const std::string& e) { return !e.empty() && e.size() <= kMaxEndpointLength; }
template <class T>
bool list_ok(const std::vector<T>& v) { return v.size() <= kMaxListItems; }

bool valid(const Hello& f) {
  std::error_code ec;
  const std::string realm = normalize_realm(f.realm, ec);
  if (ec || realm != f.realm) return false;
  if (!f.realm_proof.empty() && f.realm_proof.size() != 32) return false;
  if (!list_ok(f.endpoints)) return false;
  for (const auto& e : f.endpoints)
    if (!endpoint_ok(e)) return false;
  return true;
}
bool valid(const HelloAck& f) {
  if (!list_ok(f.endpoints)) return false;
  for (const auto& e : f.endpoints)
    if (!endpoint_ok(e)) return false;
  return true;
}
bool valid(const GoAway& f) { return f.reason.size() <= 1024; }
bool valid(const Ping&) { return true; }
bool valid(const Pong&) { return true; }
bool valid_patterns(const std::vector<std::string>& patterns) {
  if (!list_ok(patterns)) return false;
  for (const auto& p : patterns)
    if (validate_pattern(p)) return false;
  return true;
}
bool valid(const InterestAdd& f) { return valid_patterns(f.patterns); }
bool valid(const InterestRemove& f) { return valid_patterns(f.patterns); }
bool valid(const Publish& f) { return f.qos <= 1 && !validate_topic(f.topic_view()); }
bool valid(const PublishAck& f) { return list_ok(f.message_ids); }
bool valid(const RpcCall& f) { return !validate_procedure(f.procedure); }
bool valid(const RpcReply& f) { return static_cast<std::uint8_t>(f.status) <= static_cast<std::uint8_t>(RpcStatus::result_too_large); }
bool valid_contacts(const std::vector<Contact>& c) {
  if (!list_ok(c)) return false;
  for (const auto& x : c)
    if (!endpoint_ok(x.endpoint)) return false;
  return true;
}
bool valid_procedures(const std::vector<std::string>& v) {
  if (!list_ok(v)) return false;
  for (const auto& p : v)
    if (validate_procedure(p)) return false;
  return true;
}
bool valid(const ProvideAdd& f) { return valid_procedures(f.procedures); }
bool valid(const ProvideRemove& f) { return valid_procedures(f.procedures); }
bool valid(const DhtFindNode&) { return true; }
bool valid(const DhtFindValue&) { return true; }
bool valid(const DhtStore&) { return true; }
bool valid(const DhtNodes& f) { return valid_contacts(f.contacts); }
bool valid(const DhtValues& f) { return list_ok(f.records) && valid_contacts(f.closer); }
bool valid(const DhtStoreAck&) { return true; }

void put_record(Writer& w, const Record& r) {
  w.id(r.owner);
  w.u32(r.ttl_s);
  w.bytes(r.data);
}
void put_contacts(Writer& w, const std::vector<Contact>& cs) {
  w.u16(static_cast<std::uint16_t>(cs.size()));
  for (const auto& c : cs) {
    w.id(c.id);
    w.str(c.endpoint);
  }
}
void put_strings(Writer& w, const std::vector<std::string>& v) {
  w.u16(static_cast<std::uint16_t>(v.size()));
  for (const auto& s : v) w.str(s);
}

void put(Writer& w, const Hello& f) {
  w.id(f.node_id);
  w.str(f.realm);
  w.u32(f.capabilities);
  w.bytes(f.realm_proof);
  put_strings(w, f.endpoints);
}
void put(Writer& w, const HelloAck& f) {
  w.id(f.node_id);
  put_strings(w, f.endpoints);
}
void put(Writer& w, const GoAway& f) {
  w.u32(f.code);
  w.str(f.reason);
}
void put(Writer& w, const Ping& f) { w.u64(f.nonce); }
void put(Writer& w, const Pong& f) { w.u64(f.nonce); }
void put(Writer& w, const InterestAdd& f) { put_strings(w, f.patterns); }
void put(Writer& w, const InterestRemove& f) { put_strings(w, f.patterns); }
void put(Writer& w, const Publish& f) {
  w.id(f.publisher);
  w.u64(f.message_id);
  w.u64(f.sequence);
  w.u8(f.qos);
  w.str(f.topic_view());
  w.bytes(f.payload_view());
}
void put(Writer& w, const PublishAck& f) {
  w.u16(static_cast<std::uint16_t>(f.message_ids.size()));
  for (auto id : f.message_ids) w.u64(id);
}
void put(Writer& w, const RpcCall& f) {
  w.u64(f.call_id);
  w.u32(f.timeout_ms);
  w.str(f.procedure);
  w.bytes(f.payload);
}
void put(Writer& w, const RpcReply& f) {
  w.u64(f.call_id);
  w.u8(static_cast<std::uint8_t>(f.status));
  w.bytes(f.payload);
}
void put(Writer& w, const ProvideAdd& f) { put_strings(w, f.procedures); }
void put(Writer& w, const ProvideRemove& f) { put_strings(w, f.procedures); }
void put(Writer& w, const DhtFindNode& f) {
  w.u64(f.request_id);
  w.id(f.target);
}
void put(Writer& w, const DhtFindValue& f) {
  w.u64(f.request_id);
  w.id(f.key);
}
void put(Writer& w, const DhtStore& f) {
  w.u64(f.request_id);
  w.id(f.key);
  put_record(w, f.record);
}
void put(Writer& w, const DhtNodes& f) {
  w.u64(f.request_id);
  put_contacts(w, f.contacts);
}
void put(Writer& w, const DhtValues& f) {
  w.u64(f.request_id);
  w.u16(static_cast<std::uint16_t>(f.records.size()));
  for (const auto& r : f.records) put_record(w, r);
  put_contacts(w, f.closer);
}
void put(Writer& w, const DhtStoreAck& f) {
  w.u64(f.request_id);
  w.u32(f.status);
}

// ---- decoding -------------------------------------------------------------------------

// Reads big-endian fields from a payload; the first failed read latches `ok = false` and
// every later read returns zero values, so decoders check once at the end.
class Reader {
 public:
  explicit Reader(std::span<const std::uint8_t> d) : d_(d) {}
  bool ok() const noexcept { return ok_; }
  bool done() const noexcept { return pos_ == d_.size(); }
  std::uint8_t u8() { return static_cast<std::uint8_t>(get(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(get(2)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(get(4)); }
  std::uint64_t u64() { return get(8); }
  NodeId id() {
    NodeId::Bytes b{};
    if (need(b.size())) {
      std::memcpy(b.data(), d_.data() + pos_, b.size());
      pos_ += b.size();
    }
    return NodeId(b);
  }
  std::string str() {
    const std::size_t n = u16();
    if (!need(n)) return {};
    std::string s(reinterpret_cast<const char*>(d_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  /// str() and bytes() without the copy: views into the payload being read.
  std::string_view str_view() {
    const std::size_t n = u16();
    if (!need(n)) return {};
    std::string_view s(reinterpret_cast<const char*>(d_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  std::span<const std::uint8_t> bytes_view() {
    const std::size_t n = u32();
    if (!need(n)) return {};
    auto b = d_.subspan(pos_, n);
    pos_ += n;
    return b;
  }
  std::vector<std::uint8_t> bytes() {
    const std::size_t n = u32();
    if (!need(n)) return {};
    std::vector<std::uint8_t> b(d_.begin() + static_cast<std::ptrdiff_t>(pos_),
                                d_.begin() + static_cast<std::ptrdiff_t>(pos_ + n));
    pos_ += n;
    return b;
  }
  /// A list count, refused past kMaxListItems or past what the remaining bytes could hold
  /// (each item is at least `min_item` bytes), so a count cannot force a large allocation.
  std::size_t count(std::size_t min_item) {
    const std::size_t n = u16();
    if (n > kMaxListItems || n * min_item > d_.size() - pos_) ok_ = false;
    return ok_ ? n : 0;
  }

 private:
  bool need(std::size_t n) {
    if (!ok_ || d_.size() - pos_ < n) ok_ = false;
    return ok_;
  }
  std::uint64_t get(int n) {
    if (!need(static_cast<std::size_t>(n))) return 0;
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | d_[pos_++];
    return v;
  }
  std::span<const std::uint8_t> d_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

Record get_record(Reader& r) {
  Record rec;
  rec.owner = r.id();
  rec.ttl_s = r.u32();
  rec.data = r.bytes();
  return rec;
}
std::vector<Contact> get_contacts(Reader& r) {
  std::vector<Contact> cs(r.count(NodeId::kBytes + 2));
  for (auto& c : cs) {
    c.id = r.id();
    c.endpoint = r.str();
  }
  return cs;
}
std::vector<std::string> get_strings(Reader& r) {
  std::vector<std::string> v(r.count(2));
  for (auto& s : v) s = r.str();
  return v;
}

template <class T>
T get(Reader& r);

template <> Hello get<Hello>(Reader& r) {
  Hello f;
  f.node_id = r.id();
  f.realm = r.str();
  f.capabilities = r.u32();
  f.realm_proof = r.bytes();
  f.endpoints = get_strings(r);
  return f;
}
template <> HelloAck get<HelloAck>(Reader& r) {
  HelloAck f;
  f.node_id = r.id();
  f.endpoints = get_strings(r);
  return f;
}
template <> GoAway get<GoAway>(Reader& r) {
  GoAway f;
  f.code = r.u32();
  f.reason = r.str();
  return f;
}
template <> Ping get<Ping>(Reader& r) { return Ping{r.u64()}; }
template <> Pong get<Pong>(Reader& r) { return Pong{r.u64()}; }
template <> InterestAdd get<InterestAdd>(Reader& r) { return InterestAdd{get_strings(r)}; }
template <> InterestRemove get<InterestRemove>(Reader& r) { return InterestRemove{get_strings(r)}; }
template <> Publish get<Publish>(Reader& r) {
  Publish f;
  f.publisher = r.id();
  f.message_id = r.u64();
  f.sequence = r.u64();
  f.qos = r.u8();
  const std::string_view topic = r.str_view();
  const std::span<const std::uint8_t> payload = r.bytes_view();
  if (!r.ok()) return f;
  f.body = macula::detail::make_message_body(topic, payload, f.qos == 1 ? Qos::at_least_once : Qos::at_most_once);
  f.body->publisher = f.publisher;
  f.body->sequence = f.sequence;
  return f;
}
template <> PublishAck get<PublishAck>(Reader& r) {
  PublishAck f;
  f.message_ids.resize(r.count(8));
  for (auto& id : f.message_ids) id = r.u64();
  return f;
}
template <> RpcCall get<RpcCall>(Reader& r) {
  RpcCall f;
  f.call_id = r.u64();
  f.timeout_ms = r.u32();
  f.procedure = r.str();
  f.payload = r.bytes();
  return f;
}
template <> RpcReply get<RpcReply>(Reader& r) {
  RpcReply f;
  f.call_id = r.u64();
  f.status = static_cast<RpcStatus>(r.u8());
  f.payload = r.bytes();
  return f;
}
template <> ProvideAdd get<ProvideAdd>(Reader& r) { return ProvideAdd{get_strings(r)}; }
template <> ProvideRemove get<ProvideRemove>(Reader& r) { return ProvideRemove{get_strings(r)}; }
template <> DhtFindNode get<DhtFindNode>(Reader& r) {
  DhtFindNode f;
  f.request_id = r.u64();
  f.target = r.id();
  return f;
}
template <> DhtFindValue get<DhtFindValue>(Reader& r) {
  DhtFindValue f;
  f.request_id = r.u64();
  f.key = r.id();
  return f;
}
template <> DhtStore get<DhtStore>(Reader& r) {
  DhtStore f;
  f.request_id = r.u64();
  f.key = r.id();
  f.record = get_record(r);
  return f;
}
template <> DhtNodes get<DhtNodes>(Reader& r) {
  DhtNodes f;
  f.request_id = r.u64();
  f.contacts = get_contacts(r);
  return f;
}
template <> DhtValues get<DhtValues>(Reader& r) {
  DhtValues f;
  f.request_id = r.u64();
  f.records.resize(r.count(NodeId::kBytes + 8));
  for (auto& rec : f.records) rec = get_record(r);
  f.closer = get_contacts(r);
  return f;
}
template <> DhtStoreAck get<DhtStoreAck>(Reader& r) {
  DhtStoreAck f;
  f.request_id = r.u64();
  f.status = r.u32();
  return f;
}

template <class T>
std::error_code decode_as(std::span<const std::uint8_t> payload, Frame& out) {
  Reader r(payload);
  T f = get<T>(r);
  if (!r.ok() || !r.done() || !valid(f)) return errc::frame_malformed;
  out = std::move(f);
  return {};
}

template <class T> struct TypeOf;
#define MACULA_FRAME_TYPE(T, V) template <> struct TypeOf<T> { static constexpr FrameType value = FrameType::V; };
MACULA_FRAME_TYPE(Hello, hello)
MACULA_FRAME_TYPE(HelloAck, hello_ack)
MACULA_FRAME_TYPE(GoAway, goaway)
MACULA_FRAME_TYPE(Ping, ping)
MACULA_FRAME_TYPE(Pong, pong)
MACULA_FRAME_TYPE(InterestAdd, interest_add)
MACULA_FRAME_TYPE(InterestRemove, interest_remove)
MACULA_FRAME_TYPE(Publish, publish)
MACULA_FRAME_TYPE(PublishAck, publish_ack)
MACULA_FRAME_TYPE(RpcCall, rpc_call)
MACULA_FRAME_TYPE(RpcReply, rpc_reply)
MACULA_FRAME_TYPE(ProvideAdd, provide_add)
MACULA_FRAME_TYPE(ProvideRemove, provide_remove)
MACULA_FRAME_TYPE(DhtFindNode, dht_find_node)
MACULA_FRAME_TYPE(DhtFindValue, dht_find_value)
MACULA_FRAME_TYPE(DhtStore, dht_store)
MACULA_FRAME_TYPE(DhtNodes, dht_nodes)
MACULA_FRAME_TYPE(DhtValues, dht_values)
MACULA_FRAME_TYPE(DhtStoreAck, dht_store_ack)
#undef MACULA_FRAME_TYPE

}  // namespace

FrameType frame_type(const Frame& frame) noexcept {
  return std::visit([](const auto& f) { return TypeOf<std::decay_t<decltype(f)>>::value; }, frame);
}

std::error_code encode(const Frame& frame, std::vector<std::uint8_t>& out, std::size_t max_frame_size) {
  if (max_frame_size > kMaxFrameSizeLimit) max_frame_size = kMaxFrameSizeLimit;
  const std::size_t start = out.size();
  const std::error_code ec = std::visit(
      [&](const auto& f) -> std::error_code {
        if (!valid(f)) return errc::frame_malformed;
        Writer w(out);
        w.u8(kVersion);
        w.u8(static_cast<std::uint8_t>(TypeOf<std::decay_t<decltype(f)>>::value));
        w.u16(0);
        w.u32(0);  // length, patched below
        put(w, f);
        return {};
      },
      frame);
  if (ec) {
    out.resize(start);
    return ec;
  }
  const std::size_t len = out.size() - start - kHeaderSize;
  if (len > max_frame_size) {
    out.resize(start);
    return errc::frame_too_large;
  }
  for (int i = 0; i < 4; ++i) out[start + 4 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(len >> (24 - 8 * i));
  return {};
}

std::error_code encode_publish(const NodeId& publisher, std::uint64_t message_id, std::uint64_t sequence,
                               std::uint8_t qos, std::string_view topic, std::span<const std::uint8_t> payload,
                               std::vector<std::uint8_t>& out, std::size_t max_frame_size) {
  if (max_frame_size > kMaxFrameSizeLimit) max_frame_size = kMaxFrameSizeLimit;
  const std::size_t len = NodeId::kBytes + 8 + 8 + 1 + 2 + topic.size() + 4 + payload.size();
  if (len > max_frame_size || topic.size() > 0xffff) return errc::frame_too_large;
  Writer w(out);
  w.u8(kVersion);
  w.u8(static_cast<std::uint8_t>(FrameType::publish));
  w.u16(0);
  w.u32(static_cast<std::uint32_t>(len));
  w.id(publisher);
  w.u64(message_id);
  w.u64(sequence);
  w.u8(qos);
  w.str(topic);
  w.bytes(payload);
  return {};
}

DecodeResult decode(std::span<const std::uint8_t> data, Frame& out, std::size_t max_frame_size) {
  if (max_frame_size > kMaxFrameSizeLimit) max_frame_size = kMaxFrameSizeLimit;
  if (data.size() < kHeaderSize) return {errc::frame_truncated, 0};
  if (data[0] != kVersion) return {errc::frame_unknown_version, 0};
  const std::size_t len = (std::size_t{data[4]} << 24) | (std::size_t{data[5]} << 16) | (std::size_t{data[6]} << 8) | data[7];
  // Size is checked before waiting for the payload: a peer cannot make us buffer a frame we
  // would refuse anyway.
  if (len > max_frame_size) return {errc::frame_too_large, 0};
  if (data.size() - kHeaderSize < len) return {errc::frame_truncated, 0};
  if (data[2] != 0 || data[3] != 0) return {errc::frame_malformed, 0};  // no flags defined in v1
  const auto payload = data.subspan(kHeaderSize, len);
  std::error_code ec;
  switch (static_cast<FrameType>(data[1])) {
    case FrameType::hello: ec = decode_as<Hello>(payload, out); break;
    case FrameType::hello_ack: ec = decode_as<HelloAck>(payload, out); break;
    case FrameType::goaway: ec = decode_as<GoAway>(payload, out); break;
    case FrameType::ping: ec = decode_as<Ping>(payload, out); break;
    case FrameType::pong: ec = decode_as<Pong>(payload, out); break;
    case FrameType::interest_add: ec = decode_as<InterestAdd>(payload, out); break;
    case FrameType::interest_remove: ec = decode_as<InterestRemove>(payload, out); break;
    case FrameType::publish: ec = decode_as<Publish>(payload, out); break;
    case FrameType::publish_ack: ec = decode_as<PublishAck>(payload, out); break;
    case FrameType::rpc_call: ec = decode_as<RpcCall>(payload, out); break;
    case FrameType::rpc_reply: ec = decode_as<RpcReply>(payload, out); break;
    case FrameType::provide_add: ec = decode_as<ProvideAdd>(payload, out); break;
    case FrameType::provide_remove: ec = decode_as<ProvideRemove>(payload, out); break;
    case FrameType::dht_find_node: ec = decode_as<DhtFindNode>(payload, out); break;
    case FrameType::dht_find_value: ec = decode_as<DhtFindValue>(payload, out); break;
    case FrameType::dht_store: ec = decode_as<DhtStore>(payload, out); break;
    case FrameType::dht_nodes: ec = decode_as<DhtNodes>(payload, out); break;
    case FrameType::dht_values: ec = decode_as<DhtValues>(payload, out); break;
    case FrameType::dht_store_ack: ec = decode_as<DhtStoreAck>(payload, out); break;
    default: return {errc::frame_unknown_type, 0};
  }
  if (ec) return {ec, 0};
  return {{}, kHeaderSize + len};
}

}  // namespace macula::wire
