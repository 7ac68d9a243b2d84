// Security: the realm secret holds in every direction, and the client access policy decides
// what certificate-less clients may do. Each case is an attack that used to work, or the
// proof that members still work together.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>

#include "dht/dht_discovery.hpp"
#include "macula/client_access.hpp"
#include "macula/node.hpp"
#include "macula/publisher.hpp"
#include "macula/rpc_client.hpp"
#include "macula/subscriber.hpp"
#include "support/io_thread.hpp"
#include "support/node_helpers.hpp"
#include "transport/realm_guard.hpp"
#include "wire/frame.hpp"

using namespace macula;
using namespace std::chrono_literals;
using test::bytes;
using test::eventually;
using test::text;

namespace {

constexpr const char* kRealm = "vault.realm";
constexpr const char* kSecret = "correct horse battery staple";

NodeOptions member(bool dht = false) {
  NodeOptions o;
  o.realm = kRealm;
  o.realm_secret = kSecret;
  o.http_listen = "";
  o.dht = dht;
  o.connect_timeout = 2000ms;
  return o;
}

// Same realm name, but it does not know the secret (none, or a guess).
NodeOptions outsider(std::optional<std::string> guess = std::nullopt, bool dht = false) {
  NodeOptions o = member(dht);
  o.realm_secret = std::move(guess);
  o.client_access = ClientAccess::open;
  if (o.realm_secret) o.client_access = ClientAccess::closed;
  return o;
}

double metric(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
}

std::pair<std::error_code, Bytes> call_sync(RpcClient& c, const std::string& proc, const std::string& args) {
  std::error_code ec;
  Bytes r = c.call(proc, bytes(args), ec);
  return {ec, std::move(r)};
}

RpcHandler counting(std::atomic<int>& calls, const char* answer) {
  return [&calls, answer](Bytes, RpcResponder r) {
    ++calls;
    r.reply(bytes(answer));
  };
}

}  // namespace

TEST_CASE("security: members of a secret realm link, publish and call both ways", "[security][realm]") {
  test::IoThread loop;
  NodeOptions bo = member();
  Node a(loop.io, member()), b(loop.io, bo);
  REQUIRE_FALSE(a.start());
  NodeOptions co = member();
  co.bootstrap = {a.local_address()};
  Node c(loop.io, co);
  REQUIRE_FALSE(b.start());
  REQUIRE_FALSE(c.start());
  CHECK_FALSE(b.connect(a.local_address()));
  REQUIRE(eventually([&] { return a.stats().links == 2; }));
  test::Inbox on_c;
  Subscriber sub(c, "vault.#", on_c.handler());
  std::atomic<int> calls{0};
  auto adv = b.advertise("vault.open", counting(calls, "opened"));
  Publisher pub(a);
  REQUIRE(eventually([&] {
    pub.publish("vault.door", bytes("knock"));
    return on_c.size() > 0;
  }));
  RpcClient rpc(a);
  REQUIRE(eventually([&] { return !call_sync(rpc, "vault.open", "").first; }));
  CHECK(calls >= 1);
  CHECK(metric(a.metrics_text(), "macula_realm_refusals_total") == 0);
}

TEST_CASE("security: a member refuses a node it dials that cannot prove the secret (outsider as bootstrap)",
          "[security][realm]") {
  test::IoThread loop;
  for (const auto& guess : {std::optional<std::string>{}, std::optional<std::string>{"guess"}}) {
    INFO("outsider's secret: " << guess.value_or("(none)"));
    Node evil(loop.io, outsider(guess));
    REQUIRE_FALSE(evil.start());
    test::Inbox stolen;
    Subscriber tap(evil, "#", stolen.handler());
    NodeOptions mo = member();
    mo.bootstrap = {evil.local_address()};
    Node m(loop.io, mo);
    REQUIRE_FALSE(m.start());
    const auto ec = m.connect(evil.local_address());
    // No secret: the outsider accepts, but its answer carries no proof, so the member drops
    // the link. A wrong secret: the outsider itself refuses the member's proof.
    CHECK((ec == errc::realm_proof_failed || ec == errc::connection_refused));
    CHECK(ec == (guess ? std::error_code(errc::connection_refused) : std::error_code(errc::realm_proof_failed)));
    Publisher pub(m);
    for (int i = 0; i < 20; ++i) pub.publish("vault.secret", bytes("plans"));
    std::this_thread::sleep_for(300ms);
    CHECK(stolen.size() == 0);
    CHECK(m.stats().links == 0);
    if (!guess) CHECK(metric(m.metrics_text(), "macula_realm_refusals_total") >= 1);
    m.stop();
    evil.stop();
  }
}

