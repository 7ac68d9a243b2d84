// RouteTable: (method, path prefix) -> handler, longest prefix wins. The endpoint's request
// router; separate from the endpoint so that it can be fuzzed on its own (tests/fuzz).
//
// Paths come from the network unchecked: any bytes, any length (the endpoint bounds the
// header section before they get here). Lookup is linear in the number of routes, which is a
// handful per node, and allocates nothing.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <utility>

namespace macula::transport {

template <typename Handler>
class RouteTable {
 public:
  /// Adds or replaces the route for exactly (method, prefix).
  void add(std::string method, std::string prefix, Handler handler) {
    routes_[{std::move(method), std::move(prefix)}] = std::move(handler);
  }

  /// The handler whose prefix is the longest one `path` starts with, for `method`; nullptr
  /// when none matches.
  const Handler* find(std::string_view method, std::string_view path) const {
    const Handler* best = nullptr;
    std::size_t best_len = 0;
    for (const auto& [key, handler] : routes_) {
      const auto& [m, prefix] = key;
      if (m == method && path.substr(0, prefix.size()) == prefix && (best == nullptr || prefix.size() > best_len)) {
        best = &handler;
        best_len = prefix.size();
      }
    }
    return best;
  }

  std::size_t size() const noexcept { return routes_.size(); }

 private:
  std::map<std::pair<std::string, std::string>, Handler> routes_;
};

}  // namespace macula::transport
