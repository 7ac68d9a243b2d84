// macula: run a node, publish, subscribe, call and benchmark from the command line.
//
//   macula node --listen HOST:PORT [--realm R] [--realm-secret S] [--client-access open|token|closed]
//               [--client-token T] [--bootstrap HOST:PORT ...] [--key K --cert C] [--echo PROC ...]
//   macula pub  --node HOST:PORT [CLIENT AUTH] [--qos 0|1] TOPIC [MESSAGE|-]
//   macula sub  --node HOST:PORT [--realm R] [--realm-secret S] [--count N] PATTERN
//   macula sub  --via-http3 --node HOST:PORT [CLIENT AUTH] [--count N] PATTERN
//   macula call --node HOST:PORT [CLIENT AUTH] PROCEDURE [PAYLOAD|-]
//   macula bench {pubsub|rpc} --node HOST:PORT [CLIENT AUTH] [--count N] [--topic T | --procedure P]
//   macula metrics --node HOST:PORT [CLIENT AUTH]
//   macula token --realm R [--realm-secret S]
//   CLIENT AUTH: [--token T] | [--realm R] [--realm-secret S]
//
// pub, call, bench and metrics talk to the node as an HTTP/3 client (POST
// /macula/v1/pub|rpc/..., GET /metrics), so the node itself publishes or calls across its
// links; sub joins the realm as a short-lived leaf node linked to the given one (its gateway:
// the sub node need not be reachable), or, with
// --via-http3, stays a client: the node streams the matching messages to it over one HTTP/3
// request (GET /macula/v1/sub/<pattern>, newline-delimited JSON). In a realm with a
// secret, nodes answer clients only with `authorization: Bearer <token>` (401 without it);
// `token` prints the token derived from the realm and its secret, to hand to clients that
// must not get the secret itself. Secrets and tokens may come from the environment
// (MACULA_REALM_SECRET, MACULA_CLIENT_TOKEN) instead of the command line, where `ps` shows them.
// Exit codes: 0 ok, 1 failure, 2 usage, 3 no provider / not found, 4 handler error,
// 5 timeout, 6 cannot reach the node, 7 refused (no or a wrong client token, the node's client
// API closed, or the link refused: another realm or secret).
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <iterator>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "macula/client_access.hpp"
#include "macula/error.hpp"
#include "macula/node.hpp"
#include "macula/rpc_client.hpp"
#include "macula/subscriber.hpp"
#include "node/node_core.hpp"
#include "transport/endpoint.hpp"
#include "transport/identity.hpp"

