// The plain-HTTP status port under hostile clients: a slowloris crowd (one connection from
// each of 100 loopback addresses, one byte a second, reconnecting whenever closed) must not
// starve a health prober; one address cannot hold more than its share of connections; a
// client that stops half-way through its request head is cut off at the header deadline.
// Linux routes all of 127/8 to loopback, so binding a client to 127.0.0.N gives the server a
// distinct peer address per client without any network setup.
#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "node/http_status_server.hpp"
#include "support/io_thread.hpp"

using namespace std::chrono_literals;
using macula::node::HttpStatusServer;

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// A status server on its own io thread, on an ephemeral loopback port.
struct Server {
  macula::test::IoThread io;
  std::shared_ptr<HttpStatusServer> http;
  tcp::endpoint endpoint;

  Server() {
    macula::node::StatusPages pages;
    pages.metrics = [] { return std::string("up 1\n"); };
    pages.health = [] { return std::pair<bool, std::string>{true, ""}; };
    std::error_code ec;
    http = HttpStatusServer::create(io.io, "127.0.0.1:0", std::move(pages), ec);
    REQUIRE_FALSE(ec);
    endpoint = http->local_endpoint();
  }
  ~Server() { http->close(); }
};

// A socket bound to `source` before it connects, so the server sees that peer address.
tcp::socket bound_socket(asio::io_context& io, const std::string& source) {
  tcp::socket s(io);
  s.open(tcp::v4());
  s.bind({asio::ip::make_address(source), 0});
  return s;
}

// One GET /health from `source`, abandoned after `timeout`: the status code, or 0 when the
// connection was refused, closed without an answer or too slow.
int probe(const tcp::endpoint& server, const std::string& source, std::chrono::milliseconds timeout) {
  asio::io_context io;
  boost::system::error_code ec;
  tcp::socket s(io);
  s.open(tcp::v4(), ec);
  if (!ec) s.bind({asio::ip::make_address(source), 0}, ec);
  if (ec) return 0;
  static const std::string request = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  std::string in;
  bool done = false;
  s.async_connect(server, [&](boost::system::error_code cec) {
    if (cec) {
      done = true;
      return;
    }
    asio::async_write(s, asio::buffer(request), [&](boost::system::error_code wec, std::size_t) {
      if (wec) {
        done = true;
        return;
      }
      asio::async_read(s, asio::dynamic_buffer(in), [&](boost::system::error_code, std::size_t) { done = true; });
    });
  });
  io.run_for(timeout);
  if (!done || in.size() < 12 || in.compare(0, 9, "HTTP/1.1 ") != 0) return 0;
  return std::atoi(in.substr(9, 3).c_str());
}

// True once the peer has closed `s` (EOF or reset) within `timeout`; false if it stays open.
bool closed_within(tcp::socket& s, std::chrono::milliseconds timeout) {
  const auto until = Clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    pollfd p{s.native_handle(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0))) <= 0) {
      if (Clock::now() >= until) return false;
      continue;
    }
    char c;
    const auto n = ::recv(s.native_handle(), &c, 1, MSG_DONTWAIT);
    if (n <= 0) return true;  // 0: FIN; < 0: reset (any data would be an answer, not expected here)
  }
}

// A slowloris crowd: one connection per source address, each dripping a request head that
// never ends at one byte a second and reconnecting 100 ms after the server closes it, as an
// attacker holding connections open would (the pause keeps a refused crowd from turning the
// test into a connect storm on a 2-core machine).
class SlowClients {
 public:
  SlowClients(const tcp::endpoint& server, std::size_t count) : server_(server) {
    for (std::size_t i = 0; i < count; ++i) {
      auto c = std::make_unique<Client>(io_);
      c->source = asio::ip::make_address("127.0.0." + std::to_string(2 + i));
      clients_.push_back(std::move(c));
    }
    for (auto& c : clients_) connect(*c);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~SlowClients() {
    io_.stop();
    thread_.join();
    clients_.clear();  // with the loop stopped, no handler runs against a destroyed client
  }
  SlowClients(const SlowClients&) = delete;
  SlowClients& operator=(const SlowClients&) = delete;

  std::size_t connects() const { return connects_.load(); }
  std::size_t closed_by_server() const { return closed_.load(); }

 private:
  struct Client {
    explicit Client(asio::io_context& io) : socket(io), timer(io) {}
    tcp::socket socket;
    asio::steady_timer timer;
    asio::ip::address source;
    std::size_t sent = 0;
    unsigned generation = 0;  // handlers of an older connection are ignored
    char sink[256];
  };

  void connect(Client& c) {
    const unsigned gen = ++c.generation;
    boost::system::error_code ec;
    c.socket.close(ec);
    c.timer.cancel();
    c.sent = 0;
    c.socket.open(tcp::v4(), ec);
    if (!ec) c.socket.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) c.socket.bind({c.source, 0}, ec);
    if (ec) return retry(c, gen);
    c.socket.async_connect(server_, [this, &c, gen](boost::system::error_code cec) {
      if (gen != c.generation) return;
      if (cec) return retry(c, gen);
      ++connects_;
      watch(c, gen);
      drip(c, gen);
    });
  }

