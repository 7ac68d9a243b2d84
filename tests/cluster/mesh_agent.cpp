// macula_mesh_agent: the load a cluster scenario puts on the mesh, from inside a host's network
// namespace. It is an application as users write one: a leaf node (NodeOptions::leaf) that
// links to the `macula node` of its host (its gateway) and publishes or calls through it with
// the public API. It prints one JSON line with what happened, which the harness asserts on.
//
//   macula_mesh_agent pub  --node HOST:PORT [--realm R] --topic T [--qos 0|1] [--count N | --seconds S]
//                          [--rate PER_S] [--window N] [--prefix P]
//   macula_mesh_agent call --node HOST:PORT [--realm R] --procedure P [--count N | --seconds S]
//                          [--rate PER_S] [--window N] [--timeout-ms MS]
//
// Payloads are "<prefix><i>" with i from 0, so a subscriber's output shows what is missing or
// duplicated. A call's result must equal its argument (the scenarios serve echo procedures).
// Exit 0 when it ran (the JSON says how the messages fared), 2 on bad flags, 1 when it could not
// link to its node.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "macula/error.hpp"
#include "macula/node.hpp"
#include "macula/publisher.hpp"
#include "macula/rpc_client.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  std::string command;
  std::map<std::string, std::string> values;
  std::optional<std::string> get(const std::string& k) const {
    auto it = values.find(k);
    return it == values.end() ? std::nullopt : std::optional<std::string>(it->second);
  }
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "macula_mesh_agent: %s\n", why.c_str());
  std::exit(2);
}

long number(const Flags& f, const std::string& name, long fallback) {
  auto v = f.get(name);
  if (!v) return fallback;
  char* end = nullptr;
  const long n = std::strtol(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || n < 0) usage("--" + name + " " + *v + ": expected a non-negative integer");
  return n;
}

// Paces and bounds the work: at most `window` outstanding, at most `rate` per second, until
// `count` were issued or `seconds` passed. Completions from the library's threads call done().
class Pacer {
 public:
  Pacer(long count, long seconds, long rate, long window)
      : count_(count), seconds_(seconds), rate_(rate), window_(std::max(1L, window)) {}

  // Blocks until the next item may start; false when the run is over.
  bool next() {
    if (count_ > 0 && issued_ >= count_) return false;
    const auto now = Clock::now();
    if (seconds_ > 0 && now - t0_ >= std::chrono::seconds(seconds_)) return false;
    if (rate_ > 0) std::this_thread::sleep_until(t0_ + std::chrono::microseconds(issued_ * 1'000'000 / rate_));
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return outstanding_ < window_; });
    ++outstanding_;
    ++issued_;
    return true;
  }
  void done() {
    std::lock_guard lock(m_);
    --outstanding_;
    cv_.notify_all();
  }
  void drain() {
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return outstanding_ == 0; });
  }
  long issued() const { return issued_; }
  double elapsed() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }

 private:
  const long count_, seconds_, rate_, window_;
  const Clock::time_point t0_ = Clock::now();
  long issued_ = 0;
  long outstanding_ = 0;
  std::mutex m_;
  std::condition_variable cv_;
};

// Outcome counts by error message, filled from completion threads.
class Outcomes {
 public:
  void add(std::error_code ec, std::chrono::microseconds latency) { add(ec ? ec.message() : std::string(), latency); }
  // An empty `error` is a success.
  void add(const std::string& error, std::chrono::microseconds latency) {
    std::lock_guard lock(m_);
    if (!error.empty()) {
      ++errors_[error];
      return;
    }
    ++ok_;
    latencies_.push_back(latency.count());
  }
  std::string json(long issued, double seconds) {
    std::lock_guard lock(m_);
    long failed = 0;
    std::string errors;
    for (auto& [what, n] : errors_) {
      failed += n;
      errors += (errors.empty() ? "\"" : ",\"") + what + "\":" + std::to_string(n);
    }
    std::string out = "{\"issued\":" + std::to_string(issued) + ",\"ok\":" + std::to_string(ok_) +
                      ",\"failed\":" + std::to_string(failed) + ",\"errors\":{" + errors + "}";
    char buf[64];
    std::snprintf(buf, sizeof buf, ",\"seconds\":%.3f", seconds);
    out += buf;
    if (!latencies_.empty()) {
      std::sort(latencies_.begin(), latencies_.end());
      auto at = [&](double q) { return latencies_[std::min(latencies_.size() - 1, static_cast<std::size_t>(q * latencies_.size()))]; };
      out += ",\"p50_us\":" + std::to_string(at(0.50)) + ",\"p99_us\":" + std::to_string(at(0.99)) +
             ",\"max_us\":" + std::to_string(latencies_.back());
    }
    return out + "}";
  }

