// Interop with Debian's ngtcp2 example programs, real HTTP/3 peers we did not write:
// gtlsclient against our endpoint, and our client against gtlsserver.
#include <catch2/catch.hpp>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>

#include "macula/error.hpp"
#include "macula/node.hpp"
#include "macula/subscriber.hpp"
#include "support/io_thread.hpp"
#include "transport/endpoint.hpp"

extern char** environ;

using namespace macula;
using namespace macula::transport;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using udp = asio::ip::udp;

namespace {

using Loop = macula::test::IoThread;

bool have(const char* path) { return access(path, X_OK) == 0; }

// Runs a command with a hard time limit; returns its combined output.
std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(("timeout 20 " + cmd + " 2>&1").c_str(), "r");
  REQUIRE(p);
  std::array<char, 4096> buf;
  while (std::size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  pclose(p);
  return out;
}

std::filesystem::path temp_dir() {
  char tmpl[] = "/tmp/macula_interop_XXXXXX";
  REQUIRE(mkdtemp(tmpl));
  return tmpl;
}

}  // namespace

TEST_CASE("interop: gtlsclient gets 200 from our GET /health and an echo POST", "[interop]") {
  REQUIRE(have("/usr/bin/gtlsclient"));  // cmake/install-deps.sh installs ngtcp2-client
  Loop loop;
  EndpointOptions o;
  o.identity = Identity::generate();
  std::error_code ec;
  auto server = Endpoint::create(loop.io, std::move(o), udp::endpoint(asio::ip::make_address("127.0.0.1"), 0), ec);
  REQUIRE_FALSE(ec);
  server->route("GET", "/health", [](Request&& req, Responder respond) {
    Response r;
    const std::string text = req.peer ? "ok node\n" : "ok client\n";
    r.body.assign(text.begin(), text.end());
    respond(std::move(r));
  });
  server->route("POST", "/echo", [](Request&& req, Responder respond) {
    Response r;
    r.body = std::move(req.body);
    respond(std::move(r));
  });
  const auto port = std::to_string(server->local_endpoint().port());
  const std::string base = "/usr/bin/gtlsclient 127.0.0.1 " + port + " https://localhost:" + port;
  const std::string flags = " --exit-on-all-streams-close --no-quic-dump --timeout=5s";

  const std::string health = run(base + "/health" + flags);
  INFO(health);
  CHECK(health.find(":status: 200") != std::string::npos);
  CHECK(health.find("ok client") != std::string::npos);  // gtlsclient has no node certificate

  const auto dir = temp_dir();
  const auto body = dir / "body.txt";
  std::ofstream(body) << "interop echo payload";
  const std::string echo = run(base + "/echo -m POST -d " + body.string() + flags);
  INFO(echo);
  CHECK(echo.find(":status: 200") != std::string::npos);
  // gtlsclient prints bodies as a hexdump, 16 bytes per line.
  CHECK(echo.find("|interop echo pay|") != std::string::npos);
  CHECK(echo.find("content-length: 20") != std::string::npos);
  std::filesystem::remove_all(dir);
  server->close();
}

