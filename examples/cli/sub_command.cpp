// macula sub: prints the messages matching a pattern, as a leaf node linked to --node or,
// with --via-http3, as a client the node streams them to.
#include <chrono>
#include <cstdio>
#include <mutex>
#include <span>
#include <string_view>
#include <thread>

#include "commands.hpp"
#include "macula/error.hpp"
#include "macula/node.hpp"
#include "macula/subscriber.hpp"

namespace macula_cli {

namespace {

// The length of the well-formed UTF-8 sequence at `p` (RFC 3629: no overlong forms, no
// surrogates, nothing past U+10FFFF) that is not a C1 control (U+0080..U+009F, which
// terminals obey); 0 when there is none.
std::size_t utf8_length(std::span<const std::uint8_t> s, std::size_t p) {
  const auto c = s[p];
  std::size_t n = 0;
  std::uint8_t lo = 0x80, hi = 0xbf;  // the allowed range of the second byte
  if (c >= 0xc2 && c <= 0xdf) n = 2, lo = c == 0xc2 ? 0xa0 : 0x80;
  else if (c >= 0xe0 && c <= 0xef) n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
  else if (c >= 0xf0 && c <= 0xf4) n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
  if (n == 0 || p + n > s.size() || s[p + 1] < lo || s[p + 1] > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if ((s[p + k] & 0xc0) != 0x80) return 0;
  return n;
}

// text: one line per message, "topic payload"; bytes that would break the line or the
// terminal (control characters, NUL, invalid UTF-8) and the backslash are escaped, so a
// binary payload prints whole and unambiguously.
void print_text(std::string_view topic, std::span<const std::uint8_t> payload) {
  std::string line(topic);
  line += ' ';
  for (std::size_t i = 0; i < payload.size();) {
    const auto c = payload[i];
    if (c == '\\') {
      line += "\\\\";
    } else if (c == '\n') {
      line += "\\n";
    } else if (c == '\t') {
      line += "\\t";
    } else if (c >= 0x20 && c < 0x7f) {
      line += static_cast<char>(c);
    } else if (const std::size_t n = c >= 0x80 ? utf8_length(payload, i) : 0) {
      line.append(reinterpret_cast<const char*>(payload.data() + i), n);
      i += n;
      continue;
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      line += "\\x";
      line += kHex[c >> 4];
      line += kHex[c & 0xf];
    }
    ++i;
  }
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
}

// json: one object per line, as the node's own HTTP/3 stream sends them:
// {"topic":"...","payload":"<base64>","qos":0}.
void print_json(std::string_view topic, std::span<const std::uint8_t> payload, macula::Qos qos) {
  static constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string line = "{\"topic\":\"";
  for (const char c : topic) {  // names are letters, digits, '_', '-' and '.': nothing to escape
    if (c == '"' || c == '\\') line += '\\';
    line += c;
  }
  line += "\",\"payload\":\"";
  std::size_t i = 0;
  for (; i + 3 <= payload.size(); i += 3) {
    const std::uint32_t v = (payload[i] << 16) | (payload[i + 1] << 8) | payload[i + 2];
    for (int k = 18; k >= 0; k -= 6) line += kB64[(v >> k) & 0x3f];
  }
  if (const std::size_t rest = payload.size() - i) {
    const std::uint32_t v = (payload[i] << 16) | (rest == 2 ? payload[i + 1] << 8 : 0);
    line += kB64[(v >> 18) & 0x3f];
    line += kB64[(v >> 12) & 0x3f];
    line += rest == 2 ? kB64[(v >> 6) & 0x3f] : '=';
    line += '=';
  }
  line += "\",\"qos\":";
  line += qos == macula::Qos::at_least_once ? '1' : '0';
  line += "}\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
}

// One printer for both ways of subscribing; thread-safe, it counts what it printed.
class Printer {
 public:
  Printer(std::string format, long count) : format_(std::move(format)), count_(count) {}
  void print(std::string_view topic, std::span<const std::uint8_t> payload, macula::Qos qos) {
    std::lock_guard lock(mutex_);
    if (count_ != 0 && printed_ >= count_) return;
    if (format_ == "json") print_json(topic, payload, qos);
    else if (format_ == "raw") std::fwrite(payload.data(), 1, payload.size(), stdout);
    else print_text(topic, payload);
    std::fflush(stdout);
    ++printed_;
  }
  bool done() const {
    std::lock_guard lock(mutex_);
    return count_ != 0 && printed_ >= count_;
  }

 private:
  const std::string format_;
  const long count_;
  mutable std::mutex mutex_;
  long printed_ = 0;
};

// --via-http3: no node of our own, one streaming request to the given node.
int run_sub_http3(const SubCommand& s) {
  int exit = kOk;
  Printer printer(s.format, s.count);
  std::atomic<bool> ended{false};
  auto client = connect_client("sub", s.c, s.client, exit);
  if (!client) return exit;
  macula::NodeClient::StreamCallbacks cb;
  cb.on_message = [&](macula::NodeClient::StreamedMessage m) { printer.print(m.topic, m.payload, m.qos); };
  cb.on_garbage = [](std::string_view line) {
    std::fprintf(stderr, "macula sub: a line that is not a message: %.*s\n", static_cast<int>(line.size()), line.data());
  };
  cb.on_end = [&](std::error_code) { ended = true; };
  std::error_code ec;
  int status = -1;
  auto stream = client->subscribe(s.pattern, std::move(cb), ec, &status);
  if (!stream) {
    if (status == 400) std::fprintf(stderr, "macula sub: the node refused the pattern %s (400)\n", s.pattern.c_str());
    else if (status == 503)
      std::fprintf(stderr, "macula sub: the node has no room for another streaming subscription, or is stopping (503)\n");
    else if (status == -1) std::fprintf(stderr, "macula sub: %s did not answer the subscription: %s\n", s.client.node.c_str(), ec.message().c_str());
    else report("sub", client->has_token(), status, "");
    return exit_for_status(status);
  }
  std::fprintf(stderr, "subscribed to %s via %s (HTTP/3)\n", s.pattern.c_str(), s.client.node.c_str());
  while (!interrupted && !ended && !printer.done()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (ended && !printer.done()) {
    std::fprintf(stderr, "macula sub: the node ended the stream\n");
    return kFail;
  }
  return kOk;
}

}  // namespace

void add_sub_command(CLI::App& app, SubCommand& s) {
  s.c.app = app.add_subcommand("sub", "Print the messages matching a pattern ('*' one segment, '#' the rest)");
  auto* a = s.c.app;
  add_client_options(s.c, s.client);
  a->add_option("PATTERN", s.pattern, "e.g. 'sensors.#' (quote it: the shell reads '#' and '*')")->required();
  a->add_option("--count", s.count, "exit after this many messages (0: run until SIGINT)")
      ->check(whole_number(0, 1'000'000'000))
      ->capture_default_str();
  a->add_flag("--via-http3", s.via_http3,
              "stay a client: the node streams the messages over one HTTP/3 request (needs only --token); "
              "without it, sub joins the realm as a leaf node linked to --node (needs the realm's secret)");
  a->add_option("--format", s.format,
                "text: 'topic payload' lines, unprintable bytes escaped (\\xNN, \\n, \\\\); json: "
                "{\"topic\",\"payload\" (base64),\"qos\"} per line; raw: the payload bytes only")
      ->check(CLI::IsMember({"text", "json", "raw"}))
      ->capture_default_str();
}

int run_sub(const SubCommand& s, macula::LogLevel level) {
  if (s.via_http3) return run_sub_http3(s);
  if (s.client.node.empty()) {
    std::fprintf(stderr, "macula sub: --node HOST:PORT is required (or MACULA_NODE, or 'node' in the config file)\n");
    return kUsage;
  }
  if (!not_empty_if_given("sub", s.client.secret_opt, s.client.realm_secret)) return kUsage;
  macula::NodeOptions o;
  o.realm = s.client.realm;
  if (!s.client.realm_secret.empty()) o.realm_secret = s.client.realm_secret;
  o.leaf = true;  // reached through --node, its gateway: it need not be dialable
  // The link's own account of a failed dial (another realm, and which) is the best message;
  // other log lines at --log-level go to standard error.
  std::mutex why_mutex;
  std::string why;
  auto sink = stderr_log();
  o.log_level = std::min(level, macula::LogLevel::warn);
  o.log_sink = [&](macula::LogLevel l, std::string_view component, std::string_view message) {
    {
      std::lock_guard lock(why_mutex);
      if (component == "link" && l >= macula::LogLevel::warn && why.empty()) {
        why = message;
        return;
      }
    }
    if (l >= level) sink(l, component, message);
  };
  macula::Node node(o);
  if (auto ec = node.start()) {
    std::fprintf(stderr, "macula sub: %s\n", ec.message().c_str());
    return kFail;
  }
  Printer printer(s.format, s.count);
  std::error_code ec;
  macula::Subscriber sub(
      node, s.pattern, [&](const macula::Message& m) { printer.print(m.topic(), m.payload(), m.qos()); },
      macula::SubscribeOptions{}, ec);
  if (ec) {
    std::fprintf(stderr, "macula sub: %s: %s\n", s.pattern.c_str(), ec.message().c_str());
    return kUsage;
  }
  if ((ec = node.connect(s.client.node))) {
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
                   s.client.node.c_str());
      return kRefused;
    }
    if (ec == macula::errc::address_invalid || ec == macula::errc::address_unresolved) {
      std::fprintf(stderr, "macula sub: --node %s: %s\n", s.client.node.c_str(), ec.message().c_str());
      return kUnreachable;
    }
    std::fprintf(stderr, "macula sub: cannot link to %s: %s\n", s.client.node.c_str(), ec.message().c_str());
    return kUnreachable;
  }
  std::fprintf(stderr, "subscribed to %s via %s\n", s.pattern.c_str(), s.client.node.c_str());
  while (!interrupted && !printer.done()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  node.stop();
  return kOk;
}

}  // namespace macula_cli
