#include "node/http_status_server.hpp"

#include <atomic>
#include <map>
#include <mutex>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "macula/error.hpp"
#include "node/node_core.hpp"

namespace macula::node {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// The unit the per-address limit counts. An IPv6 host is routinely given a whole /64, so
// counting single IPv6 addresses would let one client take every slot; an IPv4 client seen
// through a dual-stack socket must count as the same client as over IPv4.
asio::ip::address client_key(const asio::ip::address& a) {
  if (a.is_v4()) return a;
  const auto v6 = a.to_v6();
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6);
  auto bytes = v6.to_bytes();
  for (std::size_t i = 8; i < bytes.size(); ++i) bytes[i] = 0;
  return asio::ip::address_v6(bytes);
}

}  // namespace

struct HttpStatusServer::Impl : std::enable_shared_from_this<HttpStatusServer::Impl> {
  // The acceptor and the sockets it hands out live on one strand: close() posts to it, so
  // closing cannot race the accept loop when the node runs several io threads.
  Impl(asio::io_context& io, StatusPages p)
      : acceptor(asio::make_strand(io)), retry(acceptor.get_executor()), pages(std::move(p)) {}

  void accept() {
    acceptor.async_accept([self = shared_from_this()](boost::system::error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) return;
      if (ec) {
        // Out of descriptors or buffers: ending the loop would silence the port for good,
        // retrying at once would spin until a descriptor frees up.
        self->retry.expires_after(std::chrono::milliseconds(100));
        self->retry.async_wait([self](boost::system::error_code wec) {
          if (!wec) self->accept();
        });
        return;
      }
      self->admit(std::move(s));
      self->accept();
    });
  }

  // Holds one slot of both limits for as long as the connection's handlers keep it alive,
  // so every way a connection ends (answered, timed out, reset) gives its slot back once.
  struct Conn {
    Conn(tcp::socket s, std::shared_ptr<Impl> i, asio::ip::address k)
        : stream(std::move(s)), impl(std::move(i)), key(k) {
      parser.header_limit(8 * 1024);
    }
    ~Conn() { impl->release(key); }
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;

    beast::tcp_stream stream;
    beast::flat_buffer buffer{8 * 1024};
    http::request_parser<http::empty_body> parser;
    http::response<http::string_body> response;
    std::shared_ptr<Impl> impl;
    asio::ip::address key;
  };

  void admit(tcp::socket s) {
    boost::system::error_code ec;
    const auto peer = s.remote_endpoint(ec);
    if (ec) return;  // gone before we got to it
    const auto key = client_key(peer.address());
    bool admitted = false;
    {
      std::lock_guard lock(mutex);
      if (open >= kMaxConnections) {
        ++refused_global;
      } else if (auto it = per_address.find(key); it != per_address.end() && it->second >= kMaxConnectionsPerAddress) {
        ++refused_per_address;
      } else {
        ++per_address[key];
        ++open;
        admitted = true;
      }
    }
    if (!admitted) {
      // A reset, not a FIN: a refused flood leaves no TIME_WAIT entries behind on our side.
      s.set_option(asio::socket_base::linger(true, 0), ec);
      s.close(ec);
      return;
    }
    ++accepted;
    serve(std::make_shared<Conn>(std::move(s), shared_from_this(), key));
  }

  void release(const asio::ip::address& key) {
    std::lock_guard lock(mutex);
    // Entries go when their count does, so the table never holds more than kMaxConnections.
    if (auto it = per_address.find(key); it != per_address.end() && --it->second == 0) per_address.erase(it);
    --open;
  }

  void serve(std::shared_ptr<Conn> c) {
    // Set once, not per read: dripping bytes must not extend it.
    c->stream.expires_after(kHeaderDeadline);
    http::async_read(c->stream, c->buffer, c->parser, [self = shared_from_this(), c](boost::system::error_code ec, std::size_t) {
      if (ec) {
        if (ec == beast::error::timeout) ++self->header_timeouts;
        return;
      }
      const auto& req = c->parser.get();
      auto& res = c->response;
      res.version(req.version());
      res.keep_alive(false);
      if (req.method() != http::verb::get) {
        res.result(http::status::method_not_allowed);
        res.set(http::field::content_type, "text/plain; charset=utf-8");
        res.body() = "only GET\n";
      } else {
        const auto target = req.target();
        const auto authorization = req[http::field::authorization];
        StatusPage page = self->pages.answer(std::string_view(target.data(), target.size()),
                                             std::string_view(authorization.data(), authorization.size()));
        if (page.status == 401) res.set(http::field::www_authenticate, "Bearer");
        res.result(static_cast<http::status>(page.status));
        res.set(http::field::content_type, page.content_type);
        res.body() = std::move(page.body);
      }
      res.prepare_payload();
      c->stream.expires_after(kWriteDeadline);
      http::async_write(c->stream, res, [c](boost::system::error_code, std::size_t) {
        boost::system::error_code ignored;
        c->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      });
    });
  }

  tcp::acceptor acceptor;
  asio::steady_timer retry;
  StatusPages pages;
  // Handlers of different connections may run on different io threads.
  std::mutex mutex;
  std::map<asio::ip::address, std::size_t> per_address;
  std::size_t open = 0;
  std::atomic<std::uint64_t> accepted{0}, refused_global{0}, refused_per_address{0}, header_timeouts{0};
};

std::shared_ptr<HttpStatusServer> HttpStatusServer::create(asio::io_context& io, const std::string& address,
                                                           StatusPages pages, std::error_code& ec) {
  asio::ip::udp::endpoint parsed;
  if ((ec = resolve_address(address, parsed))) return nullptr;
  auto impl = std::make_shared<Impl>(io, std::move(pages));
  const tcp::endpoint ep(parsed.address(), parsed.port());
  boost::system::error_code bec;
  impl->acceptor.open(ep.protocol(), bec);
  if (!bec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), bec);
  if (!bec) impl->acceptor.bind(ep, bec);
  if (!bec) impl->acceptor.listen(asio::socket_base::max_listen_connections, bec);
  if (bec) {
    ec = std::error_code(bec.value(), std::system_category());
    return nullptr;
  }
  impl->accept();
  return std::make_shared<HttpStatusServer>(impl);
}

tcp::endpoint HttpStatusServer::local_endpoint() const { return impl_->acceptor.local_endpoint(); }

HttpStatusServer::Stats HttpStatusServer::stats() const {
  Stats s;
  s.accepted = impl_->accepted.load();
  s.refused_global = impl_->refused_global.load();
  s.refused_per_address = impl_->refused_per_address.load();
  s.header_timeouts = impl_->header_timeouts.load();
  std::lock_guard lock(impl_->mutex);
  s.open = impl_->open;
  return s;
}

void HttpStatusServer::close() {
  asio::post(impl_->acceptor.get_executor(), [impl = impl_] {
    boost::system::error_code ignored;
    impl->acceptor.close(ignored);
    impl->retry.cancel();
  });
}

}  // namespace macula::node
