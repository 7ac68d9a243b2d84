#include <cstddef>
#include <cstring>
#include <new>

#include "macula/message.hpp"

namespace macula::detail {

namespace {

// allocate_shared's allocator, asked once for the control block (which holds the body): it
// hands out `extra` more bytes behind it and says where, so the topic and payload share the
// body's allocation. Rebinding keeps both fields; `where` is only written by allocate().
template <class T>
struct TrailingBytes {
  using value_type = T;
  std::size_t extra;
  std::byte** where;

  TrailingBytes(std::size_t e, std::byte** w) noexcept : extra(e), where(w) {}
  template <class U>
  TrailingBytes(const TrailingBytes<U>& o) noexcept : extra(o.extra), where(o.where) {}

  static constexpr std::size_t head(std::size_t n) noexcept {
    constexpr std::size_t a = alignof(std::max_align_t);
    return (n * sizeof(T) + a - 1) / a * a;
  }
  T* allocate(std::size_t n) {
    auto* p = static_cast<std::byte*>(::operator new(head(n) + extra));
    *where = p + head(n);
    return reinterpret_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p); }

  template <class U>
  bool operator==(const TrailingBytes<U>& o) const noexcept {
    return extra == o.extra;
  }
};

}  // namespace

std::shared_ptr<MessageBody> make_message_body(std::string_view topic, std::span<const std::uint8_t> payload, Qos qos) {
  std::byte* bytes = nullptr;
  auto body = std::allocate_shared<MessageBody>(TrailingBytes<MessageBody>(payload.size() + topic.size(), &bytes));
  auto* p = reinterpret_cast<std::uint8_t*>(bytes);
  if (!payload.empty()) std::memcpy(p, payload.data(), payload.size());
  if (!topic.empty()) std::memcpy(p + payload.size(), topic.data(), topic.size());
  body->payload = {p, payload.size()};
  body->topic = {reinterpret_cast<const char*>(p + payload.size()), topic.size()};
  body->qos = qos;
  return body;
}

std::shared_ptr<MessageBody> make_message_body(std::string_view topic, Bytes&& payload, Qos qos) {
  std::byte* bytes = nullptr;
  auto body = std::allocate_shared<MessageBody>(TrailingBytes<MessageBody>(topic.size(), &bytes));
  if (!topic.empty()) std::memcpy(bytes, topic.data(), topic.size());
  body->topic = {reinterpret_cast<const char*>(bytes), topic.size()};
  body->owned_payload = std::move(payload);
  body->payload = body->owned_payload;
  body->qos = qos;
  return body;
}

}  // namespace macula::detail
