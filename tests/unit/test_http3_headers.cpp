// Http3Headers (src/transport/http3_headers.hpp): the one builder of HTTP/3 field lists for
// requests, responses and sessions, checked against the nv array nghttp3 reads.
#include <catch2/catch.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "transport/endpoint.hpp"
#include "transport/http3_headers.hpp"

using macula::transport::Header;
using macula::transport::Http3Headers;

namespace {

std::string_view nv_name(const nghttp3_nv& nv) { return {reinterpret_cast<const char*>(nv.name), nv.namelen}; }
std::string_view nv_value(const nghttp3_nv& nv) { return {reinterpret_cast<const char*>(nv.value), nv.valuelen}; }

}  // namespace

TEST_CASE("http3 headers: a request starts with its pseudo-header fields in order", "[transport][http3]") {
  auto h = Http3Headers::request("GET", "node-a.example", "/macula/v1/status");
  const auto nv = h.nv();
  REQUIRE(nv.size() == 4);
  CHECK(nv_name(nv[0]) == ":method");
  CHECK(nv_value(nv[0]) == "GET");
  CHECK(nv_name(nv[1]) == ":scheme");
  CHECK(nv_value(nv[1]) == "https");
  CHECK(nv_name(nv[2]) == ":authority");
  CHECK(nv_value(nv[2]) == "node-a.example");
  CHECK(nv_name(nv[3]) == ":path");
  CHECK(nv_value(nv[3]) == "/macula/v1/status");
  for (const auto& f : nv) CHECK(f.flags == NGHTTP3_NV_FLAG_NONE);
}

TEST_CASE("http3 headers: a request without an authority names the default one", "[transport][http3]") {
  auto h = Http3Headers::request("POST", "", "/x");
  REQUIRE(h.size() == 4);
  CHECK(h.name(2) == ":authority");
  CHECK(h.value(2) == Http3Headers::kDefaultAuthority);
  CHECK(h.value(2) == "macula");
}

TEST_CASE("http3 headers: a response starts with its status", "[transport][http3]") {
  auto h = Http3Headers::response(404);
  h.add("content-length", "0");
  const auto nv = h.nv();
  REQUIRE(nv.size() == 2);
  CHECK(nv_name(nv[0]) == ":status");
  CHECK(nv_value(nv[0]) == "404");
  CHECK(nv_name(nv[1]) == "content-length");
  CHECK(nv_value(nv[1]) == "0");
}

TEST_CASE("http3 headers: add_all takes every field in order and moves it", "[transport][http3]") {
  std::vector<Header> extra{{"x-macula-realm", "io.example"}, {"x-long", std::string(300, 'v')}};
  auto h = Http3Headers::response(200);
  h.add_all(extra);
  REQUIRE(h.size() == 3);
  CHECK(h.name(1) == "x-macula-realm");
  CHECK(h.value(1) == "io.example");
  CHECK(h.name(2) == "x-long");
  CHECK(h.value(2) == std::string(300, 'v'));
  // Moved, not copied: a long value's buffer changed hands.
  CHECK(extra[1].value.empty());
}

TEST_CASE("http3 headers: the nv array points into the stored strings, after any number of fields",
          "[transport][http3]") {
  // Short strings live inside std::string (SSO): an array built while the list still grew
  // would point at bytes the vector has since moved.
  auto h = Http3Headers::request("GET", "a", "/");
  for (int i = 0; i < 100; ++i) h.add("k" + std::to_string(i), std::to_string(i));
  const auto nv = h.nv();
  REQUIRE(nv.size() == 104);
  REQUIRE(nv.size() == h.size());
  for (std::size_t i = 0; i < nv.size(); ++i) {
    CHECK(reinterpret_cast<const char*>(nv[i].name) == h.name(i).data());
    CHECK(reinterpret_cast<const char*>(nv[i].value) == h.value(i).data());
    CHECK(nv[i].namelen == h.name(i).size());
    CHECK(nv[i].valuelen == h.value(i).size());
  }
  CHECK(nv_name(nv[103]) == "k99");
  CHECK(nv_value(nv[103]) == "99");
}

TEST_CASE("http3 headers: an empty list has no fields", "[transport][http3]") {
  Http3Headers h;
  CHECK(h.size() == 0);
  CHECK(h.nv().empty());
}
