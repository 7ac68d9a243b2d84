// ConnectionPool on real loopback QUIC: reuse, collapsed dials, LRU bound, idle reaper.
#include <catch2/catch.hpp>

#include <future>
#include <random>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>

#include "macula/error.hpp"
#include "support/io_thread.hpp"
#include "transport/connection_pool.hpp"
#include "macula/observe/metrics_registry.hpp"

using namespace macula;
using namespace macula::transport;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using udp = asio::ip::udp;

namespace {

using Loop = macula::test::IoThread;

std::shared_ptr<Endpoint> make(asio::io_context& io) {
  EndpointOptions o;
  o.identity = Identity::generate();
  std::error_code ec;
  auto ep = Endpoint::create(io, std::move(o), udp::endpoint(asio::ip::make_address("127.0.0.1"), 0), ec);
  REQUIRE_FALSE(ec);
  return ep;
}

std::shared_ptr<Connection> get(ConnectionPool& pool, Endpoint& peer) {
  std::promise<std::shared_ptr<Connection>> p;
  pool.get(peer.node_id(), peer.local_endpoint(), [&](std::error_code ec, std::shared_ptr<Connection> c) {
    REQUIRE_FALSE(ec);
    p.set_value(c);
  });
  return p.get_future().get();
}

}  // namespace

TEST_CASE("pool: reuses the connection to a peer; concurrent dials collapse into one", "[pool]") {
  Loop loop;
  auto client = make(loop.io);
  // The server's io_context does not run until all ten get()s are queued, so the dial
  // cannot complete in between, however the threads are scheduled.
  Loop server_loop(false);
  auto server = make(server_loop.io);
  auto pool = ConnectionPool::create(loop.io, client, PoolOptions{});
  std::vector<std::promise<std::shared_ptr<Connection>>> ps(10);
  for (auto& p : ps)
    pool->get(server->node_id(), server->local_endpoint(),
              [&p](std::error_code ec, std::shared_ptr<Connection> c) { p.set_value(ec ? nullptr : c); });
  server_loop.start();
  std::vector<std::shared_ptr<Connection>> got;
  for (auto& p : ps) got.push_back(p.get_future().get());
  for (auto& c : got) {
    REQUIRE(c);
    CHECK(c->peer_id() == server->node_id());
  }
  CHECK(get(*pool, *server)->peer_id() == server->node_id());
  const auto s = pool->stats();
  CHECK(s.misses == 1);
  CHECK(s.collapsed == 9);
  CHECK(s.hits == 1);
  CHECK(s.size == 1);
  CHECK(server->stats().connections == 1);  // one QUIC connection for eleven get()s
  pool->close();
  client->close();
  server->close();
}

TEST_CASE("pool: at most max_size connections, least recently used evicted; bounded under churn", "[pool]") {
  Loop loop;
  auto client = make(loop.io);
  std::vector<std::shared_ptr<Endpoint>> servers;
  for (int i = 0; i < 12; ++i) servers.push_back(make(loop.io));
  PoolOptions o;
  o.max_size = 4;
  auto pool = ConnectionPool::create(loop.io, client, o);
  std::mt19937 rng(3);
  std::size_t max_seen = 0;
  for (int i = 0; i < 200; ++i) {
    auto c = get(*pool, *servers[rng() % servers.size()]);
    REQUIRE(c->is_open());
    max_seen = std::max(max_seen, pool->stats().size);
  }
  const auto s = pool->stats();
  CHECK(max_seen <= 4);
  CHECK(s.evictions > 0);
  CHECK(s.hits + s.misses == 200);
  // The LRU order: touch 0..3, then a fifth peer evicts 0 (the least recently used).
  auto pool2 = ConnectionPool::create(loop.io, client, o);
  for (int i = 0; i < 4; ++i) get(*pool2, *servers[static_cast<std::size_t>(i)]);
  get(*pool2, *servers[1]);  // 1 becomes most recent; 0 is now the LRU
  get(*pool2, *servers[4]);
  CHECK(pool2->stats().evictions == 1);
  const auto misses = pool2->stats().misses;
  get(*pool2, *servers[1]);  // still pooled
  CHECK(pool2->stats().misses == misses);
  get(*pool2, *servers[0]);  // was evicted: dials again
  CHECK(pool2->stats().misses == misses + 1);
}

