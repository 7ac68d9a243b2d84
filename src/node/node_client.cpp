#include "macula/node_client.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <future>
#include <mutex>
#include <thread>

#include "macula/client_access.hpp"
#include "macula/error.hpp"
#include "node/address.hpp"
#include "transport/endpoint.hpp"
#include "transport/identity.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

namespace macula {

namespace asio = boost::asio;

namespace {

// A name as one URL path segment: '#' would start a fragment and '/' or '?' would change
// the route, so they (and anything else outside the unreserved set and '*') are escaped.
std::string path_segment(std::string_view name) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(name.size());
  for (const char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '.' || c == '-' || c == '_' || c == '~' || c == '*') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    }
  }
  return out;
}

// The JSON string that starts at `at` (just past its opening quote), unescaped; nullopt
// when it is not terminated or an escape is malformed. \u escapes above U+007F become UTF-8.
std::optional<std::string> json_string(std::string_view s, std::size_t at) {
  std::string out;
  for (std::size_t i = at; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '"') return out;
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++i >= s.size()) return std::nullopt;
    switch (s[i]) {
      case '"': case '\\': case '/': out += s[i]; break;
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'u': {
        if (i + 4 >= s.size()) return std::nullopt;
        unsigned cp = 0;
        for (std::size_t k = 1; k <= 4; ++k) {
          const char h = s[i + k];
          const int v = std::isdigit(static_cast<unsigned char>(h)) ? h - '0'
                        : (h >= 'a' && h <= 'f')                    ? h - 'a' + 10
                        : (h >= 'A' && h <= 'F')                    ? h - 'A' + 10
                                                                    : -1;
          if (v < 0) return std::nullopt;
          cp = cp * 16 + static_cast<unsigned>(v);
        }
        i += 4;
        if (cp < 0x80) {
          out += static_cast<char>(cp);
        } else if (cp < 0x800) {
          out += static_cast<char>(0xc0 | (cp >> 6));
          out += static_cast<char>(0x80 | (cp & 0x3f));
        } else {
          out += static_cast<char>(0xe0 | (cp >> 12));
          out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
          out += static_cast<char>(0x80 | (cp & 0x3f));
        }
        break;
      }
      default: return std::nullopt;
    }
  }
  return std::nullopt;
}

std::optional<std::string> json_field(std::string_view line, std::string_view key) {
  const std::string tag = "\"" + std::string(key) + "\":\"";
  const auto at = line.find(tag);
  if (at == std::string_view::npos) return std::nullopt;
  return json_string(line, at + tag.size());
}

std::optional<Bytes> base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  if (in.size() % 4 == 1) return std::nullopt;
  Bytes out;
  out.reserve(in.size() * 3 / 4);
  std::uint32_t bits = 0;
  int n = 0;
  for (const char c : in) {
    const int v = value(c);
    if (v < 0) return std::nullopt;
    bits = (bits << 6) | static_cast<std::uint32_t>(v);
    if ((n += 6) >= 8) {
      n -= 8;
      out.push_back(static_cast<std::uint8_t>((bits >> n) & 0xff));
    }
  }
  return out;
}

// One line of the node's stream: {"topic":"...","payload":"<base64>","qos":0|1}.
std::optional<NodeClient::StreamedMessage> parse_line(std::string_view line) {
  auto topic = json_field(line, "topic");
  auto payload = topic ? json_field(line, "payload") : std::nullopt;
  auto bytes = payload ? base64_decode(*payload) : std::nullopt;
  if (!bytes) return std::nullopt;
  NodeClient::StreamedMessage m;
  m.topic = std::move(*topic);
  m.payload = std::move(*bytes);
  m.qos = line.find("\"qos\":1") != std::string_view::npos ? Qos::at_least_once : Qos::at_most_once;
  return m;
}

}  // namespace

namespace {
// Set on every NodeClient's own thread: blocking calls made there would wait for themselves.
thread_local bool on_a_client_thread = false;
}  // namespace

std::error_code client_status_error(int status, std::string_view route) {
  if (status >= 200 && status < 300) return {};
  switch (status) {
    case 400: return errc::name_invalid_character;
    case 401: case 403: return errc::unauthorized;
    case 404: return route.starts_with("pub") ? errc::no_subscribers : route.starts_with("rpc") ? errc::no_provider
                                                                                             : errc::not_found;
    case 413: return errc::payload_too_large;
    case 500: return errc::handler_error;
    case 503: return errc::overloaded;
    case 504: return errc::timed_out;
    default: return errc::transport_error;
  }
}

struct NodeClient::Impl {
  explicit Impl(NodeClientOptions o) : options(std::move(o)) {}

  bool on_own_thread() const { return std::this_thread::get_id() == thread_id.load(); }

  transport::Request make_request(std::string_view method, std::string_view path, Bytes body) const {
    transport::Request r;
    r.method = std::string(method);
    r.path = std::string(path);
    r.body = std::move(body);
    if (options.token) r.headers.push_back({std::string(kClientTokenHeader), "Bearer " + *options.token});
    return r;
  }