TEST_CASE("interop: our client gets 200 from gtlsserver", "[interop]") {
  REQUIRE(have("/usr/sbin/gtlsserver"));  // cmake/install-deps.sh installs ngtcp2-server
  const auto dir = temp_dir();
  const Identity server_id = Identity::generate();
  std::ofstream(dir / "key.pem") << server_id.key_pem();
  std::ofstream(dir / "cert.pem") << server_id.cert_pem();
  std::filesystem::create_directory(dir / "htdocs");
  std::ofstream(dir / "htdocs" / "hello.txt") << "hello from gtlsserver";

  // A free port: bind, read, release (gtlsserver binds it a moment later).
  std::uint16_t port;
  {
    asio::io_context io;
    udp::socket s(io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = s.local_endpoint().port();
  }
  const std::string port_s = std::to_string(port), key = (dir / "key.pem").string(), cert = (dir / "cert.pem").string(),
                    docs = (dir / "htdocs").string();
  std::vector<const char*> argv = {"gtlsserver", "127.0.0.1", port_s.c_str(), key.c_str(), cert.c_str(),
                                   "-d",         docs.c_str(), "-q",          nullptr};
  pid_t pid;
  REQUIRE(posix_spawn(&pid, "/usr/sbin/gtlsserver", nullptr, nullptr, const_cast<char**>(argv.data()), environ) == 0);

  Loop loop;
  EndpointOptions o;
  o.identity = Identity::generate();
  std::error_code ec;
  auto client = Endpoint::create(loop.io, std::move(o), udp::endpoint(asio::ip::make_address("127.0.0.1"), 0), ec);
  REQUIRE_FALSE(ec);
  std::shared_ptr<Connection> conn;
  for (int attempt = 0; attempt < 20 && !conn; ++attempt) {  // until gtlsserver is listening
    std::promise<std::pair<std::error_code, std::shared_ptr<Connection>>> p;
    client->connect(udp::endpoint(asio::ip::make_address("127.0.0.1"), port), server_id.node_id(),
                    [&](std::error_code e, std::shared_ptr<Connection> c) { p.set_value({e, c}); });
    auto [e, c] = p.get_future().get();
    conn = c;
    if (!conn) std::this_thread::sleep_for(100ms);
  }
  REQUIRE(conn);
  CHECK(conn->peer_id() == server_id.node_id());  // gtlsserver serves our key: its id is proven
  Request get;
  get.method = "GET";
  get.path = "/hello.txt";
  get.authority = "localhost:" + port_s;
  std::promise<std::pair<std::error_code, Response>> p;
  conn->request(get, 5s, [&](std::error_code e, Response r) { p.set_value({e, std::move(r)}); });
  auto [e, resp] = p.get_future().get();
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  client->close();
  std::filesystem::remove_all(dir);
  REQUIRE_FALSE(e);
  CHECK(resp.status == 200);
  CHECK(std::string(resp.body.begin(), resp.body.end()) == "hello from gtlsserver");
}


TEST_CASE("interop: gtlsclient calls a procedure through POST /macula/v1/rpc/<procedure>", "[interop][node]") {
  REQUIRE(have("/usr/bin/gtlsclient"));
  Loop loop;
  macula::Node n(loop.io, macula::NodeOptions{});
  REQUIRE_FALSE(n.start());
  auto adv = n.advertise("text.upper", [](macula::Bytes args, macula::RpcResponder reply) {
    for (auto& c : args) c = static_cast<std::uint8_t>(std::toupper(c));
    reply.reply(std::move(args));
  });
  const auto dir = temp_dir();
  const auto body = dir / "args.txt";
  std::ofstream(body) << "shout";
  const std::string addr = n.local_address();
  const auto port = addr.substr(addr.rfind(':') + 1);
  const std::string out = run("/usr/bin/gtlsclient 127.0.0.1 " + port + " https://localhost:" + port +
                              "/macula/v1/rpc/text.upper -m POST -d " + body.string() +
                              " --exit-on-all-streams-close --no-quic-dump --timeout=5s");
  INFO(out);
  CHECK(out.find(":status: 200") != std::string::npos);
  CHECK(out.find("|SHOUT|") != std::string::npos);
  std::filesystem::remove_all(dir);
  n.stop();
}


TEST_CASE("interop: gtlsclient publishes through POST /macula/v1/pub/<topic>", "[interop][node]") {
  REQUIRE(have("/usr/bin/gtlsclient"));
  Loop loop;
  macula::Node n(loop.io, macula::NodeOptions{});
  REQUIRE_FALSE(n.start());
  std::promise<std::string> got;
  std::atomic<bool> once{false};
  macula::Subscriber sub(n, "ext.*", [&](const macula::Message& m) {
    if (!once.exchange(true)) got.set_value(std::string(m.topic()) + "=" + m.payload_string());
  });
  const auto dir = temp_dir();
  const auto body = dir / "reading.txt";
  std::ofstream(body) << "21.5";
  const std::string addr = n.local_address();
  const auto port = addr.substr(addr.rfind(':') + 1);
  const std::string out = run("/usr/bin/gtlsclient 127.0.0.1 " + port + " https://localhost:" + port +
                              "/macula/v1/pub/ext.temp -m POST -d " + body.string() +
                              " --exit-on-all-streams-close --no-quic-dump --timeout=5s");
  INFO(out);
  CHECK(out.find(":status: 202") != std::string::npos);
  auto f = got.get_future();
  REQUIRE(f.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(f.get() == "ext.temp=21.5");
  std::filesystem::remove_all(dir);
  n.stop();
}
