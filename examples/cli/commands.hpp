// The `macula` tool's commands: each adds its subcommand (flags bound to its struct) and runs.
#pragma once

#include <string>
#include <vector>

#include "command.hpp"

namespace macula_cli {

struct NodeCommand {
  Command c;
  std::string listen = "127.0.0.1:9443";
  std::string advertise;
  std::string realm = "macula.default";
  std::string realm_secret;
  std::vector<std::string> bootstrap;
  std::string key, cert;
  std::vector<std::string> echo;
  std::string dht = "on";
  long dht_record_ttl = 300;
  std::string http = "127.0.0.1:8080";
  std::string client_access;
  std::string client_token;
  CLI::Option* secret_opt = nullptr;
  CLI::Option* token_opt = nullptr;
  CLI::Option* key_opt = nullptr;
  CLI::Option* cert_opt = nullptr;
};
void add_node_command(CLI::App& app, NodeCommand& n);
int run_node(const NodeCommand& n, macula::LogLevel level);

// pub, call, metrics, health: one request to a node.
struct RequestCommand {
  Command c;
  ClientOptions client;
  std::string name;     // topic or procedure
  std::string payload;  // the text, or "-" for standard input
  int qos = 0;          // pub
};
void add_pub_command(CLI::App& app, RequestCommand& r);
void add_call_command(CLI::App& app, RequestCommand& r);
void add_metrics_command(CLI::App& app, RequestCommand& r);
void add_health_command(CLI::App& app, RequestCommand& r);
int run_pub(const RequestCommand& r);
int run_call(const RequestCommand& r);
int run_metrics(const RequestCommand& r);
int run_health(const RequestCommand& r);

struct BenchCommand {
  Command c;
  ClientOptions client;
  std::string kind;
  long count = 10'000;
  std::string topic = "bench.cli";
  std::string procedure = "bench.echo";
};
void add_bench_command(CLI::App& app, BenchCommand& b);
int run_bench(const BenchCommand& b);

struct SubCommand {
  Command c;
  ClientOptions client;
  std::string pattern;
  long count = 0;
  bool via_http3 = false;
  std::string format = "text";
};
void add_sub_command(CLI::App& app, SubCommand& s);
int run_sub(const SubCommand& s, macula::LogLevel level);

// token, keygen: no node involved.
struct KeyCommand {
  Command c;
  std::string realm;
  std::string realm_secret;
  CLI::Option* secret_opt = nullptr;
  std::string key, cert;
};
void add_token_command(CLI::App& app, KeyCommand& k);
void add_keygen_command(CLI::App& app, KeyCommand& k);
int run_token(const KeyCommand& k);
int run_keygen(const KeyCommand& k);

}  // namespace macula_cli