  void retry(Client& c, unsigned gen) {
    c.timer.expires_after(100ms);
    c.timer.async_wait([this, &c, gen](boost::system::error_code ec) {
      if (!ec && gen == c.generation) connect(c);
    });
  }

  void watch(Client& c, unsigned gen) {
    c.socket.async_read_some(asio::buffer(c.sink), [this, &c, gen](boost::system::error_code ec, std::size_t) {
      if (gen != c.generation) return;
      if (!ec) return watch(c, gen);
      ++closed_;
      retry(c, gen);
    });
  }

  void drip(Client& c, unsigned gen) {
    static const std::string head =
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    asio::async_write(c.socket, asio::buffer(&head[c.sent++ % head.size()], 1),
                      [](boost::system::error_code, std::size_t) {});  // a close is seen by watch()
    c.timer.expires_after(1s);
    c.timer.async_wait([this, &c, gen](boost::system::error_code ec) {
      if (!ec && gen == c.generation) drip(c, gen);
    });
  }

  asio::io_context io_;
  tcp::endpoint server_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::thread thread_;
  std::atomic<std::size_t> connects_{0};
  std::atomic<std::size_t> closed_{0};
};

template <class Pred>
bool wait_for(Pred done, std::chrono::milliseconds limit) {
  const auto until = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() >= until) return done();
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

}  // namespace

TEST_CASE("status port: /health stays answered beside 100 slowloris connections", "[status_port]") {
  Server server;
  SlowClients slow(server.endpoint, 100);
  REQUIRE(wait_for([&] { return slow.connects() >= 100; }, 3s));
  std::this_thread::sleep_for(500ms);  // every slow client holds a connection and has dripped

  std::size_t probes = 0, answered = 0;
  const auto until = Clock::now() + 6s;
  while (Clock::now() < until) {
    const auto next = Clock::now() + 50ms;
    ++probes;
    if (probe(server.endpoint, "127.0.0.1", 1000ms) == 200) ++answered;
    std::this_thread::sleep_until(next);
  }
  std::printf("status port under slowloris: %zu/%zu probes answered 200 (%.1f%%), %zu slow connects, %zu closed\n",
              answered, probes, 100.0 * static_cast<double>(answered) / static_cast<double>(probes), slow.connects(),
              slow.closed_by_server());
  CHECK(answered * 100 >= probes * 99);
  // The crowd really was there and was recycled by the header deadline, not refused.
  const auto st = server.http->stats();
  CHECK(st.header_timeouts >= 100);
  CHECK(st.refused_global == 0);
  CHECK(st.refused_per_address == 0);
}

TEST_CASE("status port: one address gets kMaxConnectionsPerAddress connections, the next is closed at once",
          "[status_port]") {
  Server server;
  asio::io_context io;
  std::vector<tcp::socket> held;
  for (std::size_t i = 0; i < HttpStatusServer::kMaxConnectionsPerAddress; ++i) {
    held.push_back(bound_socket(io, "127.0.0.200"));
    held.back().connect(server.endpoint);
  }
  REQUIRE(wait_for([&] { return server.http->stats().open == HttpStatusServer::kMaxConnectionsPerAddress; }, 1s));

  auto extra = bound_socket(io, "127.0.0.200");
  extra.connect(server.endpoint);
  const auto t0 = Clock::now();
  CHECK(closed_within(extra, 1000ms));
  CHECK(Clock::now() - t0 < HttpStatusServer::kHeaderDeadline / 2);  // refused, not timed out
  CHECK(server.http->stats().refused_per_address == 1);

  // The eight are still open, and other addresses are still served.
  for (auto& s : held) CHECK_FALSE(closed_within(s, 0ms));
  CHECK(probe(server.endpoint, "127.0.0.1", 1000ms) == 200);
  CHECK(probe(server.endpoint, "127.0.0.201", 1000ms) == 200);

  // A slot freed is a slot available again.
  held.pop_back();
  REQUIRE(wait_for([&] { return server.http->stats().open == HttpStatusServer::kMaxConnectionsPerAddress - 1; }, 1s));
  CHECK(probe(server.endpoint, "127.0.0.200", 1000ms) == 200);
}

TEST_CASE("status port: a client that stops half-way through its request head is closed at the header deadline",
          "[status_port]") {
  Server server;
  asio::io_context io;
  auto s = bound_socket(io, "127.0.0.202");
  s.connect(server.endpoint);
  const auto t0 = Clock::now();
  asio::write(s, asio::buffer(std::string("GET /health HTTP/1.1\r\nHost: x\r\nX-Half: ")));
  REQUIRE(closed_within(s, HttpStatusServer::kHeaderDeadline + 2000ms));
  const auto took = Clock::now() - t0;
  CHECK(took >= HttpStatusServer::kHeaderDeadline - 100ms);
  CHECK(took < HttpStatusServer::kHeaderDeadline + 1000ms);
  // The deadline closes the socket before the read's handler runs and counts it, so the
  // client can see the close first.
  CHECK(wait_for([&] { return server.http->stats().header_timeouts == 1; }, 1s));
  CHECK(wait_for([&] { return server.http->stats().open == 0; }, 1s));
}
