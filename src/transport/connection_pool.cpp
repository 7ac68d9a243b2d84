#include "transport/connection_pool.hpp"

#include "macula/error.hpp"

namespace macula::transport {

ConnectionPool::ConnectionPool(boost::asio::io_context& io, std::shared_ptr<Endpoint> endpoint, PoolOptions options)
    : endpoint_(std::move(endpoint)), options_(options), reaper_(io) {}

std::shared_ptr<ConnectionPool> ConnectionPool::create(boost::asio::io_context& io, std::shared_ptr<Endpoint> endpoint,
                                                       PoolOptions options) {
  std::shared_ptr<ConnectionPool> pool(new ConnectionPool(io, std::move(endpoint), options));
  pool->schedule_reap();
  return pool;
}

ConnectionPool::~ConnectionPool() { close(); }

void ConnectionPool::get(const NodeId& peer, const boost::asio::ip::udp::endpoint& address, Handler handler) {
  std::unique_lock lock(mutex_);
  if (closed_) {
    lock.unlock();
    return handler(errc::endpoint_closed, nullptr);
  }
  auto it = entries_.find(peer);
  if (it != entries_.end() && it->second.connection && !it->second.connection->is_open()) {
    lru_.erase(it->second.lru);  // died since it was pooled: dial again
    entries_.erase(it);
    it = entries_.end();
  }
  if (it != entries_.end()) {
    Entry& e = it->second;
    if (e.connection) {
      ++stats_.hits;
      e.last_used = std::chrono::steady_clock::now();
      lru_.splice(lru_.begin(), lru_, e.lru);
      auto c = e.connection;
      lock.unlock();
      return handler({}, std::move(c));
    }
    if (e.waiters.size() >= options_.max_waiters_per_peer) {
      lock.unlock();
      return handler(errc::too_many_waiters, nullptr);
    }
    ++stats_.collapsed;
    e.waiters.push_back(std::move(handler));
    return;
  }
  ++stats_.misses;
  Entry& e = entries_[peer];
  e.waiters.push_back(std::move(handler));
  lock.unlock();
  std::weak_ptr<ConnectionPool> weak = shared_from_this();
  endpoint_->connect(address, peer, [weak, peer](std::error_code ec, std::shared_ptr<Connection> c) {
    if (auto self = weak.lock()) self->on_connected(peer, ec, std::move(c));
    else if (c) c->close(CloseCode::no_error, "pool gone");
  });
}

void ConnectionPool::on_connected(const NodeId& peer, std::error_code ec, std::shared_ptr<Connection> c) {
  std::vector<Handler> waiters;
  std::shared_ptr<Connection> evicted;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(peer);
    if (it == entries_.end()) return;  // pool closed meanwhile
    waiters = std::move(it->second.waiters);
    if (ec || closed_) {
      ++stats_.failures;
      entries_.erase(it);
    } else {
      if (lru_.size() >= options_.max_size && !lru_.empty()) {
        const NodeId victim = lru_.back();
        lru_.pop_back();
        auto v = entries_.find(victim);
        evicted = std::move(v->second.connection);
        entries_.erase(v);
        ++stats_.evictions;
      }
      Entry& e = entries_[peer];
      e.connection = c;
      e.last_used = std::chrono::steady_clock::now();
      lru_.push_front(peer);
      e.lru = lru_.begin();
    }
  }
  if (evicted) evicted->close(CloseCode::no_error, "pool eviction");
  for (auto& w : waiters) w(ec, ec ? nullptr : c);
}

void ConnectionPool::schedule_reap() {
  reaper_.expires_after(options_.reap_period);
  std::weak_ptr<ConnectionPool> weak = weak_from_this();
  reaper_.async_wait([weak](boost::system::error_code ec) {
    if (ec) return;
    if (auto self = weak.lock()) {
      self->reap();
      self->schedule_reap();
    }
  });
}

void ConnectionPool::reap() {
  std::vector<std::shared_ptr<Connection>> idle;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    const auto cutoff = std::chrono::steady_clock::now() - options_.idle_timeout;
    // The LRU tail holds the longest idle: stop at the first one still fresh.
    while (!lru_.empty()) {
      auto it = entries_.find(lru_.back());
      const bool dead = !it->second.connection->is_open();
      if (!dead && it->second.last_used > cutoff) break;
      if (!dead) {
        idle.push_back(std::move(it->second.connection));
        ++stats_.reaped;
      }
      entries_.erase(it);
      lru_.pop_back();
    }
  }
  for (auto& c : idle) c->close(CloseCode::no_error, "idle");
}

PoolStats ConnectionPool::stats() const {
  std::lock_guard lock(mutex_);
  PoolStats s = stats_;
  s.size = lru_.size();
  return s;
}

void ConnectionPool::close() {
  std::vector<std::shared_ptr<Connection>> all;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
    for (auto& [id, e] : entries_)
      if (e.connection) all.push_back(std::move(e.connection));
    entries_.clear();
    lru_.clear();
  }
  reaper_.cancel();
  for (auto& c : all) c->close(CloseCode::no_error, "pool closed");
}

}  // namespace macula::transport
