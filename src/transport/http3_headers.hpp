// Http3Headers: the field list of one HTTP/3 request or response head, as nghttp3 takes it.
//
// nghttp3_nv holds pointers, not strings, so the strings live here and the nv array is built
// from them only once the list is complete (a std::string moved by a growing vector takes a
// short value's bytes with it). nghttp3 copies names and values when the list is submitted
// (nghttp3_conn_submit_request/response, NGHTTP3_NV_FLAG_NONE), so an Http3Headers need only
// outlive that call: the call sites keep it on the stack.
#pragma once

#include <nghttp3/nghttp3.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace macula::transport {

class Http3Headers {
 public:
  /// The authority a request names when its caller gave none: peers route by path, never by
  /// host, but HTTP/3 requires the field.
  static constexpr std::string_view kDefaultAuthority = "macula";

  Http3Headers() = default;

  /// A request head: the pseudo-header fields in RFC 9114 4.3.1's order, scheme https.
  static Http3Headers request(std::string method, std::string authority, std::string path) {
    Http3Headers h;
    h.add(":method", std::move(method));
    h.add(":scheme", "https");
    h.add(":authority", authority.empty() ? std::string(kDefaultAuthority) : std::move(authority));
    h.add(":path", std::move(path));
    return h;
  }

  /// A response head: the status alone; fields follow with add().
  static Http3Headers response(int status) {
    Http3Headers h;
    h.add(":status", std::to_string(status));
    return h;
  }

  void add(std::string name, std::string value) {
    strings_.push_back(std::move(name));
    strings_.push_back(std::move(value));
  }

  /// Takes every field of `headers` (anything with `name` and `value` strings), in order.
  template <typename Fields>
  void add_all(Fields&& headers) {
    for (auto& h : headers) add(std::move(h.name), std::move(h.value));
  }

  std::size_t size() const noexcept { return strings_.size() / 2; }
  std::string_view name(std::size_t i) const { return strings_[2 * i]; }
  std::string_view value(std::size_t i) const { return strings_[2 * i + 1]; }

  /// The list as nghttp3 takes it. Its pointers stay valid while this object lives and no
  /// field is added.
  std::vector<nghttp3_nv> nv() const {
    std::vector<nghttp3_nv> out;
    out.reserve(size());
    for (std::size_t i = 0; i + 1 < strings_.size(); i += 2) out.push_back(make_nv(strings_[i], strings_[i + 1]));
    return out;
  }

 private:
  static nghttp3_nv make_nv(const std::string& name, const std::string& value) {
    // nghttp3 0.8 takes non-const pointers but only reads through them.
    return nghttp3_nv{reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
                      reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
                      NGHTTP3_NV_FLAG_NONE};
  }

  std::vector<std::string> strings_;  // name, value, name, value, ...
};

}  // namespace macula::transport
