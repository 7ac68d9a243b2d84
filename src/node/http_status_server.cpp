#include "node/http_status_server.hpp"

#include <atomic>

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "macula/error.hpp"
#include "node/node_core.hpp"

namespace macula::node {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct HttpStatusServer::Impl : std::enable_shared_from_this<HttpStatusServer::Impl> {
  Impl(asio::io_context& io, StatusPages p) : acceptor(io), pages(std::move(p)) {}

  void accept() {
    acceptor.async_accept([self = shared_from_this()](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;  // closed
      if (self->connections.load() >= kMaxConnections) {
        boost::system::error_code ignored;
        s.close(ignored);
      } else {
        self->serve(std::move(s));
      }
      self->accept();
    });
  }

  struct Conn {
    beast::tcp_stream stream;
    beast::flat_buffer buffer{8 * 1024};
    http::request_parser<http::empty_body> parser;
    http::response<http::string_body> response;
    explicit Conn(tcp::socket s) : stream(std::move(s)) { parser.header_limit(8 * 1024); }
  };

  void serve(tcp::socket s) {
    ++connections;
    auto c = std::make_shared<Conn>(std::move(s));
    c->stream.expires_after(std::chrono::seconds(5));
    http::async_read(c->stream, c->buffer, c->parser, [self = shared_from_this(), c](boost::system::error_code ec, std::size_t) {
      if (ec) {
        --self->connections;
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
        StatusPage page = self->pages.answer(std::string_view(target.data(), target.size()));
        res.result(static_cast<http::status>(page.status));
        res.set(http::field::content_type, page.content_type);
        res.body() = std::move(page.body);
      }
      res.prepare_payload();
      http::async_write(c->stream, res, [self, c](boost::system::error_code, std::size_t) {
        boost::system::error_code ignored;
        c->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
        --self->connections;
      });
    });
  }

  tcp::acceptor acceptor;
  StatusPages pages;
  std::atomic<std::size_t> connections{0};
};

std::shared_ptr<HttpStatusServer> HttpStatusServer::create(asio::io_context& io, const std::string& address,
                                                           StatusPages pages, std::error_code& ec) {
  asio::ip::udp::endpoint parsed;
  if ((ec = parse_address(address, parsed))) return nullptr;
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

void HttpStatusServer::close() {
  asio::post(impl_->acceptor.get_executor(), [impl = impl_] {
    boost::system::error_code ignored;
    impl->acceptor.close(ignored);
  });
}

}  // namespace macula::node