TEST_CASE("security: an outsider that dials a member is refused, and cannot bootstrap into the realm",
          "[security][realm]") {
  test::IoThread loop;
  Node m(loop.io, member());
  REQUIRE_FALSE(m.start());
  test::Inbox on_m;
  Subscriber sub(m, "#", on_m.handler());
  NodeOptions eo = outsider();
  eo.bootstrap = {m.local_address()};
  Node evil(loop.io, eo);
  REQUIRE_FALSE(evil.start());
  CHECK(evil.connect(m.local_address()) == errc::connection_refused);
  Publisher pub(evil);
  for (int i = 0; i < 20; ++i) pub.publish("vault.forged", bytes("x"));
  std::this_thread::sleep_for(300ms);
  CHECK(on_m.size() == 0);
  CHECK(m.stats().links == 0);
  CHECK(metric(m.metrics_text(), "macula_realm_refusals_total") >= 1);
}

TEST_CASE("security: a peer found through discovery must prove the secret before it gets a call", "[security][realm]") {
  // The discovery hands the member an outsider's address as the provider (as a poisoned DHT
  // record would): the member dials it, the outsider cannot prove the secret, and the call
  // never reaches the outsider's handler.
  struct Poisoned final : discovery::Discovery {
    discovery::PeerAddress provider;
    void advertise_procedure(std::string_view) override {}
    void withdraw_procedure(std::string_view) override {}
    void advertise_interest(std::string_view) override {}
    void withdraw_interest(std::string_view) override {}
    void find_providers(std::string_view, discovery::PeersFound done) override { done({provider}); }
    void find_subscribers(std::string_view, discovery::PeersFound done) override { done({provider}); }
  };
  test::IoThread loop;
  Node m(loop.io, member()), evil(loop.io, outsider());
  REQUIRE_FALSE(m.start());
  REQUIRE_FALSE(evil.start());
  std::atomic<int> leaked{0};
  auto adv = evil.advertise("vault.open", counting(leaked, "forged result"));
  test::Inbox stolen;
  Subscriber tap(evil, "#", stolen.handler());
  auto fake = std::make_unique<Poisoned>();
  fake->provider = {evil.node_id(), evil.local_address()};
  node::TestHooks::set_discovery(m, std::move(fake));
  RpcClient rpc(m);
  const auto [ec, result] = call_sync(rpc, "vault.open", "the combination");
  CHECK(ec);
  CHECK(text(result) != "forged result");
  Publisher pub(m);
  for (int i = 0; i < 10; ++i) pub.publish("vault.secret", bytes("plans"));
  std::this_thread::sleep_for(300ms);
  CHECK(leaked == 0);
  CHECK(stolen.size() == 0);
  CHECK(m.stats().links == 0);
  CHECK(metric(m.metrics_text(), "macula_realm_refusals_total") >= 1);
}

TEST_CASE("security: DHT requests need the realm proof: an outsider cannot store or read records", "[security][dht]") {
  test::IoThread loop;
  Node a(loop.io, member(true));
  REQUIRE_FALSE(a.start());
  NodeOptions bo = member(true);
  bo.bootstrap = {a.local_address()};
  Node b(loop.io, bo);
  REQUIRE_FALSE(b.start());
  REQUIRE(eventually([&] { return a.stats().links == 1; }));

  // An outsider with the DHT on, bootstrapped to a member: its provider record is refused,
  // so the member never learns of it.
  NodeOptions eo = outsider(std::nullopt, true);
  eo.bootstrap = {a.local_address()};
  Node evil(loop.io, eo);
  REQUIRE_FALSE(evil.start());
  std::atomic<int> leaked{0};
  auto adv = evil.advertise("vault.open", counting(leaked, "forged result"));
  std::this_thread::sleep_for(500ms);
  RpcClient rpc(b);
  CHECK(call_sync(rpc, "vault.open", "x").first == errc::no_provider);
  CHECK(leaked == 0);

  // The same by hand: a node-certified client POSTs a STORE to the DHT route.
  test::H3Client liar(loop.io, a, /*present_certificate=*/true);
  REQUIRE(liar.connected());
  const NodeId liar_id = liar.endpoint().node_id();
  wire::DhtStore store;
  store.key = dht::procedure_key(kRealm, "vault.open");
  store.record.owner = liar_id;
  store.record.ttl_s = 60;
  store.record.data = bytes(evil.local_address());
  Bytes body;
  REQUIRE_FALSE(wire::encode(store, body));
  const std::string text_body(body.begin(), body.end());
  CHECK(liar.request("POST", "/macula/v1/dht", text_body).status == 403);  // no realm named
  CHECK(liar.request("POST", "/macula/v1/dht", text_body, {{"macula-realm", kRealm}}).status == 401);
  // A proof made for another connection (replayed) or with a wrong secret: 401.
  const auto& binding = liar.connection().channel_binding();
  CHECK(liar.request("POST", "/macula/v1/dht", text_body,
                     transport::realm_headers({kRealm, std::string("guess")}, liar.endpoint().node_id(), a.node_id(),
                                              binding))
            .status == 401);
  CHECK(liar.request("POST", "/macula/v1/dht", text_body,
                     transport::realm_headers({kRealm, std::string(kSecret)}, liar.endpoint().node_id(), a.node_id(),
                                              std::vector<std::uint8_t>(32, 1)))
            .status == 401);
  // Another realm's request is refused as such.
  CHECK(liar.request("POST", "/macula/v1/dht", text_body, {{"macula-realm", "other.realm"}}).status == 403);
  CHECK(metric(a.metrics_text(), "macula_realm_refusals_total") >= 4);
  // And a member's proof is accepted (the route works for the realm).
  CHECK(liar.request("POST", "/macula/v1/dht", text_body,
                     transport::realm_headers({kRealm, std::string(kSecret)}, liar.endpoint().node_id(), a.node_id(),
                                              binding))
            .status == 200);
}

