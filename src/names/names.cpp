#include "macula/names.hpp"

#include <string>
#include <system_error>
#include <vector>

#include "macula/error.hpp"

namespace macula {
namespace {

constexpr bool is_segment_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '-';
}

// One pass over the bytes; `allow_wildcards` says whether whole-segment `*`/`#`/`**` may
// appear. `*` and `#` inside a longer segment are literal characters in every kind of name.
std::error_code validate(std::string_view name, bool allow_wildcards) noexcept {
  if (name.empty()) return errc::name_empty;
  if (name.size() > kMaxNameLength) return errc::name_too_long;
  std::size_t seg_start = 0;
  for (std::size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '.') {
      const std::string_view seg = name.substr(seg_start, i - seg_start);
      if (seg.empty()) return errc::name_empty_segment;
      if (!allow_wildcards && (is_single_wildcard(seg) || is_multi_wildcard(seg)))
        return errc::name_wildcard_not_allowed;
      seg_start = i + 1;
      continue;
    }
    const char c = name[i];
    if (!is_segment_char(c) && c != '*' && c != '#') return errc::name_invalid_character;
  }
  return {};
}

[[noreturn]] void throw_name_error(std::error_code ec, const char* kind, std::string_view name) {
  std::string what = kind;
  what += " \"";
  // Bound what we echo back: a hostile name must not make an unbounded message.
  what.append(name.substr(0, 80));
  if (name.size() > 80) what += "...";
  what += '"';
  throw std::system_error(ec, what);
}

std::vector<std::string_view> split(std::string_view name) {
  std::vector<std::string_view> out;
  for_each_segment(name, [&](std::string_view s) { out.push_back(s); });
  return out;
}

}  // namespace

std::error_code validate_topic(std::string_view topic) noexcept { return validate(topic, false); }
std::error_code validate_pattern(std::string_view pattern) noexcept { return validate(pattern, true); }
std::error_code validate_procedure(std::string_view procedure) noexcept {
  return validate(procedure, false);
}

std::string normalize_realm(std::string_view realm, std::error_code& ec) {
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  while (!realm.empty() && is_space(realm.front())) realm.remove_prefix(1);
  while (!realm.empty() && is_space(realm.back())) realm.remove_suffix(1);
  std::string out(realm);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  ec = validate(out, false);
  if (!ec) {
    // Wildcard characters are literal inside topic segments, but a realm is an identifier:
    // refuse them outright so `a*` and `a` can never be confused by an operator.
    if (out.find_first_of("*#") != std::string::npos) ec = errc::name_invalid_character;
  }
  if (ec) out.clear();
  return out;
}

std::string normalize_realm(std::string_view realm) {
  std::error_code ec;
  std::string out = normalize_realm(realm, ec);
  if (ec) throw_name_error(ec, "realm", realm);
  return out;
}

void check_topic(std::string_view topic) {
  if (auto ec = validate_topic(topic)) throw_name_error(ec, "topic", topic);
}
void check_pattern(std::string_view pattern) {
  if (auto ec = validate_pattern(pattern)) throw_name_error(ec, "pattern", pattern);
}
void check_procedure(std::string_view procedure) {
  if (auto ec = validate_procedure(procedure)) throw_name_error(ec, "procedure", procedure);
}

std::string canonical_pattern(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size());
  bool last_multi = false;
  for_each_segment(pattern, [&](std::string_view seg) {
    const bool multi = is_multi_wildcard(seg);
    if (multi && last_multi) return;
    if (!out.empty()) out += '.';
    out += multi ? std::string_view("#") : seg;
    last_multi = multi;
  });
  return out;
}

bool pattern_matches(std::string_view pattern, std::string_view topic) {
  const auto p = split(pattern);
  const auto t = split(topic);
  // can[i][j]: pattern suffix from i matches topic suffix from j.
  const std::size_t P = p.size(), T = t.size();
  std::vector<char> can((P + 1) * (T + 1), 0);
  auto at = [&](std::size_t i, std::size_t j) -> char& { return can[i * (T + 1) + j]; };
  at(P, T) = 1;
  for (std::size_t ii = P; ii-- > 0;) {
    for (std::size_t jj = T + 1; jj-- > 0;) {
      bool ok = false;
      if (is_multi_wildcard(p[ii])) {
        ok = at(ii + 1, jj) || (jj < T && at(ii, jj + 1));
      } else if (jj < T) {
        ok = (is_single_wildcard(p[ii]) || p[ii] == t[jj]) && at(ii + 1, jj + 1);
      }
      at(ii, jj) = ok ? 1 : 0;
    }
  }
  return at(0, 0) != 0;
}

}  // namespace macula
