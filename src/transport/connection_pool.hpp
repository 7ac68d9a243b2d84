// ConnectionPool: one connection per peer node, reused, bounded, reaped when idle.
//
// Replaces the old system's pool that never evicted (seed finding 2: ~50 MB per 1,000 peers,
// OOM in 30-60 minutes). Keyed by node id (the id the peer must prove in the handshake);
// concurrent get()s for a peer that is being dialed wait for that one dial; at most
// max_size connections, the least recently used one closed to make room; connections idle
// (not handed out) longer than idle_timeout are closed by a reaper every reap_period.
//
// Thread-safety: get(), stats() and close() may be called from any thread. A hit completes
// inline on the calling thread; a miss completes on the endpoint's strand.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "transport/endpoint.hpp"

#include <boost/asio/steady_timer.hpp>

namespace macula::transport {

struct PoolOptions {
  std::size_t max_size = 1000;
  std::chrono::nanoseconds idle_timeout = std::chrono::minutes(5);
  std::chrono::nanoseconds reap_period = std::chrono::seconds(60);
  std::size_t max_waiters_per_peer = 1024;
};

struct PoolStats {
  std::size_t size = 0;  ///< live pooled connections
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;     ///< dials started
  std::uint64_t collapsed = 0;  ///< get()s that joined a dial already in flight
  std::uint64_t evictions = 0;  ///< closed to stay within max_size
  std::uint64_t reaped = 0;     ///< closed by the idle reaper
  std::uint64_t failures = 0;   ///< dials that failed
};

class ConnectionPool : public std::enable_shared_from_this<ConnectionPool> {
 public:
  using Handler = std::function<void(std::error_code, std::shared_ptr<Connection>)>;

  static std::shared_ptr<ConnectionPool> create(boost::asio::io_context& io, std::shared_ptr<Endpoint> endpoint,
                                                PoolOptions options);
  ~ConnectionPool();

  /// The pooled connection to `peer`, dialing `address` when there is none. Errors: those of
  /// Endpoint::connect, and too_many_waiters when max_waiters_per_peer get()s already wait.
  void get(const NodeId& peer, const boost::asio::ip::udp::endpoint& address, Handler handler);

  PoolStats stats() const;
  /// Closes every pooled connection and stops the reaper.
  void close();

 private:
  struct Entry {
    std::shared_ptr<Connection> connection;  // null while dialing
    std::vector<Handler> waiters;
    std::chrono::steady_clock::time_point last_used;
    std::list<NodeId>::iterator lru;  // valid when connection is set
  };

  ConnectionPool(boost::asio::io_context& io, std::shared_ptr<Endpoint> endpoint, PoolOptions options);
  void on_connected(const NodeId& peer, std::error_code ec, std::shared_ptr<Connection> c);
  void schedule_reap();
  void reap();

  std::shared_ptr<Endpoint> endpoint_;
  PoolOptions options_;
  boost::asio::steady_timer reaper_;
  mutable std::mutex mutex_;
  std::unordered_map<NodeId, Entry> entries_;
  std::list<NodeId> lru_;  // front = most recently used
  PoolStats stats_;
  bool closed_ = false;
};

}  // namespace macula::transport
