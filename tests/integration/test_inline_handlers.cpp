// Inline subscription handlers (SubscribeOptions::inline_handler): the handler runs on the io
// thread that matched the message, with no queue and no hand-over to the worker pool; the
// default stays the pool.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/post.hpp>
#include <boost/asio/use_future.hpp>

#include "macula/error.hpp"
#include "macula/publisher.hpp"
#include "macula/rpc_client.hpp"
#include "macula/rpc_handler.hpp"
#include "macula/subscriber.hpp"
#include "support/node_helpers.hpp"
#include "macula/testing/local_mesh.hpp"

using namespace macula;
using namespace std::chrono_literals;
using macula::test::bytes;
using macula::test::eventually;
using macula::testing::LocalMesh;
using macula::testing::LocalMeshOptions;

namespace {

LocalMeshOptions mesh_of(std::size_t n) {
  LocalMeshOptions o;
  o.size = n;
  o.io_threads = 1;  // one io thread: "the io thread" is one thread id
  o.node.realm = "inline.realm";
  o.node.dht = false;
  return o;
}



std::thread::id io_thread_of(Node& n) {
  std::promise<std::thread::id> id;
  boost::asio::post(n.get_executor(), [&] { id.set_value(std::this_thread::get_id()); });
  return id.get_future().get();
}

SubscribeOptions inline_options() {
  SubscribeOptions o;
  o.inline_handler = true;
  return o;
}

}  // namespace

TEST_CASE("inline handler: runs on the io thread; the default runs on the worker pool", "[inline]") {
  LocalMesh mesh(mesh_of(2));
  const auto io = io_thread_of(mesh[1]);
  std::mutex m;
  std::vector<std::thread::id> inline_threads, pool_threads;
  Subscriber fast(mesh[1], "t.#", [&](const Message&) {
    std::lock_guard lock(m);
    inline_threads.push_back(std::this_thread::get_id());
  }, inline_options());
  Subscriber pooled(mesh[1], "t.#", [&](const Message&) {
    std::lock_guard lock(m);
    pool_threads.push_back(std::this_thread::get_id());
  });
  mesh.settle();
  Publisher remote(mesh[0]), local(mesh[1]);
  REQUIRE_FALSE(remote.publish("t.remote", bytes("a")));
  REQUIRE_FALSE(local.publish("t.local", bytes("b")));
  REQUIRE(eventually([&] {
    std::lock_guard lock(m);
    return inline_threads.size() == 2 && pool_threads.size() == 2;
  }));
  std::lock_guard lock(m);
  for (const auto& t : inline_threads) CHECK(t == io);
  for (const auto& t : pool_threads) CHECK(t != io);
}

TEST_CASE("inline handler: every message in order, QoS 1 acknowledged, exceptions counted", "[inline]") {
  LocalMesh mesh(mesh_of(2));
  constexpr int kMessages = 20'000;
  std::vector<int> seen;
  seen.reserve(kMessages);
  std::atomic<int> count{0};
  Subscriber sub(mesh[1], "seq.x", [&](const Message& msg) {
    const int v = std::stoi(msg.payload_string());
    if (v % 1000 == 999) throw std::runtime_error("counted, not fatal");
    seen.push_back(v);  // one io thread: no lock needed, which is the point
    ++count;
  }, inline_options());
  mesh.settle();
  Publisher pub(mesh[0]);
  for (int i = 0; i < kMessages; ++i) REQUIRE_FALSE(pub.publish("seq.x", bytes(std::to_string(i))));
  // The last message throws: wait for every delivery, not only for the ones that were kept.
  REQUIRE(eventually([&] { return sub.received() == kMessages && sub.handler_errors() == kMessages / 1000; }));
  CHECK(count.load() == kMessages - kMessages / 1000);
  bool ordered = true;
  for (std::size_t i = 1; i < seen.size(); ++i) ordered = ordered && seen[i] > seen[i - 1];
  CHECK(ordered);
  CHECK(sub.dropped() == 0);
  CHECK(sub.received() == kMessages);
  CHECK(sub.handler_errors() == kMessages / 1000);

  // QoS 1: acknowledged once the inline handler has run.
  std::atomic<int> qos1{0};
  Subscriber acked(mesh[1], "ack.x", [&](const Message&) { ++qos1; }, inline_options());
  mesh.settle();
  CHECK_FALSE(pub.async_publish("ack.x", bytes("1"), Qos::at_least_once, boost::asio::use_future).get());
  CHECK(qos1 == 1);
}

