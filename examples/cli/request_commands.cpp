// pub, call, metrics, health: one request to a node's client API over HTTP/3.
#include <cstdio>

#include "commands.hpp"

namespace macula_cli {

namespace {

// The request, its answer printed or reported, and the exit code for it.
int one_request(const char* command, const RequestCommand& r, const char* method, const std::string& path,
                macula::Bytes body, bool print_body) {
  int exit = kOk;
  auto client = connect_client(command, r.c, r.client, exit);
  if (!client) return exit;
  std::error_code ec;
  const auto answer = client->request(method, path, std::move(body), ec);
  const int status = ec ? -1 : answer.status;
  const std::string_view text(reinterpret_cast<const char*>(answer.body.data()), answer.body.size());
  if (status == 200 || status == 202) {
    if (print_body) std::fwrite(text.data(), 1, text.size(), stdout);
  } else if (ec) {
    std::fprintf(stderr, "macula %s: %s\n", command, ec.message().c_str());
  } else {
    report(command, client->has_token(), status, text);
  }
  return exit_for_status(status);
}

}  // namespace

void add_pub_command(CLI::App& app, RequestCommand& r) {
  r.c.app = app.add_subcommand("pub", "Publish one message through a node");
  add_client_options(r.c, r.client);
  r.c.app->add_option("--qos", r.qos, "0: the node accepted it; 1: every subscriber acknowledged it (exit 3: nobody subscribes)")
      ->check(CLI::IsMember({0, 1}))
      ->capture_default_str();
  r.c.app->add_option("TOPIC", r.name, "the topic, e.g. sensors.hall.temp")->required();
  r.c.app->add_option("MESSAGE", r.payload, "the payload; '-' reads standard input; empty when absent");
  // Everything after TOPIC is the message, even when it starts with '-' (flags go first).
  r.c.app->positionals_at_end();
}

void add_call_command(CLI::App& app, RequestCommand& r) {
  r.c.app = app.add_subcommand("call", "Call a procedure through a node and print its result");
  add_client_options(r.c, r.client);
  r.c.app->add_option("PROCEDURE", r.name, "the procedure, e.g. svc.echo")->required();
  r.c.app->add_option("PAYLOAD", r.payload, "the arguments; '-' reads standard input; empty when absent");
  r.c.app->positionals_at_end();
}

void add_metrics_command(CLI::App& app, RequestCommand& r) {
  r.c.app = app.add_subcommand("metrics", "Print a node's Prometheus metrics (GET /metrics over HTTP/3)");
  add_client_options(r.c, r.client);
}

void add_health_command(CLI::App& app, RequestCommand& r) {
  r.c.app = app.add_subcommand("health", "Ask a node whether it is healthy (GET /health over HTTP/3; exit 0 if so)");
  add_client_options(r.c, r.client);
}

int run_pub(const RequestCommand& r) {
  macula::Bytes payload;
  if (!payload_arg("pub", r.payload, payload)) return kUsage;
  return one_request("pub", r, "POST",
                     macula::NodeClient::pub_path(r.name, r.qos == 1 ? macula::Qos::at_least_once : macula::Qos::at_most_once),
                     std::move(payload), false);
}

int run_call(const RequestCommand& r) {
  macula::Bytes payload;
  if (!payload_arg("call", r.payload, payload)) return kUsage;
  const int exit = one_request("call", r, "POST", macula::NodeClient::rpc_path(r.name), std::move(payload), true);
  if (exit == kOk) std::printf("\n");
  return exit;
}

int run_metrics(const RequestCommand& r) { return one_request("metrics", r, "GET", "/metrics", {}, true); }

int run_health(const RequestCommand& r) {
  // /health answers 503 with its reason when unhealthy: print it either way.
  int exit = kOk;
  auto client = connect_client("health", r.c, r.client, exit);
  if (!client) return exit;
  std::error_code ec;
  const auto answer = client->request("GET", "/health", {}, ec);
  if (ec) {
    std::fprintf(stderr, "macula health: %s\n", ec.message().c_str());
    return kUnreachable;
  }
  std::fwrite(answer.body.data(), 1, answer.body.size(), answer.status == 200 ? stdout : stderr);
  return answer.status == 200 ? kOk : kFail;
}

}  // namespace macula_cli
