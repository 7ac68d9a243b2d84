// Real QUIC + HTTP/3 on loopback sockets: two endpoints in one process.
#include <catch2/catch.hpp>

#include <sys/socket.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <future>
#include <random>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/udp.hpp>

#include "macula/error.hpp"
#include "support/io_thread.hpp"
#include "transport/endpoint.hpp"
#include "transport/identity.hpp"

using namespace macula;
using namespace macula::transport;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using udp = asio::ip::udp;

namespace {

using Loop = macula::test::IoThread;

EndpointOptions options() {
  EndpointOptions o;
  o.identity = Identity::generate();
  o.connect_timeout = 2s;
  o.idle_timeout = 30s;
  return o;
}

std::shared_ptr<Endpoint> make(asio::io_context& io, EndpointOptions o, const char* addr = "127.0.0.1") {
  std::error_code ec;
  auto ep = Endpoint::create(io, std::move(o), udp::endpoint(asio::ip::make_address(addr), 0), ec);
  REQUIRE_FALSE(ec);
  return ep;
}

std::shared_ptr<Connection> dial(Endpoint& from, Endpoint& to, std::optional<NodeId> expected, std::error_code& ec) {
  std::promise<std::pair<std::error_code, std::shared_ptr<Connection>>> p;
  from.connect(to.local_endpoint(), expected, [&](std::error_code e, std::shared_ptr<Connection> c) { p.set_value({e, c}); });
  auto [e, c] = p.get_future().get();
  ec = e;
  return c;
}

std::pair<std::error_code, Response> call(Connection& c, Request r, std::chrono::nanoseconds timeout = 5s) {
  std::promise<std::pair<std::error_code, Response>> p;
  c.request(std::move(r), timeout, [&](std::error_code e, Response resp) { p.set_value({e, std::move(resp)}); });
  return p.get_future().get();
}

Request post(std::string path, std::vector<std::uint8_t> body) {
  Request r;
  r.method = "POST";
  r.path = std::move(path);
  r.body = std::move(body);
  return r;
}

void add_echo(Endpoint& ep) {
  ep.route("POST", "/echo", [](Request&& req, Responder respond) {
    Response r;
    r.body = std::move(req.body);
    respond(std::move(r));
  });
  ep.route("GET", "/health", [](Request&& req, Responder respond) {
    Response r;
    const std::string who = req.peer ? "node " + req.peer->to_hex().substr(0, 8) : "client";
    const std::string text = "ok " + who + "\n";
    r.body.assign(text.begin(), text.end());
    respond(std::move(r));
  });
}

}  // namespace

TEST_CASE("identity: node id is the SHA-256 of the public key, stable across PEM round trips", "[identity]") {
  std::error_code ec;
  const Identity a = Identity::generate(ec);
  REQUIRE_FALSE(ec);
  CHECK_FALSE(a.node_id().is_zero());
  const Identity again = Identity::from_pem(a.key_pem(), a.cert_pem(), ec);
  REQUIRE_FALSE(ec);
  CHECK(again.node_id() == a.node_id());
  const Identity b = Identity::generate();
  CHECK(b.node_id() != a.node_id());
  Identity::from_pem(a.key_pem(), b.cert_pem(), ec);  // key and certificate do not match
  CHECK(ec == errc::identity_invalid);
  Identity::from_pem("garbage", "garbage", ec);
  CHECK(ec == errc::identity_invalid);

  const std::string key_path = "/tmp/macula_test_key.pem", cert_path = "/tmp/macula_test_cert.pem";
  std::ofstream(key_path) << a.key_pem();
  std::ofstream(cert_path) << a.cert_pem();
  CHECK(Identity::from_pem_files(key_path, cert_path, ec).node_id() == a.node_id());
  CHECK_FALSE(ec);
  Identity::from_pem_files("/nonexistent/key.pem", cert_path, ec);
  CHECK(ec == errc::identity_invalid);
  std::remove(key_path.c_str());
  std::remove(cert_path.c_str());
}

TEST_CASE("transport: handshake and HTTP/3 over IPv4 and IPv6 with mutual node ids", "[transport]") {
  for (const char* addr : {"127.0.0.1", "::1"}) {
    Loop loop;
    auto server = make(loop.io, options(), addr);
    auto client = make(loop.io, options(), addr);
    add_echo(*server);
    std::error_code ec;
    auto conn = dial(*client, *server, server->node_id(), ec);
    REQUIRE_FALSE(ec);
    REQUIRE(conn);
    CHECK(conn->peer_id() == server->node_id());
    Request get;
    get.method = "GET";
    get.path = "/health";
    auto [e, resp] = call(*conn, get);
    REQUIRE_FALSE(e);
    CHECK(resp.status == 200);
    // The server saw the client's node id, proven by its certificate.
    CHECK(std::string(resp.body.begin(), resp.body.end()) == "ok node " + client->node_id().to_hex().substr(0, 8) + "\n");
    client->close();
    server->close();
  }
}

