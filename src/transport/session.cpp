// Sessions: long-lived HTTP/3 requests whose request and response bodies are two byte
// streams. Session::Impl queues the bytes in chunks that stay put until acknowledged (nghttp3
// and ngtcp2 hold pointers into them); Connection::Impl opens, accepts and answers them.
#include "transport/endpoint_impl.hpp"

#include <algorithm>
#include <cstring>

#include "macula/error.hpp"

namespace macula::transport {

std::error_code Session::Impl::send(std::span<const std::uint8_t> bytes) {
  auto c = conn.lock();
  if (closed || fin_requested || !c || c->closing) return errc::connection_closed;
  if (buffered + bytes.size() > bound) {
    ++refused;
    if (total_refused) total_refused->fetch_add(1, std::memory_order_relaxed);
    return errc::queue_full;
  }
  queue(bytes);
  nghttp3_conn_resume_stream(c->h3, stream_id);
  c->schedule_write();
  return {};
}

void Session::Impl::queue(std::span<const std::uint8_t> bytes) {
  if (total_buffered) total_buffered->fetch_add(bytes.size(), std::memory_order_relaxed);
  while (!bytes.empty()) {
    if (chunks.empty() || chunks.back().size == kChunk) chunks.emplace_back();
    Chunk& tail = chunks.back();
    const std::size_t n = std::min(bytes.size(), kChunk - tail.size);
    std::memcpy(tail.data.get() + tail.size, bytes.data(), n);
    tail.size += n;
    buffered += n;
    bytes = bytes.subspan(n);
  }
  high_water = std::max(high_water, buffered);
}

nghttp3_ssize Session::Impl::read(nghttp3_vec* vec, std::size_t veccnt, std::uint32_t* pflags) {
  std::size_t n = 0;
  for (auto& chunk : chunks) {
    if (n == veccnt) break;
    if (chunk.handed == chunk.size) continue;
    vec[n].base = chunk.data.get() + chunk.handed;
    vec[n].len = chunk.size - chunk.handed;
    chunk.handed = chunk.size;
    ++n;
  }
  if (n > 0) return static_cast<nghttp3_ssize>(n);
  if (fin_requested) {
    *pflags |= NGHTTP3_DATA_FLAG_EOF;
    return 0;
  }
  return NGHTTP3_ERR_WOULDBLOCK;  // resumed by the next send()
}

void Session::Impl::on_acked(std::uint64_t len) {
  while (len > 0 && !chunks.empty()) {
    Chunk& front = chunks.front();
    const std::size_t take = std::min<std::uint64_t>(len, front.size - acked_front);
    acked_front += take;
    buffered -= take;
    if (total_buffered && total_sessions) total_buffered->fetch_sub(take, std::memory_order_relaxed);
    len -= take;
    // A fully acknowledged chunk goes, unless it is the tail that may still take bytes.
    if (acked_front == front.size && front.handed == front.size && (chunks.size() > 1 || front.size == kChunk)) {
      chunks.pop_front();
      acked_front = 0;
    } else if (take == 0) {
      break;
    }
  }
  if (writable && buffered <= writable_below) {
    auto cb = std::move(writable);
    writable = nullptr;
    cb();
  }
}

int Connection::Impl::h3_acked(std::int64_t sid, std::uint64_t len) {
  auto it = streams.find(sid);
  if (it != streams.end() && it->second->session) it->second->session->on_acked(len);
  return 0;
}

void Connection::Impl::start_session(Request head, SessionCallbacks callbacks, std::chrono::nanoseconds timeout,
                                     Connection::SessionHandler handler) {
  auto e = ep();
  // Without its endpoint a connection is closing already; checked here too so that no path
  // below dereferences a gone endpoint.
  if (!e || closing || !h3) return handler(errc::connection_closed, nullptr);
  std::int64_t sid;
  if (ngtcp2_conn_open_bidi_stream(conn, &sid, nullptr) != 0) return handler(errc::too_many_pending, nullptr);
  auto s = std::make_unique<Stream>();
  s->id = sid;
  s->session = std::make_shared<Session::Impl>();
  s->session->conn = shared_from_this();
  s->session->stream_id = sid;
  s->session->peer = peer;
  s->session->bound = e->options.session_send_buffer;
  s->session->callbacks = std::move(callbacks);
  s->session->attach(e->stats.session_bytes_buffered, e->stats.sessions, e->stats.session_sends_refused);
  s->on_session = std::move(handler);
  Http3Headers fields =
      Http3Headers::request(head.method.empty() ? std::string("POST") : head.method, std::move(head.authority), head.path);
  fields.add_all(head.headers);
  const auto nva = fields.nv();
  s->deadline = std::chrono::steady_clock::now() + timeout;
  add_deadline(s->deadline, sid);
  const nghttp3_data_reader dr = h3_body_reader();
  streams[sid] = std::move(s);
  if (nghttp3_conn_submit_request(h3, sid, nva.data(), nva.size(), &dr, nullptr) != 0) {
    auto it = streams.find(sid);
    auto h = std::move(it->second->on_session);
    streams.erase(it);
    return h(errc::transport_error, nullptr);
  }
  if (!head.body.empty()) (void)streams[sid]->session->send(head.body);
  schedule_write();
}

int Connection::Impl::accept_session(std::int64_t sid, Stream& s, const SessionAcceptor& acceptor) {
  auto e = ep();
  auto session = std::make_shared<Session::Impl>();
  session->conn = shared_from_this();
  session->stream_id = sid;
  session->peer = peer;
  session->bound = e->options.session_send_buffer;
  const Request head = head_of(s);
  SessionCallbacks callbacks;
  const int status = refuse_requests ? 503 : acceptor(head, std::make_shared<Session>(session), callbacks);
  if (status != 200) {
    Response r;
    r.status = status;
    r.headers = std::move(callbacks.response_headers);
    r.body.assign(callbacks.refusal_body.begin(), callbacks.refusal_body.end());
    submit_response(sid, std::move(r));
    ngtcp2_conn_shutdown_stream_read(conn, sid, NGHTTP3_H3_REQUEST_REJECTED);
    if (refuse_requests || status == 403) close_after_response(sid);
    return 0;
  }
  s.responded = true;
  Http3Headers fields = Http3Headers::response(200);
  fields.add_all(callbacks.response_headers);
  callbacks.response_headers.clear();
  session->callbacks = std::move(callbacks);
  session->attach(e->stats.session_bytes_buffered, e->stats.sessions, e->stats.session_sends_refused);
  s.session = session;
  const auto nva = fields.nv();
  const nghttp3_data_reader dr = h3_body_reader();
  nghttp3_conn_submit_response(h3, sid, nva.data(), nva.size(), &dr);
  return 0;
}

int Connection::Impl::session_answered(std::int64_t sid, Stream& s) {
  if (!s.on_session) return 0;
  auto handler = std::move(s.on_session);
  s.on_session = nullptr;
  cancel_deadline(s);
  if (s.status < 200 || s.status > 299) {
    if (s.session->callbacks.on_refused) s.session->callbacks.on_refused(s.status, s.headers);
    s.session->callbacks.on_data = nullptr;  // a refusal's body is not the session's data
    s.session->closed = true;
    ngtcp2_conn_shutdown_stream(conn, sid, NGHTTP3_H3_REQUEST_CANCELLED);
    schedule_write();
    handler(errc::connection_refused, nullptr);
    return 0;
  }
  s.session->response_headers = std::move(s.headers);
  handler({}, std::make_shared<Session>(s.session));
  return 0;
}

}  // namespace macula::transport
