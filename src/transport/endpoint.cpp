// The public face of the transport (endpoint.hpp): Endpoint, Connection, Session and
// RequestHandle. Calls from any thread post to the endpoint's strand, where the
// implementation classes (endpoint_impl.hpp) live; design notes: docs/ARCHITECTURE.md
// "Transport", pitfalls: quic-stack-notes.md.
#include "transport/endpoint_impl.hpp"

#include <future>

#include <boost/asio/dispatch.hpp>

#include "macula/error.hpp"

namespace macula::transport {

std::shared_ptr<Endpoint> Endpoint::create(asio::io_context& io, EndpointOptions options, const udp::endpoint& local,
                                           std::error_code& ec) {
  auto impl = std::make_shared<Impl>(io, std::move(options));
  ec = impl->open(local);
  if (ec) return nullptr;
  asio::dispatch(impl->strand, [impl] { impl->start_receive(); });
  return std::shared_ptr<Endpoint>(new Endpoint(impl));
}

Endpoint::~Endpoint() { close(); }

udp::endpoint Endpoint::local_endpoint() const {
  boost::system::error_code ec;
  return impl_->socket.local_endpoint(ec);
}

const NodeId& Endpoint::node_id() const noexcept { return impl_->options.identity.node_id(); }
asio::strand<asio::io_context::executor_type> Endpoint::strand() const { return impl_->strand; }

void Endpoint::route(std::string method, std::string path_prefix, RequestHandler handler) {
  asio::dispatch(impl_->strand, [impl = impl_, m = std::move(method), p = std::move(path_prefix),
                                 h = std::move(handler)]() mutable { impl->routes.add(std::move(m), std::move(p), std::move(h)); });
}

void Endpoint::connect(const udp::endpoint& remote, std::optional<NodeId> expected, ConnectHandler handler) {
  asio::dispatch(impl_->strand, [impl = impl_, remote, expected, handler = std::move(handler)]() mutable {
    if (impl->closed || impl->draining) return handler(errc::endpoint_closed, nullptr);
    if (remote.protocol() != impl->socket.local_endpoint().protocol()) return handler(errc::address_invalid, nullptr);
    auto c = std::make_shared<Connection::Impl>(impl, false, remote);
    impl->add_connection(c);
    impl->by_remote.emplace(Impl::remote_key(remote), c);
    if (!c->init_client(expected)) {
      impl->remove(c);
      return handler(errc::transport_error, nullptr);
    }
    c->on_connected = std::move(handler);
    c->connect_timer.expires_after(impl->options.connect_timeout);
    std::weak_ptr<Connection::Impl> weak = c;
    c->connect_timer.async_wait([weak](boost::system::error_code ec) {
      if (ec) return;
      if (auto self = weak.lock(); self && self->on_connected) self->fail(errc::handshake_timeout);
    });
    c->write();
    impl->flush();
  });
}

void Endpoint::close() {
  auto impl = impl_;
  // Closed already (e.g. close() then the destructor after the io_context stopped): nothing
  // to wait for.
  if (impl->close_done.load(std::memory_order_acquire)) return;
  if (impl->strand.running_in_this_thread()) return impl->do_close();
  std::promise<void> done;
  auto fut = done.get_future();
  asio::dispatch(impl->strand, [impl, &done] {
    impl->do_close();
    done.set_value();
  });
  // If the io_context is not running (already stopped), do it here: nothing else can touch
  // the endpoint then.
  if (fut.wait_for(std::chrono::seconds(2)) != std::future_status::ready) impl->do_close();
}

void Endpoint::shutdown(std::chrono::nanoseconds deadline, std::function<void(std::size_t)> done) {
  asio::dispatch(impl_->strand, [impl = impl_, deadline, done = std::move(done)]() mutable {
    if (impl->closed) return done(0);
    impl->draining = true;
    const auto until = std::chrono::steady_clock::now() + deadline;
    // Requests in flight: answers we owe (server) and answers we wait for (client).
    auto in_flight = [impl] {
      std::size_t n = 0;
      for (const auto& c : impl->connections)
        for (const auto& [sid, st] : c->streams)
          if (!st->session && (st->on_response || (c->is_server && !st->responded))) ++n;
      return n;
    };
    auto timer = std::make_shared<asio::steady_timer>(impl->strand);
    auto check = std::make_shared<std::function<void()>>();
    *check = [impl, until, in_flight, timer, check, done = std::move(done)]() mutable {
      const std::size_t n = in_flight();
      if (n == 0 || std::chrono::steady_clock::now() >= until) {
        impl->do_close();
        auto d = std::move(done);
        *check = nullptr;  // break the self-reference
        return d(n);
      }
      timer->expires_after(std::chrono::milliseconds(5));
      timer->async_wait([check](boost::system::error_code ec) {
        if (!ec && *check) (*check)();
      });
    };
    (*check)();
  });
}

void Endpoint::abort() {
  auto impl = impl_;
  auto run = [impl] {
    if (impl->closed) return;
    impl->closed = true;
    auto list = impl->connections;
    for (const auto& c : list) {
      c->on_connected = nullptr;
      c->closing = true;
      c->open = false;
      impl->remove(c);
    }
    impl->send_count = 0;
    boost::system::error_code ignored;
    impl->socket.close(ignored);
  };
  if (impl->strand.running_in_this_thread()) return run();
  std::promise<void> done;
  asio::dispatch(impl->strand, [&] {
    run();
    done.set_value();
  });
  done.get_future().wait();
}

EndpointStats Endpoint::stats() const {
  const auto& c = impl_->stats;
  auto get = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  EndpointStats s;
  s.connections = impl_->connection_count.load(std::memory_order_relaxed);
  s.clients = impl_->clients.load(std::memory_order_relaxed);
  s.datagrams_received = get(c.datagrams_received);
  s.datagrams_sent = get(c.datagrams_sent);
  s.datagrams_dropped = get(c.datagrams_dropped);
  s.send_would_block = get(c.send_would_block);
  s.handshakes_completed = get(c.handshakes_completed);
  s.clients_refused = get(c.clients_refused);
  s.retries_sent = get(c.retries_sent);
  s.tokens_accepted = get(c.tokens_accepted);
  s.stateless_resets_sent = get(c.stateless_resets_sent);
  s.stateless_resets_received = get(c.stateless_resets_received);
  s.version_negotiations_sent = get(c.version_negotiations_sent);
  s.sessions = c.sessions.load(std::memory_order_relaxed);
  s.session_bytes_buffered = c.session_bytes_buffered.load(std::memory_order_relaxed);
  s.session_sends_refused = get(c.session_sends_refused);
  if (impl_->body_ledger)
    s.body_bytes_buffered = impl_->body_ledger->bytes.load(std::memory_order_relaxed) +
                            impl_->node_body_ledger->bytes.load(std::memory_order_relaxed);
  s.requests_refused = get(c.requests_refused);
  s.bodies_refused = get(c.bodies_refused);
  s.bodies_timed_out = get(c.bodies_timed_out);
  return s;
}

RequestHandle Connection::request(Request request, std::chrono::nanoseconds timeout, ResponseHandler handler) {
  auto state = std::make_shared<RequestHandle::State>();
  state->conn = impl_;
  auto e = impl_->ep();
  if (!e) {
    handler(errc::endpoint_closed, Response{});
    return RequestHandle(state);
  }
  asio::dispatch(e->strand, [impl = impl_, r = std::move(request), timeout, h = std::move(handler), state]() mutable {
    impl->send_request(std::move(r), timeout, std::move(h), std::move(state));
  });
  return RequestHandle(state);
}

void RequestHandle::cancel() const {
  if (!state_) return;
  auto c = state_->conn.lock();
  if (!c) return;
  auto e = c->ep();
  if (!e) return;
  asio::dispatch(e->strand, [c, s = state_] { c->cancel_request(s); });
}

void Connection::open_session(Request head, SessionCallbacks callbacks, std::chrono::nanoseconds timeout,
                              SessionHandler handler) {
  auto e = impl_->ep();
  if (!e) return handler(errc::endpoint_closed, nullptr);
  asio::dispatch(e->strand, [impl = impl_, h = std::move(head), cb = std::move(callbacks), timeout,
                             done = std::move(handler)]() mutable {
    impl->start_session(std::move(h), std::move(cb), timeout, std::move(done));
  });
}

void Endpoint::stream_route(std::string method, std::string path_prefix, SessionAcceptor acceptor) {
  asio::dispatch(impl_->strand, [impl = impl_, m = std::move(method), p = std::move(path_prefix),
                                 a = std::move(acceptor)]() mutable {
    impl->stream_routes.add(std::move(m), std::move(p), std::move(a));
  });
}

void Endpoint::request_guard(RequestGuard guard) {
  asio::dispatch(impl_->strand, [impl = impl_, g = std::move(guard)]() mutable { impl->request_guard = std::move(g); });
}

void Endpoint::session_route(std::string path, SessionAcceptor acceptor) {
  asio::dispatch(impl_->strand, [impl = impl_, p = std::move(path), a = std::move(acceptor)]() mutable {
    impl->session_routes[std::move(p)] = std::move(a);
  });
}

std::error_code Session::send(std::span<const std::uint8_t> bytes) { return impl_->send(bytes); }
std::size_t Session::buffered() const { return impl_->buffered; }
std::size_t Session::high_water() const { return impl_->high_water; }
std::uint64_t Session::refused_sends() const { return impl_->refused; }
void Session::on_writable(std::function<void()> callback) { on_writable(std::move(callback), impl_->bound / 2); }
void Session::on_writable(std::function<void()> callback, std::size_t below) {
  if (impl_->buffered <= below) return callback();
  impl_->writable = std::move(callback);
  impl_->writable_below = below;
}
void Session::close() {
  if (impl_->fin_requested) return;
  impl_->fin_requested = true;
  if (auto c = impl_->conn.lock(); c && c->h3) {
    nghttp3_conn_resume_stream(c->h3, impl_->stream_id);
    c->schedule_write();
  }
}
void Session::reset() {
  if (impl_->closed) return;
  if (auto c = impl_->conn.lock(); c && c->conn && impl_->stream_id >= 0) {
    ngtcp2_conn_shutdown_stream(c->conn, impl_->stream_id, NGHTTP3_H3_REQUEST_CANCELLED);
    c->schedule_write();
  }
}
void Session::close_connection(CloseCode code, const std::string& reason) {
  if (auto c = impl_->conn.lock()) c->close_with_app_error(static_cast<std::uint64_t>(code), reason);
}
std::optional<NodeId> Session::peer_id() const { return impl_->peer; }
const std::vector<Header>& Session::response_headers() const { return impl_->response_headers; }
const std::vector<std::uint8_t>& Connection::channel_binding() const { return impl_->channel_binding; }

std::optional<NodeId> Connection::peer_id() const { return impl_->peer; }
bool Connection::is_open() const noexcept { return impl_->open.load(std::memory_order_relaxed); }
udp::endpoint Connection::remote_endpoint() const { return impl_->remote; }

void Connection::close(CloseCode code, std::string reason) {
  auto e = impl_->ep();
  if (!e) return;
  asio::dispatch(e->strand, [impl = impl_, code, r = std::move(reason)] {
    impl->close_with_app_error(static_cast<std::uint64_t>(code), r);
  });
}

}  // namespace macula::transport
