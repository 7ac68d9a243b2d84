// Version Negotiation (RFC 9000 §6, §17.2.1) against a real endpoint, from a plain UDP socket.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <future>
#include <optional>

#include <boost/asio/ip/udp.hpp>

#include "macula/observe/metrics_registry.hpp"
#include "support/io_thread.hpp"
#include "transport/endpoint.hpp"
#include "transport/identity.hpp"
#include "transport/transport_metrics.hpp"

using namespace macula;
using namespace macula::transport;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using udp = asio::ip::udp;

namespace {

using Bytes = std::vector<std::uint8_t>;

constexpr std::uint32_t kGreaseVersion = 0x1a2a3a4a;  // reserved pattern 0x?a?a?a?a: no one speaks it

std::uint32_t be32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[2]) << 8 | p[3];
}

// A long-header packet: first byte, version, DCID, SCID, then `pad_to` bytes in all.
Bytes long_header(std::uint8_t first, std::uint32_t version, const Bytes& dcid, const Bytes& scid, std::size_t pad_to) {
  Bytes p = {first, std::uint8_t(version >> 24), std::uint8_t(version >> 16), std::uint8_t(version >> 8),
             std::uint8_t(version)};
  p.push_back(std::uint8_t(dcid.size()));
  p.insert(p.end(), dcid.begin(), dcid.end());
  p.push_back(std::uint8_t(scid.size()));
  p.insert(p.end(), scid.begin(), scid.end());
  if (p.size() < pad_to) p.resize(pad_to, 0);
  return p;
}

// The next datagram on `s`, or nothing within `wait` (a bounded wait: silence is an answer).
std::optional<Bytes> receive(udp::socket& s, std::chrono::milliseconds wait) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(wait.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((wait.count() % 1000) * 1000);
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  Bytes buf(2048);
  const auto n = ::recv(s.native_handle(), buf.data(), buf.size(), 0);
  if (n < 0) return std::nullopt;
  buf.resize(static_cast<std::size_t>(n));
  return buf;
}

EndpointOptions options() {
  EndpointOptions o;
  o.identity = Identity::generate();
  o.connect_timeout = 2s;
  o.idle_timeout = 30s;
  return o;
}

std::shared_ptr<Endpoint> make(asio::io_context& io) {
  std::error_code ec;
  auto ep = Endpoint::create(io, options(), udp::endpoint(asio::ip::make_address("127.0.0.1"), 0), ec);
  REQUIRE_FALSE(ec);
  return ep;
}

// A command's combined output, with a hard time limit.
std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(("timeout 20 " + cmd + " 2>&1").c_str(), "r");
  REQUIRE(p);
  std::array<char, 4096> buf;
  while (std::size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  pclose(p);
  return out;
}

double series_value(const std::string& text, const std::string& name) {
  const auto at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
}

}  // namespace