TEST_CASE("inline handler: blocking calls are refused, and no call starts after unsubscribe", "[inline]") {
  LocalMesh mesh(mesh_of(1));
  std::promise<std::error_code> blocked;
  std::atomic<int> calls{0};
  Subscriber sub(mesh[0], "b.x", [&](const Message&) {
    if (calls++ == 0) blocked.set_value(mesh[0].connect("127.0.0.1:1"));
  }, inline_options());
  Publisher pub(mesh[0]);
  REQUIRE_FALSE(pub.publish("b.x", bytes("1")));
  auto f = blocked.get_future();
  REQUIRE(f.wait_for(5s) == std::future_status::ready);
  CHECK(f.get() == errc::would_deadlock);

  sub.unsubscribe();
  const int before = calls.load();
  for (int i = 0; i < 100; ++i) CHECK_FALSE(pub.publish("b.x", bytes("x")));
  // A round trip through the io thread: every publish above has been matched by now.
  io_thread_of(mesh[0]);
  std::this_thread::sleep_for(50ms);
  CHECK(calls.load() == before);
}

TEST_CASE("inline RPC handler: runs on the provider's io thread, answers now or later, errors as usual", "[inline]") {
  LocalMesh mesh(mesh_of(2));
  const auto io = io_thread_of(mesh[1]);
  AdvertiseOptions o;
  o.inline_handler = true;
  std::atomic<bool> on_io{false};
  auto echo = mesh[1].advertise("svc.echo", [&](Bytes a, RpcResponder r) {
    on_io = std::this_thread::get_id() == io;
    r.reply(std::move(a));
  }, o);
  auto thrower = mesh[1].advertise("svc.throw", [](Bytes, RpcResponder) { throw std::runtime_error("bad input"); }, o);
  std::mutex m;
  std::vector<RpcResponder> kept;
  auto later = mesh[1].advertise("svc.later", [&](Bytes, RpcResponder r) {
    std::lock_guard lock(m);
    kept.push_back(std::move(r));
  }, o);
  std::promise<std::error_code> blocked;
  auto blocking = mesh[1].advertise("svc.block", [&](Bytes, RpcResponder r) {
    blocked.set_value(mesh[1].connect("127.0.0.1:1"));
    r.reply({});
  }, o);
  mesh.settle();
  RpcClient client(mesh[0]);
  std::error_code ec;
  CHECK(client.call("svc.echo", bytes("hi"), ec) == bytes("hi"));
  CHECK_FALSE(ec);
  CHECK(on_io);
  const Bytes why = client.call("svc.throw", bytes("x"), ec);
  CHECK(ec == errc::handler_error);
  CHECK(std::string(why.begin(), why.end()).find("bad input") != std::string::npos);

  auto pending = client.async_call("svc.later", bytes("x"), boost::asio::use_future);
  REQUIRE(eventually([&] {
    std::lock_guard lock(m);
    return kept.size() == 1;
  }));
  std::thread([&] { kept[0].reply(bytes("from another thread")); }).join();
  auto [late_ec, late] = pending.get();  // std::error_code: use_future yields a tuple
  CHECK_FALSE(late_ec);
  CHECK(late == bytes("from another thread"));

  client.call("svc.block", bytes("x"), ec);
  CHECK_FALSE(ec);
  CHECK(blocked.get_future().get() == errc::would_deadlock);
}

TEST_CASE("inline RPC handler: an answer given in the handler frees its max_concurrency slot at once", "[inline]") {
  LocalMesh mesh(mesh_of(2));
  AdvertiseOptions o;
  o.inline_handler = true;
  o.max_concurrency = 1;  // handlers that answer at once are never two at a time
  auto echo = mesh[1].advertise("svc.one", [](Bytes a, RpcResponder r) { r.reply(std::move(a)); }, o);
  auto local = mesh[0].advertise("svc.local", [](Bytes a, RpcResponder r) { r.reply(std::move(a)); }, o);
  mesh.settle();
  RpcClient client(mesh[0]);
  // A burst: many calls reach the provider in one read, each answered before the next starts.
  for (const char* procedure : {"svc.one", "svc.local"}) {
    std::vector<std::future<std::tuple<std::error_code, Bytes>>> calls;
    for (int i = 0; i < 200; ++i)
      calls.push_back(client.async_call(procedure, bytes(std::to_string(i)), boost::asio::use_future));
    int ok = 0;
    for (int i = 0; i < 200; ++i) {
      auto [ec, b] = calls[static_cast<std::size_t>(i)].get();
      if (!ec && b == bytes(std::to_string(i))) ++ok;
    }
    CHECK(ok == 200);
  }
}

TEST_CASE("inline handler: a handler may end its own subscription; no call starts after", "[inline]") {
  LocalMesh mesh(mesh_of(1));
  std::atomic<int> calls{0};
  auto sub = std::make_unique<Subscriber>();
  *sub = Subscriber(mesh[0], "self.x", [&](const Message&) {
    ++calls;
    sub->unsubscribe();
  }, inline_options());
  Publisher pub(mesh[0]);
  for (int i = 0; i < 50; ++i) REQUIRE_FALSE(pub.publish("self.x", bytes("x")));
  io_thread_of(mesh[0]);
  REQUIRE(eventually([&] { return calls.load() >= 1; }));
  std::this_thread::sleep_for(50ms);
  CHECK(calls.load() == 1);
}
