#include <catch2/catch.hpp>

#include <map>
#include <vector>

#include "macula/core/provider_selector.hpp"

using macula::core::ExclusionSet;
using macula::core::ProviderInfo;
using macula::core::ProviderSelector;
using macula::core::SelectionStrategy;

namespace {
std::vector<ProviderInfo> providers(std::size_t n, std::vector<std::size_t> local = {}) {
  std::vector<ProviderInfo> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i].id = 100 + i;
  for (auto i : local) v[i].local = true;
  return v;
}
}  // namespace

TEST_CASE("selector: round robin cycles through every provider", "[selector]") {
  ProviderSelector s(providers(5));
  std::vector<std::size_t> seen;
  for (int i = 0; i < 10; ++i) seen.push_back(*s.select(SelectionStrategy::round_robin));
  CHECK(seen == std::vector<std::size_t>{0, 1, 2, 3, 4, 0, 1, 2, 3, 4});
}

TEST_CASE("selector: exclusion is honoured for every strategy", "[selector][failover]") {
  for (auto strategy : {SelectionStrategy::round_robin, SelectionStrategy::random, SelectionStrategy::local_first,
                        SelectionStrategy::least_outstanding}) {
    ProviderSelector s(providers(4, {1}));
    ExclusionSet tried;
    std::vector<std::size_t> order;
    for (int attempt = 0; attempt < 4; ++attempt) {
      auto pick = s.select(strategy, tried);
      REQUIRE(pick);
      CHECK_FALSE(tried.contains(*pick));
      tried.add(*pick);
      order.push_back(*pick);
    }
    CHECK_FALSE(s.select(strategy, tried));  // all tried: nothing left
    std::sort(order.begin(), order.end());
    CHECK(order == std::vector<std::size_t>{0, 1, 2, 3});
  }
  ProviderSelector empty(providers(0));
  CHECK_FALSE(empty.select(SelectionStrategy::round_robin));
}

TEST_CASE("selector: exclusion sets larger than the inline capacity", "[selector]") {
  ProviderSelector s(providers(20));
  ExclusionSet tried;
  for (std::size_t i = 0; i < 19; ++i) tried.add(i);
  CHECK(tried.size() == 19);
  for (int i = 0; i < 10; ++i) CHECK(s.select(SelectionStrategy::random, tried) == 19u);
}

TEST_CASE("selector: local_first prefers local providers, then falls back", "[selector]") {
  ProviderSelector s(providers(6, {2, 4}));
  std::map<std::size_t, int> count;
  for (int i = 0; i < 100; ++i) ++count[*s.select(SelectionStrategy::local_first)];
  CHECK(count.size() == 2);
  CHECK(count[2] == 50);
  CHECK(count[4] == 50);
  ExclusionSet tried;
  tried.add(2);
  tried.add(4);
  const auto pick = s.select(SelectionStrategy::local_first, tried);
  REQUIRE(pick);
  CHECK((*pick != 2 && *pick != 4));
}

TEST_CASE("selector: least_outstanding avoids busy providers", "[selector]") {
  ProviderSelector s(providers(4));
  for (int i = 0; i < 50; ++i) {
    s.begin_call(0);
    s.begin_call(1);
    s.begin_call(2);
  }
  std::map<std::size_t, int> count;
  for (int i = 0; i < 1000; ++i) ++count[*s.select(SelectionStrategy::least_outstanding)];
  // Provider 3 is idle: it wins every comparison it takes part in (~44% of picks with two
  // independent choices out of four), and the busy ones win only against each other.
  CHECK(count[3] > 350);
  s.end_call(0);
  CHECK(s.outstanding(0) == 49);
}

TEST_CASE("selector: random spreads over all providers", "[selector]") {
  ProviderSelector s(providers(10));
  std::map<std::size_t, int> count;
  for (int i = 0; i < 10'000; ++i) ++count[*s.select(SelectionStrategy::random)];
  CHECK(count.size() == 10);
  for (auto& [k, v] : count) CHECK(v > 700);
}
