// DhtRequests: how the DHT reaches other nodes from inside a node (dht::DhtTransport), and how
// the node answers theirs.
//
// DHT requests are HTTP/3 requests (POST /macula/v1/dht, body = one frame, response body = the
// reply frame) on pooled connections: discovery traffic needs no session link, and the pool
// bounds and reuses the connections. Both ends present node certificates, so the responder
// knows who asks and a STORE can only store records for their owner. Both ends also pass the
// realm check of transport/realm_guard.hpp: a request from another realm gets 403, one without
// the realm secret's proof 401, and an answer without the responder's proof is discarded — so
// only the realm's own members read or write its records, in either direction.
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
#include "transport/realm_guard.hpp"
#include "macula/core/metrics.hpp"

#include <boost/asio/strand.hpp>

namespace macula::node {

class DhtRequests final : public dht::DhtTransport {
 public:
  static constexpr const char* kPath = "/macula/v1/dht";
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;

  /// `refusals` counts requests and answers refused by the realm check.
  DhtRequests(boost::asio::io_context& io, std::shared_ptr<transport::Endpoint> endpoint, Strand strand,
              std::weak_ptr<void> owner, const std::atomic<bool>& stopping, std::function<void()> after_work,
              transport::RealmPolicy policy, core::Counter& refusals);

  void request(const dht::Contact& to, wire::Frame request, std::function<void(std::optional<wire::Frame>)> done) override;
  void after(std::chrono::nanoseconds delay, std::function<void()> f) override;

  /// Answers POST /macula/v1/dht with `discovery` (realm members only).
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
  std::shared_ptr<const transport::RealmPolicy> policy_;  // shared with the route handler
  core::Counter& refusals_;
};

}  // namespace macula::node