namespace {

constexpr int kOk = 0, kFail = 1, kUsage = 2, kNotFound = 3, kHandler = 4, kTimeout = 5, kUnreachable = 6, kRefused = 7;

std::atomic<bool> interrupted{false};
extern "C" void on_signal(int) { interrupted = true; }

const char* kUsageText =
    "usage:\n"
    "  macula node --listen HOST:PORT [--realm R] [--realm-secret S] [--bootstrap HOST:PORT ...] [--key K --cert C] [--echo PROC ...]\n"
    "              [--dht on|off] [--http HOST:PORT|off]   (DHT discovery, default on; plain-HTTP /metrics /health, default 127.0.0.1:8080)\n"
    "              [--dht-record-ttl SECONDS]   (how long the DHT remembers this node after it died; default 300)\n"
    "              [--advertise HOST:PORT]   (the address peers dial; needed with --listen 0.0.0.0:PORT)\n"
    "              [--client-access open|token|closed] [--client-token T]   (default: token with a realm secret, else open)\n"
    "  macula pub  --node HOST:PORT [CLIENT AUTH] [--qos 0|1] TOPIC [MESSAGE|-]\n"
    "  macula sub  --node HOST:PORT [--realm R] [--realm-secret S] [--count N] PATTERN\n"
    "  macula sub  --via-http3 --node HOST:PORT [CLIENT AUTH] [--count N] PATTERN   (as a client, no node)\n"
    "  macula call --node HOST:PORT [CLIENT AUTH] PROCEDURE [PAYLOAD|-]\n"
    "  macula bench {pubsub|rpc} --node HOST:PORT [CLIENT AUTH] [--count N] [--topic T] [--procedure P]\n"
    "  macula metrics --node HOST:PORT [CLIENT AUTH]   (GET /metrics over HTTP/3)\n"
    "  macula token --realm R [--realm-secret S]      (prints the client token of the realm)\n"
    "CLIENT AUTH: --token T, or --realm R (default macula.default) with --realm-secret S: the token is sent\n"
    "as 'authorization: Bearer T'. The environment stands in for absent flags: MACULA_REALM_SECRET,\n"
    "MACULA_CLIENT_TOKEN (keeps them out of ps). MESSAGE/PAYLOAD '-' reads standard input.\n"
    "Exit codes: 0 ok, 1 failure, 2 usage, 3 no provider, 4 handler error, 5 timeout, 6 node unreachable,\n"
    "7 refused (client token missing or wrong, client API closed, link refused: other realm or secret).\n";

struct Args {
  std::string command;
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> flags;
  std::optional<std::string> get(const std::string& name) const {
    for (auto& [k, v] : flags)
      if (k == name) return v;
    return std::nullopt;
  }
  std::vector<std::string> all(const std::string& name) const {
    std::vector<std::string> out;
    for (auto& [k, v] : flags)
      if (k == name) out.push_back(v);
    return out;
  }
};

bool parse(int argc, char** argv, Args& a) {
  if (argc < 2) return false;
  a.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string s = argv[i];
    if (s == "--help" || s == "-h") return false;
    if (s == "--via-http3") {  // the one flag without a value
      a.flags.emplace_back("via-http3", "");
    } else if (s.rfind("--", 0) == 0) {
      if (i + 1 >= argc) return false;
      a.flags.emplace_back(s.substr(2), argv[++i]);
    } else {
      a.positional.push_back(s);
    }
  }
  return true;
}

macula::Bytes payload_arg(const Args& a, std::size_t index) {
  if (a.positional.size() <= index) return {};
  if (a.positional[index] == "-") {
    std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    return {in.begin(), in.end()};
  }
  return {a.positional[index].begin(), a.positional[index].end()};
}

// A secret-bearing value: the flag, else the environment variable (so that it need not show
// in `ps`). An empty flag is an error (most likely an unset shell variable, which would
// silently mean "no secret"); an empty environment variable counts as unset.
bool secret_arg(const Args& a, const char* flag, const char* env, std::optional<std::string>& out) {
  if (auto v = a.get(flag)) {
    if (v->empty()) {
      std::fprintf(stderr, "macula: --%s is empty\n", flag);
      return false;
    }
    out = *v;
  } else if (const char* e = std::getenv(env); e && *e) {
    out = e;
  }
  return true;
}

// The client token pub, call, bench and metrics send, if any. Flags before the environment,
// and within each the token before the secret it could be derived from: --token, then
// --realm-secret (with --realm), then MACULA_CLIENT_TOKEN, then MACULA_REALM_SECRET.
std::optional<std::string> client_token(const Args& a) {
  const std::string realm = a.get("realm").value_or("macula.default");
  if (auto t = a.get("token")) return t;
  if (auto s = a.get("realm-secret")) return macula::derive_client_token(realm, *s);
  if (const char* t = std::getenv("MACULA_CLIENT_TOKEN"); t && *t) return std::string(t);
  if (const char* s = std::getenv("MACULA_REALM_SECRET"); s && *s) return macula::derive_client_token(realm, s);
  return std::nullopt;
}

