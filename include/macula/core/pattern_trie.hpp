// PatternTrie: subscription index, (pattern -> subscriber id), matched by topic.
//
// Replaces the old system's publish-time scan of every subscription (seed finding 6): the
// cost of match() grows with the topic's depth and with the number of matches, not with the
// number of subscriptions.
//
// Concurrency: the trie is split into shards by the pattern's first segment — a literal first
// segment goes to the shard its hash picks, a wildcard first segment (`*`, `#`) goes to one
// extra "wildcard" shard. A topic therefore consults exactly two shards. Each shard is a
// ReaderBiasedLock around a plain trie: readers mark only a per-thread slot, so concurrent
// publishes never write a shared cache line, and writers (subscribe/unsubscribe) wait for
// the shard's readers to drain. Why not RCU/epochs: publishes vastly outnumber subscription
// changes, the shared path already costs two uncontended atomic operations per shard, and
// RCU would add a reclamation scheme (and delayed frees) for no gain we could measure here.
//
// Thread-safety: every member function may be called from any thread concurrently.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "macula/core/detail/hashed_key.hpp"
#include "macula/core/detail/reader_biased_lock.hpp"
#include "macula/names.hpp"

namespace macula::core {

using SubscriberId = std::uint64_t;

namespace detail {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

// Children are keyed by (hash, segment): the hash of each topic segment is computed once per
// match and reused at every node, and bucket walks never re-hash stored keys.
struct TrieNode {
  std::unordered_map<HashedKey<std::string>, std::unique_ptr<TrieNode>, HashedKeyHash, HashedKeyEqual<std::equal_to<>>>
      children;
  std::unique_ptr<TrieNode> star;   // `*` child
  std::unique_ptr<TrieNode> multi;  // `#` / `**` child
  std::vector<SubscriberId> subscribers;  // sorted, unique: patterns that end at this node

  bool empty() const noexcept {
    return children.empty() && !star && !multi && subscribers.empty();
  }
};

}  // namespace detail

class PatternTrie {
 public:
  /// `literal_shards` shards for patterns whose first segment is literal, plus one for
  /// patterns that start with a wildcard.
  explicit PatternTrie(std::size_t literal_shards = 16)
      : shards_(literal_shards == 0 ? 1 : literal_shards + 1) {}

  PatternTrie(const PatternTrie&) = delete;
  PatternTrie& operator=(const PatternTrie&) = delete;

  /// Adds (pattern, id). Idempotent: adding the same pair twice keeps one. Returns the
  /// pattern's validation error, if any (nothing is added then).
  std::error_code add(std::string_view pattern, SubscriberId id) {
    if (auto ec = validate_pattern(pattern)) return ec;
    Segments segs;
    const std::size_t n = split_pattern(pattern, segs);
    Shard& shard = shard_for_pattern(segs[0]);
    std::unique_lock lock(shard.mutex);
    detail::TrieNode* node = &shard.root;
    for (std::size_t i = 0; i < n; ++i) node = child_for_insert(*node, segs[i]);
    auto& subs = node->subscribers;
    auto it = std::lower_bound(subs.begin(), subs.end(), id);
    if (it == subs.end() || *it != id) {
      subs.insert(it, id);
      ++shard.pairs;
    }
    return {};
  }

  /// Removes (pattern, id); returns true when the pair was present. Empty branches are
  /// pruned so that memory follows the live subscription count.
  bool remove(std::string_view pattern, SubscriberId id) {
    if (validate_pattern(pattern)) return false;
    Segments segs;
    const std::size_t n = split_pattern(pattern, segs);
    Shard& shard = shard_for_pattern(segs[0]);
    std::unique_lock lock(shard.mutex);
    std::array<detail::TrieNode*, kMaxSegments + 1> path{};
    path[0] = &shard.root;
    for (std::size_t i = 0; i < n; ++i) {
      path[i + 1] = child_for_lookup(*path[i], segs[i]);
      if (!path[i + 1]) return false;
    }
    auto& subs = path[n]->subscribers;
    auto it = std::lower_bound(subs.begin(), subs.end(), id);
    if (it == subs.end() || *it != id) return false;
    subs.erase(it);
    --shard.pairs;
    for (std::size_t i = n; i > 0 && path[i]->empty(); --i) erase_child(*path[i - 1], segs[i - 1]);
    return true;
  }

