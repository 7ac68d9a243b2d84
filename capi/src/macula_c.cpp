// The C ABI (capi/include/macula/macula.h) over the C++ Node API.
//
// Every entry point catches every exception (none crosses the ABI), checks its pointers, and
// records a thread-local message for macula_last_error(). Callback state objects guarantee
// the header's promises: `drop` once, and no `call` after the owning handle's free returns.
#include "macula/macula.h"

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "macula/client_access.hpp"
#include "macula/error.hpp"
#include "macula/names.hpp"
#include "macula/node.hpp"
#include "macula/publisher.hpp"
#include "macula/rpc_client.hpp"
#include "macula/subscriber.hpp"
#include "macula/testing/local_mesh.hpp"

namespace {

constexpr int kOk = MACULA_OK;
thread_local std::string last_error;
// Depth of C callbacks running on this thread: blocking functions refuse to run inside one.
thread_local int in_c_callback = 0;

struct CallbackDepth {
  CallbackDepth() { ++in_c_callback; }
  ~CallbackDepth() { --in_c_callback; }
};

int fail(int status, const std::string& message) {
  last_error = message;
  return status;
}

int from_error(const std::error_code& ec, const std::string& what) {
  if (!ec) {
    last_error.clear();
    return kOk;
  }
  const int status = ec.category() == macula::error_category() ? ec.value() : MACULA_EOTHER;
  return fail(status, what + ": " + ec.message());
}

// The status and a message naming the size and the limit.
int too_large(const char* fn, std::size_t len) {
  return fail(MACULA_EPAYLOAD_TOO_LARGE, std::string(fn) + ": payload of " + std::to_string(len) +
                                             " bytes is larger than the maximum of " +
                                             std::to_string(macula::kMaxPayloadBytes) + " bytes");
}

template <class F>
int guarded(const char* fn, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return fail(MACULA_ENOMEM, std::string(fn) + ": out of memory");
  } catch (const std::system_error& e) {
    return from_error(e.code(), fn);
  } catch (const std::exception& e) {
    return fail(MACULA_EINTERNAL, std::string(fn) + ": " + e.what());
  } catch (...) {
    return fail(MACULA_EINTERNAL, std::string(fn) + ": unknown exception");
  }
}

macula::Bytes to_bytes(const uint8_t* data, size_t len) {
  return data && len ? macula::Bytes(data, data + len) : macula::Bytes();
}

// A {context, call, drop} triple with "drop exactly once" and "no call after close()".
template <class Callback>
class CallbackGuard {
 public:
  explicit CallbackGuard(Callback cb) : cb_(cb) {}
  ~CallbackGuard() { close(); }
  CallbackGuard(const CallbackGuard&) = delete;
  CallbackGuard& operator=(const CallbackGuard&) = delete;

  // Runs `invoke(cb)` unless closed; close() waits for it.
  template <class Invoke>
  void run(Invoke&& invoke) {
    {
      std::lock_guard lock(mutex_);
      if (closed_ || !cb_.call) return;
      ++running_;
    }
    {
      CallbackDepth depth;
      current() = this;
      invoke(cb_);
      current() = nullptr;
    }
    std::lock_guard lock(mutex_);
    if (--running_ == 0) idle_.notify_all();
  }

  // No call starts after this returns; a running one has finished (unless we are inside it).
  // Then drop, once.
  void close() {
    std::unique_lock lock(mutex_);
    if (dropped_) return;
    closed_ = true;
    if (current() != this) idle_.wait(lock, [&] { return running_ == 0; });
    dropped_ = true;
    lock.unlock();
    if (cb_.drop) cb_.drop(cb_.context);
  }

 private:
  static const void*& current() {
    thread_local const void* c = nullptr;
    return c;
  }
  Callback cb_;
  std::mutex mutex_;
  std::condition_variable idle_;
  int running_ = 0;
  bool closed_ = false;
  bool dropped_ = false;
};

using ResultGuard = CallbackGuard<macula_result_callback>;

std::shared_ptr<ResultGuard> result_guard(const macula_result_callback* cb) {
  if (!cb) return nullptr;
  return std::make_shared<ResultGuard>(*cb);
}

