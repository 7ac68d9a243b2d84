// Names on the mesh: topics, subscription patterns, procedure names and realms.
//
// A name is dot-separated segments; each segment is non-empty and made of
// `A-Z a-z 0-9 _ -`. Matching is case-sensitive. In a subscription *pattern* a segment that
// is exactly `*` matches one topic segment and a segment that is exactly `#` (or its alias
// `**`) matches zero or more segments, anywhere in the pattern: `sensors.#.temp` matches
// `sensors.temp` and `sensors.a.b.temp`; `a.#` matches `a`. A `*` or `#` *inside* a longer
// segment (`ab*`) is a literal character; such segments are allowed in topics and patterns
// alike so that the literal can be matched. Realms follow the segment rules after being
// trimmed of white space and lower-cased.
//
// All functions are pure, thread-safe and allocation-free except where they return a string.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <system_error>

namespace macula {

/// Upper bound on the byte length of any topic, pattern, procedure or realm name. It bounds
/// trie depth and frame sizes; 256 is the old system's documented policy.
inline constexpr std::size_t kMaxNameLength = 256;

/// Checks a concrete topic (what a publisher publishes to). Whole-segment wildcards are
/// refused with errc::name_wildcard_not_allowed. Returns an empty error_code when valid.
std::error_code validate_topic(std::string_view topic) noexcept;

/// Checks a subscription pattern (`*`, `#`, `**` allowed as whole segments).
std::error_code validate_pattern(std::string_view pattern) noexcept;

/// Checks a procedure name (same rules as a topic; procedures match exactly).
std::error_code validate_procedure(std::string_view procedure) noexcept;

/// Trims ASCII white space, lower-cases, then validates as a topic. On error `ec` is set
/// and the result is empty.
std::string normalize_realm(std::string_view realm, std::error_code& ec);
/// Throwing form: std::system_error whose what() names the realm and the problem.
std::string normalize_realm(std::string_view realm);

/// Throwing checks for code paths that prefer exceptions (constructors of user-facing
/// objects). what() reads e.g. `topic "a..b": name has an empty segment (...)`.
void check_topic(std::string_view topic);
void check_pattern(std::string_view pattern);
void check_procedure(std::string_view procedure);

/// `*`
constexpr bool is_single_wildcard(std::string_view segment) noexcept { return segment == "*"; }
/// `#` or its alias `**`
constexpr bool is_multi_wildcard(std::string_view segment) noexcept {
  return segment == "#" || segment == "**";
}

/// Calls `f(segment)` for each dot-separated segment of a *validated* name.
template <class F>
constexpr void for_each_segment(std::string_view name, F&& f) {
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) {
      f(name.substr(start));
      return;
    }
    f(name.substr(start, dot - start));
    start = dot + 1;
  }
}

/// The canonical spelling of a valid pattern: `**` becomes `#` and consecutive `#` collapse
/// (`a.#.#.b` -> `a.#.b`). Two patterns match the same topics iff their canonical forms are
/// equal or differ only in ways this does not cover; subscription tables key on this form.
std::string canonical_pattern(std::string_view pattern);

/// Straightforward matcher of one validated pattern against one validated topic (dynamic
/// programming over segment positions, O(pattern segments × topic segments)). It is the
/// reference the PatternTrie is tested against, and handy for checking a single pair.
bool pattern_matches(std::string_view pattern, std::string_view topic);

}  // namespace macula