TEST_CASE("transport: a peer whose certificate does not hash to the dialed id is refused", "[transport][security]") {
  Loop loop;
  auto server = make(loop.io, options());
  auto client = make(loop.io, options());
  std::error_code ec;
  auto conn = dial(*client, *server, Identity::generate().node_id(), ec);
  CHECK(ec == errc::peer_identity_mismatch);
  CHECK_FALSE(conn);
  // The server keeps serving others.
  add_echo(*server);
  conn = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  CHECK(call(*conn, post("/echo", {1, 2, 3})).second.body == std::vector<std::uint8_t>{1, 2, 3});
}

TEST_CASE("transport: echo of 0 B, 64 B, 1 MiB and 20 MiB bodies; caps give 413 and 404", "[transport][http3]") {
  Loop loop;
  auto so = options();
  so.max_body_bytes = 32 << 20;
  so.max_connection_body_bytes = 64 << 20;
  auto server = make(loop.io, std::move(so));
  auto co = options();
  co.max_body_bytes = 32 << 20;  // responses are capped on the client side too
  auto client = make(loop.io, std::move(co));
  add_echo(*server);
  std::error_code ec;
  auto conn = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  std::mt19937 rng(1);
  for (std::size_t size : {std::size_t{0}, std::size_t{64}, std::size_t{1} << 20, std::size_t{20} << 20}) {
    std::vector<std::uint8_t> body(size);
    for (auto& b : body) b = static_cast<std::uint8_t>(rng());
    auto [e, resp] = call(*conn, post("/echo", body), 30s);
    REQUIRE_FALSE(e);
    CHECK(resp.status == 200);
    CHECK(resp.body == body);
  }
  auto [e404, r404] = call(*conn, post("/nowhere", {}));
  REQUIRE_FALSE(e404);
  CHECK(r404.status == 404);

  Loop loop2;
  auto small = options();
  small.max_body_bytes = 1000;
  auto capped = make(loop2.io, std::move(small));
  add_echo(*capped);
  auto client2 = make(loop2.io, options());
  auto c2 = dial(*client2, *capped, capped->node_id(), ec);
  REQUIRE_FALSE(ec);
  auto [e413, r413] = call(*c2, post("/echo", std::vector<std::uint8_t>(5000, 7)));
  REQUIRE_FALSE(e413);
  CHECK(r413.status == 413);
  CHECK(call(*c2, post("/echo", std::vector<std::uint8_t>(10, 7))).second.status == 200);  // connection still fine
  // A response larger than the client's cap is refused on the client side, bounded.
  capped->route("GET", "/big", [](Request&&, Responder respond) {
    Response r;
    r.body.assign(4000, 1);
    respond(std::move(r));
  });
  Request big;
  big.method = "GET";
  big.path = "/big";
  auto small_client_opts = options();
  small_client_opts.max_body_bytes = 1000;
  auto client3 = make(loop2.io, std::move(small_client_opts));
  auto c3 = dial(*client3, *capped, capped->node_id(), ec);
  REQUIRE_FALSE(ec);
  CHECK(call(*c3, big).first == errc::body_too_large);
}

TEST_CASE("transport: 1,000 concurrent requests on one connection", "[transport][http3]") {
  Loop loop;
  auto server = make(loop.io, options());
  auto client = make(loop.io, options());
  add_echo(*server);
  std::error_code ec;
  auto conn = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  constexpr int kRequests = 1000;
  std::atomic<int> ok{0}, bad{0}, done{0};
  std::promise<void> all;
  for (int i = 0; i < kRequests; ++i) {
    std::vector<std::uint8_t> body(8);
    std::memcpy(body.data(), &i, sizeof i);
    conn->request(post("/echo", body), 10s, [&, body](std::error_code e, Response r) {
      (e || r.body != body ? bad : ok).fetch_add(1);
      if (done.fetch_add(1) + 1 == kRequests) all.set_value();
    });
  }
  REQUIRE(all.get_future().wait_for(30s) == std::future_status::ready);
  CHECK(ok.load() == kRequests);
  CHECK(bad.load() == 0);
}