TEST_CASE("pool: the idle reaper closes connections nobody used", "[pool][reaper]") {
  Loop loop;
  auto client = make(loop.io);
  auto a = make(loop.io);
  auto b = make(loop.io);
  PoolOptions o;
  o.idle_timeout = 150ms;
  o.reap_period = 50ms;
  auto pool = ConnectionPool::create(loop.io, client, o);
  auto ca = get(*pool, *a);
  auto cb = get(*pool, *b);
  // Keep b busy; let a go idle.
  for (int i = 0; i < 8; ++i) {
    std::this_thread::sleep_for(50ms);
    get(*pool, *b);
  }
  const auto s = pool->stats();
  CHECK(s.reaped == 1);
  CHECK(s.size == 1);
  CHECK_FALSE(ca->is_open());
  CHECK(cb->is_open());
  // The server side sees the close too (CONNECTION_CLOSE reaches it).
  for (int i = 0; i < 50 && a->stats().connections != 0; ++i) std::this_thread::sleep_for(20ms);
  CHECK(a->stats().connections == 0);
}

TEST_CASE("pool: a failed dial reports the error to every waiter", "[pool]") {
  Loop loop;
  auto client = make(loop.io);
  Loop server_loop(false);  // not running until both get()s are queued (see above)
  auto server = make(server_loop.io);
  auto pool = ConnectionPool::create(loop.io, client, PoolOptions{});
  // The right address but the wrong node id: the handshake refuses the peer.
  std::promise<std::error_code> p1, p2;
  const NodeId wrong = Identity::generate().node_id();
  pool->get(wrong, server->local_endpoint(), [&](std::error_code ec, std::shared_ptr<Connection>) { p1.set_value(ec); });
  pool->get(wrong, server->local_endpoint(), [&](std::error_code ec, std::shared_ptr<Connection>) { p2.set_value(ec); });
  server_loop.start();
  CHECK(p1.get_future().get() == errc::peer_identity_mismatch);
  CHECK(p2.get_future().get() == errc::peer_identity_mismatch);
  CHECK(pool->stats().failures == 1);
  CHECK(pool->stats().size == 0);
  pool->close();
  client->close();
  server->close();
}

TEST_CASE("transport: 200 concurrent connections to one endpoint", "[transport][scale]") {
  Loop server_loop, client_loop;
  auto server = make(server_loop.io);
  server->route("GET", "/health", [](Request&&, Responder respond) { respond(Response{}); });
  std::vector<std::shared_ptr<Endpoint>> clients;
  for (int i = 0; i < 10; ++i) clients.push_back(make(client_loop.io));
  std::vector<std::promise<std::error_code>> ps(200);
  std::vector<std::shared_ptr<Connection>> conns(200);
  for (std::size_t i = 0; i < 200; ++i)
    clients[i % 10]->connect(server->local_endpoint(), server->node_id(),
                             [&, i](std::error_code ec, std::shared_ptr<Connection> c) {
                               conns[i] = c;
                               ps[i].set_value(ec);
                             });
  int ok = 0;
  for (auto& p : ps) ok += p.get_future().get() ? 0 : 1;
  CHECK(ok == 200);
  CHECK(server->stats().connections == 200);
  // Every one of them serves a request.
  std::vector<std::promise<int>> rs(200);
  for (std::size_t i = 0; i < 200; ++i) {
    Request r;
    r.method = "GET";
    r.path = "/health";
    conns[i]->request(r, 10s, [&, i](std::error_code ec, Response resp) { rs[i].set_value(ec ? -1 : resp.status); });
  }
  int served = 0;
  for (auto& r : rs) served += r.get_future().get() == 200 ? 1 : 0;
  CHECK(served == 200);
}

#include "transport/transport_metrics.hpp"

TEST_CASE("metrics: endpoint and pool series render with live values and can be removed", "[pool][metrics]") {
  Loop loop;
  auto client = make(loop.io);
  auto server = make(loop.io);
  auto pool = ConnectionPool::create(loop.io, client, PoolOptions{});
  observe::MetricsRegistry registry;
  auto remove_ep = export_metrics(registry, server, {{"endpoint", "server"}});
  auto remove_pool = export_metrics(registry, pool);
  get(*pool, *server);
  get(*pool, *server);
  // The server completes its side of the handshake when the client's Finished arrives,
  // which can be just after the client's side completed.
  for (int i = 0; i < 100 && server->stats().handshakes_completed == 0; ++i) std::this_thread::sleep_for(10ms);
  const std::string text = registry.render();
  INFO(text);
  CHECK(text.find("# TYPE macula_transport_connections gauge\nmacula_transport_connections{endpoint=\"server\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("# TYPE macula_transport_handshakes_total counter\nmacula_transport_handshakes_total{endpoint=\"server\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("macula_pool_hits_total 1\n") != std::string::npos);
  CHECK(text.find("macula_pool_misses_total 1\n") != std::string::npos);
  CHECK(text.find("macula_pool_size 1\n") != std::string::npos);
  CHECK(text.find("macula_transport_datagrams_received_total{endpoint=\"server\"} 0\n") == std::string::npos);
  remove_ep();
  remove_pool();
  CHECK(registry.render().empty());
}
