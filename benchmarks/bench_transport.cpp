// Transport figures against the raw stack's ceiling (quic-stack-notes.md, measured on this
// kind of machine with a throw-away ngtcp2/nghttp3 program): 64-byte records 4.6-6.1 M/s on
// one stream; HTTP/3 28 k req/s at 1 in flight (p50 23 us) and 146-172 k req/s at 100;
// handshake p50 ~1 ms. Both ends run in this process on one io_context thread each.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <future>
#include <thread>
#include <malloc.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>

#include "macula/error.hpp"
#include "support/io_thread.hpp"
#include "transport/endpoint.hpp"
#include "wire/frame.hpp"
#include "wire/frame_reader.hpp"

using namespace macula;
using namespace macula::transport;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using udp = asio::ip::udp;

namespace {

using Loop = macula::test::IoThread;

// Server and client endpoints; by default on one io_context thread like the raw-stack
// measurement, or each on its own thread (two_threads) like two nodes on two cores.
struct Pair {
  Loop server_loop, client_loop;
  std::shared_ptr<Endpoint> server, client;
  std::shared_ptr<Connection> conn;

  explicit Pair(bool two_threads = false) {
    server = make(server_loop.io);
    client = make(two_threads ? client_loop.io : server_loop.io);
    server->route("POST", "/echo", [](Request&& req, Responder respond) {
      Response r;
      r.body = std::move(req.body);
      respond(std::move(r));
    });
    conn = dial();
  }
  ~Pair() {
    client->close();
    server->close();
  }
  static std::shared_ptr<Endpoint> make(asio::io_context& io) {
    EndpointOptions o;
    o.identity = Identity::generate();
    o.max_clients = 100'000;
    std::error_code ec;
    return Endpoint::create(io, std::move(o), udp::endpoint(asio::ip::make_address("127.0.0.1"), 0), ec);
  }
  std::shared_ptr<Connection> dial() {
    std::promise<std::shared_ptr<Connection>> p;
    client->connect(server->local_endpoint(), server->node_id(),
                    [&](std::error_code, std::shared_ptr<Connection> c) { p.set_value(c); });
    return p.get_future().get();
  }
};

double percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

void SessionFrames64(benchmark::State& state) {
  const bool two_threads = state.range(0) != 0;
  Pair pair(two_threads);
  constexpr std::uint64_t kFrames = 1'000'000;
  // A 64-byte frame: an 8-byte header and a PUBLISH with topic "t" and an empty payload.
  std::vector<std::uint8_t> one;
  (void)wire::encode(wire::Publish{NodeId{}, 1, 1, 0, "t", {}}, one);
  if (one.size() != 64) state.SkipWithError("frame is not 64 bytes");
  std::vector<std::uint8_t> batch;
  for (int i = 0; i < 512; ++i) batch.insert(batch.end(), one.begin(), one.end());

  struct Counter {
    std::atomic<std::uint64_t> frames{0};
    wire::FrameReader reader;
    std::promise<void> done;
    std::uint64_t target = 0;
  };
  auto counter = std::make_shared<Counter>();
  pair.server->session_route("/s", [counter](const Request&, std::shared_ptr<Session>, SessionCallbacks& cb) {
    cb.on_data = [counter](std::span<const std::uint8_t> bytes) {
      (void)counter->reader.feed(bytes, [&](wire::Frame&&) {
        if (counter->frames.fetch_add(1) + 1 == counter->target) counter->done.set_value();
      });
    };
    cb.on_close = [](std::error_code) {};
    return 200;
  });
  std::shared_ptr<Session> session;
  std::promise<void> opened;
  Request head;
  head.path = "/s";
  pair.conn->open_session(head, SessionCallbacks{[](std::span<const std::uint8_t>) {}, [](std::error_code) {}, {}, {}}, 5s,
                          [&](std::error_code, std::shared_ptr<Session> s) {
                            session = s;
                            opened.set_value();
                          });
  opened.get_future().wait();
  // The sender runs on the client endpoint's (single-threaded) io_context.
  auto strand_post = [&](auto fn) { asio::post(two_threads ? pair.client_loop.io : pair.server_loop.io, fn); };
  for (auto _ : state) {
    counter->done = std::promise<void>();
    counter->target = counter->frames.load() + kFrames;
    auto fut = counter->done.get_future();
    const auto t0 = std::chrono::steady_clock::now();
    auto sent = std::make_shared<std::uint64_t>(0);
    auto pump = std::make_shared<std::function<void()>>();
    *pump = [session, sent, pump, &batch] {
      while (*sent < kFrames) {
        if (session->send(batch) == errc::queue_full) return session->on_writable(*pump);
        *sent += 512;
      }
    };
    strand_post(*pump);
    fut.wait();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(secs);
    strand_post([pump] { *pump = nullptr; });  // break the self-reference
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kFrames));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kFrames * 64));
}