void deliver_result(const std::shared_ptr<ResultGuard>& g, std::error_code ec, const macula::Bytes& data) {
  if (!g) return;
  const int status = !ec ? MACULA_OK : ec.category() == macula::error_category() ? ec.value() : MACULA_EOTHER;
  g->run([&](macula_result_callback& cb) { cb.call(cb.context, status, data.data(), data.size()); });
}

}  // namespace

struct macula_node {
  std::unique_ptr<macula::Node> owned;
  macula::Node* node = nullptr;
  bool in_mesh = false;
};

struct macula_subscription {
  std::shared_ptr<CallbackGuard<macula_message_callback>> guard;
  macula::Subscriber subscriber;
};

struct macula_advertisement {
  std::shared_ptr<CallbackGuard<macula_handler>> guard;
  macula::Advertisement advertisement;
};

struct macula_reply {
  macula::RpcResponder responder;
};

struct macula_mesh {
  std::unique_ptr<macula::testing::LocalMesh> mesh;
  std::vector<std::unique_ptr<macula_node>> nodes;
};

// The C status constants are the errc values: the header and the enum cannot drift apart.
constexpr macula::errc kLastErrc = macula::errc::realm_mismatch;
static_assert(MACULA_EWOULDDEADLOCK == static_cast<int>(macula::errc::would_deadlock));
static_assert(MACULA_EWOULD_BLOCK == static_cast<int>(macula::errc::would_block));
static_assert(MACULA_EPAYLOAD_TOO_LARGE == static_cast<int>(macula::errc::payload_too_large));
static_assert(MACULA_EREALM_PROOF == static_cast<int>(macula::errc::realm_proof_failed));
static_assert(MACULA_EUNAUTHORIZED == static_cast<int>(macula::errc::unauthorized));
static_assert(MACULA_EOPTIONS_INVALID == static_cast<int>(macula::errc::options_invalid));
static_assert(MACULA_ENO_SUBSCRIBERS == static_cast<int>(macula::errc::no_subscribers));
static_assert(MACULA_EADDRESS_UNRESOLVED == static_cast<int>(macula::errc::address_unresolved));
static_assert(MACULA_EREALM_MISMATCH == static_cast<int>(macula::errc::realm_mismatch));
static_assert(MACULA_MAX_PAYLOAD_BYTES == macula::kMaxPayloadBytes);
static_assert(MACULA_CLIENT_ACCESS_AUTOMATIC == static_cast<int>(macula::ClientAccess::automatic));
static_assert(MACULA_CLIENT_ACCESS_OPEN == static_cast<int>(macula::ClientAccess::open));
static_assert(MACULA_CLIENT_ACCESS_TOKEN == static_cast<int>(macula::ClientAccess::token));
static_assert(MACULA_CLIENT_ACCESS_CLOSED == static_cast<int>(macula::ClientAccess::closed));