  NodeClientOptions options;
  asio::io_context io{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{io.get_executor()};
  asio::ip::udp::endpoint target;
  std::shared_ptr<transport::Endpoint> endpoint;
  std::shared_ptr<transport::Connection> conn;
  std::thread thread;
  std::atomic<std::thread::id> thread_id{};
  std::atomic<bool> closing{false};  // set by ~NodeClient: no new requests from then on
};

NodeClient::NodeClient(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<NodeClient> NodeClient::connect(std::string_view address, NodeClientOptions options,
                                                std::error_code& ec) {
  if (on_a_client_thread) {
    ec = errc::would_deadlock;
    return nullptr;
  }
  auto impl = std::make_shared<Impl>(std::move(options));
  if ((ec = node::resolve_address(address, impl->target))) return nullptr;
  transport::EndpointOptions o;
  o.identity = transport::Identity::generate(ec);
  if (ec) return nullptr;
  o.present_certificate = false;
  o.connect_timeout = impl->options.connect_timeout;
  // A loopback target is reached from loopback; anything else from the wildcard, so the
  // kernel picks the interface that routes there.
  const auto& t = impl->target.address();
  asio::ip::address local = t.is_v6() ? asio::ip::address(asio::ip::address_v6::any())
                                      : asio::ip::address(asio::ip::address_v4::any());
  if (t.is_loopback()) local = t.is_v6() ? asio::ip::address(asio::ip::address_v6::loopback())
                                         : asio::ip::address(asio::ip::address_v4::loopback());
  impl->endpoint = transport::Endpoint::create(impl->io, o, {local, 0}, ec);
  if (ec) return nullptr;
  // The thread holds the Impl, so a NodeClient destroyed on its own thread can let it go
  // (detach) and the io_context still outlives its run().
  std::promise<void> started;
  impl->thread = std::thread([impl, &started] {
    impl->thread_id = std::this_thread::get_id();
    on_a_client_thread = true;
    started.set_value();
    impl->io.run();
  });
  started.get_future().wait();
  std::unique_ptr<NodeClient> client(new NodeClient(impl));
  std::promise<std::error_code> connected;
  impl->endpoint->connect(impl->target, std::nullopt,
                          [raw = impl.get(), &connected](std::error_code e, std::shared_ptr<transport::Connection> c) {
                            raw->conn = std::move(c);
                            connected.set_value(e);
                          });
  if ((ec = connected.get_future().get())) return nullptr;  // ~NodeClient stops the thread
  return client;
}

NodeClient::~NodeClient() {
  auto& i = *impl_;
  i.closing = true;
  if (!i.thread.joinable()) return;
  // The close runs as a handler of its own on the client thread, never inside a callback that
  // may hold a stream's lock: it completes pending handlers (connection_closed) and sends
  // CONNECTION_CLOSE; then the loop stops, without waiting for the connection's timers.
  auto teardown = [impl = impl_] {
    if (impl->endpoint) impl->endpoint->close();
    impl->conn.reset();
    impl->work.reset();
    impl->io.stop();
  };
  if (i.on_own_thread()) {
    // Destroyed from one of its callbacks, against the documented rule: the thread holds the
    // Impl, so it can finish on its own once the current handler returns.
    asio::post(i.io, std::move(teardown));
    i.thread.detach();
    return;
  }
  asio::post(i.io, std::move(teardown));
  i.thread.join();
}

void NodeClient::request(std::string_view method, std::string_view path, Bytes body, ResponseHandler done) {
  if (impl_->closing) return done(errc::endpoint_closed, {});
  if (!impl_->conn) return done(errc::not_connected, {});
  impl_->conn->request(impl_->make_request(method, path, std::move(body)), impl_->options.request_timeout,
                       [done = std::move(done)](std::error_code e, transport::Response r) {
                         if (e) return done(e, {});
                         done({}, ClientResponse{r.status, std::move(r.body)});
                       });
}

ClientResponse NodeClient::request(std::string_view method, std::string_view path, Bytes body, std::error_code& ec) {
  if (on_a_client_thread) {
    ec = errc::would_deadlock;
    return {};
  }
  std::promise<std::pair<std::error_code, ClientResponse>> p;
  request(method, path, std::move(body), [&p](std::error_code e, ClientResponse r) { p.set_value({e, std::move(r)}); });
  auto [e, r] = p.get_future().get();
  ec = e;
  return r;
}

std::error_code NodeClient::publish(std::string_view topic, std::span<const std::uint8_t> payload, Qos qos) {
  std::error_code ec;
  const auto r = request("POST", pub_path(topic, qos), Bytes(payload.begin(), payload.end()), ec);
  return ec ? ec : client_status_error(r.status, "pub");
}

Bytes NodeClient::call(std::string_view procedure, std::span<const std::uint8_t> args, std::error_code& ec,
                       std::string* message) {
  auto r = request("POST", rpc_path(procedure), Bytes(args.begin(), args.end()), ec);
  if (ec) return {};
  if ((ec = client_status_error(r.status, "rpc"))) {
    if (message) message->assign(r.body.begin(), r.body.end());
    return {};
  }
  return std::move(r.body);
}

namespace {

// What a stream's callbacks and its owner share. Callbacks run on the client thread and
// hold `mutex` while they run, so the destructor, having taken it once, knows none runs
// or will run.
struct StreamState {
  std::mutex mutex;
  bool live = true;
  NodeClient::StreamCallbacks callbacks;
  std::string partial;  // an unterminated line, between on_data calls
  std::size_t scanned = 0;  // how much of `partial` holds no newline: each byte is searched once
  std::shared_ptr<transport::Session> session;
};

class StreamImpl final : public NodeClient::Stream {
 public:
  StreamImpl(std::shared_ptr<StreamState> s, std::shared_ptr<void> client, asio::io_context& io,
             std::function<bool()> on_own_thread)
      : state_(std::move(s)), client_(std::move(client)), io_(io), on_own_thread_(std::move(on_own_thread)) {}
  ~StreamImpl() override {
    std::unique_lock lock(state_->mutex, std::defer_lock);
    if (!on_own_thread_()) lock.lock();  // on the client thread no callback can be running
    state_->live = false;
    asio::post(io_, [s = state_] {
      if (s->session) s->session->reset();  // the node stops streaming and drops its subscription
      s->session.reset();
    });
  }

 private:
  std::shared_ptr<StreamState> state_;
  std::shared_ptr<void> client_;  // keeps io_ alive should the stream outlive its NodeClient
  asio::io_context& io_;
  std::function<bool()> on_own_thread_;
};

}  // namespace

std::unique_ptr<NodeClient::Stream> NodeClient::subscribe(std::string_view pattern, StreamCallbacks callbacks,
                                                          std::error_code& ec, int* status) {
  if (status) *status = -1;
  if (on_a_client_thread) {
    ec = errc::would_deadlock;
    return nullptr;
  }
  if (!impl_->conn) {
    ec = errc::not_connected;
    return nullptr;
  }
  auto state = std::make_shared<StreamState>();
  state->callbacks = std::move(callbacks);
  auto refused = std::make_shared<std::atomic<int>>(-1);
  transport::SessionCallbacks cb;
  cb.on_data = [state](std::span<const std::uint8_t> bytes) {
    std::lock_guard lock(state->mutex);
    if (!state->live) return;
    state->partial.append(bytes.begin(), bytes.end());
    std::size_t start = 0;
    for (std::size_t nl; (nl = state->partial.find('\n', std::max(start, state->scanned))) != std::string::npos;
         start = nl + 1) {
      const std::string_view line(state->partial.data() + start, nl - start);
      if (auto m = parse_line(line)) {
        if (state->callbacks.on_message) state->callbacks.on_message(std::move(*m));
      } else if (state->callbacks.on_garbage) {
        state->callbacks.on_garbage(line);
      }
      if (!state->live) return;  // the callback destroyed the stream
    }
    state->partial.erase(0, start);
    state->scanned = state->partial.size();
    // A line longer than any message the node can send (a 1 MiB payload in base64 and its
    // topic) is not one: the buffer stays bounded.
    if (state->partial.size() > 2 * 1024 * 1024) {
      if (state->callbacks.on_garbage) state->callbacks.on_garbage("(an over-long line, dropped)");
      state->partial.clear();
      state->scanned = 0;
    }
  };
  cb.on_close = [state](std::error_code e) {
    std::lock_guard lock(state->mutex);
    state->session.reset();
    if (!state->live) return;
    if (state->callbacks.on_end) state->callbacks.on_end(e);
  };
  cb.on_refused = [refused](int s, const std::vector<transport::Header>&) { *refused = s; };
  std::promise<std::error_code> opened;
  impl_->conn->open_session(impl_->make_request("GET", sub_path(pattern), {}), std::move(cb),
                            impl_->options.request_timeout,
                            [state, &opened](std::error_code e, std::shared_ptr<transport::Session> s) {
                              if (!e) {
                                s->close();  // no request body; the node's answer streams on
                                std::lock_guard lock(state->mutex);
                                state->session = std::move(s);
                              }
                              opened.set_value(e);
                            });
  const std::error_code e = opened.get_future().get();
  if (e) {
    const int s = refused->load();
    if (status) *status = s;
    ec = s > 0 ? client_status_error(s, "sub") : e;
    return nullptr;
  }
  if (status) *status = 200;
  ec.clear();
  return std::make_unique<StreamImpl>(state, impl_, impl_->io, [impl = impl_.get()] { return impl->on_own_thread(); });
}

std::string NodeClient::pub_path(std::string_view topic, Qos qos) {
  return "/macula/v1/pub/" + path_segment(topic) + (qos == Qos::at_least_once ? "?qos=1" : "");
}
std::string NodeClient::rpc_path(std::string_view procedure) { return "/macula/v1/rpc/" + path_segment(procedure); }
std::string NodeClient::sub_path(std::string_view pattern) { return "/macula/v1/sub/" + path_segment(pattern); }

std::string NodeClient::remote_address() const { return node::format_address(impl_->target); }
bool NodeClient::has_token() const noexcept { return impl_->options.token.has_value(); }

}  // namespace macula
