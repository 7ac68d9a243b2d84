#include <cstdio>

#include <macula/core/pattern_trie.hpp>
#include <macula/names.hpp>

int main() {
  macula::core::PatternTrie trie;
  if (trie.add("consumer.#", 7)) return 1;
  const auto ids = trie.match("consumer.installed.ok");
  if (ids.size() != 1 || ids[0] != 7) return 2;
  if (!macula::validate_topic("bad..topic")) return 3;
  std::printf("consumer: find_package(Macula) works\n");
  return 0;
}