extern "C" {

const char* macula_version(void) { return "0.1.0"; }

const char* macula_strerror(int status) {
  switch (status) {
    case kOk: return "success";
    case MACULA_EINVAL: return "invalid argument (NULL or out of range)";
    case MACULA_ENOMEM: return "out of memory";
    case MACULA_EINTERNAL: return "internal error (see macula_last_error)";
    case MACULA_EOTHER: return "system error (see macula_last_error)";
    default: break;
  }
  if (status > 0 && status <= static_cast<int>(kLastErrc)) {
    // Category messages are static strings in the library; keep one copy per code.
    static std::mutex m;
    static std::vector<std::string> cache(static_cast<std::size_t>(kLastErrc) + 1);
    std::lock_guard lock(m);
    auto& s = cache[static_cast<std::size_t>(status)];
    if (s.empty()) s = macula::error_category().message(status);
    return s.c_str();
  }
  return "unknown status";
}

const char* macula_last_error(void) { return last_error.c_str(); }

void macula_free(void* ptr) { std::free(ptr); }

int macula_client_token(const char* realm, const char* secret, char* out, size_t size) {
  if (!realm || !secret || !out) return fail(MACULA_EINVAL, "macula_client_token: NULL argument");
  return guarded("macula_client_token", [&] {
    const std::string token = macula::derive_client_token(realm, secret);
    if (token.size() + 1 > size) return fail(MACULA_EINVAL, "macula_client_token: buffer too small (65 bytes needed)");
    std::memcpy(out, token.c_str(), token.size() + 1);
    return kOk;
  });
}

void macula_node_options_init_sized(macula_node_options* o, size_t size) {
  if (!o || size < offsetof(macula_node_options, realm)) return;
  macula_node_options d;
  std::memset(&d, 0, sizeof d);
  d.realm = "macula.default";
  d.listen = "127.0.0.1:0";
  d.worker_threads = 2;
  d.io_threads = 1;
  d.rpc_timeout_ms = 5000;
  d.dht = 1;
  d.http_listen = "";
  d.log_level = 1;
  d.dht_record_ttl_s = 300;
  const size_t n = std::min(size, sizeof d);
  d.struct_size = n;
  std::memcpy(o, &d, n);
}

#undef macula_node_options_init
// Exported for binaries that called the function before the header made it a macro.
MACULA_API void macula_node_options_init(macula_node_options* o);
void macula_node_options_init(macula_node_options* o) { macula_node_options_init_sized(o, sizeof *o); }

int macula_node_new(macula_node** out, const macula_node_options* options) {
  if (!out) return fail(MACULA_EINVAL, "macula_node_new: out is NULL");
  *out = nullptr;
  return guarded("macula_node_new", [&] {
    macula_node_options defaults;
    macula_node_options_init_sized(&defaults, sizeof defaults);
    // Fields past the caller's struct_size keep their defaults (an older caller).
    if (options) {
      if (options->struct_size < offsetof(macula_node_options, realm) + sizeof(void*))
        return fail(MACULA_EINVAL, "macula_node_new: options.struct_size not set (call macula_node_options_init)");
      std::memcpy(&defaults, options, std::min(options->struct_size, sizeof defaults));
    }
    macula::NodeOptions o;
    if (defaults.realm) o.realm = defaults.realm;
    if (defaults.realm_secret) o.realm_secret = defaults.realm_secret;
    if (defaults.listen) o.listen = defaults.listen;
    if (defaults.advertise_address) o.advertise_address = defaults.advertise_address;
    if (defaults.key_file) o.key_file = defaults.key_file;
    if (defaults.cert_file) o.cert_file = defaults.cert_file;
    for (size_t i = 0; i < defaults.bootstrap_count; ++i) {
      if (!defaults.bootstrap || !defaults.bootstrap[i]) return fail(MACULA_EINVAL, "macula_node_new: NULL bootstrap entry");
      o.bootstrap.emplace_back(defaults.bootstrap[i]);
    }
    if (defaults.worker_threads) o.worker_threads = defaults.worker_threads;
    if (defaults.io_threads) o.io_threads = defaults.io_threads;
    if (defaults.rpc_timeout_ms) o.rpc_timeout = std::chrono::milliseconds(defaults.rpc_timeout_ms);
    o.dht = defaults.dht != 0;
    if (defaults.http_listen) o.http_listen = defaults.http_listen;
    // Out of range is refused here rather than cast: an unknown mode must not turn into some
    // other access policy.
    if (defaults.client_access < MACULA_CLIENT_ACCESS_AUTOMATIC || defaults.client_access > MACULA_CLIENT_ACCESS_CLOSED)
      return fail(MACULA_EINVAL, "macula_node_new: client_access out of range");
    o.client_access = static_cast<macula::ClientAccess>(defaults.client_access);
    if (defaults.client_token) o.client_token = defaults.client_token;
    o.leaf = defaults.leaf != 0;
    // 0: the default; out of range: macula_node_start refuses it (MACULA_EOPTIONS_INVALID).
    if (defaults.dht_record_ttl_s) o.dht_record_ttl = std::chrono::seconds(defaults.dht_record_ttl_s);
    if (defaults.log) {
      if (defaults.log_level < 0 || defaults.log_level > 4) return fail(MACULA_EINVAL, "macula_node_new: log_level out of range");
      o.log_level = static_cast<macula::LogLevel>(defaults.log_level);
      o.log_sink = [fn = defaults.log, ud = defaults.log_user_data](macula::LogLevel level, std::string_view component,
                                                                    std::string_view message) {
        const std::string c(component), m(message);  // NUL-terminated copies for C
        fn(ud, static_cast<int>(level), c.c_str(), m.c_str());
      };
    }
    auto n = std::make_unique<macula_node>();
    n->owned = std::make_unique<macula::Node>(std::move(o));
    n->node = n->owned.get();
    *out = n.release();
    return kOk;
  });
}

int macula_node_start(macula_node* node) {
  if (!node) return fail(MACULA_EINVAL, "macula_node_start: node is NULL");
  return guarded("macula_node_start", [&] {
    const std::error_code ec = node->node->start();
    if (!ec) return from_error(ec, "macula_node_start");
    // The status alone does not say which option is wrong; the node's reason does.
    const std::string why = node->node->last_start_error();
    return from_error(ec, why.empty() ? std::string("macula_node_start") : "macula_node_start: " + why);
  });
}

int macula_node_stop(macula_node* node) {
  if (!node) return fail(MACULA_EINVAL, "macula_node_stop: node is NULL");
  if (in_c_callback) return fail(MACULA_EWOULDDEADLOCK, "macula_node_stop: called from a libmacula callback");
  return guarded("macula_node_stop", [&] {
    node->node->stop();
    return kOk;
  });
}

void macula_node_free(macula_node* node) {
  if (!node || node->in_mesh) return;
  if (in_c_callback) {
    (void)fail(MACULA_EWOULDDEADLOCK, "macula_node_free: called from a libmacula callback (not freed)");
    return;
  }
  guarded("macula_node_free", [&] {
    delete node;
    return kOk;
  });
}

int macula_node_id(const macula_node* node, char out_hex[65]) {
  if (!node || !out_hex) return fail(MACULA_EINVAL, "macula_node_id: NULL argument");
  return guarded("macula_node_id", [&] {
    if (!node->node->running()) return fail(MACULA_ENOT_STARTED, "macula_node_id: node not started");
    const std::string hex = node->node->node_id().to_hex();
    std::memcpy(out_hex, hex.c_str(), 65);
    return kOk;
  });
}

int macula_node_address(const macula_node* node, char* out, size_t size) {
  if (!node || !out) return fail(MACULA_EINVAL, "macula_node_address: NULL argument");
  return guarded("macula_node_address", [&] {
    const std::string a = node->node->local_address();
    if (a.empty()) return fail(MACULA_ENOT_STARTED, "macula_node_address: node not started");
    if (a.size() + 1 > size) return fail(MACULA_EINVAL, "macula_node_address: buffer too small");
    std::memcpy(out, a.c_str(), a.size() + 1);
    return kOk;
  });
}

int macula_node_connect(macula_node* node, const char* address) {
  if (!node || !address) return fail(MACULA_EINVAL, "macula_node_connect: NULL argument");
  if (in_c_callback) return fail(MACULA_EWOULDDEADLOCK, "macula_node_connect: called from a libmacula callback");
  return guarded("macula_node_connect",
                 [&] { return from_error(node->node->connect(address), std::string("connect ") + address); });
}

int macula_node_metrics(char** out, const macula_node* node) {
  if (!out || !node) return fail(MACULA_EINVAL, "macula_node_metrics: NULL argument");
  *out = nullptr;
  return guarded("macula_node_metrics", [&] {
    const std::string text = node->node->metrics_text();
    char* s = static_cast<char*>(std::malloc(text.size() + 1));
    if (!s) return fail(MACULA_ENOMEM, "macula_node_metrics: out of memory");
    std::memcpy(s, text.c_str(), text.size() + 1);
    *out = s;
    return kOk;
  });
}

int macula_publish(macula_node* node, const char* topic, const uint8_t* data, size_t len, int qos,
                   const macula_result_callback* done) {
  auto guard = result_guard(done);  // drop runs when the last reference goes, even on error
  if (!node || !topic || (!data && len)) return fail(MACULA_EINVAL, "macula_publish: NULL argument");
  if (qos != 0 && qos != 1) return fail(MACULA_EINVAL, "macula_publish: qos must be 0 or 1");
  return guarded("macula_publish", [&] {
    if (auto ec = macula::validate_topic(topic)) return from_error(ec, std::string("publish ") + topic);
    if (!node->node->running()) return fail(MACULA_ENOT_STARTED, "macula_publish: node not started");
    if (len > macula::kMaxPayloadBytes) return too_large("macula_publish", len);
    macula::Publisher pub(*node->node);
    if (!guard && qos == 0) return from_error(pub.publish(topic, to_bytes(data, len)), std::string("publish ") + topic);
    pub.async_publish(topic, to_bytes(data, len), static_cast<macula::Qos>(qos),
                      [guard](std::error_code ec) { deliver_result(guard, ec, {}); });
    return kOk;
  });
}

int macula_subscribe(macula_subscription** out, macula_node* node, const char* pattern, macula_message_callback cb) {
  auto guard = std::make_shared<CallbackGuard<macula_message_callback>>(cb);
  if (!out || !node || !pattern || !cb.call) return fail(MACULA_EINVAL, "macula_subscribe: NULL argument");
  *out = nullptr;
  return guarded("macula_subscribe", [&] {
    std::error_code ec;
    auto s = std::make_unique<macula_subscription>();
    s->guard = guard;
    s->subscriber = macula::Subscriber(
        *node->node, pattern,
        [g = guard](const macula::Message& m) {
          g->run([&](macula_message_callback& c) {
            macula_message msg{};
            msg.topic = m.topic().data();
            msg.topic_len = m.topic().size();
            msg.pattern = m.pattern().data();
            msg.pattern_len = m.pattern().size();
            msg.payload = m.payload().data();
            msg.payload_len = m.payload().size();
            std::memcpy(msg.publisher, m.publisher().bytes().data(), 32);
            msg.sequence = m.sequence();
            msg.qos = static_cast<int>(m.qos());
            c.call(c.context, &msg);
          });
        },
        macula::SubscribeOptions{}, ec);
    if (ec) return from_error(ec, std::string("subscribe ") + pattern);
    *out = s.release();
    return kOk;
  });
}

void macula_subscription_free(macula_subscription* s) {
  if (!s) return;
  guarded("macula_subscription_free", [&] {
    s->subscriber.unsubscribe();
    s->guard->close();
    delete s;
    return kOk;
  });
}

uint64_t macula_subscription_dropped(const macula_subscription* s) { return s ? s->subscriber.dropped() : 0; }

int macula_reply_send(macula_reply* reply, const uint8_t* data, size_t len) {
  if (!reply || (!data && len)) return fail(MACULA_EINVAL, "macula_reply_send: NULL argument");
  return guarded("macula_reply_send", [&] {
    std::unique_ptr<macula_reply> r(reply);
    r->responder.reply(to_bytes(data, len));  // an oversized result reaches the caller as payload_too_large
    if (len > MACULA_MAX_PAYLOAD_BYTES)
      return fail(MACULA_EPAYLOAD_TOO_LARGE, "macula_reply_send: result above MACULA_MAX_PAYLOAD_BYTES");
    return kOk;
  });
}

int macula_reply_fail(macula_reply* reply, const char* message) {
  if (!reply) return fail(MACULA_EINVAL, "macula_reply_fail: reply is NULL");
  return guarded("macula_reply_fail", [&] {
    std::unique_ptr<macula_reply> r(reply);
    r->responder.fail(message ? message : "");
    return kOk;
  });
}

void macula_reply_free(macula_reply* reply) {
  guarded("macula_reply_free", [&] {
    delete reply;
    return kOk;
  });
}

int macula_advertise(macula_advertisement** out, macula_node* node, const char* procedure, macula_handler handler) {
  auto guard = std::make_shared<CallbackGuard<macula_handler>>(handler);
  if (!out || !node || !procedure || !handler.call) return fail(MACULA_EINVAL, "macula_advertise: NULL argument");
  *out = nullptr;
  return guarded("macula_advertise", [&] {
    std::error_code ec;
    auto a = std::make_unique<macula_advertisement>();
    a->guard = guard;
    a->advertisement = node->node->advertise(
        procedure,
        [g = guard](macula::Bytes args, macula::RpcResponder r) {
          auto* reply = new macula_reply{std::move(r)};
          bool ran = false;
          g->run([&](macula_handler& h) {
            ran = true;
            h.call(h.context, args.data(), args.size(), reply);
          });
          if (!ran) {
            reply->responder.fail("procedure withdrawn");
            delete reply;
          }
        },
        macula::AdvertiseOptions{}, ec);
    if (ec) return from_error(ec, std::string("advertise ") + procedure);
    *out = a.release();
    return kOk;
  });
}

void macula_advertisement_free(macula_advertisement* a) {
  if (!a) return;
  guarded("macula_advertisement_free", [&] {
    a->advertisement.reset();
    a->guard->close();
    delete a;
    return kOk;
  });
}

int macula_call(macula_node* node, const char* procedure, const uint8_t* args, size_t len, uint32_t timeout_ms,
                macula_result_callback done) {
  auto guard = std::make_shared<ResultGuard>(done);
  if (!node || !procedure || (!args && len) || !done.call) return fail(MACULA_EINVAL, "macula_call: NULL argument");
  return guarded("macula_call", [&] {
    if (auto ec = macula::validate_procedure(procedure)) return from_error(ec, std::string("call ") + procedure);
    if (!node->node->running()) return fail(MACULA_ENOT_STARTED, "macula_call: node not started");
    if (len > macula::kMaxPayloadBytes) return too_large("macula_call", len);
    macula::CallOptions o;
    o.timeout = std::chrono::milliseconds(timeout_ms);
    macula::RpcClient(*node->node).async_call(procedure, to_bytes(args, len), o,
                                              [guard](std::error_code ec, macula::Bytes r) { deliver_result(guard, ec, r); });
    return kOk;
  });
}

int macula_call_blocking(uint8_t** out, size_t* out_len, macula_node* node, const char* procedure, const uint8_t* args,
                         size_t len, uint32_t timeout_ms) {
  if (!out || !out_len || !node || !procedure || (!args && len))
    return fail(MACULA_EINVAL, "macula_call_blocking: NULL argument");
  *out = nullptr;
  *out_len = 0;
  if (in_c_callback) return fail(MACULA_EWOULDDEADLOCK, "macula_call_blocking: called from a libmacula callback");
  return guarded("macula_call_blocking", [&] {
    if (len > macula::kMaxPayloadBytes) return too_large("macula_call_blocking", len);
    macula::CallOptions o;
    o.timeout = std::chrono::milliseconds(timeout_ms);
    std::error_code ec;
    macula::Bytes r = macula::RpcClient(*node->node).call(procedure, to_bytes(args, len), ec, o);
    if (!ec || ec == macula::errc::handler_error) {
      uint8_t* buf = static_cast<uint8_t*>(std::malloc(r.size() + 1));
      if (!buf) return fail(MACULA_ENOMEM, "macula_call_blocking: out of memory");
      if (!r.empty()) std::memcpy(buf, r.data(), r.size());
      buf[r.size()] = 0;  // convenient for text results
      *out = buf;
      *out_len = r.size();
    }
    if (ec == macula::errc::handler_error) return fail(MACULA_EHANDLER, std::string(r.begin(), r.end()));
    return from_error(ec, std::string("call ") + procedure);
  });
}

int macula_mesh_new(macula_mesh** out, size_t nodes, const char* realm) {
  if (!out || nodes == 0) return fail(MACULA_EINVAL, "macula_mesh_new: NULL out or zero nodes");
  *out = nullptr;
  if (in_c_callback) return fail(MACULA_EWOULDDEADLOCK, "macula_mesh_new: called from a libmacula callback");
  return guarded("macula_mesh_new", [&] {
    macula::testing::LocalMeshOptions o;
    o.size = nodes;
    if (realm) o.node.realm = realm;
    std::error_code ec;
    auto m = std::make_unique<macula_mesh>();
    m->mesh = std::make_unique<macula::testing::LocalMesh>(o, ec);
    if (ec) return from_error(ec, "macula_mesh_new");
    for (size_t i = 0; i < nodes; ++i) {
      auto n = std::make_unique<macula_node>();
      n->node = &m->mesh->node(i);
      n->in_mesh = true;
      m->nodes.push_back(std::move(n));
    }
    *out = m.release();
    return kOk;
  });
}

macula_node* macula_mesh_node(macula_mesh* mesh, size_t index) {
  if (!mesh || index >= mesh->nodes.size()) return nullptr;
  return mesh->nodes[index].get();
}

int macula_mesh_settle(macula_mesh* mesh) {
  if (!mesh) return fail(MACULA_EINVAL, "macula_mesh_settle: mesh is NULL");
  if (in_c_callback) return fail(MACULA_EWOULDDEADLOCK, "macula_mesh_settle: called from a libmacula callback");
  return guarded("macula_mesh_settle", [&] {
    mesh->mesh->settle();
    return kOk;
  });
}

void macula_mesh_free(macula_mesh* mesh) {
  if (!mesh) return;
  if (in_c_callback) {
    (void)fail(MACULA_EWOULDDEADLOCK, "macula_mesh_free: called from a libmacula callback (not freed)");
    return;
  }
  guarded("macula_mesh_free", [&] {
    mesh->mesh->stop();
    delete mesh;
    return kOk;
  });
}

}  // extern "C"
