#include <catch2/catch.hpp>

#include "macula/error.hpp"
#include "macula/names.hpp"

using macula::errc;

TEST_CASE("topics: valid and invalid", "[names]") {
  CHECK_FALSE(macula::validate_topic("sensors.temp"));
  CHECK_FALSE(macula::validate_topic("a"));
  CHECK_FALSE(macula::validate_topic("A-b_c.0-9"));
  CHECK_FALSE(macula::validate_topic("ab*.c#"));  // wildcard inside a longer segment is literal
  CHECK(macula::validate_topic("") == errc::name_empty);
  CHECK(macula::validate_topic(".a") == errc::name_empty_segment);
  CHECK(macula::validate_topic("a.") == errc::name_empty_segment);
  CHECK(macula::validate_topic("a..b") == errc::name_empty_segment);
  CHECK(macula::validate_topic("a b") == errc::name_invalid_character);
  CHECK(macula::validate_topic("a/b") == errc::name_invalid_character);
  CHECK(macula::validate_topic(std::string_view("a\0b", 3)) == errc::name_invalid_character);
  CHECK(macula::validate_topic("caf\xc3\xa9") == errc::name_invalid_character);
  CHECK(macula::validate_topic("a.*") == errc::name_wildcard_not_allowed);
  CHECK(macula::validate_topic("#") == errc::name_wildcard_not_allowed);
  CHECK(macula::validate_topic("a.**.b") == errc::name_wildcard_not_allowed);
  CHECK_FALSE(macula::validate_topic(std::string(256, 'a')));
  CHECK(macula::validate_topic(std::string(257, 'a')) == errc::name_too_long);
}

TEST_CASE("patterns allow whole-segment wildcards anywhere", "[names]") {
  for (const char* p : {"a.*", "*", "#", "**", "a.#.b", "#.a", "*.*.#", "a.**", "ab*.c"})
    CHECK_FALSE(macula::validate_pattern(p));
  CHECK(macula::validate_pattern("a..#") == errc::name_empty_segment);
  CHECK(macula::validate_pattern("a.+") == errc::name_invalid_character);
}

TEST_CASE("procedures follow topic rules", "[names]") {
  CHECK_FALSE(macula::validate_procedure("math.add"));
  CHECK(macula::validate_procedure("math.*") == errc::name_wildcard_not_allowed);
  CHECK(macula::validate_procedure("") == errc::name_empty);
}

TEST_CASE("realms are trimmed and lower-cased", "[names]") {
  std::error_code ec;
  CHECK(macula::normalize_realm("  Macula.Default\t", ec) == "macula.default");
  CHECK_FALSE(ec);
  CHECK(macula::normalize_realm("   ", ec).empty());
  CHECK(ec == errc::name_empty);
  CHECK(macula::normalize_realm("a..b", ec).empty());
  CHECK(ec == errc::name_empty_segment);
  CHECK(macula::normalize_realm("a*", ec).empty());
  CHECK(ec == errc::name_invalid_character);
  CHECK(macula::normalize_realm("*", ec).empty());
  CHECK(ec == errc::name_wildcard_not_allowed);
}

TEST_CASE("errors name the offending name and say what is wrong", "[names]") {
  try {
    macula::check_topic("a..b");
    FAIL("no exception");
  } catch (const std::system_error& e) {
    const std::string what = e.what();
    CHECK(what.find("topic \"a..b\"") != std::string::npos);
    CHECK(what.find("empty segment") != std::string::npos);
    CHECK(e.code() == errc::name_empty_segment);
  }
  CHECK_THROWS_AS(macula::normalize_realm(""), std::system_error);
  CHECK_THROWS_AS(macula::check_pattern("a..*"), std::system_error);
  CHECK_THROWS_AS(macula::check_procedure("x.#"), std::system_error);
  CHECK_NOTHROW(macula::check_pattern("x.#"));
  CHECK(std::string(macula::error_category().name()) == "macula");
  CHECK(macula::make_error_code(errc::registry_full).message().find("maximum") != std::string::npos);
}

TEST_CASE("reference matcher: the SEED_FINDINGS examples", "[names][match]") {
  using macula::pattern_matches;
  CHECK(pattern_matches("sensors.#.temp", "sensors.temp"));
  CHECK(pattern_matches("sensors.#.temp", "sensors.a.b.temp"));
  CHECK_FALSE(pattern_matches("sensors.#.temp", "sensors.a.b.hum"));
  CHECK(pattern_matches("a.#", "a"));
  CHECK(pattern_matches("a.#", "a.b.c"));
  CHECK(pattern_matches("a.#.m", "a.m"));
  CHECK(pattern_matches("a.*", "a.b"));
  CHECK_FALSE(pattern_matches("a.*", "a"));
  CHECK_FALSE(pattern_matches("a.*", "a.b.c"));
  CHECK(pattern_matches("a.**", "a.b.c"));
  CHECK(pattern_matches("**", "x"));
  CHECK(pattern_matches("#", "x.y"));
  CHECK(pattern_matches("ab*", "ab*"));
  CHECK_FALSE(pattern_matches("ab*", "abc"));
  CHECK_FALSE(pattern_matches("Sensors.temp", "sensors.temp"));  // case-sensitive
  CHECK(pattern_matches("#.#.x", "x"));
  CHECK(pattern_matches("*.#.*", "a.b"));
  CHECK_FALSE(pattern_matches("*.#.*", "a"));
}

TEST_CASE("canonical pattern spelling", "[names]") {
  CHECK(macula::canonical_pattern("a.**") == "a.#");
  CHECK(macula::canonical_pattern("a.#.#.b") == "a.#.b");
  CHECK(macula::canonical_pattern("**.#.**") == "#");
  CHECK(macula::canonical_pattern("a.*.b") == "a.*.b");
  CHECK(macula::canonical_pattern("ab**.c") == "ab**.c");  // not a whole-segment wildcard
}
