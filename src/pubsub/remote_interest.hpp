// RemoteInterest: which links want a topic, from the patterns each link announced.
//
// A publish goes once per link whose interest matches (not once per remote subscriber): the
// pattern trie indexes (pattern -> link id), so finding the links costs what matching costs.
// Each link may announce at most `max_patterns_per_link` patterns (admission: a peer cannot
// grow our tables without bound); past it, add() refuses with errc::too_many_subscriptions.
// Thread-safety: links_for() may run on many threads; add/remove/drop_link from one (the
// node's strand) — the trie itself is safe for both, the per-link bookkeeping is not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "macula/core/pattern_trie.hpp"
#include "macula/error.hpp"
#include "macula/names.hpp"

namespace macula::pubsub {

using LinkId = std::uint64_t;

class RemoteInterest {
 public:
  explicit RemoteInterest(std::size_t max_patterns_per_link = 10'000, std::size_t shards = 16)
      : trie_(shards), max_per_link_(max_patterns_per_link) {}

  /// Records that `link` wants topics matching `pattern`. Idempotent. Errors: the pattern's
  /// validation error, too_many_subscriptions.
  std::error_code add(LinkId link, std::string_view pattern) {
    if (auto ec = validate_pattern(pattern)) return ec;
    auto& mine = by_link_[link];
    std::string key = canonical_pattern(pattern);
    if (mine.count(key)) return {};
    if (mine.size() >= max_per_link_) return errc::too_many_subscriptions;
    if (auto ec = trie_.add(key, link)) return ec;
    mine.insert(std::move(key));
    return {};
  }

  /// Forgets one pattern of `link`; returns whether it was recorded.
  bool remove(LinkId link, std::string_view pattern) {
    auto it = by_link_.find(link);
    if (it == by_link_.end()) return false;
    const std::string key = canonical_pattern(pattern);
    if (it->second.erase(key) == 0) return false;
    trie_.remove(key, link);
    if (it->second.empty()) by_link_.erase(it);
    return true;
  }

  /// Forgets everything `link` announced (the link closed).
  void drop_link(LinkId link) {
    auto it = by_link_.find(link);
    if (it == by_link_.end()) return;
    for (const auto& p : it->second) trie_.remove(p, link);
    by_link_.erase(it);
  }

  /// Appends each link interested in `topic` once (ascending).
  void links_for(std::string_view topic, std::vector<LinkId>& out) const { trie_.match(topic, out); }

  std::size_t patterns(LinkId link) const {
    auto it = by_link_.find(link);
    return it == by_link_.end() ? 0 : it->second.size();
  }
  std::size_t links() const noexcept { return by_link_.size(); }

 private:
  core::PatternTrie trie_;
  std::unordered_map<LinkId, std::set<std::string>> by_link_;
  std::size_t max_per_link_;
};

}  // namespace macula::pubsub
