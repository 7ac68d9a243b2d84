// hello_mesh: the README demo — three nodes in one process form a mesh over QUIC/HTTP/3 on
// loopback, then do pub/sub with wildcards, QoS 1, RPC, and a leaf reached through a gateway,
// printing what flowed.
// Only the public API: macula::testing::LocalMesh, Publisher, Subscriber, RpcClient.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <mutex>
#include <string>
#include <thread>

#include <boost/asio/use_future.hpp>

#include "macula/publisher.hpp"
#include "macula/rpc_client.hpp"
#include "macula/subscriber.hpp"
#include "macula/testing/local_mesh.hpp"

using namespace std::chrono_literals;

namespace {
macula::Bytes bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const macula::Bytes& b) { return {b.begin(), b.end()}; }
std::string short_id(const macula::NodeId& id) { return id.to_hex().substr(0, 8); }
}  // namespace

int main() {
  macula::testing::LocalMeshOptions options;
  options.size = 3;
  options.node.realm = "demo.realm";
  std::error_code ec;
  macula::testing::LocalMesh mesh(options, ec);
  if (ec) {
    std::fprintf(stderr, "mesh failed to start: %s\n", ec.message().c_str());
    return 1;
  }
  macula::Node &a = mesh[0], &b = mesh[1], &c = mesh[2];
  std::printf("== three nodes, realm demo.realm, every pair linked (mutual node-id TLS over QUIC)\n");
  const char* names = "ABC";
  for (std::size_t i = 0; i < 3; ++i)
    std::printf("node %c  id %s…  on %s  links %zu\n", names[i], short_id(mesh[i].node_id()).c_str(),
                mesh[i].local_address().c_str(), mesh[i].stats().links);

  std::printf("\n== pub/sub\n");
  std::mutex print;
  std::atomic<int> received{0};
  auto show = [&](const char* who) {
    return [&, who](const macula::Message& m) {
      std::lock_guard lock(print);
      std::printf("  %s got %-26.*s via %-18.*s from %s… : %s\n", who, static_cast<int>(m.topic().size()),
                  m.topic().data(), static_cast<int>(m.pattern().size()), m.pattern().data(),
                  short_id(m.publisher()).c_str(), m.payload_string().c_str());
      ++received;
    };
  };
  macula::Subscriber s1(b, "sensors.#.temp", show("B"));
  macula::Subscriber s2(c, "sensors.*.humidity", show("C"));
  macula::Subscriber s3(c, "alerts.**", show("C"));
  std::printf("B subscribes sensors.#.temp; C subscribes sensors.*.humidity and alerts.**\n");
  mesh.settle();  // the interest announcements crossed the links
  macula::Publisher pub(a);
  for (const char* topic : {"sensors.temp", "sensors.kitchen.humidity", "sensors.floor1.room2.temp", "alerts.fire"}) {
    {
      std::lock_guard lock(print);
      std::printf("A publishes %s (QoS 1)\n", topic);
    }
    auto acked = pub.async_publish(topic, bytes(std::string("reading for ") + topic), macula::Qos::at_least_once,
                                   boost::asio::use_future);
    if (auto e = acked.get()) std::printf("  not acknowledged: %s\n", e.message().c_str());
  }
  for (int i = 0; i < 200 && received < 4; ++i) std::this_thread::sleep_for(5ms);

  std::printf("\n== RPC\n");
  auto add = c.advertise("math.add", macula::sync_handler([](const macula::Bytes& args) {
    int sum = 0;
    for (auto x : args) sum += x;
    return bytes(std::to_string(sum));
  }));
  std::printf("C advertises math.add\n");
  mesh.settle();
  macula::RpcClient client(a);
  for (const auto& args : {macula::Bytes{2, 3}, macula::Bytes{40, 2}}) {
    macula::Bytes r = client.call("math.add", args, ec);
    std::printf("A calls math.add(%d, %d) -> %s\n", args[0], args[1], ec ? ec.message().c_str() : text(r).c_str());
  }
  client.call("math.mul", {}, ec);
  std::printf("A calls math.mul -> %s\n", ec.message().c_str());

  std::printf("\n== multi-hop: a leaf (it can dial out, nobody can dial it) behind C\n");
  {
    macula::NodeOptions lo = options.node;
    lo.leaf = true;
    lo.http_listen.clear();
    macula::Node leaf(mesh.io(), lo);
    if ((ec = leaf.start())) {
      std::fprintf(stderr, "leaf failed to start: %s\n", ec.message().c_str());
      return 1;
    }
    macula::Subscriber at_leaf(leaf, "leaf.#", show("leaf"));
    if (!(ec = leaf.connect(c.local_address()))) {
      std::printf("the leaf links to C (its gateway) and subscribes leaf.#; C announces it as its own\n");
      mesh.settle();
      // QoS 1 completes once the leaf acknowledged it through C.
      auto done = pub.async_publish("leaf.hello", bytes("from A, relayed by C"), macula::Qos::at_least_once,
                                    boost::asio::use_future);
      ec = done.wait_for(5s) == std::future_status::ready ? done.get() : std::error_code(macula::errc::timed_out);
      std::printf("A publishes leaf.hello (QoS 1) -> %s\n", ec ? ec.message().c_str() : "acknowledged");
      macula::RpcClient from_leaf(leaf);
      macula::Bytes r = from_leaf.call("math.add", macula::Bytes{1, 2}, ec);
      std::printf("the leaf calls math.add(1, 2) through C -> %s\n", ec ? ec.message().c_str() : text(r).c_str());
    } else {
      std::printf("the leaf could not link to C: %s\n", ec.message().c_str());
    }
    leaf.stop();
  }

  std::printf("\n== throughput (QoS 0, 64-byte payloads, A -> B over QUIC)\n");
  std::atomic<int> counted{0};
  macula::Subscriber sink(b, "bench.x", [&](const macula::Message&) { ++counted; }, macula::SubscribeOptions{1 << 16});
  mesh.settle();
  constexpr int kMessages = 500'000;
  constexpr int kWindow = 20'000;  // QoS 0 drops what a full link refuses: pace by what arrived
  const macula::Bytes payload(64, 1);
  const auto t0 = std::chrono::steady_clock::now();
  for (int sent = 0; sent < kMessages;) {
    if (sent - counted.load() < kWindow) {
      if (!pub.publish("bench.x", payload)) ++sent;
    } else {
      std::this_thread::yield();
    }
  }
  for (int i = 0; i < 2000 && counted < kMessages; ++i) std::this_thread::sleep_for(1ms);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%d of %d delivered in %.3f s: %.0f msgs/s (dropped: %llu)\n", counted.load(), kMessages, secs,
              counted / secs, static_cast<unsigned long long>(a.stats().dropped));
  std::printf("(benchmarks/report has the measured figures, against NATS)\n");

  mesh.stop();
  std::printf("\nstopped cleanly\n");
  return 0;
}
