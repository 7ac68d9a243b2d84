// Helpers the Node-level integration tests share: byte/text conversion, an inbox that
// collects messages from handler threads, a blocking plain-HTTP GET, and an HTTP/3 client
// (an application endpoint without a node certificate) to talk to a node's QUIC port.
#pragma once

#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include "macula/message.hpp"
#include "macula/node.hpp"
#include "node/node_core.hpp"
#include "transport/endpoint.hpp"

namespace macula::test {

inline Bytes bytes(const std::string& s) { return {s.begin(), s.end()}; }
inline std::string text(const Bytes& b) { return {b.begin(), b.end()}; }

/// Waits until `done()` holds or `limit` passes; returns the last answer.
template <typename Pred>
bool eventually(Pred done, std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= until) return done();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// Collects messages from handler threads.
struct Inbox {
  std::mutex m;
  std::vector<Message> got;
  MessageHandler handler() {
    return [this](const Message& msg) {
      std::lock_guard lock(m);
      got.push_back(msg);
    };
  }
  std::size_t size() {
    std::lock_guard lock(m);
    return got.size();
  }
  bool wait_for(std::size_t n, std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
    return eventually([&] { return size() >= n; }, limit);
  }
  std::multiset<std::string> topics() {
    std::lock_guard lock(m);
    std::multiset<std::string> t;
    for (auto& g : got) t.insert(std::string(g.topic()));
    return t;
  }
};

/// One blocking HTTP/1.1 GET on the test thread's own socket: the whole response, or "".
inline std::string http_get(const std::string& address, const std::string& path, const std::string& authorization = {}) {
  boost::asio::io_context io;
  boost::asio::ip::udp::endpoint e;
  if (node::parse_address(address, e)) return {};
  boost::asio::ip::tcp::socket s(io);
  boost::system::error_code ec;
  s.connect({e.address(), e.port()}, ec);
  if (ec) return {};
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
                          (authorization.empty() ? std::string() : "Authorization: " + authorization + "\r\n") + "\r\n";
  boost::asio::write(s, boost::asio::buffer(req), ec);
  std::string out;
  char buf[4096];
  for (;;) {
    const std::size_t n = s.read_some(boost::asio::buffer(buf), ec);
    out.append(buf, n);
    if (ec) break;
  }
  return out;
}

/// An application (no node certificate) connected over HTTP/3 to a node's QUIC port.
class H3Client {
 public:
  H3Client(boost::asio::io_context& io, const Node& node, bool present_certificate = false) {
    transport::EndpointOptions co;
    co.identity = transport::Identity::generate();
    co.present_certificate = present_certificate;
    std::error_code ec;
    app_ = transport::Endpoint::create(io, co, {boost::asio::ip::make_address("127.0.0.1"), 0}, ec);
    if (ec) return;
    boost::asio::ip::udp::endpoint target;
    if (node::parse_address(node.local_address(), target)) return;
    std::promise<std::shared_ptr<transport::Connection>> pc;
    app_->connect(target, node.node_id(), [&](std::error_code e, std::shared_ptr<transport::Connection> c) {
      pc.set_value(e ? nullptr : c);
    });
    conn_ = pc.get_future().get();
  }
  ~H3Client() {
    if (app_) app_->close();
  }
  bool connected() const { return conn_ != nullptr; }
  transport::Endpoint& endpoint() { return *app_; }
  transport::Connection& connection() { return *conn_; }

  /// status -1: the request failed (its error in `error`).
  transport::Response request(const std::string& method, const std::string& path, const std::string& body = {},
                              std::vector<transport::Header> headers = {}) {
    transport::Request r;
    r.method = method;
    r.path = path;
    r.body = bytes(body);
    r.headers = std::move(headers);
    std::promise<transport::Response> p;
    conn_->request(r, std::chrono::seconds(5), [&](std::error_code e, transport::Response resp) {
      if (e) {
        resp.status = -1;
        error = e;
      }
      p.set_value(std::move(resp));
    });
    return p.get_future().get();
  }
  std::error_code error;

 private:
  std::shared_ptr<transport::Endpoint> app_;
  std::shared_ptr<transport::Connection> conn_;
};

}  // namespace macula::test
