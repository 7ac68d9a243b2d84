#include "command.hpp"

#include <cstdio>
#include <iostream>
#include <iterator>

#include "macula/client_access.hpp"
#include "macula/error.hpp"
#include "macula/limits.hpp"

namespace macula_cli {

std::atomic<bool> interrupted{false};

void add_client_options(Command& c, ClientOptions& o, bool with_realm) {
  o.node_opt = c.from_env(c.app->add_option("--node", o.node, "the node to talk to, HOST:PORT (a host name works)"),
                          "MACULA_NODE");
  o.token_opt = c.from_env(c.app->add_option("--token", o.token, "client token, sent as 'authorization: Bearer T'"),
                           "MACULA_CLIENT_TOKEN");
  if (with_realm) {
    c.app->add_option("--realm", o.realm, "the realm whose secret derives the token")->capture_default_str();
    o.secret_opt = c.from_env(c.app->add_option("--realm-secret", o.realm_secret, "derive the client token from it"),
                              "MACULA_REALM_SECRET");
  }
}

std::optional<std::string> client_token(const Command& c, const ClientOptions& o) {
  const Origin token = c.origin(o.token_opt);
  const Origin secret = o.secret_opt ? c.origin(o.secret_opt) : Origin::unset;
  for (const Origin level : {Origin::flag, Origin::env, Origin::config}) {
    if (token == level) return o.token;
    if (secret == level) return macula::derive_client_token(o.realm, o.realm_secret);
  }
  return std::nullopt;
}

std::unique_ptr<macula::NodeClient> connect_client(const char* command, const Command& c, const ClientOptions& o,
                                                   int& exit) {
  if (o.node.empty()) {
    std::fprintf(stderr, "macula %s: --node HOST:PORT is required (or MACULA_NODE, or 'node' in the config file)\n",
                 command);
    exit = kUsage;
    return nullptr;
  }
  if (!not_empty_if_given(command, o.token_opt, o.token) ||
      (o.secret_opt && !not_empty_if_given(command, o.secret_opt, o.realm_secret))) {
    exit = kUsage;
    return nullptr;
  }
  macula::NodeClientOptions options;
  options.token = client_token(c, o);
  std::error_code ec;
  auto client = macula::NodeClient::connect(o.node, options, ec);
  if (!client) {
    if (ec == macula::errc::address_invalid || ec == macula::errc::address_unresolved)
      std::fprintf(stderr, "macula %s: --node %s: %s\n", command, o.node.c_str(), ec.message().c_str());
    else
      std::fprintf(stderr, "macula %s: cannot reach %s: %s\n", command, o.node.c_str(), ec.message().c_str());
    exit = kUnreachable;
  }
  return client;
}

int exit_for_status(int status) {
  switch (status) {
    case 200: case 202: return kOk;
    case 400: case 413: return kUsage;
    case 401: case 403: return kRefused;
    case 404: return kNotFound;
    case 500: return kHandler;
    case 504: return kTimeout;
    case -1: return kUnreachable;
    default: return kFail;
  }
}

void report(const char* command, bool had_token, int status, std::string_view body) {
  if (status == 401 && !had_token)
    std::fprintf(stderr, "macula %s: the node requires a client token: pass --token or --realm and --realm-secret\n", command);
  else if (status == 401)
    std::fprintf(stderr, "macula %s: the node refused the client token (another realm or secret?)\n", command);
  else if (status == 403)
    std::fprintf(stderr, "macula %s: the node's client API is closed (it runs with --client-access closed)\n", command);
  else if (status == -1)
    std::fprintf(stderr, "macula %s: the node did not answer\n", command);
  else {
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.remove_suffix(1);
    std::fprintf(stderr, "macula %s: %d %.*s\n", command, status, static_cast<int>(body.size()), body.data());
  }
}

bool payload_arg(const char* command, const std::string& text, macula::Bytes& out) {
  if (text != "-") {
    out.assign(text.begin(), text.end());
  } else {
    out.resize(macula::kMaxPayloadBytes + 1);
    std::cin.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(out.size()));
    out.resize(static_cast<std::size_t>(std::cin.gcount()));
  }
  if (out.size() <= macula::kMaxPayloadBytes) return true;
  std::fprintf(stderr, "macula %s: the payload is larger than %zu bytes, the most a node takes\n", command,
               macula::kMaxPayloadBytes);
  return false;
}

macula::LogLevel parse_log_level(const std::string& text) {
  if (text == "debug") return macula::LogLevel::debug;
  if (text == "info") return macula::LogLevel::info;
  if (text == "warn") return macula::LogLevel::warn;
  if (text == "error") return macula::LogLevel::error;
  return macula::LogLevel::off;
}

macula::LogSink stderr_log() {
  return [](macula::LogLevel level, std::string_view component, std::string_view message) {
    std::fprintf(stderr, "%s %.*s: %.*s\n", macula::to_string(level), static_cast<int>(component.size()),
                 component.data(), static_cast<int>(message.size()), message.data());
  };
}

CLI::Validator whole_number(long min, long max) {
  const std::string range = std::to_string(min) + " to " + std::to_string(max);
  return CLI::Validator(
      [min, max, range](std::string& text) -> std::string {
        std::size_t used = 0;
        long v = 0;
        try {
          v = std::stol(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size() || v < min || v > max)
          return "expected a whole number from " + range + ", not '" + text + "'";
        return {};
      },
      "INT in " + range);
}

bool not_empty_if_given(const char* command, const CLI::Option* o, const std::string& value) {
  if (o->count() == 0 || !value.empty()) return true;
  std::fprintf(stderr, "macula %s: %s is empty\n", command, o->get_name().c_str());
  return false;
}

}  // namespace macula_cli
