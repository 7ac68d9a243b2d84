// The public Node API across real loopback QUIC: pub/sub with wildcards across 1-5 nodes,
// QoS 1 over a dropped link, slow subscribers, pull mode, RPC outcomes and failover,
// cancellation, realm isolation, bounds, graceful stop, completion tokens, HTTP/3 clients.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include "macula/error.hpp"
#include "macula/node.hpp"
#include "macula/publisher.hpp"
#include "macula/rpc_client.hpp"
#include "macula/subscriber.hpp"
#include "macula/testing/local_mesh.hpp"
#include "discovery/discovery.hpp"
#include "node/node_core.hpp"
#include "transport/endpoint.hpp"
#include "support/io_thread.hpp"
#include "support/node_helpers.hpp"

using namespace macula;
using namespace std::chrono_literals;
using macula::testing::LocalMesh;
using macula::testing::LocalMeshOptions;

namespace {

using test::bytes;
using test::Inbox;
using test::text;

LocalMeshOptions mesh_of(std::size_t n) {
  LocalMeshOptions o;
  o.size = n;
  o.node.realm = "test.realm";
  return o;
}

std::error_code publish_sync(Publisher& p, const std::string& topic, const std::string& body, Qos qos = Qos::at_most_once) {
  return p.async_publish(topic, bytes(body), qos, boost::asio::use_future).get();
}

// Responders a test holds back (to make calls hang), answered at the end.
struct Held {
  std::mutex m;
  std::vector<RpcResponder> v;
  void add(RpcResponder r) {
    std::lock_guard lock(m);
    v.push_back(std::move(r));
  }
  std::size_t size() {
    std::lock_guard lock(m);
    return v.size();
  }
  void reply_all(const Bytes& b) {
    std::lock_guard lock(m);
    for (auto& r : v) r.reply(b);
  }
};

std::pair<std::error_code, Bytes> call_sync(RpcClient& c, const std::string& proc, const std::string& args,
                                            CallOptions o = {}) {
  std::promise<std::pair<std::error_code, Bytes>> p;
  c.async_call(proc, bytes(args), std::move(o), [&](std::error_code ec, Bytes b) { p.set_value({ec, std::move(b)}); });
  return p.get_future().get();
}

}  // namespace

TEST_CASE("node: local pub/sub with *, # and **; unsubscribe stops delivery", "[node][pubsub]") {
  LocalMesh mesh(mesh_of(1));
  Node& n = mesh[0];
  Inbox star, hash_mid, dstar;
  Subscriber s1(n, "sensors.*.temp", star.handler());
  Subscriber s2(n, "sensors.#.temp", hash_mid.handler());
  auto s3 = std::make_unique<Subscriber>(n, "alerts.**", dstar.handler());
  Publisher pub(n);
  for (const char* t : {"sensors.kitchen.temp", "sensors.temp", "sensors.a.b.temp", "alerts", "alerts.fire.floor2",
                        "sensors.kitchen.humidity"})
    REQUIRE_FALSE(publish_sync(pub, t, "x"));
  REQUIRE(star.wait_for(1));
  REQUIRE(hash_mid.wait_for(3));
  REQUIRE(dstar.wait_for(2));
  std::this_thread::sleep_for(50ms);
  CHECK(star.topics() == std::multiset<std::string>{"sensors.kitchen.temp"});
  CHECK(hash_mid.topics() == std::multiset<std::string>{"sensors.kitchen.temp", "sensors.temp", "sensors.a.b.temp"});
  CHECK(dstar.topics() == std::multiset<std::string>{"alerts", "alerts.fire.floor2"});
  {
    std::lock_guard lock(star.m);
    const Message& m = star.got.front();
    CHECK(m.pattern() == "sensors.*.temp");
    CHECK(m.payload_string() == "x");
    CHECK(m.publisher() == n.node_id());
    CHECK(m.sequence() > 0);
  }
  s3.reset();  // unsubscribes
  REQUIRE_FALSE(publish_sync(pub, "alerts.fire", "y"));
  std::this_thread::sleep_for(100ms);
  CHECK(dstar.size() == 2);
  CHECK(pub.publish("bad..topic", bytes("z")) == errc::name_empty_segment);
  std::error_code ec;
  Subscriber bad(n, "a.b*", {}, SubscribeOptions{}, ec);
  CHECK_FALSE(ec);  // 'b*' is a literal segment in patterns (names.hpp)
  Subscriber bad2(n, "a..b", {}, SubscribeOptions{}, ec);
  CHECK(ec == errc::name_empty_segment);
}

