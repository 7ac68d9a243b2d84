#include "settings.hpp"

#include <toml++/toml.h>

#include <cstdlib>
#include <sstream>

namespace macula_cli {

namespace {

// "realm-secret" and "realm_secret" name the same option: TOML users write either.
std::string option_key(std::string key) {
  for (auto& ch : key)
    if (ch == '_') ch = '-';
  return key;
}

CLI::Option* find_option(const Command& c, const std::string& key) {
  for (CLI::Option* o : c.app->get_options()) {
    for (const auto& name : o->get_lnames())
      if (name == key) return o;
  }
  return nullptr;
}

std::string where(const std::string& path, const toml::node& n, const std::string& table, const std::string& key) {
  std::ostringstream s;
  s << path << ":" << n.source().begin.line << ": " << (table.empty() ? "" : "[" + table + "] ") << key;
  return s.str();
}

// A TOML value as the strings CLI11 parses, scalars as one and arrays element by element,
// of the type the option takes: a boolean for a flag, an integer for a number, a string for
// text (so `realm-secret = true` is an error, not the secret "true").
std::vector<std::string> as_results(const CLI::Option* o, const toml::node& n, const std::string& at) {
  const std::string type = o->get_type_name();
  const bool flag = o->get_expected_max() == 0;
  const bool integer = !flag && (type.starts_with("INT") || type.starts_with("UINT"));
  const char* wanted = flag ? "true or false" : integer ? "a whole number" : "a string";
  std::vector<std::string> out;
  auto scalar = [&](const toml::node& v) {
    if (auto b = v.as_boolean(); b && flag) out.push_back(b->get() ? "true" : "false");
    else if (auto i = v.as_integer(); i && integer) out.push_back(std::to_string(i->get()));
    else if (auto s = v.as_string(); s && !flag && !integer) out.push_back(s->get());
    else throw CLI::ConversionError(at + ": expected " + wanted);
  };
  if (auto arr = n.as_array()) {
    if (o->get_expected_max() <= 1) throw CLI::ConversionError(at + ": takes one value, not a list");
    for (const auto& v : *arr) scalar(v);
  } else {
    scalar(n);
  }
  return out;
}

void set(Command& c, CLI::Option* o, std::vector<std::string> results, Origin origin, const std::string& what) {
  try {
    for (auto& r : results) o->add_result(r);
    o->run_callback();
  } catch (const CLI::ParseError& e) {
    // CLI11 names the option; say where the value came from.
    throw CLI::ValidationError(what + ": " + e.what());
  }
  c.origins[o] = origin;
}

}  // namespace

void apply_settings(Command& global, Command* selected, const std::vector<Command*>& all,
                    const std::string& config_path) {
  // What the command line set.
  for (Command* c : {&global, selected}) {
    if (!c) continue;
    for (CLI::Option* o : c->app->get_options())
      if (o->count() > 0) c->origins[o] = Origin::flag;
  }
  // The environment, for options the command line left unset.
  for (Command* c : {&global, selected}) {
    if (!c) continue;
    for (auto& [o, variable] : c->env) {
      if (o->count() > 0) continue;
      const char* v = std::getenv(variable.c_str());
      if (v && *v) set(*c, o, {v}, Origin::env, variable);
    }
  }
  if (config_path.empty()) return;
  toml::table file;
  try {
    file = toml::parse_file(config_path);
  } catch (const toml::parse_error& e) {
    std::ostringstream s;
    s << config_path;
    if (e.source().begin.line) s << ":" << e.source().begin.line;
    s << ": " << e.description();
    throw CLI::FileError(s.str());
  }
  // Every table is applied, the other commands' too: their options are never used, and
  // applying is what checks each value's type and range.
  auto apply = [&](Command& c, const toml::table& table, const std::string& table_name, bool top_level) {
    for (const auto& [k, v] : table) {
      if (top_level && v.is_table()) continue;
      const std::string key = option_key(std::string(k.str()));
      const std::string at = where(config_path, v, table_name, std::string(k.str()));
      CLI::Option* o = find_option(c, key);
      if (!o || key == "config" || key == "help" || key == "version")
        throw CLI::ValidationError(at + ": not a setting of " +
                                   (table_name.empty() ? std::string("macula (top level)") : "'macula " + table_name + "'"));
      if (o->count() == 0) set(c, o, as_results(o, v, at), Origin::config, at);
    }
  };
  apply(global, file, "", true);
  for (const auto& [k, v] : file) {
    const auto* t = v.as_table();
    if (!t) continue;
    const std::string name(k.str());
    Command* target = nullptr;
    for (Command* c : all)
      if (c->app->get_name() == name) target = c;
    if (!target) throw CLI::ValidationError(where(config_path, v, "", "[" + name + "]") + ": not a command");
    apply(*target, *t, name, false);
  }
}

}  // namespace macula_cli