// An HTTP/3 client connection to a node (no node certificate: an application, not a node).
// With a token, every request carries it as `authorization: Bearer <token>`.
class Client {
 public:
  Client(const std::string& address, std::optional<std::string> token) : token_(std::move(token)) {
    std::error_code ec;
    if ((ec = macula::node::resolve_address(address, target_))) {
      std::fprintf(stderr, "macula: --node %s: %s\n", address.c_str(), ec.message().c_str());
      return;
    }
    macula::transport::EndpointOptions o;
    o.identity = macula::transport::Identity::generate();
    o.present_certificate = false;
    auto any = boost::asio::ip::make_address(target_.address().is_v6() ? "::1" : "127.0.0.1");
    if (!target_.address().is_loopback()) any = target_.address().is_v6() ? boost::asio::ip::address(boost::asio::ip::address_v6::any())
                                                                           : boost::asio::ip::address(boost::asio::ip::address_v4::any());
    endpoint_ = macula::transport::Endpoint::create(io_, o, {any, 0}, ec);
    if (ec) {
      std::fprintf(stderr, "macula: cannot open a UDP socket: %s\n", ec.message().c_str());
      return;
    }
    thread_ = std::thread([this] { io_.run(); });
    std::promise<std::shared_ptr<macula::transport::Connection>> p;
    endpoint_->connect(target_, std::nullopt, [&](std::error_code e, std::shared_ptr<macula::transport::Connection> c) {
      if (e) std::fprintf(stderr, "macula: cannot reach %s: %s\n", address.c_str(), e.message().c_str());
      p.set_value(e ? nullptr : c);
    });
    conn_ = p.get_future().get();
  }
  ~Client() {
    if (endpoint_) endpoint_->close();
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }
  bool ok() const { return conn_ != nullptr; }
  bool has_token() const { return token_.has_value(); }

  // A request, waited for: (status, body); status -1 on a transport error.
  std::pair<int, std::string> request(const std::string& method, const std::string& path, macula::Bytes body = {}) {
    std::promise<std::pair<int, std::string>> p;
    auto f = p.get_future();
    request_async(method, path, std::move(body), [&p](int status, std::string b) { p.set_value({status, std::move(b)}); });
    return f.get();
  }
  std::pair<int, std::string> post(const std::string& path, macula::Bytes body) { return request("POST", path, std::move(body)); }
  void post_async(const std::string& path, macula::Bytes body, std::function<void(int, std::string)> done) {
    request_async("POST", path, std::move(body), std::move(done));
  }
  void request_async(const std::string& method, const std::string& path, macula::Bytes body,
                     std::function<void(int, std::string)> done) {
    macula::transport::Request r;
    r.method = method;
    r.path = path;
    r.body = std::move(body);
    if (token_) r.headers.push_back({std::string(macula::kClientTokenHeader), "Bearer " + *token_});
    conn_->request(std::move(r), std::chrono::seconds(10), [done](std::error_code e, macula::transport::Response resp) {
      done(e ? -1 : resp.status, std::string(resp.body.begin(), resp.body.end()));
    });
  }
  // A GET whose response body streams: `on_data` gets it as it arrives and `on_close` its end
  // (both on the client's thread). Returns 200 once streaming, the node's refusal status, or
  // -1 when there was no answer.
  int stream(const std::string& path, std::function<void(std::span<const std::uint8_t>)> on_data,
             std::function<void(std::error_code)> on_close) {
    auto refused = std::make_shared<std::atomic<int>>(-1);
    macula::transport::SessionCallbacks cb;
    cb.on_data = std::move(on_data);
    cb.on_close = std::move(on_close);
    cb.on_refused = [refused](int status, const std::vector<macula::transport::Header>&) { *refused = status; };
    macula::transport::Request head;
    head.method = "GET";
    head.path = path;
    if (token_) head.headers.push_back({std::string(macula::kClientTokenHeader), "Bearer " + *token_});
    std::promise<int> p;
    conn_->open_session(head, std::move(cb), std::chrono::seconds(10),
                        [&p, refused](std::error_code e, std::shared_ptr<macula::transport::Session> s) {
                          if (e) return p.set_value(refused->load());
                          s->close();  // no request body; the answer goes on
                          p.set_value(200);
                        });
    return p.get_future().get();
  }

 private:
  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_{io_.get_executor()};
  boost::asio::ip::udp::endpoint target_;
  std::shared_ptr<macula::transport::Endpoint> endpoint_;
  std::shared_ptr<macula::transport::Connection> conn_;
  std::thread thread_;
  std::optional<std::string> token_;
};

int exit_for_status(int status) {
  switch (status) {
    case 200: case 202: return kOk;
    case 400: return kUsage;
    case 401: case 403: return kRefused;
    case 404: return kNotFound;
    case 500: return kHandler;
    case 504: return kTimeout;
    case -1: return kUnreachable;
    default: return kFail;
  }
}