TEST_CASE("transport: a request past its deadline completes with timed_out", "[transport]") {
  Loop loop;
  auto server = make(loop.io, options());
  auto client = make(loop.io, options());
  std::vector<Responder> parked;  // never answered during the test
  std::mutex m;
  server->route("GET", "/slow", [&](Request&&, Responder r) {
    std::lock_guard lock(m);
    parked.push_back(std::move(r));
  });
  std::error_code ec;
  auto conn = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  Request get;
  get.method = "GET";
  get.path = "/slow";
  auto [e, resp] = call(*conn, get, 200ms);
  CHECK(e == errc::timed_out);
  server->close();
  client->close();
}

TEST_CASE("transport: connect to a port nobody serves times out", "[transport]") {
  Loop loop;
  auto o = options();
  o.connect_timeout = 300ms;
  auto client = make(loop.io, std::move(o));
  // A bound UDP socket that never answers.
  asio::io_context quiet_io;
  udp::socket quiet(quiet_io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  std::promise<std::error_code> p;
  client->connect(quiet.local_endpoint(), std::nullopt, [&](std::error_code e, std::shared_ptr<Connection>) { p.set_value(e); });
  CHECK(p.get_future().get() == errc::handshake_timeout);
}

TEST_CASE("transport: hostile datagrams change nothing", "[transport][hostile]") {
  Loop loop;
  auto server = make(loop.io, options());
  add_echo(*server);
  auto client = make(loop.io, options());
  std::error_code ec;
  auto conn = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);

  asio::io_context raw_io;
  udp::socket raw(raw_io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  std::mt19937 rng(7);
  const auto target = server->local_endpoint();
  for (int i = 0; i < 5000; ++i) {
    std::vector<std::uint8_t> junk(1 + rng() % 1400);
    for (auto& b : junk) b = static_cast<std::uint8_t>(rng());
    if (i % 3 == 0) junk[0] = 0xC0;  // long header: looks like an Initial
    if (i % 3 == 1) junk[0] = 0x40;  // short header with a random connection id
    raw.send_to(asio::buffer(junk), target);
  }
  // A truncated Initial and an oversized datagram.
  std::vector<std::uint8_t> trunc = {0xC0, 0, 0, 0, 1, 8};
  raw.send_to(asio::buffer(trunc), target);
  std::vector<std::uint8_t> huge(4000, 0xC3);
  raw.send_to(asio::buffer(huge), target);

  // Still serving, and the junk made no connections.
  auto [e, resp] = call(*conn, post("/echo", {9}));
  REQUIRE_FALSE(e);
  CHECK(resp.body == std::vector<std::uint8_t>{9});
  const auto s = server->stats();
  CHECK(s.datagrams_dropped > 0);
  CHECK(s.connections == 1);
}

#include "wire/frame.hpp"
#include "wire/frame_reader.hpp"

TEST_CASE("transport: a session stream moves 1,000,000 frames in order, none lost, with backpressure",
          "[transport][session]") {
  Loop loop;
  auto so = options();
  auto co = options();
  co.session_send_buffer = 256 * 1024;  // small bound: the sender must hit it and wait
  auto server = make(loop.io, std::move(so));
  auto client = make(loop.io, std::move(co));
  static constexpr std::uint64_t kFrames = 1'000'000;

  struct ServerSide {
    wire::FrameReader reader;
    std::uint64_t next = 0;
    bool out_of_order = false;
    std::error_code error;
    std::shared_ptr<Session> session;
  };
  auto side = std::make_shared<ServerSide>();
  server->session_route("/macula/v1/session", [side](const Request& head, std::shared_ptr<Session> s,
                                                      SessionCallbacks& cb) {
    if (!head.peer) return 401;
    side->session = s;
    cb.on_data = [side](std::span<const std::uint8_t> bytes) {
      auto ec = side->reader.feed(bytes, [&](wire::Frame&& f) {
        const auto& ping = std::get<wire::Ping>(f);
        if (ping.nonce != side->next) side->out_of_order = true;
        ++side->next;
        if (side->next == kFrames) {  // report back on the same session
          std::vector<std::uint8_t> out;
          (void)wire::encode(wire::Pong{side->next}, out);
          (void)side->session->send(out);
        }
      });
      if (ec) side->error = ec;
    };
    cb.on_close = [](std::error_code) {};
    return 200;
  });

  std::error_code ec;
  auto conn = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);

  struct ClientSide {
    std::shared_ptr<Session> session;
    std::uint64_t sent = 0;
    std::uint64_t waits = 0;
    std::vector<std::uint8_t> batch;
    wire::FrameReader reader;
    std::promise<std::uint64_t> acked;
  };
  auto cs = std::make_shared<ClientSide>();
  // Sends until the bound pushes back, then resumes when the buffer drains (on the strand).
  std::function<void()> pump = [cs, &pump] {
    while (cs->sent < kFrames) {
      cs->batch.clear();
      const std::uint64_t first = cs->sent;
      for (std::uint64_t i = first; i < std::min(kFrames, first + 256); ++i) (void)wire::encode(wire::Ping{i}, cs->batch);
      if (cs->session->send(cs->batch) == errc::queue_full) {
        ++cs->waits;
        cs->session->on_writable(pump);
        return;
      }
      cs->sent = std::min(kFrames, first + 256);
    }
  };
  SessionCallbacks cb;
  cb.on_data = [cs](std::span<const std::uint8_t> bytes) {
    (void)cs->reader.feed(bytes, [&](wire::Frame&& f) { cs->acked.set_value(std::get<wire::Pong>(f).nonce); });
  };
  cb.on_close = [](std::error_code) {};
  Request head;
  head.path = "/macula/v1/session";
  std::promise<std::error_code> opened;
  conn->open_session(head, cb, 5s, [&](std::error_code e, std::shared_ptr<Session> s) {
    cs->session = s;
    opened.set_value(e);
    if (!e) pump();
  });
  REQUIRE_FALSE(opened.get_future().get());
  auto fut = cs->acked.get_future();
  REQUIRE(fut.wait_for(60s) == std::future_status::ready);
  CHECK(fut.get() == kFrames);
  CHECK(side->next == kFrames);
  CHECK_FALSE(side->out_of_order);
  CHECK_FALSE(side->error);
  CHECK(cs->waits > 0);                                  // the bound was reached and respected
  CHECK(cs->session->high_water() <= 256 * 1024);
  client->close();
  server->close();
}

