// Soak: a 3-node mesh under mixed load (QoS 0 and QoS 1 pub/sub, RPC) for N seconds,
// sampling RSS and queue depths every second. Passes when, after warm-up, RSS grew at most
// 5% and every QoS 1 message was delivered (distinct ids counted at the subscriber).
//
//   soak [--seconds N] [--warmup S] [--csv FILE] [--chart FILE]
//
// Writes the samples as CSV and an ASCII chart of RSS over time (no plotting package is
// assumed). Exit code 0 pass, 1 fail, 2 setup error. CTest runs it for 60 s (label
// stability, in the default suite) and for 10 min (label soak, opt-in).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "macula/publisher.hpp"
#include "macula/rpc_client.hpp"
#include "macula/subscriber.hpp"
#include "macula/testing/local_mesh.hpp"

using namespace macula;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

double rss_mib() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long pages = 0, resident = 0;
  if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  std::fclose(f);
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

// The value of an unlabelled or fully labelled series in Prometheus text, or 0.
double series(const std::string& text, const std::string& name) {
  const auto at = text.find("\n" + name + " ");
  return at == std::string::npos ? 0 : std::atof(text.c_str() + at + name.size() + 2);
}

struct Sample {
  double t, rss;
  std::uint64_t q0_sent, q0_recv, q1_sent, q1_confirmed, q1_distinct, rpc_ok;
  double publish_depth, dispatch_depth, qos1_in_flight, pending_calls;
};

