// libFuzzer target: what the node does with an HTTP/3 request head from the network before
// any handler runs. The input is split into a method, a path and header lines; the target
//  - routes it through a RouteTable holding the node's real routes and checks the answer
//    against a naive longest-prefix search;
//  - validates the path's remainder as the node does (topic for /pub/, procedure for /rpc/);
//  - runs the session acceptor's realm check (realm_guarded) on the headers, which must answer
//    200 only when the realm header names the node's realm, else 401/403, and never crash.
#include <cstddef>
#include <cstdint>
#include <array>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "macula/names.hpp"
#include "transport/realm_guard.hpp"
#include "transport/route_table.hpp"

namespace {

struct Route {
  const char* method;
  const char* prefix;
};
constexpr Route kRoutes[] = {{"POST", "/macula/v1/pub/"}, {"POST", "/macula/v1/rpc/"}, {"POST", "/macula/v1/dht"},
                             {"GET", "/health"},          {"GET", "/ready"},          {"GET", "/live"},
                             {"GET", "/metrics"},         {"POST", "/macula/v1/session"}, {"GET", "/"}};

const macula::transport::RouteTable<int>& table() {
  static const auto t = [] {
    macula::transport::RouteTable<int> r;
    for (int i = 0; i < static_cast<int>(std::size(kRoutes)); ++i) r.add(kRoutes[i].method, kRoutes[i].prefix, i);
    return r;
  }();
  return t;
}

// Splits at the first '\n' (or the end).
std::string_view take_line(std::string_view& in) {
  const auto nl = in.find('\n');
  const auto line = in.substr(0, nl);
  in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
  return line;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::string method(take_line(in));
  const std::string path(take_line(in));

  // Router: the table's answer equals the naive longest-prefix search.
  const int* got = table().find(method, path);
  int want = -1;
  std::size_t want_len = 0;
  for (int i = 0; i < static_cast<int>(std::size(kRoutes)); ++i) {
    const std::string_view prefix = kRoutes[i].prefix;
    if (method == kRoutes[i].method && path.starts_with(prefix) && (want < 0 || prefix.size() > want_len)) {
      want = i;
      want_len = prefix.size();
    }
  }
  if ((got ? *got : -1) != want) std::abort();

  // The node's own parsing of the path's remainder.
  if (want == 0 || want == 1) {
    const std::string_view rest = std::string_view(path).substr(want_len);
    const auto ec = want == 0 ? macula::validate_topic(rest) : macula::validate_procedure(rest);
    if (!ec && macula::validate_pattern(rest)) std::abort();  // a valid name is a valid pattern
  }

  // Headers: "name: value" lines into a session request, through the realm check.
  macula::transport::Request head;
  head.method = method;
  head.path = path;
  while (!in.empty()) {
    const std::string_view line = take_line(in);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    head.headers.push_back({std::string(line.substr(0, colon)), std::string(line.substr(colon + 1))});
  }
  std::array<std::uint8_t, 32> self_bytes{}, peer_bytes{};
  self_bytes[0] = 1;
  peer_bytes[0] = 2;
  head.peer = macula::NodeId(peer_bytes);
  head.channel_binding.assign(32, 7);
  for (const bool with_secret : {false, true}) {
    macula::transport::RealmPolicy policy{"fuzz.realm", with_secret ? std::optional<std::string>("s3cret") : std::nullopt};
    bool inner_ran = false;
    auto guarded = macula::transport::realm_guarded(
        policy, macula::NodeId(self_bytes),
        [&](const macula::transport::Request&, std::shared_ptr<macula::transport::Session>,
            macula::transport::SessionCallbacks&) {
          inner_ran = true;
          return 200;
        });
    macula::transport::SessionCallbacks callbacks;
    const int status = guarded(head, nullptr, callbacks);
    if (status != 200 && status != 401 && status != 403) std::abort();
    if ((status == 200) != inner_ran) std::abort();
    if (status == 200) {
      // Admitted: the first realm header names this realm exactly.
      const macula::transport::Header* first = nullptr;
      for (const auto& h : head.headers)
        if (h.name == "macula-realm") {
          first = &h;
          break;
        }
      if (!first || first->value != "fuzz.realm") std::abort();
      // In a secret realm the acceptor proves the secret back, and that proof checks out.
      if (with_secret && !macula::transport::acceptor_proof_valid(policy, *head.peer, macula::NodeId(self_bytes),
                                                                  head.channel_binding, callbacks.response_headers))
        std::abort();
    }
  }
  return 0;
}
