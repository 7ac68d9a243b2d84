// LocalInterest: the patterns this node has local subscribers for, aggregated.
//
// Remote delivery sends a link one INTEREST_ADD per distinct pattern, not one per subscriber
// (seed finding 10): this counts subscribers per canonical pattern and says when a pattern
// becomes interesting (first subscriber) or stops being so (last one gone). Sans-I/O, not
// thread-safe: the node owns one and touches it from its strand.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "macula/names.hpp"

namespace macula::pubsub {

class LocalInterest {
 public:
  /// Counts one more subscriber of `pattern` (validated by the caller). Returns the canonical
  /// pattern when it just became interesting (announce it), else an empty string.
  std::string add(std::string_view pattern) {
    std::string key = canonical_pattern(pattern);
    return ++counts_[key] == 1 ? key : std::string();
  }

  /// Counts one subscriber fewer. Returns the canonical pattern when nobody is left (withdraw
  /// it), else an empty string. Removing an unknown pattern changes nothing.
  std::string remove(std::string_view pattern) {
    std::string key = canonical_pattern(pattern);
    auto it = counts_.find(key);
    if (it == counts_.end()) return {};
    if (--it->second > 0) return {};
    counts_.erase(it);
    return key;
  }

  /// Every interesting pattern, for a link that just opened.
  std::vector<std::string> snapshot() const {
    std::vector<std::string> out;
    out.reserve(counts_.size());
    for (const auto& [p, n] : counts_) out.push_back(p);
    return out;
  }

  std::size_t distinct_patterns() const noexcept { return counts_.size(); }
  std::size_t subscribers(std::string_view pattern) const {
    auto it = counts_.find(canonical_pattern(pattern));
    return it == counts_.end() ? 0 : it->second;
  }

 private:
  std::map<std::string, std::size_t, std::less<>> counts_;
};

}  // namespace macula::pubsub
