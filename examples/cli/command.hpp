// What the `macula` tool's commands share: exit codes, where a setting came from, the client
// options of the commands that talk to a node, and the messages for a node's refusals.
#pragma once

#include <CLI/CLI.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "macula/log.hpp"
#include "macula/message.hpp"
#include "macula/node_client.hpp"

namespace macula_cli {

// Exit codes: scripts tell a missing provider from a refused token without parsing text.
enum Exit : int {
  kOk = 0,
  kFail = 1,
  kUsage = 2,        // a flag, value, config key or combination the tool does not accept
  kNotFound = 3,     // no provider (call), nobody subscribed (pub --qos 1)
  kHandler = 4,      // the remote handler failed
  kTimeout = 5,
  kUnreachable = 6,  // the node's address is malformed, unknown or does not answer
  kRefused = 7,      // client token missing or wrong, client API closed, link refused
};

/// Set by SIGINT/SIGTERM: long-running commands (node, sub) end gracefully.
extern std::atomic<bool> interrupted;

/// Where each option's value came from: the command line beats the environment, which beats
/// the --config file, which beats the built-in default.
enum class Origin { unset, flag, env, config };

/// One command: its CLI11 subcommand, the environment variables its options read, and the
/// origin of each option's value once settings are applied.
struct Command {
  CLI::App* app = nullptr;
  std::map<CLI::Option*, std::string> env;  // option -> the variable it reads
  std::map<const CLI::Option*, Origin> origins;
  Origin origin(const CLI::Option* o) const {
    auto it = origins.find(o);
    return it == origins.end() ? Origin::unset : it->second;
  }
  /// Declares that `o` reads `variable` when the flag is absent (and says so in --help).
  CLI::Option* from_env(CLI::Option* o, const std::string& variable) {
    env[o] = variable;
    o->description(o->get_description() + " (env " + variable + ")");
    return o;
  }
};

/// Options of the commands that talk to a node as a client (pub, call, bench, metrics,
/// health, sub --via-http3).
struct ClientOptions {
  std::string node;
  std::string token;
  std::string realm = "macula.default";
  std::string realm_secret;
  CLI::Option* token_opt = nullptr;
  CLI::Option* secret_opt = nullptr;
  CLI::Option* node_opt = nullptr;
};
void add_client_options(Command& c, ClientOptions& o, bool with_realm = true);

/// The bearer token to send, if any. Within each origin (flag, environment, config file) a
/// token beats a realm secret it could be derived from.
std::optional<std::string> client_token(const Command& c, const ClientOptions& o);

/// Connects to --node; on failure prints one line naming the flag and why, and sets `exit`.
std::unique_ptr<macula::NodeClient> connect_client(const char* command, const Command& c, const ClientOptions& o,
                                                   int& exit);

/// The exit code for a node's HTTP status (-1: no answer).
int exit_for_status(int status);
/// One line on standard error for an answer that is not a success: 401 and 403 say what to
/// pass; anything else shows the node's status and text.
void report(const char* command, bool had_token, int status, std::string_view body);

/// The payload argument: the text itself, or "-" for standard input (read up to one byte past
/// the largest payload a node takes). False, after saying so, when it is larger than that.
bool payload_arg(const char* command, const std::string& text, macula::Bytes& out);

/// "debug", "info", "warn", "error", "off".
macula::LogLevel parse_log_level(const std::string& text);
/// Log lines at the node's level and above, to standard error.
macula::LogSink stderr_log();

/// Accepts a whole number from `min` to `max`; the message says so and quotes the value.
CLI::Validator whole_number(long min, long max);

/// Refuses an empty value given for a secret-bearing option (most likely an unset shell
/// variable, which would otherwise silently mean "no secret"). Returns false after saying so.
bool not_empty_if_given(const char* command, const CLI::Option* o, const std::string& value);

}  // namespace macula_cli