void ascii_chart(const std::vector<Sample>& s, double warmup, std::FILE* out) {
  if (s.empty()) return;
  constexpr int kRows = 12, kCols = 72;
  double lo = s.front().rss, hi = lo;
  for (const auto& x : s) lo = std::min(lo, x.rss), hi = std::max(hi, x.rss);
  if (hi - lo < 1) hi = lo + 1;
  std::vector<std::string> grid(kRows, std::string(kCols, ' '));
  const double t_end = s.back().t > 0 ? s.back().t : 1;
  for (const auto& x : s) {
    const int col = std::min(kCols - 1, static_cast<int>(x.t / t_end * (kCols - 1)));
    const int row = std::min(kRows - 1, static_cast<int>((x.rss - lo) / (hi - lo) * (kRows - 1)));
    grid[kRows - 1 - row][col] = '*';
  }
  const int warm_col = std::min(kCols - 1, static_cast<int>(warmup / t_end * (kCols - 1)));
  std::fprintf(out, "RSS (MiB) over %.0f s; '|' marks the end of warm-up\n", t_end);
  for (int r = 0; r < kRows; ++r) {
    if (grid[r][warm_col] == ' ') grid[r][warm_col] = '|';
    const double v = hi - (hi - lo) * r / (kRows - 1);
    std::fprintf(out, "%8.1f |%s\n", v, grid[r].c_str());
  }
  std::fprintf(out, "         +%s\n          0 s%*s%.0f s\n", std::string(kCols, '-').c_str(), kCols - 8, "", t_end);
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 600, warmup = -1;
  std::string csv_path = "soak.csv", chart_path = "soak_chart.txt";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (k == "--warmup") warmup = std::atof(argv[i + 1]);
    else if (k == "--csv") csv_path = argv[i + 1];
    else if (k == "--chart") chart_path = argv[i + 1];
    else return std::fprintf(stderr, "usage: soak [--seconds N] [--warmup S] [--csv FILE] [--chart FILE]\n"), 2;
  }
  if (warmup < 0) warmup = std::max(10.0, seconds * 0.25);

  testing::LocalMeshOptions mo;
  mo.size = 3;
  mo.node.realm = "soak.realm";
  testing::LocalMesh mesh(mo);
  // Rates a 2-core machine sustains with room to spare: this measures leaks, not peak speed.
  constexpr int kQos0PerSec = 20'000, kQos1PerSec = 2'000, kRpcInFlight = 8;
  const std::size_t q1_capacity = static_cast<std::size_t>(kQos1PerSec * (seconds + 5)) + 1;
  std::vector<std::uint8_t> q1_seen(q1_capacity, 0);  // allocated up front: not growth
  std::atomic<std::uint64_t> q0_sent{0}, q0_recv{0}, q1_sent{0}, q1_confirmed{0}, q1_failed{0}, q1_distinct{0},
      q1_dups{0}, rpc_ok{0}, rpc_failed{0};

  Subscriber s0(mesh[1], "soak.q0.#", [&](const Message&) { ++q0_recv; });
  Subscriber s1(mesh[2], "soak.q1", [&](const Message& m) {
    const auto id = static_cast<std::size_t>(std::strtoull(m.payload_string().c_str(), nullptr, 10));
    if (id >= q1_seen.size()) return;
    // One handler thread at a time per subscription: plain bytes are enough.
    if (q1_seen[id]++ == 0) ++q1_distinct;
    else ++q1_dups;
  });
  auto echo = mesh[2].advertise("soak.echo", sync_handler([](const Bytes& b) { return b; }));
  mesh.settle();

  std::atomic<bool> running{true};
  std::thread publisher([&] {
    Publisher pub(mesh[0]);
    const Bytes payload(256, 0x42);
    const auto t0 = Clock::now();
    std::uint64_t q1_next = 0, q0_count = 0;
    while (running) {
      const double t = std::chrono::duration<double>(Clock::now() - t0).count();
      while (q0_count < static_cast<std::uint64_t>(t * kQos0PerSec)) {
        if (!pub.publish("soak.q0." + std::to_string(q0_count % 10), payload)) ++q0_sent;
        ++q0_count;
      }
      while (q1_next < static_cast<std::uint64_t>(t * kQos1PerSec) && q1_next < q1_capacity) {
        const std::string id = std::to_string(q1_next++);
        ++q1_sent;
        pub.async_publish("soak.q1", Bytes(id.begin(), id.end()), Qos::at_least_once, [&](std::error_code ec) {
          if (ec) ++q1_failed;
          else ++q1_confirmed;
        });
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  std::thread caller([&] {
    RpcClient client(mesh[1]);
    std::atomic<int> in_flight{0};
    while (running) {
      while (in_flight < kRpcInFlight && running) {
        ++in_flight;
        client.async_call("soak.echo", Bytes(64, 1), CallOptions{}, [&](std::error_code ec, Bytes) {
          if (ec) ++rpc_failed;
          else ++rpc_ok;
          --in_flight;
        });
      }
      std::this_thread::sleep_for(200us);
    }
    while (in_flight > 0) std::this_thread::sleep_for(1ms);
  });

  std::vector<Sample> samples;
  const auto start = Clock::now();
  for (;;) {
    std::this_thread::sleep_for(1s);
    const double t = std::chrono::duration<double>(Clock::now() - start).count();
    double publish_depth = 0, dispatch_depth = 0, in_flight = 0, pending = 0;
    for (std::size_t i = 0; i < mesh.size(); ++i) {
      const std::string m = mesh[i].metrics_text();
      publish_depth = std::max(publish_depth, series(m, "macula_queue_depth{queue=\"publish\"}"));
      dispatch_depth = std::max(dispatch_depth, series(m, "macula_queue_depth{queue=\"dispatch\"}"));
      in_flight += series(m, "macula_qos1_in_flight");
      pending += series(m, "macula_rpc_pending_calls");
    }
    samples.push_back({t, rss_mib(), q0_sent.load(), q0_recv.load(), q1_sent.load(), q1_confirmed.load(),
                       q1_distinct.load(), rpc_ok.load(), publish_depth, dispatch_depth, in_flight, pending});
    if (t >= seconds) break;
  }
  running = false;
  publisher.join();
  caller.join();
  // Let QoS 1 finish: every message confirmed or failed, and received.
  const auto drain_until = Clock::now() + 30s;
  while ((q1_confirmed + q1_failed < q1_sent || q1_distinct < q1_confirmed) && Clock::now() < drain_until)
    std::this_thread::sleep_for(10ms);

  std::ofstream csv(csv_path);
  csv << "t_s,rss_mib,qos0_sent,qos0_received,qos1_sent,qos1_confirmed,qos1_distinct_received,rpc_ok,"
         "publish_queue_depth,dispatch_queue_depth,qos1_in_flight,rpc_pending\n";
  for (const auto& s : samples)
    csv << s.t << ',' << s.rss << ',' << s.q0_sent << ',' << s.q0_recv << ',' << s.q1_sent << ',' << s.q1_confirmed
        << ',' << s.q1_distinct << ',' << s.rpc_ok << ',' << s.publish_depth << ',' << s.dispatch_depth << ','
        << s.qos1_in_flight << ',' << s.pending_calls << '\n';
  csv.close();

  // RSS growth: the mean of the first 10 s after warm-up against the mean of the last 10 s.
  auto mean_rss = [&](double from, double to) {
    double sum = 0;
    int n = 0;
    for (const auto& s : samples)
      if (s.t >= from && s.t < to) sum += s.rss, ++n;
    return n ? sum / n : 0;
  };
  const double t_end = samples.back().t;
  const double rss_start = mean_rss(warmup, warmup + 10), rss_end = mean_rss(t_end - 10, t_end + 1);
  const double growth = rss_start > 0 ? (rss_end - rss_start) / rss_start : 1;
  double max_publish = 0, max_dispatch = 0;
  for (const auto& s : samples) max_publish = std::max(max_publish, s.publish_depth), max_dispatch = std::max(max_dispatch, s.dispatch_depth);

  if (std::FILE* chart = std::fopen(chart_path.c_str(), "w")) {
    ascii_chart(samples, warmup, chart);
    std::fclose(chart);
  }
  ascii_chart(samples, warmup, stdout);
  const bool q1_ok = q1_failed == 0 && q1_confirmed == q1_sent && q1_distinct == q1_sent;
  const bool rss_ok = growth <= 0.05;
  const bool rpc_ok_all = rpc_failed == 0 && rpc_ok > 0;
  std::printf("soak: %.0f s (warm-up %.0f s); RSS %.1f MiB at start of window -> %.1f MiB at end (%+.2f%%, limit +5%%)\n",
              t_end, warmup, rss_start, rss_end, growth * 100);
  std::printf("soak: QoS 0 sent %llu received %llu; QoS 1 sent %llu confirmed %llu failed %llu distinct received %llu "
              "(duplicates %llu); RPC ok %llu failed %llu\n",
              static_cast<unsigned long long>(q0_sent.load()), static_cast<unsigned long long>(q0_recv.load()), static_cast<unsigned long long>(q1_sent.load()),
              static_cast<unsigned long long>(q1_confirmed.load()), static_cast<unsigned long long>(q1_failed.load()), static_cast<unsigned long long>(q1_distinct.load()),
              static_cast<unsigned long long>(q1_dups.load()), static_cast<unsigned long long>(rpc_ok.load()), static_cast<unsigned long long>(rpc_failed.load()));
  std::printf("soak: max publish queue depth %.0f, max dispatch queue depth %.0f; CSV %s, chart %s\n", max_publish,
              max_dispatch, csv_path.c_str(), chart_path.c_str());
  std::printf("soak: %s (rss %s, qos1 %s, rpc %s)\n", q1_ok && rss_ok && rpc_ok_all ? "PASS" : "FAIL",
              rss_ok ? "ok" : "GREW", q1_ok ? "ok" : "LOST", rpc_ok_all ? "ok" : "FAILED");
  return q1_ok && rss_ok && rpc_ok_all ? 0 : 1;
}