TEST_CASE("security: client access: token by default in a secret realm, closed, open refused with a secret",
          "[security][clients]") {
  test::IoThread loop;
  Node m(loop.io, member());
  REQUIRE_FALSE(m.start());
  test::Inbox on_m;
  Subscriber sub(m, "ext.#", on_m.handler());
  auto adv = m.advertise("ext.echo", [](Bytes a, RpcResponder r) { r.reply(std::move(a)); });
  test::H3Client app(loop.io, m);
  REQUIRE(app.connected());
  const std::vector<transport::Header> auth{{"authorization", "Bearer " + derive_client_token(kRealm, kSecret)}};
  const std::vector<transport::Header> wrong{{"authorization", "Bearer " + derive_client_token(kRealm, "guess")}};
  // Without the token (or with a wrong one): 401, nothing delivered or called.
  CHECK(app.request("POST", "/macula/v1/pub/ext.x", "no").status == 401);
  CHECK(app.request("POST", "/macula/v1/pub/ext.x", "no", wrong).status == 401);
  CHECK(app.request("POST", "/macula/v1/rpc/ext.echo", "no").status == 401);
  CHECK(app.request("GET", "/metrics").status == 401);
  // Probes stay open.
  CHECK(app.request("GET", "/health").status == 200);
  CHECK(app.request("GET", "/live").status == 200);
  // With it: served.
  CHECK(app.request("POST", "/macula/v1/pub/ext.x", "yes", auth).status == 202);
  const auto r = app.request("POST", "/macula/v1/rpc/ext.echo", "hi", auth);
  CHECK(r.status == 200);
  CHECK(text(r.body) == "hi");
  CHECK(app.request("GET", "/metrics", "", auth).status == 200);
  REQUIRE(on_m.wait_for(1));
  std::this_thread::sleep_for(100ms);
  CHECK(on_m.size() == 1);
  CHECK(metric(m.metrics_text(), "macula_client_refusals_total") == 4);
  // A refused request is refused at its head: an unauthorized upload keeps no memory.
  CHECK(metric(m.metrics_text(), "macula_transport_requests_refused_total") == 4);
  CHECK(app.request("POST", "/macula/v1/pub/ext.x", std::string(1u << 20, 'u')).status == 401);
  CHECK(metric(m.metrics_text(), "macula_transport_body_bytes_buffered") == 0);
  CHECK(metric(m.metrics_text(), "macula_transport_requests_refused_total") == 5);

  // Closed: no client API at all.
  NodeOptions co = member();
  co.client_access = ClientAccess::closed;
  Node closed(loop.io, co);
  REQUIRE_FALSE(closed.start());
  test::H3Client app2(loop.io, closed);
  REQUIRE(app2.connected());
  CHECK(app2.request("POST", "/macula/v1/pub/ext.x", "no", auth).status == 403);
  CHECK(app2.request("GET", "/metrics", "", auth).status == 403);
  CHECK(app2.request("GET", "/ready").status == 200);

  // Open with a secret would let anyone past it: refused at start, with a reason.
  NodeOptions oo = member();
  oo.client_access = ClientAccess::open;
  Node open(loop.io, oo);
  CHECK(open.start() == errc::options_invalid);

  // An empty secret would let anyone who knows the realm name compute every proof.
  NodeOptions eo = member();
  eo.realm_secret = "";
  Node empty(loop.io, eo);
  CHECK(empty.start() == errc::options_invalid);

  // Token mode without a secret needs an explicit token, and then uses it.
  NodeOptions to;
  to.realm = "plain.realm";
  to.http_listen = "";
  to.client_access = ClientAccess::token;
  Node missing(loop.io, to);
  CHECK(missing.start() == errc::options_invalid);
  to.client_token = "let-me-in";
  Node tokened(loop.io, to);
  REQUIRE_FALSE(tokened.start());
  test::H3Client app3(loop.io, tokened);
  REQUIRE(app3.connected());
  CHECK(app3.request("POST", "/macula/v1/pub/ext.x", "no").status == 401);
  CHECK(app3.request("POST", "/macula/v1/pub/ext.x", "ok", {{"authorization", "Bearer let-me-in"}}).status == 202);
}

