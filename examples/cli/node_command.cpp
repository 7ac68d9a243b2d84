// macula node: runs a node until SIGINT or SIGTERM.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "commands.hpp"
#include "macula/error.hpp"
#include "macula/node.hpp"

namespace macula_cli {

void add_node_command(CLI::App& app, NodeCommand& n) {
  n.c.app = app.add_subcommand("node", "Run a node until SIGINT or SIGTERM");
  auto* a = n.c.app;
  a->add_option("--listen", n.listen, "UDP address to listen on, HOST:PORT")->capture_default_str();
  a->add_option("--advertise", n.advertise, "the address peers dial, HOST:PORT (needed with --listen 0.0.0.0:PORT)");
  a->add_option("--realm", n.realm, "the realm this node joins")->capture_default_str();
  n.secret_opt = n.c.from_env(a->add_option("--realm-secret", n.realm_secret, "the realm's shared secret"),
                              "MACULA_REALM_SECRET");
  a->add_option("--bootstrap", n.bootstrap, "a node to join through, HOST:PORT (repeat for more)")
      ->allow_extra_args(false);
  n.key_opt = a->add_option("--key", n.key, "PEM key file (with --cert: the same node id across restarts; see 'macula keygen')")
;
  n.cert_opt = a->add_option("--cert", n.cert, "PEM certificate file of the key");
  a->add_option("--echo", n.echo, "advertise a procedure that answers with its arguments (repeat for more)")
      ->allow_extra_args(false);
  a->add_option("--dht", n.dht, "DHT discovery")->check(CLI::IsMember({"on", "off"}))->capture_default_str();
  a->add_option("--dht-record-ttl", n.dht_record_ttl, "seconds the DHT remembers this node after it died")
      ->check(whole_number(30, 86400))
      ->capture_default_str();
  a->add_option("--http", n.http, "plain-HTTP /metrics /health /ready /live on HOST:PORT, or off")
      ->capture_default_str();
  a->add_option("--client-access", n.client_access,
                "who may publish, call and read /metrics over HTTP/3 (default: token with a realm secret, else open)")
      ->check(CLI::IsMember({"open", "token", "closed"}));
  n.token_opt = n.c.from_env(a->add_option("--client-token", n.client_token, "the token clients must present"),
                             "MACULA_CLIENT_TOKEN");
  a->footer("Logs go to standard error from --log-level (default info: links up and down, refusals).");
}

int run_node(const NodeCommand& n, macula::LogLevel level) {
  macula::NodeOptions o;
  o.listen = n.listen;
  if (!n.advertise.empty()) o.advertise_address = n.advertise;
  o.realm = n.realm;
  o.bootstrap = n.bootstrap;
  // Given, even empty (an unset shell variable), is given: it must name a readable file.
  if (n.key_opt->count() > 0) o.key_file = n.key;
  if (n.cert_opt->count() > 0) o.cert_file = n.cert;
  for (const auto& [flag, file] : {std::pair{"--key", o.key_file}, std::pair{"--cert", o.cert_file}})
    if (file && !std::ifstream(*file)) {
      std::fprintf(stderr, "macula node: %s %s: cannot read the file\n", flag, file->c_str());
      return kUsage;
    }
  if (o.key_file.has_value() != o.cert_file.has_value()) {
    std::fprintf(stderr, "macula node: --key and --cert go together\n");
    return kUsage;
  }
  o.dht = n.dht != "off";
  o.dht_record_ttl = std::chrono::seconds(n.dht_record_ttl);
  // The library's own default is off: an operator's node, unlike an embedded one, wants it.
  o.http_listen = n.http == "off" ? "" : n.http;
  if (!not_empty_if_given("node", n.secret_opt, n.realm_secret) ||
      !not_empty_if_given("node", n.token_opt, n.client_token))
    return kUsage;
  if (n.secret_opt->count() > 0) o.realm_secret = n.realm_secret;
  if (n.token_opt->count() > 0) o.client_token = n.client_token;
  if (n.client_access == "open") o.client_access = macula::ClientAccess::open;
  else if (n.client_access == "token") o.client_access = macula::ClientAccess::token;
  else if (n.client_access == "closed") o.client_access = macula::ClientAccess::closed;
  // The refusal to start is printed once, below, naming the option.
  o.log_sink = [sink = stderr_log()](macula::LogLevel l, std::string_view component, std::string_view message) {
    if (component == "node" && message.starts_with("not starting: ")) return;
    sink(l, component, message);
  };
  o.log_level = level;
  macula::Node node(o);
  if (auto ec = node.start()) {
    const std::string why = node.last_start_error();  // names the option, where one is at fault
    std::fprintf(stderr, "macula node: %s\n", why.empty() ? ec.message().c_str() : why.c_str());
    return ec == macula::errc::address_invalid || ec == macula::errc::options_invalid ||
                   ec == macula::errc::address_unresolved || ec == macula::errc::identity_invalid
               ? kUsage
               : kFail;
  }
  std::vector<macula::Advertisement> echoes;
  for (const auto& proc : n.echo) {
    std::error_code ec;
    echoes.push_back(node.advertise(proc, [](macula::Bytes args, macula::RpcResponder r) { r.reply(std::move(args)); }, {}, ec));
    if (ec) {
      std::fprintf(stderr, "macula node: --echo %s: %s\n", proc.c_str(), ec.message().c_str());
      return kUsage;
    }
  }
  std::printf("node %s listening on %s realm %s\n", node.node_id().to_hex().c_str(), node.local_address().c_str(),
              o.realm.c_str());
  // The mode as the node resolves `automatic`; never the token itself, which would end up
  // in whatever collects this output.
  const auto access = o.client_access != macula::ClientAccess::automatic ? o.client_access
                      : o.realm_secret || o.client_token               ? macula::ClientAccess::token
                                                                       : macula::ClientAccess::open;
  std::printf("client API: %s\n", access == macula::ClientAccess::open    ? "open"
                                  : access == macula::ClientAccess::closed ? "closed"
                                  : o.client_token                         ? "token (the --client-token)"
                                                                           : "token (`macula token` prints it)");
  if (!node.http_address().empty()) std::printf("status pages on http://%s/metrics\n", node.http_address().c_str());
  else if (!o.http_listen.empty()) std::printf("status pages: %s is taken; served over HTTP/3 only\n", o.http_listen.c_str());
  std::fflush(stdout);
  while (!interrupted) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::printf("stopping (signal)\n");
  node.stop();  // graceful: work in flight finishes or is cancelled within stop_timeout
  return kOk;
}

}  // namespace macula_cli
