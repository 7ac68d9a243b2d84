// HttpStatusServer: plain HTTP/1.1 GET /metrics, /health, /ready, /live for operators and
// Prometheus scrapers that do not speak HTTP/3 (Boost.Beast on the node's io_context).
//
// Bounded: at most kMaxConnections connections at once (more are closed at accept), one
// request per connection read with a 8 KiB header limit and a 5 s deadline; anything but GET
// of those paths gets 404/405. The pages come from the node's StatusPages.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <system_error>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "node/status_pages.hpp"

namespace macula::node {

class HttpStatusServer : public std::enable_shared_from_this<HttpStatusServer> {
 public:
  static constexpr std::size_t kMaxConnections = 64;
  /// Listens on `address` ("host:port"). Errors: address_invalid, bind errors.
  static std::shared_ptr<HttpStatusServer> create(boost::asio::io_context& io, const std::string& address,
                                                  StatusPages pages, std::error_code& ec);
  boost::asio::ip::tcp::endpoint local_endpoint() const;
  void close();

  struct Impl;
  explicit HttpStatusServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace macula::node