TEST_CASE("security: the plain-HTTP /metrics asks for the token in token mode; probes stay open", "[security][clients]") {
  NodeOptions o = member();
  o.http_listen = "127.0.0.1:0";
  Node n(o);
  REQUIRE_FALSE(n.start());
  CHECK(test::http_get(n.http_address(), "/metrics").find(" 401 ") != std::string::npos);
  CHECK(test::http_get(n.http_address(), "/metrics", "Bearer " + derive_client_token(kRealm, kSecret)).find(" 200 ") !=
        std::string::npos);
  CHECK(test::http_get(n.http_address(), "/health").find(" 200 ") != std::string::npos);
}

namespace {

std::size_t rss_mib() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long pages = 0, resident = 0;
  if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  std::fclose(f);
  return static_cast<std::size_t>(resident) * 4096 / (1u << 20);
}

double metric_any(const std::string& text, const std::string& series) { return metric(text, series); }

// Opens `n` uploads to `path` on `client`, each sending `bytes` of body and never finishing.
// Returns futures of how each ended (connection_refused: answered with a non-2xx status).
std::vector<std::shared_future<std::error_code>> start_uploads(test::H3Client& client, const std::string& path, int n,
                                                               std::size_t bytes) {
  std::vector<std::shared_future<std::error_code>> out;
  for (int i = 0; i < n; ++i) {
    auto p = std::make_shared<std::promise<std::error_code>>();
    out.push_back(p->get_future().share());
    transport::Request head;
    head.path = path;
    head.body.assign(bytes, static_cast<std::uint8_t>(i));
    client.connection().open_session(head, transport::SessionCallbacks{[](std::span<const std::uint8_t>) {},
                                                                       [](std::error_code) {}, {}, {}},
                                     30s, [p](std::error_code e, std::shared_ptr<transport::Session>) { p->set_value(e); });
  }
  return out;
}

}  // namespace