// The message for an answer that is not a success: 401 and 403 are explained (what to pass),
// anything else shows the node's own status and text.
void report(const char* command, const Client& c, int status, const std::string& body) {
  if (status == 401 && !c.has_token())
    std::fprintf(stderr, "macula %s: the node requires a client token: pass --token or --realm and --realm-secret\n", command);
  else if (status == 401)
    std::fprintf(stderr, "macula %s: the node refused the client token (another realm or secret?)\n", command);
  else if (status == 403)
    std::fprintf(stderr, "macula %s: the node's client API is closed (it runs with --client-access closed)\n", command);
  else
    std::fprintf(stderr, "macula %s: %d %s", command, status, body.c_str());
}

// Log lines at `level` and above to standard error: the node's reasons (why it does not
// start, which peer it refused) are otherwise invisible, the library itself writing nothing.
macula::LogSink stderr_log() {
  return [](macula::LogLevel level, std::string_view component, std::string_view message) {
    std::fprintf(stderr, "%s %.*s: %.*s\n", macula::to_string(level), static_cast<int>(component.size()), component.data(),
                 static_cast<int>(message.size()), message.data());
  };
}

int run_node(const Args& a) {
  macula::NodeOptions o;
  o.listen = a.get("listen").value_or("127.0.0.1:9443");
  if (auto adv = a.get("advertise")) o.advertise_address = *adv;
  if (auto r = a.get("realm")) o.realm = *r;
  o.bootstrap = a.all("bootstrap");
  o.key_file = a.get("key");
  o.cert_file = a.get("cert");
  for (const auto& [flag, file] : {std::pair{"--key", o.key_file}, std::pair{"--cert", o.cert_file}})
    if (file && !std::ifstream(*file)) {
      std::fprintf(stderr, "macula node: %s %s: cannot read the file\n", flag, file->c_str());
      return kUsage;
    }
  if (o.key_file.has_value() != o.cert_file.has_value()) {
    std::fprintf(stderr, "macula node: --key and --cert go together\n");
    return kUsage;
  }
  o.dht = a.get("dht").value_or("on") != "off";  // --dht off: links only
  if (auto t = a.get("dht-record-ttl")) {
    char* end = nullptr;
    const long s = std::strtol(t->c_str(), &end, 10);
    if (t->empty() || *end != '\0' || s < 30 || s > 86400) {
      std::fprintf(stderr, "macula node: --dht-record-ttl %s: expected seconds, 30 to 86400\n", t->c_str());
      return kUsage;
    }
    o.dht_record_ttl = std::chrono::seconds(s);
  }
  // Plain HTTP /metrics /health /ready /live: 127.0.0.1:8080 unless --http says where, or off
  // (the library's own default is off: an operator's node, unlike an embedded one, wants it).
  const std::string http = a.get("http").value_or("127.0.0.1:8080");
  o.http_listen = http == "off" ? "" : http;
  if (!secret_arg(a, "realm-secret", "MACULA_REALM_SECRET", o.realm_secret)) return kUsage;
  if (!secret_arg(a, "client-token", "MACULA_CLIENT_TOKEN", o.client_token)) return kUsage;
  if (auto m = a.get("client-access")) {
    if (*m == "open") o.client_access = macula::ClientAccess::open;
    else if (*m == "token") o.client_access = macula::ClientAccess::token;
    else if (*m == "closed") o.client_access = macula::ClientAccess::closed;
    else {
      std::fprintf(stderr, "macula node: --client-access %s: expected open, token or closed\n", m->c_str());
      return kUsage;
    }
  }
  o.log_sink = stderr_log();
  o.log_level = macula::LogLevel::warn;
  macula::Node node(o);
  if (auto ec = node.start()) {
    std::fprintf(stderr, "macula node: %s\n", ec.message().c_str());
    return ec == macula::errc::address_invalid || ec == macula::errc::options_invalid ? kUsage : kFail;
  }
  std::vector<macula::Advertisement> echoes;
  for (const auto& proc : a.all("echo")) {
    std::error_code ec;
    echoes.push_back(node.advertise(proc, [](macula::Bytes args, macula::RpcResponder r) { r.reply(std::move(args)); }, {}, ec));
    if (ec) {
      std::fprintf(stderr, "macula node: --echo %s: %s\n", proc.c_str(), ec.message().c_str());
      return kUsage;
    }
  }
  std::printf("node %s listening on %s realm %s\n", node.node_id().to_hex().c_str(), node.local_address().c_str(),
              o.realm.c_str());
  // The mode as the node resolves `automatic` (ClientAccess); never the token itself, which
  // would end up in whatever collects this output.
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

int run_pub(const Args& a) {
  auto node = a.get("node");
  if (!node || a.positional.empty()) return kUsage;
  Client c(*node, client_token(a));
  if (!c.ok()) return kUnreachable;
  // QoS 1: the node answers once every subscriber acknowledged it (404: nobody subscribes).
  const std::string qos = a.get("qos").value_or("0");
  if (qos != "0" && qos != "1") {
    std::fprintf(stderr, "macula pub: --qos must be 0 or 1, not '%s'\n", qos.c_str());
    return kUsage;
  }
  auto [status, body] = c.post("/macula/v1/pub/" + a.positional[0] + (qos == "1" ? "?qos=1" : ""), payload_arg(a, 1));
  if (status != 202 && status != 200) report("pub", c, status, body);
  return exit_for_status(status);
}

int run_call(const Args& a) {
  auto node = a.get("node");
  if (!node || a.positional.empty()) return kUsage;
  Client c(*node, client_token(a));
  if (!c.ok()) return kUnreachable;
  auto [status, body] = c.post("/macula/v1/rpc/" + a.positional[0], payload_arg(a, 1));
  if (status == 200) {
    std::fwrite(body.data(), 1, body.size(), stdout);
    std::printf("\n");
  } else {
    report("call", c, status, body);
  }
  return exit_for_status(status);
}

int run_metrics(const Args& a) {
  auto node = a.get("node");
  if (!node || !a.positional.empty()) return kUsage;
  Client c(*node, client_token(a));
  if (!c.ok()) return kUnreachable;
  auto [status, body] = c.request("GET", "/metrics");
  if (status == 200) std::fwrite(body.data(), 1, body.size(), stdout);
  else report("metrics", c, status, body);
  return exit_for_status(status);
}

int run_token(const Args& a) {
  auto realm = a.get("realm");
  if (!realm || !a.positional.empty()) return kUsage;
  std::optional<std::string> secret;
  if (!secret_arg(a, "realm-secret", "MACULA_REALM_SECRET", secret)) return kUsage;
  if (!secret) {
    std::fprintf(stderr, "macula token: no realm secret: pass --realm-secret or set MACULA_REALM_SECRET\n");
    return kUsage;
  }
  std::printf("%s\n", macula::derive_client_token(*realm, *secret).c_str());
  return kOk;
}

// The pattern as a URL path segment: '#' would start a fragment, so it (and anything else
// outside the unreserved set and '*') travels percent-encoded.
std::string path_segment(const std::string& pattern) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char c : pattern) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '.' || c == '-' || c == '_' || c == '~' || c == '*') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    }
  }
  return out;
}

