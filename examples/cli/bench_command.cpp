// macula bench: many requests through a node, 64 in flight, and the rate they completed at.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>

#include "commands.hpp"

namespace macula_cli {

void add_bench_command(CLI::App& app, BenchCommand& b) {
  b.c.app = app.add_subcommand("bench", "Measure publishes or calls per second through a node (HTTP/3, 64 in flight)");
  add_client_options(b.c, b.client);
  b.c.app->add_option("KIND", b.kind, "pubsub or rpc")->required()->check(CLI::IsMember({"pubsub", "rpc"}));
  b.c.app->add_option("--count", b.count, "requests to make")->check(whole_number(1, 100'000'000))->capture_default_str();
  b.c.app->add_option("--topic", b.topic, "the topic pubsub publishes to")->capture_default_str();
  b.c.app->add_option("--procedure", b.procedure, "the procedure rpc calls")->capture_default_str();
}

int run_bench(const BenchCommand& b) {
  int exit = kOk;
  auto client = connect_client("bench", b.c, b.client, exit);
  if (!client) return exit;
  const bool rpc = b.kind == "rpc";
  const std::string path = rpc ? macula::NodeClient::rpc_path(b.procedure) : macula::NodeClient::pub_path(b.topic);
  constexpr long kInFlight = 64;  // stays under the node's per-connection stream limit
  std::mutex m;
  std::condition_variable cv;
  long done = 0, failed = 0, issued = 0;
  int refused = 0;            // a 401 or 403: every further request would be refused too
  std::string first_failure;  // the first failed request's status and answer: why they fail
  const macula::Bytes payload(64, 'x');
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    {
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return issued - done < kInFlight; });
      if (issued >= b.count || refused) break;
      ++issued;
    }
    client->request("POST", path, payload, [&](std::error_code ec, macula::ClientResponse r) {
      std::lock_guard lock(m);
      const int status = ec ? -1 : r.status;
      if (status != 200 && status != 202 && failed++ == 0) {
        std::string body(r.body.begin(), r.body.end());
        while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
        first_failure = ec ? "no answer from the node: " + ec.message() : std::to_string(status) + " " + body;
      }
      if (status == 401 || status == 403) refused = status;
      ++done;
      cv.notify_all();
    });
  }
  std::unique_lock lock(m);
  cv.wait(lock, [&] { return done == issued; });
  if (refused) {
    report("bench", client->has_token(), refused, {});
    return kRefused;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s: %ld requests in %.3f s: %.0f/s, %ld failed (%ld in flight, 64-byte payloads, HTTP/3)\n",
              b.kind.c_str(), issued, secs, static_cast<double>(issued) / secs, failed, kInFlight);
  if (failed) std::fprintf(stderr, "macula bench: the first failure: %s\n", first_failure.c_str());
  return failed ? kFail : kOk;
}

}  // namespace macula_cli