TEST_CASE("transport: an Initial-sized packet of an unknown version is answered with Version Negotiation",
          "[transport][version]") {
  macula::test::IoThread loop;
  auto server = make(loop.io);
  server->route("POST", "/echo", [](Request&& req, Responder respond) {
    Response r;
    r.body = std::move(req.body);
    respond(std::move(r));
  });
  observe::MetricsRegistry registry;
  auto remove_series = export_metrics(registry, server);
  const std::string metric = "macula_transport_version_negotiations_sent_total";
  CHECK(series_value(registry.render(), metric) == 0);

  asio::io_context raw_io;
  udp::socket raw(raw_io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto target = server->local_endpoint();
  const Bytes dcid = {0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8};  // 9 bytes: not our 18
  const Bytes scid = {0x5c, 0x5d, 0x5e, 0x5f, 0x60};

  // 0xff00001d (draft-29) is one ngtcp2 implements but this endpoint does not speak (ALPN h3-29).
  const std::uint32_t version = GENERATE(kGreaseVersion, 0xff00001du);
  INFO("version " << std::hex << version);

  SECTION("a 1200-byte Initial of a version we do not speak gets the versions we speak") {
    raw.send_to(asio::buffer(long_header(0xc0, version, dcid, scid, 1200)), target);
    const auto vn = receive(raw, 2000ms);
    REQUIRE(vn);
    const Bytes& p = *vn;
    REQUIRE(p.size() >= 7 + scid.size() + dcid.size() + 4);
    CHECK((p[0] & 0x80) != 0);  // long header
    CHECK(be32(&p[1]) == 0);    // version 0: Version Negotiation
    // The client's SCID comes back as DCID and its DCID as SCID (§17.2.1).
    REQUIRE(p[5] == scid.size());
    CHECK(Bytes(p.begin() + 6, p.begin() + 6 + static_cast<std::ptrdiff_t>(scid.size())) == scid);
    const std::size_t s_at = 6 + scid.size();
    REQUIRE(p[s_at] == dcid.size());
    CHECK(Bytes(p.begin() + static_cast<std::ptrdiff_t>(s_at) + 1,
                p.begin() + static_cast<std::ptrdiff_t>(s_at + 1 + dcid.size())) == dcid);
    const std::size_t list_at = s_at + 1 + dcid.size();
    REQUIRE((p.size() - list_at) % 4 == 0);
    std::vector<std::uint32_t> versions;
    for (std::size_t i = list_at; i < p.size(); i += 4) versions.push_back(be32(&p[i]));
    CHECK(std::find(versions.begin(), versions.end(), 0x00000001u) != versions.end());
    CHECK(std::find(versions.begin(), versions.end(), version) == versions.end());
    CHECK(versions.size() == 2);  // v1 and one reserved version, 0x?a?a?a?a
    for (auto v : versions) CHECK((v == 0x00000001u || (v & 0x0f0f0f0fu) == 0x0a0a0a0au));
    CHECK(p.size() < 1200);  // never more than the packet that asked for it
    CHECK(server->stats().version_negotiations_sent == 1);
    CHECK(series_value(registry.render(), metric) == 1);
  }

  SECTION("a 100-byte packet of an unknown version gets nothing (amplification)") {
    raw.send_to(asio::buffer(long_header(0xc0, version, dcid, scid, 100)), target);
    CHECK_FALSE(receive(raw, 300ms));
    CHECK(server->stats().version_negotiations_sent == 0);
    CHECK(server->stats().datagrams_dropped >= 1);
  }

  SECTION("a Version Negotiation packet is never answered, whatever its connection ids") {
    // With an 18-byte DCID (our length) and 1200 bytes it could pass for a stateless-reset
    // trigger or an Initial; it must provoke neither a reset nor a Version Negotiation.
    const Bytes our_len_dcid(18, 0xab);
    Bytes vn = long_header(0x80, 0, our_len_dcid, scid, 0);
    for (std::uint32_t v : {0x00000001u, kGreaseVersion})
      for (int shift = 24; shift >= 0; shift -= 8) vn.push_back(std::uint8_t(v >> shift));
    raw.send_to(asio::buffer(vn), target);
    vn.resize(1200, 0);
    raw.send_to(asio::buffer(vn), target);
    CHECK_FALSE(receive(raw, 300ms));
    const auto s = server->stats();
    CHECK(s.version_negotiations_sent == 0);
    CHECK(s.stateless_resets_sent == 0);
    CHECK(s.datagrams_dropped >= 2);
  }

  SECTION("a burst is answered at most 100 times (the stateless-answer bound)") {
    const Bytes packet = long_header(0xc0, version, dcid, scid, 1200);
    for (int i = 0; i < 300; ++i) raw.send_to(asio::buffer(packet), target);
    int answers = 0;
    while (receive(raw, 300ms)) ++answers;
    // The bucket holds 100 and refills at 100/s: a loopback burst cannot earn many more.
    CHECK(answers >= 100);
    CHECK(answers < 200);
    CHECK(server->stats().version_negotiations_sent == static_cast<std::uint64_t>(answers));
  }

  // Whatever came before, a QUIC v1 client still connects and is served.
  auto client = make(loop.io);
  std::promise<std::pair<std::error_code, std::shared_ptr<Connection>>> dialed;
  client->connect(target, server->node_id(),
                  [&](std::error_code e, std::shared_ptr<Connection> c) { dialed.set_value({e, c}); });
  auto [ec, conn] = dialed.get_future().get();
  REQUIRE_FALSE(ec);
  std::promise<std::pair<std::error_code, Response>> answered;
  Request r;
  r.method = "POST";
  r.path = "/echo";
  r.body = {42};
  conn->request(std::move(r), 5s, [&](std::error_code e, Response resp) { answered.set_value({e, std::move(resp)}); });
  auto [e, resp] = answered.get_future().get();
  REQUIRE_FALSE(e);
  CHECK(resp.body == Bytes{42});
  remove_series();
}

TEST_CASE("interop: gtlsclient offering an unknown version is steered to v1 and served", "[transport][version][interop]") {
  REQUIRE(access("/usr/bin/gtlsclient", X_OK) == 0);  // cmake/install-deps.sh installs ngtcp2-client
  macula::test::IoThread loop;
  auto server = make(loop.io);
  server->route("GET", "/health", [](Request&&, Responder respond) {
    Response r;
    const std::string text = "ok client\n";
    r.body.assign(text.begin(), text.end());
    respond(std::move(r));
  });
  const auto port = std::to_string(server->local_endpoint().port());
  // The client opens in a version nobody speaks; only our Version Negotiation tells it v1 works.
  const std::string out = run("/usr/bin/gtlsclient 127.0.0.1 " + port + " https://localhost:" + port +
                              "/health --version=0x1a2a3a4a --preferred-versions=v1"
                              " --exit-on-all-streams-close --no-quic-dump --timeout=5s");
  INFO(out);
  CHECK(out.find(":status: 200") != std::string::npos);
  CHECK(server->stats().version_negotiations_sent >= 1);
  server->close();
}