TEST_CASE("node: pub/sub across 2, 3 and 5 nodes: each subscriber gets each match once", "[node][pubsub]") {
  for (std::size_t n : {2u, 3u, 5u}) {
    CAPTURE(n);
    LocalMesh mesh(mesh_of(n));
    std::vector<std::unique_ptr<Inbox>> inboxes;
    std::vector<Subscriber> subs;
    // Every node but 0 subscribes three times: a `*` pattern, a mid-pattern `#`, and `**`.
    for (std::size_t i = 1; i < n; ++i) {
      inboxes.push_back(std::make_unique<Inbox>());
      subs.emplace_back(mesh[i], "room.*.temp", inboxes.back()->handler());
      inboxes.push_back(std::make_unique<Inbox>());
      subs.emplace_back(mesh[i], "room.#.temp", inboxes.back()->handler());
      inboxes.push_back(std::make_unique<Inbox>());
      subs.emplace_back(mesh[i], "room.**", inboxes.back()->handler());
    }
    mesh.settle();  // interest announcements reached node 0
    Publisher pub(mesh[0]);
    REQUIRE_FALSE(publish_sync(pub, "room.kitchen.temp", "21"));
    REQUIRE_FALSE(publish_sync(pub, "room.floor1.east.temp", "19"));
    REQUIRE_FALSE(publish_sync(pub, "room.kitchen.humidity", "40"));
    for (std::size_t k = 0; k < inboxes.size(); ++k) REQUIRE(inboxes[k]->wait_for(k % 3 + 1));
    std::this_thread::sleep_for(50ms);
    for (std::size_t k = 0; k < inboxes.size(); k += 3) {
      CHECK(inboxes[k]->topics() == std::multiset<std::string>{"room.kitchen.temp"});
      CHECK(inboxes[k + 1]->topics() == std::multiset<std::string>{"room.kitchen.temp", "room.floor1.east.temp"});
      CHECK(inboxes[k + 2]->topics() ==
            std::multiset<std::string>{"room.kitchen.temp", "room.floor1.east.temp", "room.kitchen.humidity"});
    }
    // Once per interested link, not once per remote subscriber: 3 publishes x (n-1) links.
    CHECK(mesh[0].stats().forwarded == 3 * (n - 1));
    CHECK(mesh[0].stats().links == n - 1);
  }
}