  /// Appends to `out` every subscriber id with a pattern matching `topic`, each exactly once
  /// (ascending order among the appended ids). An invalid topic matches nothing.
  void match(std::string_view topic, std::vector<SubscriberId>& out) const {
    if (validate_topic(topic)) return;
    Segments segs;
    std::array<std::size_t, kMaxSegments> hashes;
    std::size_t n = 0;
    for_each_segment(topic, [&](std::string_view s) {
      hashes[n] = detail::StringHash{}(s);
      segs[n++] = s;
    });
    const std::size_t first = out.size();
    MatchContext ctx{std::span<const std::string_view>(segs.data(), n), std::span<const std::size_t>(hashes.data(), n),
                     out, {}, 0};
    {
      const Shard& shard = shards_[hashes[0] % literal_shard_count()];
      std::shared_lock lock(shard.mutex);
      walk(&shard.root, 0, ctx);
    }
    if (shards_.size() > 1) {
      const Shard& wild = shards_.back();
      std::shared_lock lock(wild.mutex);
      walk(&wild.root, 0, ctx);
    }
    // Several paths (two patterns of one subscriber, or repeated `#`) can reach one id.
    std::sort(out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
    out.erase(std::unique(out.begin() + static_cast<std::ptrdiff_t>(first), out.end()), out.end());
  }

  std::vector<SubscriberId> match(std::string_view topic) const {
    std::vector<SubscriberId> out;
    match(topic, out);
    return out;
  }

  /// Number of (pattern, id) pairs held.
  std::size_t size() const {
    std::size_t total = 0;
    for (const Shard& s : shards_) {
      std::shared_lock lock(s.mutex);
      total += s.pairs;
    }
    return total;
  }

 private:
  static constexpr std::size_t kMaxSegments = kMaxNameLength / 2 + 1;
  using Segments = std::array<std::string_view, kMaxSegments>;

  struct alignas(128) Shard {  // at least its lock's alignment (clang rejects less)
    mutable detail::ReaderBiasedLock mutex;
    detail::TrieNode root;
    std::size_t pairs = 0;
  };

  struct MatchContext {
    std::span<const std::string_view> segs;
    std::span<const std::size_t> hashes;
    std::vector<SubscriberId>& out;
    // (multi node, position) states already expanded: bounds work when a pattern holds
    // several `#` that could absorb the same segments in many ways. Inline for the common
    // case, so a match allocates nothing but its output.
    std::array<std::pair<const detail::TrieNode*, std::size_t>, 32> multi_seen_inline;
    std::size_t multi_seen_count;
    std::vector<std::pair<const detail::TrieNode*, std::size_t>> multi_seen_overflow{};

    bool mark_multi(const detail::TrieNode* node, std::size_t pos) {
      const auto state = std::make_pair(node, pos);
      const std::size_t inline_n = std::min(multi_seen_count, multi_seen_inline.size());
      for (std::size_t i = 0; i < inline_n; ++i)
        if (multi_seen_inline[i] == state) return false;
      for (const auto& s : multi_seen_overflow)
        if (s == state) return false;
      if (multi_seen_count < multi_seen_inline.size()) multi_seen_inline[multi_seen_count] = state;
      else multi_seen_overflow.push_back(state);
      ++multi_seen_count;
      return true;
    }
  };

  // Splits a validated pattern; `**` becomes `#` and consecutive multi-wildcards collapse
  // into one (`#.#` matches exactly what `#` matches).
  static std::size_t split_pattern(std::string_view pattern, Segments& segs) {
    std::size_t n = 0;
    for_each_segment(pattern, [&](std::string_view s) {
      if (is_multi_wildcard(s)) {
        if (n > 0 && segs[n - 1] == "#") return;
        s = "#";
      }
      segs[n++] = s;
    });
    return n;
  }

  std::size_t literal_shard_count() const noexcept { return shards_.size() == 1 ? 1 : shards_.size() - 1; }

  Shard& shard_for_pattern(std::string_view first) {
    if (shards_.size() > 1 && (first == "*" || first == "#")) return shards_.back();
    return shards_[detail::StringHash{}(first) % literal_shard_count()];
  }

  static detail::TrieNode* child_for_insert(detail::TrieNode& node, std::string_view seg) {
    std::unique_ptr<detail::TrieNode>* slot;
    if (seg == "*") {
      slot = &node.star;
    } else if (seg == "#") {
      slot = &node.multi;
    } else {
      const std::size_t h = detail::StringHash{}(seg);
      auto it = node.children.find(detail::HashedKeyRef<std::string_view>{h, seg});
      if (it == node.children.end())
        it = node.children.emplace(detail::HashedKey<std::string>{h, std::string(seg)}, nullptr).first;
      slot = &it->second;
    }
    if (!*slot) *slot = std::make_unique<detail::TrieNode>();
    return slot->get();
  }

  static detail::TrieNode* child_for_lookup(detail::TrieNode& node, std::string_view seg) {
    if (seg == "*") return node.star.get();
    if (seg == "#") return node.multi.get();
    auto it = node.children.find(detail::HashedKeyRef<std::string_view>{detail::StringHash{}(seg), seg});
    return it == node.children.end() ? nullptr : it->second.get();
  }

  static void erase_child(detail::TrieNode& node, std::string_view seg) {
    if (seg == "*") {
      node.star.reset();
    } else if (seg == "#") {
      node.multi.reset();
    } else if (auto it = node.children.find(detail::HashedKeyRef<std::string_view>{detail::StringHash{}(seg), seg});
               it != node.children.end()) {
      node.children.erase(it);
    }
  }

  // Continues matching at `node` having consumed `pos` topic segments.
  static void walk(const detail::TrieNode* node, std::size_t pos, MatchContext& ctx) {
    if (pos == ctx.segs.size()) {
      ctx.out.insert(ctx.out.end(), node->subscribers.begin(), node->subscribers.end());
      if (node->multi) enter_multi(node->multi.get(), pos, ctx);  // `#` matching zero segments
      return;
    }
    if (!node->children.empty()) {
      auto it = node->children.find(detail::HashedKeyRef<std::string_view>{ctx.hashes[pos], ctx.segs[pos]});
      if (it != node->children.end()) walk(it->second.get(), pos + 1, ctx);
    }
    if (node->star) walk(node->star.get(), pos + 1, ctx);
    if (node->multi) enter_multi(node->multi.get(), pos, ctx);
  }

  // `multi` is a `#` node entered at `pos`: it may absorb any number of further segments.
  static void enter_multi(const detail::TrieNode* multi, std::size_t pos, MatchContext& ctx) {
    for (std::size_t p = pos; p <= ctx.segs.size(); ++p) {
      // Once (multi, p) was expanded, every later p was expanded by that same loop.
      if (!ctx.mark_multi(multi, p)) return;
      walk(multi, p, ctx);
    }
  }

  std::vector<Shard> shards_;
};

}  // namespace macula::core