 private:
  std::mutex m_;
  long ok_ = 0;
  std::map<std::string, long> errors_;
  std::vector<long> latencies_;
};

macula::Bytes bytes(const std::string& s) { return {s.begin(), s.end()}; }

int run(const Flags& f) {
  const auto gateway = f.get("node");
  if (!gateway) usage("--node HOST:PORT is required");
  const bool pub = f.command == "pub";
  if (pub && !f.get("topic")) usage("pub needs --topic");
  if (!pub && !f.get("procedure")) usage("call needs --procedure");
  const long qos = number(f, "qos", 0);
  if (qos > 1) usage("--qos must be 0 or 1");
  const long count = number(f, "count", 0), seconds = number(f, "seconds", 0);
  if ((count == 0) == (seconds == 0)) usage("give exactly one of --count and --seconds");
  const long timeout_ms = number(f, "timeout-ms", 0);

  macula::NodeOptions o;
  o.realm = f.get("realm").value_or("macula.default");
  o.leaf = true;
  macula::Node node(o);
  if (auto ec = node.start()) {
    std::fprintf(stderr, "macula_mesh_agent: start: %s\n", ec.message().c_str());
    return 1;
  }
  if (auto ec = node.connect(*gateway)) {
    std::fprintf(stderr, "macula_mesh_agent: cannot link to %s: %s\n", gateway->c_str(), ec.message().c_str());
    return 1;
  }
  std::fprintf(stderr, "linked to %s\n", gateway->c_str());

  Pacer pacer(count, seconds, number(f, "rate", 0), number(f, "window", 64));
  Outcomes outcomes;
  const std::string prefix = f.get("prefix").value_or("m");
  if (pub) {
    macula::Publisher publisher(node);
    const auto q = qos == 1 ? macula::Qos::at_least_once : macula::Qos::at_most_once;
    while (pacer.next()) {
      const auto t0 = Clock::now();
      publisher.async_publish(*f.get("topic"), bytes(prefix + std::to_string(pacer.issued() - 1)), q,
                              [&, t0](std::error_code ec) {
                                outcomes.add(ec, std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0));
                                pacer.done();
                              });
    }
  } else {
    macula::RpcClient client(node);
    macula::CallOptions co;
    co.timeout = std::chrono::milliseconds(timeout_ms);
    while (pacer.next()) {
      const auto t0 = Clock::now();
      auto arg = prefix + std::to_string(pacer.issued() - 1);
      client.async_call(*f.get("procedure"), bytes(arg), co, [&, t0, arg](std::error_code ec, macula::Bytes result) {
        const auto latency = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0);
        if (!ec && result != bytes(arg)) outcomes.add(std::string("a result other than the argument"), latency);
        else outcomes.add(ec, latency);
        pacer.done();
      });
    }
  }
  pacer.drain();
  std::printf("%s\n", outcomes.json(pacer.issued(), pacer.elapsed()).c_str());
  std::fflush(stdout);
  node.stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || (std::string(argv[1]) != "pub" && std::string(argv[1]) != "call"))
    usage("usage: macula_mesh_agent pub|call --node HOST:PORT ... (see the header of mesh_agent.cpp)");
  Flags f;
  f.command = argv[1];
  static const std::vector<std::string> known{"node", "realm", "topic", "qos", "count", "seconds", "rate",
                                              "window", "prefix", "procedure", "timeout-ms"};
  for (int i = 2; i < argc; i += 2) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || std::find(known.begin(), known.end(), k.substr(2)) == known.end())
      usage("unknown flag " + k);
    if (i + 1 >= argc) usage(k + " needs a value");
    f.values[k.substr(2)] = argv[i + 1];
  }
  return run(f);
}