TEST_CASE("node: QoS 1 across a link that is dropped and re-established: no loss, no duplicate", "[node][qos1]") {
  auto o = mesh_of(2);
  LocalMesh mesh(o);
  std::mutex m;
  std::vector<std::uint64_t> seqs;
  Subscriber sub(mesh[1], "orders.#", [&](const Message& msg) {
    std::lock_guard lock(m);
    seqs.push_back(msg.sequence());
  }, SubscribeOptions{100'000});
  mesh.settle();
  Publisher pub(mesh[0]);
  constexpr int kMessages = 2000;
  std::vector<std::future<std::error_code>> acks;
  for (int i = 0; i < kMessages; ++i) {
    acks.push_back(pub.async_publish("orders.new", bytes("order " + std::to_string(i)), Qos::at_least_once,
                                     boost::asio::use_future));
    if (i == kMessages / 2) node::TestHooks::drop_links(mesh[0]);  // node 0 dialed: it re-links
  }
  for (auto& a : acks) REQUIRE_FALSE(a.get());
  std::this_thread::sleep_for(100ms);
  std::lock_guard lock(m);
  const std::set<std::uint64_t> distinct(seqs.begin(), seqs.end());
  CHECK(distinct.size() == static_cast<std::size_t>(kMessages));  // no loss
  CHECK(seqs.size() == static_cast<std::size_t>(kMessages));      // no duplicate reached the handler
  CHECK(mesh[0].stats().links == 1);                                // the link came back
}

TEST_CASE("node: a slow subscriber fills only its own queue and never delays a fast one", "[node][pubsub]") {
  LocalMesh mesh(mesh_of(1));
  std::promise<void> release;
  auto released = release.get_future().share();
  auto slow_calls = std::make_shared<std::atomic<int>>(0);
  std::atomic<int> fast_calls{0};
  // By value: a handler already running may outlive its Subscriber (subscriber.hpp).
  Subscriber slow(mesh[0], "feed.#", [slow_calls, released](const Message&) {
    ++*slow_calls;
    released.wait();  // stuck until the fast one got everything
  }, SubscribeOptions{16, SubscriberOverflow::drop_oldest, 1});  // batch 1: exact counts
  Subscriber fast(mesh[0], "feed.#", [&](const Message&) { ++fast_calls; }, SubscribeOptions{1024});
  Publisher pub(mesh[0]);
  constexpr int kMessages = 500;
  for (int i = 0; i < kMessages; ++i) REQUIRE_FALSE(pub.publish("feed.tick", bytes("t")));
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (fast_calls < kMessages && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
  CHECK(fast_calls == kMessages);
  CHECK(*slow_calls == 1);  // still inside its first message
  // One message is in the stuck handler; the queue is full (16, or 15 when the handler took
  // its message after the queue had filled); everything else was dropped, and counted.
  CHECK(slow.queued() >= 15);
  CHECK(1 + slow.queued() + slow.dropped() == static_cast<std::size_t>(kMessages));
  CHECK(fast.dropped() == 0);
  const std::string series = "macula_messages_dropped_total{reason=\"subscriber_overflow\"} " + std::to_string(slow.dropped());
  release.set_value();
  CHECK(mesh[0].metrics_text().find(series) != std::string::npos);
}

TEST_CASE("node: pull mode with async_receive, try_receive and drop_newest", "[node][pubsub]") {
  LocalMesh mesh(mesh_of(2));
  Subscriber pull(mesh[1], "jobs.*", SubscribeOptions{4, SubscriberOverflow::drop_newest});
  mesh.settle();
  Publisher pub(mesh[0]);
  auto first = pull.async_receive(boost::asio::use_future);  // waits before anything is queued
  for (int i = 0; i < 10; ++i) REQUIRE_FALSE(publish_sync(pub, "jobs.build", std::to_string(i)));
  auto [ec, m] = first.get();
  REQUIRE_FALSE(ec);
  CHECK(m.payload_string() == "0");
  const auto until = std::chrono::steady_clock::now() + 3s;
  while (pull.received() < 5 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(50ms);
  std::vector<std::string> rest;
  while (auto next = pull.try_receive()) rest.push_back(next->payload_string());
  CHECK(rest == std::vector<std::string>{"1", "2", "3", "4"});  // newest were refused
  CHECK(pull.dropped() == 5);
  auto pending = pull.async_receive(boost::asio::use_future);
  pull.unsubscribe();
  CHECK(std::get<0>(pending.get()) == errc::cancelled);
  Subscriber callback(mesh[1], "x.y", [](const Message&) {});
  CHECK(std::get<0>(callback.async_receive(boost::asio::use_future).get()) == errc::wrong_mode);
}

TEST_CASE("node: RPC result, async answer, handler error, exception, unknown procedure, timeout", "[node][rpc]") {
  LocalMesh mesh(mesh_of(2));
  Node& server = mesh[1];
  auto upper = server.advertise("text.upper", sync_handler([](const Bytes& a) {
    Bytes r = a;
    for (auto& c : r) c = static_cast<std::uint8_t>(std::toupper(c));
    return r;
  }));
  auto later = server.advertise("text.later", [](Bytes args, RpcResponder r) {
    std::thread([args = std::move(args), r] {
      std::this_thread::sleep_for(20ms);
      r.reply(args);
    }).detach();
  });
  auto fails = server.advertise("text.fail", [](Bytes, RpcResponder r) { r.fail("bad input"); });
  auto throws = server.advertise("text.throw", [](Bytes, RpcResponder) -> void { throw std::runtime_error("boom"); });
  auto forgets = server.advertise("text.forget", [](Bytes, RpcResponder) {});
  auto held = std::make_shared<Held>();  // shared: handlers may run after the test body
  auto hangs = server.advertise("text.hang", [held](Bytes, RpcResponder r) { held->add(r); });
  mesh.settle();
  RpcClient client(mesh[0]);
  auto [ec1, r1] = call_sync(client, "text.upper", "shout");
  CHECK_FALSE(ec1);
  CHECK(text(r1) == "SHOUT");
  auto [ec2, r2] = call_sync(client, "text.later", "async");
  CHECK_FALSE(ec2);
  CHECK(text(r2) == "async");
  auto [ec3, r3] = call_sync(client, "text.fail", "");
  CHECK(ec3 == errc::handler_error);
  CHECK(text(r3) == "bad input");
  auto [ec4, r4] = call_sync(client, "text.throw", "");
  CHECK(ec4 == errc::handler_error);
  CHECK(text(r4) == "boom");
  auto [ec5, r5] = call_sync(client, "text.forget", "");
  CHECK(ec5 == errc::handler_error);
  CHECK(text(r5) == "handler did not answer");
  CHECK(call_sync(client, "text.nobody", "").first == errc::no_provider);
  CHECK(call_sync(client, "bad..name", "").first == errc::name_empty_segment);
  CallOptions quick;
  quick.timeout = 150ms;
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(call_sync(client, "text.hang", "", quick).first == errc::timed_out);
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  // The blocking form and the local path (node 1 calls its own procedure).
  RpcClient local(server);
  std::error_code ec;
  CHECK(text(local.call("text.upper", bytes("me"), ec)) == "ME");
  CHECK_FALSE(ec);
  held->reply_all({});
}

TEST_CASE("node: RPC fails over when a provider node stops mid-run, never re-trying one", "[node][rpc]") {
  LocalMesh mesh(mesh_of(3));
  std::atomic<int> served1{0}, served2{0};
  auto a1 = mesh[1].advertise("svc.echo", [&](Bytes a, RpcResponder r) {
    ++served1;
    r.reply(std::move(a));
  });
  auto a2 = mesh[2].advertise("svc.echo", [&](Bytes a, RpcResponder r) {
    ++served2;
    r.reply(std::move(a));
  });
  mesh.settle();
  RpcClient client(mesh[0]);
  for (int i = 0; i < 20; ++i) REQUIRE_FALSE(call_sync(client, "svc.echo", "x").first);
  CHECK(served1 > 0);
  CHECK(served2 > 0);  // round robin spreads the calls
  // Stop node 2 while calls run: every call still succeeds on node 1.
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::future<std::tuple<std::error_code, Bytes>>> calls;
  for (int i = 0; i < 200; ++i) {
    calls.push_back(client.async_call("svc.echo", bytes("y"), boost::asio::use_future));
    if (i == 100) mesh[2].stop();
  }
  for (auto& c : calls) (std::get<0>(c.get()) ? failed : ok)++;
  CHECK(ok == 200);
  CHECK(failed == 0);
  // An overloaded provider makes the caller fail over too; a handler error does not.
  std::promise<void> gate;
  auto gate_f = gate.get_future().share();
  auto busy = mesh[1].advertise("svc.busy", [&](Bytes, RpcResponder r) {
    std::thread([r, gate_f] {
      gate_f.wait();
      r.reply(bytes("late"));
    }).detach();
  }, AdvertiseOptions{false, 0ms, 1});
  mesh.settle();
  auto first = client.async_call("svc.busy", {}, boost::asio::use_future);
  std::this_thread::sleep_for(50ms);
  CHECK(call_sync(client, "svc.busy", "").first == errc::overloaded);  // only provider is full
  gate.set_value();
  CHECK(text(std::get<1>(first.get())) == "late");
}

TEST_CASE("node: failover tries each provider at most once, then reports the last error", "[node][rpc]") {
  LocalMesh mesh(mesh_of(4));
  std::array<std::shared_ptr<std::atomic<int>>, 3> hits;
  std::vector<Advertisement> ads;
  auto held = std::make_shared<Held>();
  for (std::size_t i = 0; i < 3; ++i) {
    hits[i] = std::make_shared<std::atomic<int>>(0);
    ads.push_back(mesh[i + 1].advertise("svc.hang", [h = hits[i], held](Bytes, RpcResponder r) {
      ++*h;
      held->add(r);
    }));
  }
  mesh.settle();
  RpcClient client(mesh[0]);
  CallOptions o;
  o.attempt_timeout = 100ms;
  o.timeout = 5s;
  for (auto strategy : {SelectionStrategy::round_robin, SelectionStrategy::random, SelectionStrategy::least_outstanding}) {
    for (auto& h : hits) *h = 0;
    o.strategy = strategy;
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(call_sync(client, "svc.hang", "", o).first == errc::timed_out);
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);  // three 100 ms attempts, not the 5 s deadline
    for (int spin = 0; spin < 200 && *hits[0] + *hits[1] + *hits[2] < 3; ++spin) std::this_thread::sleep_for(1ms);
    for (auto& h : hits) CHECK(*h == 1);  // each provider once: never re-tried
  }
  CHECK(mesh[0].stats().calls_failed_over == 3 * 2);  // 2 failovers per call, 3 calls
  o.max_attempts = 2;
  for (auto& h : hits) *h = 0;
  CHECK(call_sync(client, "svc.hang", "", o).first == errc::timed_out);
  std::this_thread::sleep_for(20ms);
  CHECK(*hits[0] + *hits[1] + *hits[2] == 2);
  held->reply_all({});
}

TEST_CASE("node: local_first serves from this node when it provides the procedure", "[node][rpc]") {
  LocalMesh mesh(mesh_of(2));
  auto here = mesh[0].advertise("svc.where", sync_handler([](const Bytes&) { return bytes("here"); }));
  auto there = mesh[1].advertise("svc.where", sync_handler([](const Bytes&) { return bytes("there"); }));
  mesh.settle();
  RpcClient client(mesh[0]);
  CallOptions o;
  o.strategy = SelectionStrategy::local_first;
  for (int i = 0; i < 5; ++i) CHECK(text(call_sync(client, "svc.where", "", o).second) == "here");
  o.strategy = SelectionStrategy::round_robin;
  std::set<std::string> seen;
  for (int i = 0; i < 4; ++i) seen.insert(text(call_sync(client, "svc.where", "", o).second));
  CHECK(seen == std::set<std::string>{"here", "there"});
}

TEST_CASE("node: cancellation completes a call with cancelled at once", "[node][rpc]") {
  LocalMesh mesh(mesh_of(2));
  auto held = std::make_shared<Held>();  // shared: handlers may run after the test body
  auto hangs = mesh[1].advertise("svc.hang", [held](Bytes, RpcResponder r) { held->add(r); });
  mesh.settle();
  RpcClient client(mesh[0]);
  Cancellation cancel;
  CallOptions o;
  o.cancel = cancel;
  o.timeout = 10s;
  auto f = client.async_call("svc.hang", {}, o, boost::asio::use_future);
  std::this_thread::sleep_for(50ms);
  const auto t0 = std::chrono::steady_clock::now();
  cancel.cancel();
  CHECK(std::get<0>(f.get()) == errc::cancelled);
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  CHECK(call_sync(client, "svc.hang", "", o).first == errc::cancelled);  // already cancelled
  held->reply_all({});
}

TEST_CASE("node: idempotent results are cached for their TTL", "[node][rpc]") {
  LocalMesh mesh(mesh_of(2));
  std::atomic<int> runs{0};
  auto adv = mesh[1].advertise("math.square", [&](Bytes a, RpcResponder r) {
    ++runs;
    r.reply(Bytes{static_cast<std::uint8_t>(a.at(0) * a.at(0))});
  }, AdvertiseOptions{true, 300ms, 0});
  mesh.settle();
  RpcClient client(mesh[0]);
  std::error_code ec;
  for (int i = 0; i < 5; ++i) CHECK(client.call("math.square", Bytes{7}, ec) == Bytes{49});
  CHECK(client.call("math.square", Bytes{3}, ec) == Bytes{9});
  CHECK(runs == 2);
  std::this_thread::sleep_for(400ms);
  CHECK(client.call("math.square", Bytes{7}, ec) == Bytes{49});
  CHECK(runs == 3);
}

TEST_CASE("node: the pending-call bound refuses calls past it", "[node][rpc][bounds]") {
  auto o = mesh_of(2);
  o.node.max_pending_calls = 4;
  LocalMesh mesh(o);
  auto held = std::make_shared<Held>();  // shared: handlers may run after the test body
  auto hangs = mesh[1].advertise("svc.hang", [held](Bytes, RpcResponder r) { held->add(r); });
  mesh.settle();
  RpcClient client(mesh[0]);
  std::vector<std::future<std::tuple<std::error_code, Bytes>>> calls;
  for (int i = 0; i < 6; ++i) calls.push_back(client.async_call("svc.hang", {}, boost::asio::use_future));
  int refused = 0;
  for (int i = 4; i < 6; ++i) refused += std::get<0>(calls[static_cast<std::size_t>(i)].get()) == errc::too_many_pending;
  CHECK(refused == 2);
  CHECK(mesh[0].stats().pending_calls == 4);
  CHECK(mesh[0].metrics_text().find("macula_rpc_pending_calls 4") != std::string::npos);
  for (int spin = 0; spin < 2000 && held->size() < 4; ++spin) std::this_thread::sleep_for(1ms);
  REQUIRE(held->size() == 4);  // the four admitted calls reached the handler
  held->reply_all(bytes("done"));
  for (int i = 0; i < 4; ++i) CHECK_FALSE(std::get<0>(calls[static_cast<std::size_t>(i)].get()));
}

TEST_CASE("node: realms are isolated", "[node][realm]") {
  boost::asio::io_context io;
  NodeOptions a_opts, b_opts;
  a_opts.realm = "acme.prod";
  b_opts.realm = "other.realm";
  Node a(a_opts), b(b_opts), a2([] {
    NodeOptions o;
    o.realm = "ACME.PROD ";  // normalizes to the same realm
    return o;
  }());
  REQUIRE_FALSE(a.start());
  REQUIRE_FALSE(b.start());
  REQUIRE_FALSE(a2.start());
  CHECK(a.connect(b.local_address()) == errc::realm_mismatch);  // b says so (and, in its log, which)
  CHECK_FALSE(a.connect(a2.local_address()));
  Inbox on_b;
  Subscriber sb(b, "#", on_b.handler());
  Publisher pa(a);
  REQUIRE_FALSE(publish_sync(pa, "secret.plans", "x"));
  std::this_thread::sleep_for(100ms);
  CHECK(on_b.size() == 0);
  CHECK(a.stats().links == 1);
  RpcClient cb(b);
  auto adv = a.advertise("acme.secret", sync_handler([](const Bytes&) { return Bytes{1}; }));
  CHECK(call_sync(cb, "acme.secret", "").first == errc::no_provider);
}

TEST_CASE("node: graceful stop finishes work in flight, then refuses new work", "[node][stop]") {
  LocalMesh mesh(mesh_of(2));
  auto slow = mesh[1].advertise("svc.slow", [](Bytes a, RpcResponder r) {
    std::thread([a = std::move(a), r] {
      std::this_thread::sleep_for(100ms);
      r.reply(a);
    }).detach();
  });
  Subscriber sub(mesh[1], "evt.#", [](const Message&) {});
  mesh.settle();
  RpcClient client(mesh[0]);
  Publisher pub(mesh[0]);
  auto call = client.async_call("svc.slow", bytes("in flight"), boost::asio::use_future);
  std::vector<std::future<std::error_code>> acks;
  for (int i = 0; i < 100; ++i)
    acks.push_back(pub.async_publish("evt.x", bytes("e"), Qos::at_least_once, boost::asio::use_future));
  mesh[0].stop();
  auto [ec, result] = call.get();
  CHECK_FALSE(ec);
  CHECK(text(result) == "in flight");
  for (auto& a : acks) CHECK_FALSE(a.get());
  CHECK(pub.publish("evt.x", bytes("late")) == errc::not_started);
  CHECK(call_sync(client, "svc.slow", "x").first == errc::cancelled);
  CHECK_FALSE(mesh[0].running());
}

TEST_CASE("node: completion tokens: callbacks, futures and C++20 coroutines", "[node][api]") {
  LocalMesh mesh(mesh_of(2));
  auto echo = mesh[1].advertise("svc.echo", [](Bytes a, RpcResponder r) { r.reply(std::move(a)); });
  Subscriber pull(mesh[1], "co.*", SubscribeOptions{});
  mesh.settle();
  RpcClient client(mesh[0]);
  Publisher pub(mesh[0]);
  std::promise<std::string> out;
  boost::asio::co_spawn(
      mesh.io(),
      [&]() -> boost::asio::awaitable<void> {
        auto [ec, r] = co_await client.async_call("svc.echo", bytes("co"), boost::asio::use_awaitable);
        auto ec2 = co_await pub.async_publish("co.routine", bytes("published"), Qos::at_least_once, boost::asio::use_awaitable);
        auto [ec3, m] = co_await pull.async_receive(boost::asio::use_awaitable);
        out.set_value(text(r) + "/" + (ec || ec2 || ec3 ? "error" : m.payload_string()));
      },
      boost::asio::detached);
  auto f = out.get_future();
  REQUIRE(f.wait_for(5s) == std::future_status::ready);
  CHECK(f.get() == "co/published");
}

TEST_CASE("node: a node on the host's io_context; bootstrap peers link on start", "[node][api]") {
  macula::test::IoThread loop;
  NodeOptions so;
  so.realm = "boot.realm";
  Node seed(loop.io, so);
  REQUIRE_FALSE(seed.start());
  NodeOptions jo = so;
  jo.bootstrap = {seed.local_address()};
  Node joiner(loop.io, jo);
  REQUIRE_FALSE(joiner.start());
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (joiner.stats().links == 0 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
  CHECK(joiner.stats().links == 1);
  CHECK(seed.stats().links == 1);
  NodeOptions bad = so;
  bad.bootstrap = {"not-an-address"};
  Node broken(loop.io, bad);
  CHECK(broken.start() == errc::address_invalid);
  Publisher p(broken);
  CHECK(p.publish("a.b", bytes("x")) == errc::not_started);
  joiner.stop();
  seed.stop();
}

TEST_CASE("node: external HTTP/3 clients publish and call through a node", "[node][http]") {
  LocalMesh mesh(mesh_of(2));
  auto upper = mesh[1].advertise("text.upper", sync_handler([](const Bytes& a) {
    Bytes r = a;
    for (auto& c : r) c = static_cast<std::uint8_t>(std::toupper(c));
    return r;
  }));
  Inbox on_b;
  Subscriber sb(mesh[1], "ext.#", on_b.handler());
  mesh.settle();
  test::H3Client app(mesh.io(), mesh[0]);  // an application, not a node
  REQUIRE(app.connected());
  auto post = [&](const std::string& path, const std::string& body) { return app.request("POST", path, body); };
  CHECK(post("/macula/v1/pub/ext.sensor.1", "from outside").status == 202);
  REQUIRE(on_b.wait_for(1));
  CHECK(on_b.got.front().payload_string() == "from outside");
  auto rpc = post("/macula/v1/rpc/text.upper", "shout");
  CHECK(rpc.status == 200);
  CHECK(text(rpc.body) == "SHOUT");
  CHECK(post("/macula/v1/rpc/text.lower", "x").status == 404);
  CHECK(post("/macula/v1/rpc/bad..name", "x").status == 400);
  CHECK(post("/macula/v1/pub/bad..topic", "x").status == 400);
}

TEST_CASE("node: a call with no linked provider asks discovery, links to what it finds, and succeeds", "[node][rpc]") {
  // The seam the DHT plugs into: a fake discovery that knows node 1 serves svc.far.
  struct FakeDiscovery final : discovery::Discovery {
    discovery::PeerAddress provider;
    std::atomic<int>* lookups;
    void advertise_procedure(std::string_view) override {}
    void withdraw_procedure(std::string_view) override {}
    void advertise_interest(std::string_view) override {}
    void withdraw_interest(std::string_view) override {}
    void find_providers(std::string_view procedure, discovery::PeersFound done) override {
      ++*lookups;
      if (procedure == "svc.far") return done({provider});
      done({});
    }
    void find_subscribers(std::string_view, discovery::PeersFound done) override { done({}); }
  };
  macula::test::IoThread loop;
  NodeOptions o;
  o.realm = "disc.realm";
  Node a(loop.io, o), b(loop.io, o);
  REQUIRE_FALSE(a.start());
  REQUIRE_FALSE(b.start());
  auto adv = b.advertise("svc.far", sync_handler([](const Bytes&) { return bytes("found"); }));
  std::atomic<int> lookups{0};
  auto fake = std::make_unique<FakeDiscovery>();
  fake->provider = {b.node_id(), b.local_address()};
  fake->lookups = &lookups;
  node::TestHooks::set_discovery(a, std::move(fake));
  RpcClient client(a);
  auto [ec, r] = call_sync(client, "svc.far", "");
  CHECK_FALSE(ec);
  CHECK(text(r) == "found");
  CHECK(lookups == 1);
  CHECK(a.stats().links == 1);
  CHECK(call_sync(client, "svc.far", "").first == std::error_code{});  // linked now: no new lookup
  CHECK(lookups == 1);
  CHECK(call_sync(client, "svc.none", "").first == errc::no_provider);
  CHECK(lookups == 2);
  a.stop();
  b.stop();
}


TEST_CASE("node: host names in bootstrap and connect addresses; a malformed one is named in the log", "[node][address]") {
  macula::test::IoThread loop;
  NodeOptions o;
  o.realm = "names.realm";
  o.worker_threads = 1;
  Node seed(loop.io, o);
  REQUIRE_FALSE(seed.start());
  const std::string port = seed.local_address().substr(seed.local_address().rfind(':') + 1);
  NodeOptions bo = o;
  bo.bootstrap = {"localhost:" + port};  // resolved at start: IPv4 first
  Node by_name(loop.io, bo);
  REQUIRE_FALSE(by_name.start());
  CHECK(macula::test::eventually([&] { return by_name.stats().links == 1; }));
  Node dialer(loop.io, o);
  REQUIRE_FALSE(dialer.start());
  CHECK_FALSE(dialer.connect("localhost:" + port));
  auto async = dialer.async_connect("localhost:" + port, boost::asio::use_future);
  CHECK_FALSE(async.get());

  std::vector<std::string> lines;
  std::mutex m;
  NodeOptions bad = o;
  bad.bootstrap = {"not a host!:1"};
  bad.log_sink = [&](LogLevel, std::string_view, std::string_view msg) {
    std::lock_guard lock(m);
    lines.emplace_back(msg);
  };
  Node refused(loop.io, bad);
  CHECK(refused.start() == errc::address_invalid);
  std::lock_guard lock(m);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find("bootstrap not a host!:1") != std::string::npos);
  dialer.stop();
  by_name.stop();
  seed.stop();
}