// The string value of `"key":"..."` in one ndjson object, unescaped (\uXXXX below 0x80 only:
// topics are ASCII names). nullopt when absent or malformed.
std::optional<std::string> json_field(std::string_view line, std::string_view key) {
  const std::string tag = "\"" + std::string(key) + "\":\"";
  auto at = line.find(tag);
  if (at == std::string_view::npos) return std::nullopt;
  std::string out;
  for (std::size_t i = at + tag.size(); i < line.size(); ++i) {
    if (line[i] == '"') return out;
    if (line[i] != '\\') {
      out += line[i];
    } else if (++i < line.size()) {
      if (line[i] == 'u' && i + 4 < line.size()) {
        out += static_cast<char>(std::strtol(std::string(line.substr(i + 1, 4)).c_str(), nullptr, 16));
        i += 4;
      } else {
        out += line[i] == 'n' ? '\n' : line[i] == 't' ? '\t' : line[i];
      }
    }
  }
  return std::nullopt;
}

std::optional<std::string> base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::string out;
  std::uint32_t bits = 0;
  int n = 0;
  for (const char c : in) {
    if (c == '=') break;
    const int v = value(c);
    if (v < 0) return std::nullopt;
    bits = (bits << 6) | static_cast<std::uint32_t>(v);
    if ((n += 6) >= 8) {
      n -= 8;
      out += static_cast<char>((bits >> n) & 0xff);
    }
  }
  return out;
}

