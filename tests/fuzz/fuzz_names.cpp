// libFuzzer target: the name validators and matchers, which see every topic, pattern,
// procedure and realm that arrives from the network. The input is "pattern\ntopic"; the target
// checks that validation, normalization and the two matchers agree:
//  - a valid topic is a valid pattern and a valid procedure, and matches itself;
//  - normalize_realm is idempotent;
//  - pattern_matches (the reference) and PatternTrie::match (the index nodes route by) agree.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "macula/core/pattern_trie.hpp"
#include "macula/names.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto nl = in.find('\n');
  const std::string_view pattern = in.substr(0, nl);
  const std::string_view topic = nl == std::string_view::npos ? in : in.substr(nl + 1);

  for (const std::string_view name : {pattern, topic}) {
    if (!macula::validate_topic(name)) {
      if (macula::validate_pattern(name) || macula::validate_procedure(name)) std::abort();
      if (!macula::pattern_matches(name, name)) std::abort();
    }
    std::error_code ec;
    const std::string realm = macula::normalize_realm(name, ec);
    if (!ec) {
      std::error_code again;
      if (macula::normalize_realm(realm, again) != realm || again) std::abort();
    }
  }

  const bool pattern_ok = !macula::validate_pattern(pattern);
  const bool topic_ok = !macula::validate_topic(topic);
  macula::core::PatternTrie trie(4);
  if (trie.add(pattern, 7) ? pattern_ok : !pattern_ok) std::abort();  // add() validates the same way
  const auto found = trie.match(topic);
  const bool trie_says = !found.empty();
  if (pattern_ok && topic_ok && trie_says != macula::pattern_matches(pattern, topic)) std::abort();
  if (!topic_ok && trie_says) std::abort();  // an invalid topic matches nothing
  return 0;
}
