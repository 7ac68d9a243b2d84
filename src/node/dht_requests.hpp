// DhtRequests: how the DHT reaches other nodes from inside a node (dht::DhtTransport), and how
// the node answers theirs.
//
// DHT requests are HTTP/3 requests (POST /macula/v1/dht, body = one frame, response body = the
// reply frame) on pooled connections: discovery traffic needs no session link, and the pool
// bounds and reuses the connections. Both ends present node certificates, so the responder
// knows who asks and a STORE can only store records for their owner.
//
// Threading: the strand. Answers and timers come back to it, and `after_work` runs after each
// (the node writes what they queued on its links).
#pragma once

#include <atomic>
#include <functional>
#include <memory>

#include "dht/dht_discovery.hpp"
#include "node/engine_types.hpp"
#include "transport/connection_pool.hpp"
#include "transport/endpoint.hpp"

#include <boost/asio/strand.hpp>

namespace macula::node {

class DhtRequests final : public dht::DhtTransport {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;

  DhtRequests(boost::asio::io_context& io, std::shared_ptr<transport::Endpoint> endpoint, Strand strand,
              std::weak_ptr<void> owner, const std::atomic<bool>& stopping, std::function<void()> after_work);

  void request(const dht::Contact& to, wire::Frame request, std::function<void(std::optional<wire::Frame>)> done) override;
  void after(std::chrono::nanoseconds delay, std::function<void()> f) override;

  /// Answers POST /macula/v1/dht with `discovery` (node-to-node only).
  void serve(DiscoveryRef discovery);
  const std::shared_ptr<transport::ConnectionPool>& pool() const noexcept { return pool_; }
  void close();

 private:
  std::shared_ptr<transport::Endpoint> endpoint_;
  Strand strand_;
  std::weak_ptr<void> owner_;
  const std::atomic<bool>& stopping_;
  std::function<void()> after_work_;
  std::shared_ptr<transport::ConnectionPool> pool_;
};

}  // namespace macula::node