// sub --via-http3: no node of our own, one streaming request to the given node.
int run_sub_http3(const Args& a) {
  auto target = a.get("node");
  if (!target || a.positional.size() != 1) return kUsage;
  const long count = a.get("count") ? std::stol(*a.get("count")) : 0;
  // Declared before the client, whose thread uses them until it is joined.
  std::atomic<long> got{0};
  std::atomic<bool> ended{false};
  std::string partial;  // the client's thread only
  Client c(*target, client_token(a));
  if (!c.ok()) return kUnreachable;
  const int status = c.stream(
      "/macula/v1/sub/" + path_segment(a.positional[0]),
      [&](std::span<const std::uint8_t> bytes) {
        partial.append(bytes.begin(), bytes.end());
        for (std::size_t nl; (nl = partial.find('\n')) != std::string::npos; partial.erase(0, nl + 1)) {
          const std::string_view line(partial.data(), nl);
          const auto topic = json_field(line, "topic");
          const auto payload = json_field(line, "payload");
          const auto decoded = payload ? base64_decode(*payload) : std::nullopt;
          if (!topic || !decoded) {
            std::fprintf(stderr, "macula sub: a line that is not a message: %.*s\n", static_cast<int>(line.size()), line.data());
            continue;
          }
          if (count != 0 && got >= count) continue;
          std::printf("%s %s\n", topic->c_str(), decoded->c_str());
          std::fflush(stdout);
          ++got;
        }
      },
      [&](std::error_code) { ended = true; });
  if (status != 200) {
    if (status == 400) std::fprintf(stderr, "macula sub: the node refused the pattern %s (400)\n", a.positional[0].c_str());
    else if (status == 503)
      std::fprintf(stderr, "macula sub: the node has no room for another streaming subscription, or is stopping (503)\n");
    else if (status == -1) std::fprintf(stderr, "macula sub: %s did not answer the subscription\n", target->c_str());
    else report("sub", c, status, "\n");
    return exit_for_status(status);
  }
  std::fprintf(stderr, "subscribed to %s via %s (HTTP/3)\n", a.positional[0].c_str(), target->c_str());
  while (!interrupted && !ended && (count == 0 || got < count)) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (ended && (count == 0 || got < count)) {
    std::fprintf(stderr, "macula sub: the node ended the stream\n");
    return kFail;
  }
  return kOk;
}

int run_sub(const Args& a) {
  if (a.get("via-http3")) return run_sub_http3(a);
  auto target = a.get("node");
  if (!target || a.positional.size() != 1) return kUsage;
  const long count = a.get("count") ? std::stol(*a.get("count")) : 0;
  macula::NodeOptions o;
  o.realm = a.get("realm").value_or("macula.default");
  if (!secret_arg(a, "realm-secret", "MACULA_REALM_SECRET", o.realm_secret)) return kUsage;
  o.leaf = true;          // reached through --node, its gateway: it need not be dialable
  // The link's own account of a failed dial (another realm, and which) is the best message.
  std::mutex why_mutex;
  std::string why;
  o.log_level = macula::LogLevel::warn;
  o.log_sink = [&](macula::LogLevel, std::string_view component, std::string_view message) {
    std::lock_guard lock(why_mutex);
    if (component == "link" && why.empty()) why = message;
  };
  macula::Node node(o);
  if (auto ec = node.start()) {
    std::fprintf(stderr, "macula sub: %s\n", ec.message().c_str());
    return kFail;
  }
  std::atomic<long> got{0};
  std::mutex out;
  std::error_code ec;
  macula::Subscriber sub(node, a.positional[0], [&](const macula::Message& m) {
    std::lock_guard lock(out);
    std::printf("%.*s %s\n", static_cast<int>(m.topic().size()), m.topic().data(), m.payload_string().c_str());
    std::fflush(stdout);
    ++got;
  }, macula::SubscribeOptions{}, ec);
  if (ec) {
    std::fprintf(stderr, "macula sub: %s: %s\n", a.positional[0].c_str(), ec.message().c_str());
    return kUsage;
  }
  if ((ec = node.connect(*target))) {
    if (ec == macula::errc::realm_mismatch) {  // says which realm the node is in, when it may
      std::lock_guard lock(why_mutex);
      std::fprintf(stderr, "macula sub: %s\n", why.empty() ? ec.message().c_str() : why.c_str());
      return kRefused;
    }
    // The node answered but would not link: a realm secret other than the node's, else a
    // node with no room for more peers.
    if (ec == macula::errc::connection_refused || ec == macula::errc::realm_proof_failed) {
      std::fprintf(stderr,
                   "macula sub: %s refused the link: is --realm-secret (or MACULA_REALM_SECRET) the node's? "
                   "(or it has no room for more peers)\n",
                   target->c_str());
      return kRefused;
    }
    std::fprintf(stderr, "macula sub: cannot link to %s: %s\n", target->c_str(), ec.message().c_str());
    return kUnreachable;
  }
  std::fprintf(stderr, "subscribed to %s via %s\n", a.positional[0].c_str(), target->c_str());
  while (!interrupted && (count == 0 || got < count)) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  node.stop();
  return kOk;
}

