#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "macula/core/pattern_trie.hpp"
#include "macula/error.hpp"
#include "macula/names.hpp"

using macula::core::PatternTrie;
using macula::core::SubscriberId;
using Ids = std::vector<SubscriberId>;

TEST_CASE("trie: the SEED_FINDINGS examples", "[trie]") {
  PatternTrie t;
  REQUIRE_FALSE(t.add("sensors.#.temp", 1));
  REQUIRE_FALSE(t.add("a.#", 2));
  REQUIRE_FALSE(t.add("a.*", 3));
  REQUIRE_FALSE(t.add("a.**", 4));
  REQUIRE_FALSE(t.add("ab*", 5));
  REQUIRE_FALSE(t.add("#", 6));
  REQUIRE_FALSE(t.add("a.#.m", 7));
  CHECK(t.match("sensors.temp") == Ids{1, 6});
  CHECK(t.match("sensors.a.b.temp") == Ids{1, 6});
  CHECK(t.match("a") == Ids{2, 4, 6});
  CHECK(t.match("a.b") == Ids{2, 3, 4, 6});
  CHECK(t.match("a.m") == Ids{2, 3, 4, 6, 7});
  CHECK(t.match("a.x.y.m") == Ids{2, 4, 6, 7});
  CHECK(t.match("ab*") == Ids{5, 6});
  CHECK(t.match("abc") == Ids{6});
  CHECK(t.match("A") == Ids{6});  // case-sensitive
}

TEST_CASE("trie: add is idempotent, remove prunes, invalid input is refused", "[trie]") {
  PatternTrie t;
  CHECK_FALSE(t.add("x.y", 1));
  CHECK_FALSE(t.add("x.y", 1));
  CHECK(t.size() == 1);
  CHECK_FALSE(t.add("x.y", 2));
  CHECK_FALSE(t.add("x.*", 1));  // second pattern of subscriber 1 also matches x.y
  CHECK(t.match("x.y") == Ids{1, 2});  // 1 reported once
  CHECK(t.remove("x.y", 1));
  CHECK_FALSE(t.remove("x.y", 1));
  CHECK(t.match("x.y") == Ids{1, 2});  // still via x.*
  CHECK(t.remove("x.*", 1));
  CHECK(t.match("x.y") == Ids{2});
  CHECK(t.remove("x.y", 2));
  CHECK(t.size() == 0);
  CHECK(t.match("x.y").empty());
  CHECK(t.add("a..b", 1) == macula::errc::name_empty_segment);
  CHECK(t.match("a..b").empty());
  CHECK_FALSE(t.remove("a..b", 1));
  // `**` and `#` are the same wildcard; `#.#` is stored as `#`.
  CHECK_FALSE(t.add("q.**", 9));
  CHECK(t.remove("q.#", 9));
  CHECK_FALSE(t.add("q.#.#.z", 9));
  CHECK(t.match("q.z") == Ids{9});
  CHECK(t.remove("q.#.z", 9));
  CHECK(t.size() == 0);
}

TEST_CASE("trie: many `#` do not blow up and still match once", "[trie]") {
  PatternTrie t;
  REQUIRE_FALSE(t.add("#.a.#.a.#.a.#.a.#", 1));
  REQUIRE_FALSE(t.add("*.#.*.#.*.#.*", 2));
  std::string topic = "a";
  for (int i = 0; i < 100; ++i) topic += ".a";  // 101 segments, 202 bytes
  CHECK(t.match(topic) == Ids{1, 2});
}

namespace {

std::string random_name(std::mt19937& rng, bool pattern) {
  static const char* lits[] = {"a", "b", "c"};
  std::uniform_int_distribution<int> len(1, pattern ? 5 : 6);
  std::uniform_int_distribution<int> pick(0, 9);
  const int n = len(rng);
  std::string s;
  for (int i = 0; i < n; ++i) {
    if (i) s += '.';
    const int r = pick(rng);
    if (pattern && r == 0) s += '*';
    else if (pattern && r == 1) s += '#';
    else if (pattern && r == 2 && (rng() & 3) == 0) s += "**";
    else s += lits[static_cast<std::size_t>(r) % 3];
  }
  return s;
}

std::string canonical(const std::string& pattern) { return macula::canonical_pattern(pattern); }

}  // namespace

