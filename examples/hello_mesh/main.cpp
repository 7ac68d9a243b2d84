// hello_mesh: the README demo — three nodes in one process form a mesh over QUIC/HTTP/3 on
// loopback, then do pub/sub with wildcards and an RPC across it, printing what flowed.
//
// It drives the internal NodeCore engine; the public Node / Publisher / Subscriber /
// RpcClient API (the Node issue) will replace these calls without changing what happens.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <mutex>
#include <string>
#include <thread>

#include "node/node_core.hpp"
#include "support/io_thread.hpp"

using namespace macula;
using namespace std::chrono_literals;

namespace {

std::vector<std::uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<std::uint8_t>& b) { return {b.begin(), b.end()}; }
std::string short_id(const NodeId& id) { return id.to_hex().substr(0, 8); }

std::shared_ptr<node::NodeCore> start_node(boost::asio::io_context& io, const char* name) {
  node::NodeCoreOptions o;
  o.realm = "demo.realm";
  o.endpoint.identity = transport::Identity::generate();
  std::error_code ec;
  auto n = node::NodeCore::create(io, std::move(o), ec);
  if (ec) {
    std::fprintf(stderr, "node %s failed to start: %s\n", name, ec.message().c_str());
    std::exit(1);
  }
  std::printf("node %s  id %s…  listening on %s\n", name, short_id(n->node_id()).c_str(),
              (n->local_endpoint().address().to_string() + ":" + std::to_string(n->local_endpoint().port())).c_str());
  return n;
}

void link(node::NodeCore& from, node::NodeCore& to, const char* a, const char* b) {
  std::promise<std::error_code> p;
  from.connect(to.local_endpoint(), to.node_id(), [&](std::error_code e) { p.set_value(e); });
  const auto ec = p.get_future().get();
  std::printf("link %s -> %s: %s\n", a, b, ec ? ec.message().c_str() : "up (mutual node-id TLS, realm checked)");
  if (ec) std::exit(1);
}

}  // namespace

int main() {
  test::IoThread loop;  // one io_context thread carries all three nodes' QUIC traffic
  std::printf("== three nodes, realm demo.realm\n");
  auto a = start_node(loop.io, "A");
  auto b = start_node(loop.io, "B");
  auto c = start_node(loop.io, "C");
  link(*a, *b, "A", "B");
  link(*a, *c, "A", "C");

  std::printf("\n== pub/sub\n");
  std::mutex print;
  std::atomic<int> received{0};
  auto show = [&](const char* who) {
    return [&, who](const node::Delivery& d) {
      std::lock_guard lock(print);
      std::printf("  %s got %-26s via %-16s from %s… : %s\n", who, d.topic.c_str(), d.pattern.c_str(),
                  short_id(d.publisher).c_str(), text(d.payload).c_str());
      ++received;
    };
  };
  std::error_code ec;
  b->subscribe("sensors.#.temp", show("B"), ec);
  c->subscribe("sensors.*.humidity", show("C"), ec);
  c->subscribe("alerts.**", show("C"), ec);
  std::printf("B subscribes sensors.#.temp; C subscribes sensors.*.humidity and alerts.**\n");
  std::this_thread::sleep_for(100ms);  // interest announcements cross the links
  for (const char* topic : {"sensors.temp", "sensors.kitchen.humidity", "sensors.floor1.room2.temp", "alerts.fire"}) {
    std::printf("A publishes %s\n", topic);
    a->publish(topic, bytes(std::string("reading for ") + topic), [](std::error_code) {});
    std::this_thread::sleep_for(30ms);
  }
  for (int i = 0; i < 100 && received < 4; ++i) std::this_thread::sleep_for(10ms);

  std::printf("\n== RPC\n");
  c->advertise("math.add", [](std::vector<std::uint8_t> args, node::RpcReply reply) {
    int sum = 0;
    for (auto x : args) sum += x;
    reply({}, bytes(std::to_string(sum)));
  });
  std::printf("C advertises math.add\n");
  std::this_thread::sleep_for(100ms);
  for (const auto& args : {std::vector<std::uint8_t>{2, 3}, std::vector<std::uint8_t>{40, 2}}) {
    std::promise<std::pair<std::error_code, std::string>> p;
    a->call("math.add", args, 2000ms, [&](std::error_code e, std::vector<std::uint8_t> r) { p.set_value({e, text(r)}); });
    auto [e, r] = p.get_future().get();
    std::printf("A calls math.add(%d, %d) on C -> %s\n", args[0], args[1], e ? e.message().c_str() : r.c_str());
  }
  std::promise<std::error_code> missing;
  a->call("math.mul", {}, 2000ms, [&](std::error_code e, std::vector<std::uint8_t>) { missing.set_value(e); });
  std::printf("A calls math.mul -> %s\n", missing.get_future().get().message().c_str());

  std::printf("\n== throughput (QoS 0, 64-byte payloads, A -> B over QUIC)\n");
  std::atomic<int> counted{0};
  b->subscribe("bench.x", [&](const node::Delivery&) { ++counted; }, ec);
  std::this_thread::sleep_for(100ms);
  constexpr int kMessages = 200'000;
  constexpr int kWindow = 10'000;  // QoS 0 drops what a full link refuses: pace by what arrived
  const auto t0 = std::chrono::steady_clock::now();
  for (int sent = 0; sent < kMessages;) {
    if (sent - counted.load() < kWindow) {
      a->publish("bench.x", std::vector<std::uint8_t>(64, 1), [](std::error_code) {});
      ++sent;
    } else {
      std::this_thread::yield();
    }
  }
  for (int i = 0; i < 1000 && counted < kMessages; ++i) std::this_thread::sleep_for(1ms);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto st = a->stats();
  std::printf("%d of %d delivered in %.3f s: %.0f msgs/s (dropped under backpressure: %llu)\n", counted.load(),
              kMessages, secs, counted / secs, static_cast<unsigned long long>(st.dropped_backpressure));
  std::printf("(unoptimized path, one thread for all three nodes; benchmarks/report has the measured figures)\n");

  c->stop();
  b->stop();
  a->stop();
  std::printf("\nstopped cleanly\n");
  return 0;
}