int run_bench(const Args& a) {
  auto target = a.get("node");
  if (!target || a.positional.size() != 1 || (a.positional[0] != "rpc" && a.positional[0] != "pubsub")) return kUsage;
  const long n = a.get("count") ? std::stol(*a.get("count")) : 10'000;
  const bool rpc = a.positional[0] == "rpc";
  const std::string path = rpc ? "/macula/v1/rpc/" + a.get("procedure").value_or("bench.echo")
                               : "/macula/v1/pub/" + a.get("topic").value_or("bench.cli");
  Client c(*target, client_token(a));
  if (!c.ok()) return kUnreachable;
  constexpr long kInFlight = 64;  // stays under the node's per-connection stream limit
  std::atomic<long> done{0}, failed{0}, issued{0};
  std::string first_failure;  // the first failed request's status and answer: why they fail
  std::atomic<int> refused{0};  // a 401 or 403: every further request would be refused too
  std::mutex m;
  std::condition_variable cv;
  const macula::Bytes payload(64, 'x');
  const auto t0 = std::chrono::steady_clock::now();
  while (issued < n && !refused) {
    {
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return issued - done < kInFlight; });
    }
    ++issued;
    c.post_async(path, payload, [&](int status, std::string body) {
      if (status != 200 && status != 202 && failed++ == 0) {
        while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
        std::lock_guard lock(m);
        first_failure = status < 0 ? "no answer from the node" : std::to_string(status) + " " + body;
      }
      if (status == 401 || status == 403) refused = status;
      std::lock_guard lock(m);
      ++done;
      cv.notify_all();
    });
  }
  std::unique_lock lock(m);
  cv.wait(lock, [&] { return done == issued; });
  if (refused) {
    report("bench", c, refused, {});
    return kRefused;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s: %ld requests in %.3f s: %.0f/s, %ld failed (%ld in flight, 64-byte payloads, HTTP/3)\n",
              a.positional[0].c_str(), n, secs, static_cast<double>(n) / secs, failed.load(), kInFlight);
  if (failed) std::fprintf(stderr, "macula bench: the first failure: %s\n", first_failure.c_str());
  return failed ? kFail : kOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0 || std::strcmp(argv[1], "help") == 0) {
      std::fputs(kUsageText, stdout);
      return kOk;
    }
  Args a;
  if (!parse(argc, argv, a)) {
    std::fputs(kUsageText, stderr);
    return kUsage;
  }
  int rc = kUsage;
  try {
    if (a.command == "node") rc = run_node(a);
    else if (a.command == "pub") rc = run_pub(a);
    else if (a.command == "sub") rc = run_sub(a);
    else if (a.command == "call") rc = run_call(a);
    else if (a.command == "bench") rc = run_bench(a);
    else if (a.command == "metrics") rc = run_metrics(a);
    else if (a.command == "token") rc = run_token(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "macula: %s\n", e.what());
    return kFail;
  }
  if (rc == kUsage) std::fputs(kUsageText, stderr);
  return rc;
}
