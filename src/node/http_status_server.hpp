// HttpStatusServer: plain HTTP/1.1 GET /metrics, /health, /ready, /live for operators and
// Prometheus scrapers that do not speak HTTP/3 (Boost.Beast on the node's io_context).
//
// Bounded: one request per connection read with an 8 KiB header limit, anything but GET of
// those paths gets 404/405. The port is often reachable by more than the monitoring system,
// so slow or greedy clients must not starve the probes that decide whether the node is
// restarted: connections are limited per client address and in all (over either limit they
// are reset at accept), the request head must arrive within kHeaderDeadline of the accept
// and the answer must be taken within kWriteDeadline. The pages come from the node's
// StatusPages.
#pragma once

#include <chrono>
#include <cstdint>
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
  /// Bounds the descriptors and the ~16 KiB of buffers each connection may pin; far above
  /// what scrapers and health checks need, so only a crowd of addresses reaches it.
  static constexpr std::size_t kMaxConnections = 256;
  /// One address (an IPv6 /64) cannot take more than a few slots: a scraper and a health
  /// checker on one host need one or two, and a single misbehaving client then cannot fill
  /// the global limit and lock the real monitoring out.
  static constexpr std::size_t kMaxConnectionsPerAddress = 8;
  /// From accept to the complete request head, not per read: a slowloris client dripping a
  /// byte at a time never resets it, so a slot is held for at most this long. Any honest
  /// client sends its few hundred bytes of head in one segment.
  static constexpr std::chrono::milliseconds kHeaderDeadline{2000};
  /// For the answer to be taken: /metrics can be large, and a client that does not read
  /// must not keep its slot.
  static constexpr std::chrono::milliseconds kWriteDeadline{5000};

  /// Counters since create(); the Node exports them as macula_http_status_refused_total{reason}.
  struct Stats {
    std::uint64_t accepted = 0;             ///< connections served (refused ones excluded)
    std::uint64_t refused_global = 0;       ///< reset at accept: kMaxConnections open
    std::uint64_t refused_per_address = 0;  ///< reset at accept: kMaxConnectionsPerAddress open
    std::uint64_t header_timeouts = 0;      ///< closed for passing kHeaderDeadline
    std::size_t open = 0;                   ///< connections open now
  };

  /// Listens on `address` ("host:port"). Errors: address_invalid, bind errors.
  static std::shared_ptr<HttpStatusServer> create(boost::asio::io_context& io, const std::string& address,
                                                  StatusPages pages, std::error_code& ec);
  boost::asio::ip::tcp::endpoint local_endpoint() const;
  Stats stats() const;
  void close();

  struct Impl;
  explicit HttpStatusServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace macula::node