TEST_CASE("trie: property test against the reference matcher (>= 100,000 pairs)", "[trie][property]") {
  std::size_t pairs = 0, positives = 0;
  for (unsigned seed = 1; seed <= 8; ++seed) {
    std::mt19937 rng(seed);
    PatternTrie t(4);
    // 250 patterns, spread over 60 subscribers so that several patterns share an id.
    std::vector<std::pair<std::string, SubscriberId>> subs;
    for (int i = 0; i < 250; ++i) {
      const std::string p = random_name(rng, true);
      const SubscriberId id = rng() % 60;
      REQUIRE_FALSE(t.add(p, id));
      subs.emplace_back(p, id);
    }
    // Distinct pairs only (adding a pair twice keeps one), then remove a tenth again to
    // exercise pruning in the same run.
    // `**` is `#`, and `#.#` is `#`: those spellings are one pair in the trie.
    auto key = [](const std::pair<std::string, SubscriberId>& s) { return std::make_pair(canonical(s.first), s.second); };
    std::sort(subs.begin(), subs.end(), [&](const auto& x, const auto& y) { return key(x) < key(y); });
    subs.erase(std::unique(subs.begin(), subs.end(), [&](const auto& x, const auto& y) { return key(x) == key(y); }),
               subs.end());
    std::shuffle(subs.begin(), subs.end(), rng);
    for (int i = 0; i < 25; ++i) {
      CHECK(t.remove(subs.back().first, subs.back().second));
      subs.pop_back();
    }
    CHECK(t.size() == subs.size());
    for (int i = 0; i < 60; ++i) {
      const std::string topic = random_name(rng, false);
      std::set<SubscriberId> expected;
      for (const auto& [p, id] : subs) {
        ++pairs;
        if (macula::pattern_matches(p, topic)) expected.insert(id);
      }
      positives += expected.size();
      const Ids got = t.match(topic);
      REQUIRE(got == Ids(expected.begin(), expected.end()));
    }
  }
  CHECK(pairs >= 100'000);
  CHECK(positives > 1000);  // the generator produces real matches, not only misses
}

TEST_CASE("trie: concurrent matching while others add and remove", "[trie][concurrency]") {
  PatternTrie t;
  // Stable subscriptions every reader must always see.
  REQUIRE_FALSE(t.add("stable.#", 1));
  REQUIRE_FALSE(t.add("*.x", 2));
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> checks{0};
  std::atomic<bool> wrong{false};
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      Ids out;
      while (!stop.load()) {
        out.clear();
        t.match("stable.x", out);
        if (out.size() < 2 || out[0] != 1 || out[1] != 2) wrong = true;
        if (!std::is_sorted(out.begin(), out.end()) || std::adjacent_find(out.begin(), out.end()) != out.end())
          wrong = true;
        checks.fetch_add(1);
      }
    });
  }
  threads.emplace_back([&] {
    for (int round = 0; round < 2000; ++round) {
      const SubscriberId id = 100 + static_cast<SubscriberId>(round % 50);
      const std::string p = (round % 3 == 0) ? "stable.*" : (round % 3 == 1) ? "#.x" : "stable.x";
      (void)t.add(p, id);
      (void)t.remove(p, id);
    }
    // The readers may not have been scheduled yet on a loaded machine: let them check once.
    while (checks.load() == 0) std::this_thread::yield();
    stop = true;
  });
  for (auto& th : threads) th.join();
  CHECK_FALSE(wrong.load());
  CHECK(checks.load() > 0);
  CHECK(t.size() == 2);
}
