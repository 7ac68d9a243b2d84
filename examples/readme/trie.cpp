// The README's PatternTrie block as a complete program (check_readme.py keeps them equal).
#include <cstdio>

#include <macula/core/pattern_trie.hpp>

int main() {
macula::core::PatternTrie subs;
subs.add("sensors.#.temp", 1);                     // returns std::error_code for a bad pattern
auto ids = subs.match("sensors.floor1.room2.temp");  // {1}; safe from any thread
  std::printf("matched %zu subscriber(s)\n", ids.size());
  return ids.size() == 1 && ids[0] == 1 ? 0 : 1;
}