TEST_CASE("transport: a refused session reports the refusal", "[transport][session]") {
  Loop loop;
  auto server = make(loop.io, options());
  auto client = make(loop.io, options());
  server->session_route("/macula/v1/session", [](const Request&, std::shared_ptr<Session>, SessionCallbacks&) {
    return 401;  // (403 also closes the connection: see the realm test)
  });
  std::error_code ec;
  auto conn = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  Request head;
  head.path = "/macula/v1/session";
  std::promise<std::error_code> opened;
  conn->open_session(head, SessionCallbacks{[](std::span<const std::uint8_t>) {}, [](std::error_code) {}, {}, {}}, 5s,
                     [&](std::error_code e, std::shared_ptr<Session>) { opened.set_value(e); });
  CHECK(opened.get_future().get() == errc::connection_refused);
  // The connection is still usable for requests.
  add_echo(*server);
  CHECK(call(*conn, post("/echo", {5})).second.body == std::vector<std::uint8_t>{5});
}

TEST_CASE("transport: max_clients = 5; the 6th client is refused, and admitted once another leaves",
          "[transport][admission]") {
  Loop loop;
  auto so = options();
  so.max_clients = 5;
  auto server = make(loop.io, std::move(so));
  add_echo(*server);
  auto client_opts = [] {
    auto o = options();
    o.present_certificate = false;  // applications that only call: clients, not nodes
    return o;
  };
  std::vector<std::shared_ptr<Endpoint>> apps;
  std::vector<std::shared_ptr<Connection>> conns;
  for (int i = 0; i < 5; ++i) {
    apps.push_back(make(loop.io, client_opts()));
    std::error_code ec;
    conns.push_back(dial(*apps.back(), *server, server->node_id(), ec));
    REQUIRE_FALSE(ec);
    CHECK(call(*conns.back(), post("/echo", {1})).second.status == 200);
  }
  CHECK(server->stats().clients == 5);

  auto sixth_app = make(loop.io, client_opts());
  std::error_code ec;
  auto sixth = dial(*sixth_app, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);  // the handshake completes; admission is decided on what the peer is
  auto [e6, r6] = call(*sixth, post("/echo", {1}));
  REQUIRE_FALSE(e6);
  CHECK(r6.status == 503);
  CHECK(std::string(r6.body.begin(), r6.body.end()) == "max_clients reached\n");
  for (int i = 0; i < 100 && sixth->is_open(); ++i) std::this_thread::sleep_for(10ms);
  CHECK_FALSE(sixth->is_open());  // then CONNECTION_CLOSE with CloseCode::max_clients
  CHECK(server->stats().clients_refused == 1);

  // Nodes (with certificates) are not clients and are not limited by max_clients.
  auto node = make(loop.io, options());
  auto node_conn = dial(*node, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  CHECK(call(*node_conn, post("/echo", {2})).second.status == 200);

  // One client leaves; a new one is admitted.
  conns[0]->close(CloseCode::no_error, "bye");
  for (int i = 0; i < 100 && server->stats().clients != 4; ++i) std::this_thread::sleep_for(10ms);
  CHECK(server->stats().clients == 4);
  auto seventh_app = make(loop.io, client_opts());
  auto seventh = dial(*seventh_app, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  CHECK(call(*seventh, post("/echo", {3})).second.status == 200);
}

TEST_CASE("transport: Retry validates the client's address; NEW_TOKEN skips it next time", "[transport][retry]") {
  Loop loop;
  auto so = options();
  so.retry = RetryPolicy::always;
  auto server = make(loop.io, std::move(so));
  add_echo(*server);
  auto client = make(loop.io, options());
  std::error_code ec;
  auto first = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  CHECK(call(*first, post("/echo", {1})).second.status == 200);
  auto s = server->stats();
  CHECK(s.retries_sent == 1);
  CHECK(s.tokens_accepted == 1);  // the Retry token came back and verified
  // NEW_TOKEN arrives after the handshake; give it a moment, then dial again.
  std::this_thread::sleep_for(50ms);
  auto second = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  CHECK(call(*second, post("/echo", {2})).second.status == 200);
  s = server->stats();
  CHECK(s.retries_sent == 1);     // no second Retry: the NEW_TOKEN token proved the address
  CHECK(s.tokens_accepted == 2);
}

TEST_CASE("transport: a restarted peer answers stale packets with a stateless reset", "[transport][reset]") {
  Loop loop;
  auto so = options();
  const Identity id = so.identity;
  auto server = make(loop.io, so);
  add_echo(*server);
  const auto address = server->local_endpoint();
  auto client = make(loop.io, options());
  std::error_code ec;
  auto conn = dial(*client, *server, id.node_id(), ec);
  REQUIRE_FALSE(ec);
  CHECK(call(*conn, post("/echo", {1})).second.status == 200);

  server->abort();  // crash: no CONNECTION_CLOSE
  // The same node (same key, so the same reset secret) comes back on the same port.
  auto restarted = Endpoint::create(loop.io, so, address, ec);
  REQUIRE_FALSE(ec);
  const auto t0 = std::chrono::steady_clock::now();
  auto [e, resp] = call(*conn, post("/echo", {2}), 10s);
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(e == errc::connection_closed);
  CHECK(waited < 2s);  // learned from the reset, not from the 30 s idle timeout
  CHECK(restarted->stats().stateless_resets_sent >= 1);
  CHECK(client->stats().stateless_resets_received == 1);
  CHECK_FALSE(conn->is_open());
  // And a new connection to the restarted node works.
  add_echo(*restarted);
  auto fresh = dial(*client, *restarted, id.node_id(), ec);
  REQUIRE_FALSE(ec);
  CHECK(call(*fresh, post("/echo", {3})).second.status == 200);
}

TEST_CASE("transport: graceful shutdown drains requests in flight, refuses new work, then closes",
          "[transport][shutdown]") {
  Loop loop;
  auto server = make(loop.io, options());
  // Answers after 200 ms from another thread, as a slow handler would.
  std::vector<std::thread> workers;
  server->route("POST", "/slow", [&workers](Request&& req, Responder respond) {
    workers.emplace_back([body = std::move(req.body), respond = std::move(respond)]() mutable {
      std::this_thread::sleep_for(200ms);
      Response r;
      r.body = std::move(body);
      respond(std::move(r));
    });
  });
  auto client = make(loop.io, options());
  std::error_code ec;
  auto conn = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  std::promise<std::pair<std::error_code, Response>> answered;
  conn->request(post("/slow", {7}), 5s, [&](std::error_code e, Response r) { answered.set_value({e, std::move(r)}); });
  std::this_thread::sleep_for(50ms);  // the request is now in flight on the server
  std::promise<std::size_t> closed;
  const auto t0 = std::chrono::steady_clock::now();
  server->shutdown(3s, [&](std::size_t unfinished) { closed.set_value(unfinished); });
  // New connections are refused while draining (the dial times out: Initials are dropped).
  auto late_opts = options();
  late_opts.connect_timeout = 100ms;
  auto late = make(loop.io, std::move(late_opts));
  dial(*late, *server, server->node_id(), ec);
  CHECK(ec == errc::handshake_timeout);
  auto [e, resp] = answered.get_future().get();
  REQUIRE_FALSE(e);
  CHECK(resp.body == std::vector<std::uint8_t>{7});
  CHECK(closed.get_future().get() == 0);  // drained, not cut off
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  for (int i = 0; i < 100 && conn->is_open(); ++i) std::this_thread::sleep_for(10ms);
  CHECK_FALSE(conn->is_open());  // the client saw CONNECTION_CLOSE(H3_NO_ERROR)
  for (auto& w : workers) w.join();
}

#include "transport/realm_guard.hpp"

TEST_CASE("transport: sessions check the realm: 403 and close for another realm, 401 without the proof",
          "[transport][realm]") {
  Loop loop;
  auto server = make(loop.io, options());
  const RealmPolicy policy{"acme.prod", std::string("s3cret")};
  int accepted = 0;
  std::vector<std::uint8_t> server_binding;
  server->session_route("/macula/v1/session",
                        realm_guarded(policy, server->node_id(),
                                      [&](const Request& head, std::shared_ptr<Session>, SessionCallbacks& cb) {
                                        ++accepted;
                                        server_binding = head.channel_binding;
                                        cb.on_data = [](std::span<const std::uint8_t>) {};
                                        cb.on_close = [](std::error_code) {};
                                        return 200;
                                      }));
  auto client = make(loop.io, options());
  std::vector<Header> answer;
  auto open = [&](Connection& c, std::vector<Header> headers) {
    Request head;
    head.path = "/macula/v1/session";
    head.headers = std::move(headers);
    std::promise<std::error_code> p;
    c.open_session(head, SessionCallbacks{[](std::span<const std::uint8_t>) {}, [](std::error_code) {}, {}, {}}, 5s,
                   [&](std::error_code e, std::shared_ptr<Session> s) {
                     if (s) answer = s->response_headers();
                     p.set_value(e);
                   });
    return p.get_future().get();
  };
  std::error_code ec;
  auto conn = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  const auto& binding = conn->channel_binding();
  REQUIRE(binding.size() == 32);
  // Right realm, no proof: 401, the connection stays.
  CHECK(open(*conn, {{"macula-realm", "acme.prod"}}) == errc::connection_refused);
  // Right realm, a proof made with the wrong secret: 401.
  CHECK(open(*conn, realm_headers(RealmPolicy{"acme.prod", std::string("guess")}, client->node_id(), server->node_id(),
                                  binding)) == errc::connection_refused);
  CHECK(conn->is_open());
  // Right realm and proof: accepted, and the acceptor proves the secret back.
  CHECK_FALSE(open(*conn, realm_headers(policy, client->node_id(), server->node_id(), binding)));
  CHECK(accepted == 1);
  CHECK(server_binding == binding);  // both ends derived the same channel binding
  CHECK(acceptor_proof_valid(policy, client->node_id(), server->node_id(), binding, answer));
  // The acceptor's proof is not valid for another secret, another node pair or another channel.
  CHECK_FALSE(acceptor_proof_valid(RealmPolicy{"acme.prod", std::string("guess")}, client->node_id(), server->node_id(),
                                   binding, answer));
  CHECK_FALSE(acceptor_proof_valid(policy, Identity::generate().node_id(), server->node_id(), binding, answer));
  CHECK_FALSE(acceptor_proof_valid(policy, client->node_id(), server->node_id(), std::vector<std::uint8_t>(32, 0), answer));
  CHECK_FALSE(acceptor_proof_valid(policy, client->node_id(), server->node_id(), binding, {}));
  // A proof bound to another node pair does not transfer.
  CHECK(open(*conn, realm_headers(policy, Identity::generate().node_id(), server->node_id(), binding)) ==
        errc::connection_refused);
  // Replay: the same node pair's valid proof, taken from this connection to a new one, fails
  // (each handshake has its own channel binding).
  const auto replayed = realm_headers(policy, client->node_id(), server->node_id(), binding);
  auto second = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  CHECK(second->channel_binding().size() == 32);
  CHECK(second->channel_binding() != binding);
  CHECK(open(*second, replayed) == errc::connection_refused);
  CHECK_FALSE(open(*second, realm_headers(policy, client->node_id(), server->node_id(), second->channel_binding())));
  CHECK(accepted == 2);
  // Another realm: 403, then the connection is closed.
  CHECK(open(*conn, realm_headers(RealmPolicy{"other.realm", std::string("s3cret")}, client->node_id(), server->node_id(),
                                  binding)) == errc::connection_refused);
  for (int i = 0; i < 100 && conn->is_open(); ++i) std::this_thread::sleep_for(10ms);
  CHECK_FALSE(conn->is_open());
  CHECK(accepted == 2);
}

TEST_CASE("transport: a request can be cancelled; the connection carries on", "[transport][cancel]") {
  Loop loop;
  auto server = make(loop.io, options());
  add_echo(*server);
  std::vector<Responder> parked;
  std::mutex m;
  server->route("GET", "/never", [&](Request&&, Responder r) {
    std::lock_guard lock(m);
    parked.push_back(std::move(r));
  });
  auto client = make(loop.io, options());
  std::error_code ec;
  auto conn = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  Request get;
  get.method = "GET";
  get.path = "/never";
  std::promise<std::error_code> p;
  auto handle = conn->request(get, 10s, [&](std::error_code e, Response) { p.set_value(e); });
  std::this_thread::sleep_for(50ms);
  const auto t0 = std::chrono::steady_clock::now();
  handle.cancel();
  handle.cancel();  // idempotent
  CHECK(p.get_future().get() == errc::cancelled);
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  CHECK(call(*conn, post("/echo", {4})).second.body == std::vector<std::uint8_t>{4});
  server->close();
}

TEST_CASE("transport: streaming routes: a 5 MiB upload streamed in, a 3 MiB download streamed out",
          "[transport][streaming]") {
  Loop loop;
  auto so = options();
  so.session_send_buffer = 512 * 1024;
  auto server = make(loop.io, std::move(so));
  auto co = options();
  co.session_send_buffer = 512 * 1024;
  auto client = make(loop.io, std::move(co));
  constexpr std::size_t kUp = 5 << 20, kDown = 3 << 20;

  // Upload: the handler sees the body as it arrives (never buffered whole), then answers.
  struct Upload {
    std::size_t bytes = 0;
    std::uint64_t sum = 0;
    std::size_t largest_piece = 0;
  };
  auto up = std::make_shared<Upload>();
  server->stream_route("PUT", "/upload/", [up](const Request& head, std::shared_ptr<Session> s, SessionCallbacks& cb) {
    if (head.path != "/upload/blob") return 404;
    cb.response_headers.push_back({"x-upload", "streaming"});
    cb.on_data = [up](std::span<const std::uint8_t> bytes) {
      up->bytes += bytes.size();
      up->largest_piece = std::max(up->largest_piece, bytes.size());
      for (auto b : bytes) up->sum += b;
    };
    cb.on_end = [up, s] {
      const std::string answer = "got " + std::to_string(up->bytes) + " sum " + std::to_string(up->sum);
      (void)s->send({reinterpret_cast<const std::uint8_t*>(answer.data()), answer.size()});
      s->close();
    };
    cb.on_close = [](std::error_code) {};
    return 200;
  });
  // Download: the handler writes more than its send buffer holds, resuming on on_writable.
  server->stream_route("GET", "/download", [](const Request&, std::shared_ptr<Session> s, SessionCallbacks& cb) {
    auto sent = std::make_shared<std::size_t>(0);
    auto pump = std::make_shared<std::function<void()>>();
    *pump = [s, sent, pump] {
      std::vector<std::uint8_t> piece(32 * 1024);
      while (*sent < kDown) {
        for (std::size_t i = 0; i < piece.size(); ++i) piece[i] = static_cast<std::uint8_t>((*sent + i) * 7);
        if (s->send(piece) == errc::queue_full) return s->on_writable(*pump);
        *sent += piece.size();
      }
      s->close();
      *pump = nullptr;
    };
    cb.on_data = [](std::span<const std::uint8_t>) {};
    cb.on_end = [pump] { (*pump)(); };  // start once the (empty) request body has ended
    cb.on_close = [](std::error_code) {};
    return 200;
  });

  std::error_code ec;
  auto conn = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);

  // --- upload
  std::string answer;
  std::promise<std::error_code> up_done;
  SessionCallbacks ucb;
  ucb.on_data = [&](std::span<const std::uint8_t> b) { answer.append(b.begin(), b.end()); };
  ucb.on_close = [&](std::error_code e) { up_done.set_value(e); };
  Request put;
  put.method = "PUT";
  put.path = "/upload/blob";
  std::uint64_t expected_sum = 0;
  std::vector<std::uint8_t> blob(kUp);
  for (std::size_t i = 0; i < kUp; ++i) expected_sum += (blob[i] = static_cast<std::uint8_t>(i * 31));
  auto offset = std::make_shared<std::size_t>(0);
  auto uploader = std::make_shared<std::function<void()>>();
  std::shared_ptr<Session> upload_session;
  conn->open_session(put, ucb, 5s, [&](std::error_code e, std::shared_ptr<Session> s) {
    REQUIRE_FALSE(e);
    upload_session = s;
    *uploader = [&, s, offset, uploader] {
      while (*offset < kUp) {
        const std::size_t n = std::min<std::size_t>(64 * 1024, kUp - *offset);
        if (s->send({blob.data() + *offset, n}) == errc::queue_full) return s->on_writable(*uploader);
        *offset += n;
      }
      s->close();  // end of the request body
      *uploader = nullptr;
    };
    (*uploader)();
  });
  REQUIRE(up_done.get_future().wait_for(30s) == std::future_status::ready);
  CHECK(answer == "got " + std::to_string(kUp) + " sum " + std::to_string(expected_sum));
  CHECK(up->largest_piece < kUp);  // it arrived in pieces, not as one buffered body

  // --- download
  std::size_t received = 0;
  bool pattern_ok = true;
  std::promise<std::error_code> down_done;
  SessionCallbacks dcb;
  dcb.on_data = [&](std::span<const std::uint8_t> b) {
    for (auto x : b) {
      if (x != static_cast<std::uint8_t>(received * 7)) pattern_ok = false;
      ++received;
    }
  };
  dcb.on_close = [&](std::error_code e) { down_done.set_value(e); };
  Request get;
  get.method = "GET";
  get.path = "/download";
  conn->open_session(get, dcb, 5s, [&](std::error_code e, std::shared_ptr<Session> s) {
    REQUIRE_FALSE(e);
    s->close();  // no request body
  });
  REQUIRE(down_done.get_future().wait_for(30s) == std::future_status::ready);
  CHECK(received == kDown);
  CHECK(pattern_ok);
}

TEST_CASE("transport: keep-alive holds an idle connection open past the idle timeout", "[transport][keepalive]") {
  Loop loop;
  auto short_idle = [](std::chrono::nanoseconds keep_alive) {
    auto o = options();
    o.idle_timeout = 300ms;
    o.keep_alive = keep_alive;
    return o;
  };
  auto server = make(loop.io, short_idle(0ns));
  add_echo(*server);
  auto quiet = make(loop.io, short_idle(0ns));
  auto chatty = make(loop.io, short_idle(100ms));
  std::error_code ec;
  auto idle_conn = dial(*quiet, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  auto kept_conn = dial(*chatty, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  std::this_thread::sleep_for(1200ms);  // four idle timeouts
  CHECK_FALSE(idle_conn->is_open());    // closed silently by the idle timeout
  CHECK(kept_conn->is_open());          // PINGs every 100 ms kept it alive
  CHECK(call(*kept_conn, post("/echo", {1})).second.status == 200);
}

TEST_CASE("transport: session backpressure is visible in the endpoint's counters", "[transport][session][metrics]") {
  Loop loop;
  auto co = options();
  co.session_send_buffer = 64 * 1024;
  auto client = make(loop.io, std::move(co));
  auto server = make(loop.io, options());
  // The server accepts but never reads fast enough to matter: it is simply slower than a
  // tight loop of sends, so the client's bound is hit.
  server->session_route("/s", [](const Request&, std::shared_ptr<Session>, SessionCallbacks& cb) {
    cb.on_data = [](std::span<const std::uint8_t>) {};
    cb.on_close = [](std::error_code) {};
    return 200;
  });
  std::error_code ec;
  auto conn = dial(*client, *server, server->node_id(), ec);
  REQUIRE_FALSE(ec);
  Request head;
  head.path = "/s";
  std::promise<std::size_t> refused_at;
  conn->open_session(head, SessionCallbacks{[](std::span<const std::uint8_t>) {}, [](std::error_code) {}, {}, {}}, 5s,
                     [&](std::error_code e, std::shared_ptr<Session> s) {
                       REQUIRE_FALSE(e);
                       std::vector<std::uint8_t> piece(8 * 1024, 1);
                       while (s->send(piece) != errc::queue_full) {
                       }
                       refused_at.set_value(s->buffered());
                     });
  const std::size_t buffered = refused_at.get_future().get();
  CHECK(buffered <= 64 * 1024);
  const auto st = client->stats();
  CHECK(st.sessions == 1);
  CHECK(st.session_sends_refused >= 1);
  CHECK(st.session_bytes_buffered <= 64 * 1024);
}