TEST_CASE("security: unfinished uploads stay under the per-connection and node-wide body bounds", "[security][memory]") {
  test::IoThread loop;
  NodeOptions o;
  o.realm = "upload.realm";
  o.http_listen = "";
  Node n(loop.io, o);
  REQUIRE_FALSE(n.start());
  const auto buffered = [&] { return metric_any(n.metrics_text(), "macula_transport_body_bytes_buffered"); };
  const auto refused = [&] { return metric_any(n.metrics_text(), "macula_transport_bodies_refused_total"); };
  const std::size_t rss_before = rss_mib();

  // The attack, at the largest body a route takes: one certificate-less connection opens 100
  // uploads of 1 MiB each and never finishes them. The node holds at most 16 MiB for it.
  {
    test::H3Client attacker(loop.io, n);
    REQUIRE(attacker.connected());
    auto uploads = start_uploads(attacker, "/macula/v1/pub/upload.x", 100, 1u << 20);
    // Everything past the bound is answered 503 at once.
    REQUIRE(eventually([&] { return refused() >= 84; }, 20s));
    CHECK(buffered() <= double(16u << 20));
    CHECK(buffered() >= double(8u << 20));  // it did buffer what the bound allows
    // The node counts a refusal when it sends the 503; the client sees it a moment later.
    int answered = 0;
    std::vector<bool> seen(uploads.size(), false);
    CHECK(eventually([&] {
      for (std::size_t i = 0; i < uploads.size(); ++i)
        if (!seen[i] && uploads[i].wait_for(0s) == std::future_status::ready) {
          seen[i] = true;
          CHECK(uploads[i].get() == errc::connection_refused);
          ++answered;
        }
      return answered >= 84;
    }, 10s));
    const std::size_t rss_during = rss_mib();
    WARN("RSS before " << rss_before << " MiB, during " << rss_during << " MiB (client buffers included), node holds "
                       << buffered() / (1 << 20) << " MiB of bodies");
    // Other clients are still served meanwhile.
    test::H3Client other(loop.io, n);
    REQUIRE(other.connected());
    CHECK(other.request("POST", "/macula/v1/pub/upload.ok", "fine").status == 202);
  }
  // The connection is gone: every byte it held is released.
  CHECK(eventually([&] { return buffered() == 0; }, 10s));
  // Uploads past the 2 MiB body cap (the original attack sent 9 MiB each) are answered 413
  // at the cap and stopped, without waiting for their end and without keeping their bytes.
  {
    test::H3Client big(loop.io, n);
    REQUIRE(big.connected());
    auto uploads = start_uploads(big, "/macula/v1/pub/upload.big", 10, 3u << 20);
    for (auto& u : uploads) {
      REQUIRE(u.wait_for(10s) == std::future_status::ready);
      CHECK(u.get() == errc::connection_refused);
    }
    CHECK(buffered() == 0);
  }
  WARN("RSS after the connection ended: " << rss_mib() << " MiB");

  // Node-wide: several connections together stop at max_request_body_bytes.
  NodeOptions so = o;
  so.max_request_body_bytes = 8u << 20;
  so.max_connection_request_body_bytes = 4u << 20;
  Node small(loop.io, so);
  REQUIRE_FALSE(small.start());
  const auto small_buffered = [&] { return metric_any(small.metrics_text(), "macula_transport_body_bytes_buffered"); };
  {
    std::vector<std::unique_ptr<test::H3Client>> clients;
    std::vector<std::shared_future<std::error_code>> all;
    for (int c = 0; c < 4; ++c) {
      clients.push_back(std::make_unique<test::H3Client>(loop.io, small));
      REQUIRE(clients.back()->connected());
      auto u = start_uploads(*clients.back(), "/macula/v1/rpc/upload.call", 8, 1u << 20);
      all.insert(all.end(), u.begin(), u.end());
    }
    REQUIRE(eventually([&] { return metric_any(small.metrics_text(), "macula_transport_bodies_refused_total") >= 24; }, 20s));
    CHECK(small_buffered() <= double(8u << 20));
  }
  CHECK(eventually([&] { return small_buffered() == 0; }, 10s));
}

TEST_CASE("security: an upload that goes quiet is answered 408 and released", "[security][memory]") {
  test::IoThread loop;
  NodeOptions o;
  o.realm = "upload.realm";
  o.http_listen = "";
  o.request_body_idle_timeout = 1000ms;
  Node n(loop.io, o);
  REQUIRE_FALSE(n.start());
  test::H3Client slow(loop.io, n);
  REQUIRE(slow.connected());
  auto uploads = start_uploads(slow, "/macula/v1/pub/upload.slow", 3, 100'000);
  REQUIRE(eventually([&] { return metric_any(n.metrics_text(), "macula_transport_body_bytes_buffered") > 0; }));
  for (auto& u : uploads) {
    REQUIRE(u.wait_for(5s) == std::future_status::ready);
    CHECK(u.get() == errc::connection_refused);
  }
  CHECK(metric_any(n.metrics_text(), "macula_transport_bodies_timed_out_total") == 3);
  CHECK(eventually([&] { return metric_any(n.metrics_text(), "macula_transport_body_bytes_buffered") == 0; }));
  // The connection itself is fine.
  CHECK(slow.request("POST", "/macula/v1/pub/upload.ok", "fine").status == 202);
}

TEST_CASE("security: a header over 64 KiB gets 431 on its request; the connection and its other requests go on",
          "[security][headers]") {
  test::IoThread loop;
  NodeOptions o;
  o.realm = "header.realm";
  o.http_listen = "";
  Node n(loop.io, o);
  REQUIRE_FALSE(n.start());
  test::Inbox inbox;
  Subscriber sub(n, "hdr.#", inbox.handler());
  test::H3Client app(loop.io, n);
  REQUIRE(app.connected());
  for (std::size_t size : {std::size_t{20'000}, std::size_t{70'000}, std::size_t{300'000}}) {
    INFO("header value of " << size << " bytes");
    CHECK(app.request("POST", "/macula/v1/pub/hdr.big", "x", {{"x-filler", std::string(size, 'h')}}).status == 431);
    CHECK(app.connection().is_open());
    CHECK(app.request("POST", "/macula/v1/pub/hdr.ok", "fine").status == 202);
  }
  CHECK(inbox.wait_for(3));
  std::this_thread::sleep_for(100ms);
  CHECK(inbox.size() == 3);  // nothing from the refused requests
}
