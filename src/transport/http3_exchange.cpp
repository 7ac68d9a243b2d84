// HTTP/3 requests and responses on a connection: reading frames (behind the header guard),
// request heads and bodies with their bounds, routing to handlers, responses, client
// requests and their deadlines, and the endpoint's sweep of stalled uploads.
#include "transport/endpoint_impl.hpp"

#include <malloc.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>

#include "macula/error.hpp"

namespace macula::transport {

namespace {

std::string_view rcbuf_view(nghttp3_rcbuf* b) {
  const nghttp3_vec v = nghttp3_rcbuf_get_buf(b);
  return {reinterpret_cast<const char*>(v.base), v.len};
}

constexpr std::size_t kTrimAfterBytes = 8u << 20;

}  // namespace

int Connection::Impl::on_recv_stream_data(std::uint32_t flags, std::int64_t sid, const std::uint8_t* data,
                                          std::size_t len) {
  if (!h3 && !setup_h3()) return NGTCP2_ERR_CALLBACK_FAILURE;
  std::size_t pass = len;
  H3FrameGuard* guard = nullptr;
  if (ngtcp2_is_bidi_stream(sid)) {
    guard = &h3_guards_[sid];
    if (guard->rejected) {  // already answered: drop, but give the credit back
      ngtcp2_conn_extend_max_offset(conn, len);
      return 0;
    }
    // A server answers over-long header sections with 431 anyway (h3_recv_header); the cap
    // stays at or below nghttp3's 64 KiB per-value limit so that no value can reach it.
    const std::uint64_t limit = is_server ? std::min<std::uint64_t>(ep()->options.max_header_bytes, 65536) : 65536;
    pass = h3_guard_scan(*guard, data, len, limit);
  }
  const bool fin = (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0 && !(guard && guard->rejected);
  const nghttp3_ssize consumed = nghttp3_conn_read_stream(h3, sid, data, pass, fin);
  if (consumed < 0) {  // malformed HTTP/3: the connection closes, with an HTTP/3 error code
    h3_close_code_ = nghttp3_err_infer_quic_app_error_code(static_cast<int>(consumed));
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  // Bytes nghttp3 consumed itself (framing, headers) are returned at once; body bytes are
  // returned in h3_recv_data when the application has taken them.
  ngtcp2_conn_extend_max_stream_offset(conn, sid, static_cast<std::uint64_t>(consumed));
  ngtcp2_conn_extend_max_offset(conn, static_cast<std::uint64_t>(consumed));
  if (guard && guard->rejected) {
    ngtcp2_conn_extend_max_offset(conn, len - pass);  // the rest of this chunk is dropped
    reject_header_block(sid);
  }
  return 0;
}

// A HEADERS frame over the limit on `sid`, not given to nghttp3: nghttp3 ignores the rest of
// the stream and sends a QPACK Stream Cancellation; a server answers 431 and stops the
// request (RFC 9114 4.1), a client resets its request. The connection goes on.
void Connection::Impl::reject_header_block(std::int64_t sid) {
  nghttp3_conn_read_stream(h3, sid, nullptr, 0, 0);  // nghttp3 knows the stream (no-op if it does)
  nghttp3_conn_shutdown_stream_read(h3, sid);
  if (!is_server) {
    ngtcp2_conn_shutdown_stream(conn, sid, NGHTTP3_H3_REQUEST_CANCELLED);  // completes as stream_reset
    return;
  }
  h3_begin_headers(sid);  // our Stream, if nghttp3 never announced one
  Stream& st = *streams[sid];
  st.header_overflow = true;
  release_body(st);  // trailers past the limit: the body is dropped with the request
  Response r;
  r.status = 431;
  const std::string msg = "request too large\n";
  r.body.assign(msg.begin(), msg.end());
  submit_response(sid, std::move(r));  // no-op if this stream already has its response
  ngtcp2_conn_shutdown_stream_read(conn, sid, NGHTTP3_H3_NO_ERROR);
}

// ---- request heads and bodies -------------------------------------------------------------

int Connection::Impl::h3_begin_headers(std::int64_t sid) {
  auto& s = streams[sid];
  if (!s) {
    s = std::make_unique<Stream>();
    s->id = sid;
  }
  return 0;
}

int Connection::Impl::h3_recv_header(std::int64_t sid, nghttp3_rcbuf* name, nghttp3_rcbuf* value) {
  auto it = streams.find(sid);
  if (it == streams.end()) return 0;
  Stream& s = *it->second;
  const auto n = rcbuf_view(name);
  const auto v = rcbuf_view(value);
  s.header_bytes += n.size() + v.size() + 32;
  if (s.header_bytes > ep()->options.max_header_bytes) {
    s.header_overflow = true;
    return 0;
  }
  if (n == ":method") s.method = v;
  else if (n == ":path") s.path = v;
  else if (n == ":authority") s.authority = v;
  else if (n == ":status") s.status = std::atoi(std::string(v).c_str());
  else if (!n.empty() && n[0] != ':') s.headers.push_back({std::string(n), std::string(v)});
  return 0;
}

Request Connection::Impl::head_of(const Stream& s) const {
  Request head;
  head.method = s.method;
  head.path = s.path;
  head.authority = s.authority;
  head.headers = s.headers;
  head.peer = peer;
  head.channel_binding = channel_binding;
  return head;
}

int Connection::Impl::h3_end_headers(std::int64_t sid) {
  auto it = streams.find(sid);
  if (it == streams.end()) return 0;
  Stream& s = *it->second;
  if (!is_server) return session_answered(sid, s);
  auto e = ep();
  if (s.header_overflow) return 0;
  const SessionAcceptor* acceptor = e->find_stream_route(s.method, s.path);
  if (!acceptor) {  // an ordinary request: its body is buffered, answered at end_stream
    if (e->request_guard && !refuse_requests) {
      if (const int refused = e->request_guard(head_of(s))) {
        ++e->stats.requests_refused;
        stop_body(sid, s, refused, refused == 403 ? "forbidden\n" : "unauthorized\n");
        return 0;
      }
    }
    s.receiving_body = true;
    s.body_seen = s.body_started = std::chrono::steady_clock::now();
    ++receiving_bodies;
    e->watch_uploads(shared_from_this());
    return 0;
  }
  return accept_session(sid, s, *acceptor);
}

int Connection::Impl::h3_recv_data(std::int64_t sid, const std::uint8_t* data, std::size_t len) {
  auto it = streams.find(sid);
  if (it != streams.end() && it->second->session) {
    auto session = it->second->session;  // the callback may close the session
    if (session->callbacks.on_data) session->callbacks.on_data({data, len});
  } else if (it != streams.end()) {
    Stream& s = *it->second;
    s.body_seen = std::chrono::steady_clock::now();
    if (s.body_stopped) {
      // Answered already: what was in flight is dropped.
    } else if (is_server && (s.header_overflow || s.body.size() + len > ep()->options.max_body_bytes)) {
      // Refused whatever follows: answer now and stop the upload, rather than take (and
      // throw away) up to the rest of a stream nobody bounds.
      const bool headers = s.header_overflow;
      s.body_overflow = !headers;
      stop_body(sid, s, headers ? 431 : 413, "request too large\n");
    } else if (s.body_overflow || s.body.size() + len > ep()->options.max_body_bytes) {
      // A response over the cap: stop keeping bytes (memory stays bounded) but keep returning
      // credit so the exchange ends and the caller gets body_too_large instead of a stall.
      s.body_overflow = true;
      s.body.clear();
      s.body.shrink_to_fit();
    } else if (!grow_body(s, len)) {
      ++ep()->stats.bodies_refused;
      stop_body(sid, s, 503, "request bodies buffered on this node are at their bound; retry later\n");
    } else {
      s.body.insert(s.body.end(), data, data + len);
    }
  }
  // The body has been taken by the application (copied into the request): return credit.
  ngtcp2_conn_extend_max_stream_offset(conn, sid, len);
  ngtcp2_conn_extend_max_offset(conn, len);
  return 0;
}

bool Connection::Impl::grow_body(Stream& s, std::size_t len) {
  const std::size_t need = s.body.size() + len;
  if (need <= s.body.capacity()) return true;
  auto e = ep();
  if (!is_server || !e || !body_ledger) return true;  // a client's responses: max_body_bytes bounds them
  // Grow geometrically (as the vector would), but charge what is actually reserved.
  const std::size_t cap =
      std::max(need, std::min(std::max<std::size_t>(2 * s.body.capacity(), 16 * 1024), e->options.max_body_bytes));
  const std::size_t delta = cap - std::min(cap, s.charged);
  if (!s.conn_ledger) {
    s.conn_ledger = body_ledger;
    s.ep_ledger = peer ? e->node_body_ledger : e->body_ledger;
  }
  if (!s.conn_ledger->charge(delta)) return false;
  if (!s.ep_ledger->charge(delta)) {
    s.conn_ledger->refund(delta);
    return false;
  }
  s.charged += delta;
  e->body_peak = std::max(e->body_peak, e->body_ledger->bytes.load(std::memory_order_relaxed) +
                                            e->node_body_ledger->bytes.load(std::memory_order_relaxed));
  s.body.reserve(cap);
  return true;
}

void Connection::Impl::release_body(Stream& s) {
  s.body_stopped = true;
  s.body.clear();
  s.body.shrink_to_fit();
  s.refund();
  if (s.receiving_body) {
    s.receiving_body = false;
    --receiving_bodies;
  }
}

void Connection::Impl::stop_body(std::int64_t sid, Stream& s, int status, const char* why) {
  release_body(s);
  Response r;
  r.status = status;
  r.body.assign(why, why + std::strlen(why));
  submit_response(sid, std::move(r));
  // The upload ends here (RFC 9114 4.1: a complete response, then STOP_SENDING). Posted: this
  // may run inside nghttp3's read of this very stream.
  asio::post(ep()->strand, [weak = std::weak_ptr<Impl>(shared_from_this()), sid] {
    auto self = weak.lock();
    if (!self || self->closing || !self->h3) return;
    nghttp3_conn_shutdown_stream_read(self->h3, sid);
    ngtcp2_conn_shutdown_stream_read(self->conn, sid, NGHTTP3_H3_NO_ERROR);
    self->write();
    if (auto e = self->ep()) e->flush();
  });
}

void Connection::Impl::sweep_bodies(std::chrono::steady_clock::time_point now) {
  auto e = ep();
  if (!e || closing) return;
  std::vector<std::int64_t> idle;
  for (auto& [sid, st] : streams)
    if (st->receiving_body && !st->body_stopped &&
        (now - st->body_seen > e->options.body_idle_timeout || now - st->body_started > e->options.body_deadline))
      idle.push_back(sid);
  for (auto sid : idle)
    if (auto it = streams.find(sid); it != streams.end()) {
      ++e->stats.bodies_timed_out;
      stop_body(sid, *it->second, 408, "request body stalled or too slow: not complete within the idle timeout or deadline\n");
    }
  if (!idle.empty()) schedule_write();
}

void Endpoint::Impl::watch_uploads(const std::shared_ptr<Connection::Impl>& c) {
  uploading.insert_or_assign(c.get(), c);  // a reused address replaces a dead entry
  if (body_sweep) return;
  body_sweep = std::make_unique<asio::steady_timer>(strand);
  sweep_uploads();
}

void Endpoint::Impl::sweep_uploads() {
  const auto now = std::chrono::steady_clock::now();
  for (auto it = uploading.begin(); it != uploading.end();) {
    auto c = it->second.lock();
    if (!c || c->receiving_bodies == 0) {
      it = uploading.erase(it);
      continue;
    }
    c->sweep_bodies(now);
    ++it;
  }
  const std::size_t held = body_ledger->bytes.load(std::memory_order_relaxed) +
                           node_body_ledger->bytes.load(std::memory_order_relaxed);
  if (uploading.empty() && held == 0) {
    body_sweep.reset();  // no uploads: no timer until the next one starts
    // glibc keeps freed heap memory for reuse (and, once a large block has been freed, serves
    // later ones from the heap too): after a burst of bodies, hand it back, so a flood leaves
    // no resident memory behind.
    if (body_peak >= kTrimAfterBytes) malloc_trim(0);
    body_peak = 0;
    return;
  }
  body_sweep->expires_after(std::chrono::seconds(1));
  body_sweep->async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    if (ec) return;
    if (auto self = weak.lock()) self->sweep_uploads();
  });
}

int Connection::Impl::h3_end_stream(std::int64_t sid) {
  auto it = streams.find(sid);
  if (it == streams.end()) return 0;
  Stream& s = *it->second;
  if (s.session) {
    auto session = s.session;
    if (session->callbacks.on_end) {  // half-close: our direction goes on
      auto on_end = std::move(session->callbacks.on_end);
      session->callbacks.on_end = nullptr;
      on_end();
      return 0;
    }
    // The peer finished its direction: the session is over; finish ours after queued bytes.
    session->fin_requested = true;
    nghttp3_conn_resume_stream(h3, sid);
    schedule_write();
    session->finish({});
    return 0;
  }
  if (!is_server) {
    complete_request(s, {});
    return 0;
  }
  if (s.receiving_body) {
    s.receiving_body = false;
    --receiving_bodies;
  }
  if (s.body_stopped) return 0;  // answered when it was stopped
  Response early;
  if (refuse_requests) early.status = 503;
  else if (s.header_overflow) early.status = 431;
  else if (s.body_overflow) early.status = 413;
  if (early.status != 200) {
    const std::string msg = early.status == 503 ? "max_clients reached\n" : "request too large\n";
    early.body.assign(msg.begin(), msg.end());
    submit_response(sid, std::move(early));
    if (refuse_requests) close_after_response(sid);
    return 0;
  }
  auto e = ep();
  const RequestHandler* handler = e->find_route(s.method, s.path);
  if (!handler) {
    Response r;
    r.status = 404;
    const std::string msg = "no route for " + s.method + " " + s.path + "\n";
    r.body.assign(msg.begin(), msg.end());
    submit_response(sid, std::move(r));
    return 0;
  }
  Request req;
  req.method = s.method;
  req.path = s.path;
  req.authority = s.authority;
  req.headers = std::move(s.headers);
  req.body = std::move(s.body);
  req.peer = peer;
  req.channel_binding = channel_binding;
  std::weak_ptr<Impl> weak = shared_from_this();
  auto strand = e->strand;
  Responder respond = [weak, strand, sid](Response r) {
    asio::dispatch(strand, [weak, sid, r = std::move(r)]() mutable {
      if (auto self = weak.lock()) {
        self->submit_response(sid, std::move(r));
        self->write();  // deferred to the end of the read batch when called from inside one
        if (!self->in_read_)
          if (auto ep = self->ep()) ep->flush();
      }
    });
  };
  (*handler)(std::move(req), std::move(respond));
  return 0;
}

// ---- responses ---------------------------------------------------------------------------

void Connection::Impl::submit_response(std::int64_t sid, Response r) {
  auto it = streams.find(sid);
  if (it == streams.end() || it->second->responded || closing || !h3) return;
  Stream& s = *it->second;
  s.responded = true;
  // Answered: whatever the handler still holds is its own bound's business, and a peer that
  // never reads the answer must not keep the request's bytes charged.
  s.refund();
  Http3Headers fields = Http3Headers::response(r.status);
  fields.add("content-length", std::to_string(r.body.size()));
  fields.add_all(r.headers);
  const auto nva = fields.nv();
  s.send_body = std::move(r.body);
  s.send_offset = 0;
  const nghttp3_data_reader dr = h3_body_reader();
  nghttp3_conn_submit_response(h3, sid, nva.data(), nva.size(), &dr);
}

nghttp3_ssize Connection::Impl::h3_read_data(std::int64_t sid, nghttp3_vec* vec, std::size_t veccnt,
                                             std::uint32_t* pflags) {
  auto it = streams.find(sid);
  if (it == streams.end() || veccnt == 0) {
    *pflags |= NGHTTP3_DATA_FLAG_EOF;
    return 0;
  }
  Stream& s = *it->second;
  if (s.session) return s.session->read(vec, veccnt, pflags);
  const std::size_t left = s.send_body.size() - s.send_offset;
  *pflags |= NGHTTP3_DATA_FLAG_EOF;
  if (left == 0) return 0;
  vec[0].base = s.send_body.data() + s.send_offset;
  vec[0].len = left;
  s.send_offset = s.send_body.size();
  return 1;
}

int Connection::Impl::h3_stream_close(std::int64_t sid, std::uint64_t code) {
  if (sid == close_after_stream_) {
    close_after_stream_ = -1;
    asio::post(ep()->strand, [weak = std::weak_ptr<Impl>(shared_from_this())] {
      if (auto self = weak.lock())
        self->close_with_app_error(self->close_after_code_, self->refuse_requests ? "max_clients reached" : "refused");
    });
  }
  auto it = streams.find(sid);
  if (it == streams.end()) return 0;
  if (it->second->receiving_body) --receiving_bodies;
  if (it->second->on_session) {
    auto h = std::move(it->second->on_session);
    h(errc::connection_closed, nullptr);
  }
  if (it->second->session)
    it->second->session->finish(code == NGHTTP3_H3_NO_ERROR ? std::error_code{} : make_error_code(errc::stream_reset));
  // Still waiting for its response: the stream ended before the response did (h3_end_stream
  // completes it otherwise), so it is incomplete whatever the close code says.
  if (!is_server && it->second->on_response) complete_request(*it->second, errc::stream_reset);
  streams.erase(it);
  return 0;
}

void Connection::Impl::close_after_response(std::int64_t sid) {
  if (close_after_stream_ >= 0) return;
  close_after_stream_ = sid;
  close_after_code_ = static_cast<std::uint64_t>(refuse_requests ? CloseCode::max_clients : CloseCode::realm_refused);
  auto t = std::make_shared<asio::steady_timer>(ep()->strand, std::chrono::seconds(1));
  t->async_wait([t, weak = std::weak_ptr<Impl>(shared_from_this())](boost::system::error_code) {
    if (auto self = weak.lock()) self->close_with_app_error(self->close_after_code_, "refused");
  });
}

// ---- client requests -----------------------------------------------------------------------

void Connection::Impl::send_request(Request request, std::chrono::nanoseconds timeout, ResponseHandler handler,
                                    std::shared_ptr<RequestHandle::State> handle) {
  if (handle->cancelled) return handler(errc::cancelled, Response{});
  if (closing || !h3) return handler(errc::connection_closed, Response{});
  if (!pending.empty() || !start_request(request, timeout, handler, handle)) {
    if (pending.size() >= ep()->options.max_pending_requests) return handler(errc::too_many_pending, Response{});
    pending.push_back(Pending{std::move(request), timeout, std::move(handler), std::move(handle)});
    return;
  }
  write();
  if (!in_read_) ep()->flush();
}

bool Connection::Impl::start_request(Request& req, std::chrono::nanoseconds timeout, ResponseHandler& handler,
                                     const std::shared_ptr<RequestHandle::State>& handle) {
  std::int64_t sid;
  if (ngtcp2_conn_open_bidi_stream(conn, &sid, nullptr) != 0) return false;  // no stream credit yet
  auto s = std::make_unique<Stream>();
  s->id = sid;
  s->on_response = std::move(handler);
  s->handle = handle;
  if (handle) handle->stream_id = sid;
  Http3Headers fields = Http3Headers::request(req.method, std::move(req.authority), req.path);
  if (!req.body.empty() || req.method == "POST" || req.method == "PUT")
    fields.add("content-length", std::to_string(req.body.size()));
  fields.add_all(req.headers);
  const auto nva = fields.nv();
  s->send_body = std::move(req.body);
  s->deadline = std::chrono::steady_clock::now() + timeout;
  add_deadline(s->deadline, sid);
  const nghttp3_data_reader dr = h3_body_reader();
  const bool has_body = !s->send_body.empty();
  streams[sid] = std::move(s);
  if (nghttp3_conn_submit_request(h3, sid, nva.data(), nva.size(), has_body ? &dr : nullptr, nullptr) != 0) {
    auto it = streams.find(sid);
    complete_request(*it->second, errc::transport_error);
    streams.erase(it);
  }
  return true;
}

void Connection::Impl::complete_request(Stream& s, std::error_code ec) {
  if (!s.on_response) return;
  auto handler = std::move(s.on_response);
  s.on_response = nullptr;
  cancel_deadline(s);
  Response r;
  if (!ec) {
    r.status = s.status;
    r.headers = std::move(s.headers);
    r.body = std::move(s.body);
    if (s.body_overflow) ec = errc::body_too_large;
  }
  handler(ec, std::move(r));
}

void Connection::Impl::fail_all_requests(std::error_code ec) {
  for (auto& [sid, s] : streams) {
    complete_request(*s, ec);
    if (s->on_session) {
      auto h = std::move(s->on_session);
      h(ec, nullptr);
    }
    if (s->session) s->session->finish(ec);
  }
  while (!pending.empty()) {
    auto handler = std::move(pending.front().handler);
    pending.pop_front();
    handler(ec, Response{});
  }
}

void Connection::Impl::cancel_request(const std::shared_ptr<RequestHandle::State>& handle) {
  if (handle->cancelled) return;
  handle->cancelled = true;
  for (auto it = pending.begin(); it != pending.end(); ++it) {
    if (it->handle == handle) {
      auto h = std::move(it->handler);
      pending.erase(it);
      return h(errc::cancelled, Response{});
    }
  }
  auto it = streams.find(handle->stream_id);
  if (handle->stream_id < 0 || it == streams.end() || !it->second->on_response) return;  // already done
  complete_request(*it->second, errc::cancelled);
  ngtcp2_conn_shutdown_stream(conn, handle->stream_id, NGHTTP3_H3_REQUEST_CANCELLED);
  schedule_write();
}

void Connection::Impl::add_deadline(std::chrono::steady_clock::time_point when, std::int64_t sid) {
  deadlines_.emplace(when, sid);
  arm_deadline(when);
}

void Connection::Impl::arm_deadline(std::chrono::steady_clock::time_point when) {
  if (when >= deadline_armed_) return;
  deadline_armed_ = when;
  if (!deadline_timer_) deadline_timer_ = std::make_unique<asio::steady_timer>(ep()->strand);
  deadline_timer_->expires_at(when);
  deadline_timer_->async_wait([weak = std::weak_ptr<Impl>(shared_from_this())](boost::system::error_code ec) {
    if (ec) return;
    if (auto self = weak.lock()) self->on_deadlines();
  });
}

void Connection::Impl::cancel_deadline(Stream& s) {
  if (s.deadline == std::chrono::steady_clock::time_point::max()) return;
  auto [first, last] = deadlines_.equal_range(s.deadline);
  for (auto it = first; it != last; ++it) {
    if (it->second == s.id) {
      deadlines_.erase(it);
      break;
    }
  }
  s.deadline = std::chrono::steady_clock::time_point::max();
}

void Connection::Impl::on_deadlines() {
  deadline_armed_ = std::chrono::steady_clock::time_point::max();
  const auto now = std::chrono::steady_clock::now();
  bool wrote = false;
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const std::int64_t sid = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    auto it = streams.find(sid);
    if (it == streams.end()) continue;
    Stream& s = *it->second;
    s.deadline = std::chrono::steady_clock::time_point::max();
    if (s.on_response) {
      complete_request(s, errc::timed_out);
    } else if (s.on_session) {
      auto h = std::move(s.on_session);
      s.on_session = nullptr;
      s.session->closed = true;
      h(errc::timed_out, nullptr);
    } else {
      continue;
    }
    ngtcp2_conn_shutdown_stream(conn, sid, NGHTTP3_H3_REQUEST_CANCELLED);
    wrote = true;
  }
  if (!deadlines_.empty()) arm_deadline(deadlines_.begin()->first);
  if (wrote) schedule_write();
}

}  // namespace macula::transport