void Http3Requests(benchmark::State& state) {
  Pair pair(state.range(1) != 0);
  const auto in_flight = static_cast<std::size_t>(state.range(0));
  constexpr std::size_t kRequests = 20'000;
  std::vector<double> latencies;
  for (auto _ : state) {
    latencies.clear();
    latencies.reserve(kRequests);
    std::mutex m;
    std::promise<void> done;
    std::atomic<std::size_t> issued{0}, completed{0};
    std::function<void()> issue = [&] {
      if (issued.fetch_add(1) >= kRequests) return;
      Request r;
      r.method = "POST";
      r.path = "/echo";
      r.body.assign(64, 'x');
      const auto t0 = std::chrono::steady_clock::now();
      pair.conn->request(std::move(r), 10s, [&, t0](std::error_code, Response) {
        const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
        {
          std::lock_guard lock(m);
          latencies.push_back(us);
        }
        if (completed.fetch_add(1) + 1 == kRequests) done.set_value();
        else issue();
      });
    };
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < in_flight; ++i) issue();
    done.get_future().wait();
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kRequests));
  state.counters["p50_us"] = percentile(latencies, 0.50);
  state.counters["p99_us"] = percentile(latencies, 0.99);
}

void Handshakes(benchmark::State& state) {
  Pair pair;
  std::vector<double> times;
  std::vector<std::shared_ptr<Connection>> keep;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto c = pair.dial();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!c) state.SkipWithError("handshake failed");
    times.push_back(secs * 1e6);
    state.SetIterationTime(secs);
    c->close(CloseCode::no_error, "bench");
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["p50_us"] = percentile(times, 0.50);
  state.counters["p99_us"] = percentile(times, 0.99);
}

std::size_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

void IdleConnectionMemory(benchmark::State& state) {
  constexpr int kConnections = 1000;
  for (auto _ : state) {
    Pair pair;
    std::vector<std::shared_ptr<Connection>> conns;
    pair.dial();  // warm allocator pools before measuring
    const std::size_t before = rss_bytes();
    const auto heap_before = mallinfo2().uordblks;
    for (int i = 0; i < kConnections; ++i) conns.push_back(pair.dial());
    std::this_thread::sleep_for(200ms);  // let handshakes settle (ACKs, NEW_CONNECTION_IDs)
    const std::size_t after = rss_bytes();
    const auto heap_live = mallinfo2().uordblks;
    malloc_trim(0);
    state.counters["rss_after_trim_per_conn_one_end"] = static_cast<double>(rss_bytes() - before) / (2.0 * kConnections);
    state.counters["heap_in_use_per_conn_one_end"] = static_cast<double>(heap_live - heap_before) / (2.0 * kConnections);
    const auto ok = std::count_if(conns.begin(), conns.end(), [](auto& c) { return c != nullptr; });
    if (ok != kConnections) state.SkipWithError("not all connections were established");
    // Both ends live in this process: the delta covers the client and the server side of
    // every connection.
    state.counters["bytes_per_conn_both_ends"] = static_cast<double>(after - before) / kConnections;
    state.counters["bytes_per_conn_one_end"] = static_cast<double>(after - before) / (2.0 * kConnections);
  }
}

BENCHMARK(SessionFrames64)->ArgName("two_threads")->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(Http3Requests)
    ->ArgNames({"in_flight", "two_threads"})
    ->Args({1, 0})->Args({10, 0})->Args({100, 0})->Args({1, 1})->Args({100, 1})
    ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(Handshakes)->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(300);
BENCHMARK(IdleConnectionMemory)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
