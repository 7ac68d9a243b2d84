// macula: run a node, publish, subscribe, call, benchmark and make credentials from the
// command line. `macula --help` lists the commands, `macula <command> --help` their flags.
//
// pub, call, bench, metrics and health talk to a node as an HTTP/3 client (NodeClient), so
// the node itself publishes or calls across its links; sub joins the realm as a short-lived
// leaf node linked to the given one or, with --via-http3, stays a client the node streams
// messages to. Settings come from flags, then environment variables, then the --config TOML
// file, then the defaults (docs/OPERATIONS.md, "The command-line tool").
#include <csignal>
#include <cstdio>
#include <cstring>

#include "commands.hpp"
#include "settings.hpp"

#ifndef MACULA_VERSION_STRING
#define MACULA_VERSION_STRING "unknown"
#endif

namespace {

extern "C" void on_signal(int) { macula_cli::interrupted = true; }

const char* kExitCodes =
    "Settings: a flag beats its environment variable, which beats --config FILE (TOML: top-level\n"
    "log-level, a [node], [pub], [sub] ... table per command with its flags' names as keys), which\n"
    "beats the default.\n"
    "Exit codes: 0 ok, 1 failure, 2 usage (unknown flag or command, bad value, bad config), 3 no provider\n"
    "or no subscriber, 4 handler error, 5 timeout, 6 node unreachable or address invalid, 7 refused\n"
    "(client token missing or wrong, client API closed, link refused: another realm or secret).";

}  // namespace

int main(int argc, char** argv) {
  using namespace macula_cli;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  CLI::App app{"macula: run a libmacula node, and publish, subscribe and call through one."};
  app.name("macula");
  app.footer(kExitCodes);
  app.set_version_flag("--version", std::string("macula ") + MACULA_VERSION_STRING);
  app.require_subcommand(1);

  Command global;
  global.app = &app;
  std::string config_path, log_level;
  auto* config_opt = global.from_env(app.add_option("--config", config_path, "read settings from this TOML file"),
                                     "MACULA_CONFIG");
  global.from_env(app.add_option("--log-level", log_level,
                                 "debug, info, warn, error or off (default: info for node, error for sub)")
                      ->check(CLI::IsMember({"debug", "info", "warn", "error", "off"})),
                  "MACULA_LOG_LEVEL");

  NodeCommand node;
  RequestCommand pub, call, metrics, health;
  BenchCommand bench;
  SubCommand sub;
  KeyCommand token, keygen;
  add_node_command(app, node);
  add_pub_command(app, pub);
  add_sub_command(app, sub);
  add_call_command(app, call);
  add_bench_command(app, bench);
  add_metrics_command(app, metrics);
  add_health_command(app, health);
  add_token_command(app, token);
  add_keygen_command(app, keygen);
  std::vector<Command*> all{&node.c, &pub.c, &sub.c, &call.c, &bench.c, &metrics.c, &health.c, &token.c, &keygen.c};
  for (Command* c : all) c->app->fallthrough();  // global flags may follow the command

  // `macula help` and `macula help <command>` read as --help.
  std::vector<char*> args(argv, argv + argc);
  if (args.size() >= 2 && std::strcmp(args[1], "help") == 0) {
    static char help[] = "--help";
    args.erase(args.begin() + 1);
    args.push_back(help);
  }
  argc = static_cast<int>(args.size());
  argv = args.data();

  Command* selected = nullptr;
  try {
    app.parse(argc, argv);
    for (Command* c : all)
      if (c->app->parsed()) selected = c;
    // --config itself comes from the flag or the environment only.
    if (config_opt->count() == 0)
      if (const char* v = std::getenv("MACULA_CONFIG"); v && *v) config_path = v;
    apply_settings(global, selected, all, config_path);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // An unknown command reads as an unexpected argument to CLI11; say what it is.
    if (argc > 1 && argv[1][0] != '-' && (e.get_name() == "ExtrasError" || e.get_name() == "RequiredError")) {
      bool known = false;
      for (Command* c : all) known = known || c->app->get_name() == argv[1];
      if (!known) {
        std::fprintf(stderr, "macula: unknown command '%s' (commands: node pub sub call bench metrics health token keygen)\n",
                     argv[1]);
        return kUsage;
      }
    }
    std::string command;
    for (Command* c : all)
      if (c->app->parsed()) command = " " + c->app->get_name();
    std::fprintf(stderr, "macula%s: %s\nRun 'macula%s --help' for its flags.\n", command.c_str(), e.what(), command.c_str());
    return kUsage;
  }

  const auto level = [&](macula::LogLevel fallback) { return log_level.empty() ? fallback : parse_log_level(log_level); };
  try {
    if (selected == &node.c) return run_node(node, level(macula::LogLevel::info));
    if (selected == &pub.c) return run_pub(pub);
    if (selected == &sub.c) return run_sub(sub, level(macula::LogLevel::error));
    if (selected == &call.c) return run_call(call);
    if (selected == &bench.c) return run_bench(bench);
    if (selected == &metrics.c) return run_metrics(metrics);
    if (selected == &health.c) return run_health(health);
    if (selected == &token.c) return run_token(token);
    if (selected == &keygen.c) return run_keygen(keygen);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "macula: %s\n", e.what());
    return kFail;
  }
  return kUsage;
}
