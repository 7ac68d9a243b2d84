#include "node/http_subscription.hpp"

#include <openssl/evp.h>

#include <utility>

#include "macula/error.hpp"
#include "macula/names.hpp"
#include "macula/subscriber.hpp"
#include "node/subscription.hpp"

namespace macula::node {

namespace {

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      out += "\\u00";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  out += '"';
}

void append_base64(std::string& out, std::span<const std::uint8_t> bytes) {
  const std::size_t at = out.size();
  out.resize(at + 4 * ((bytes.size() + 2) / 3) + 1);  // EVP_EncodeBlock writes a final NUL
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + at), bytes.data(), static_cast<int>(bytes.size()));
  out.resize(at + static_cast<std::size_t>(n));
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// '#' cannot appear in a URL's path (it starts the fragment, which clients never send), so
// multi-level patterns arrive as %23; any other escape is decoded the same way.
bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return false;
    const int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

int refuse(transport::SessionCallbacks& cb, int status, std::string reason) {
  cb.response_headers = {{"content-type", "text/plain"}};
  cb.refusal_body = std::move(reason);
  return status;
}

}  // namespace

std::string ndjson_line(std::string_view topic, std::span<const std::uint8_t> payload, Qos qos) {
  std::string line;
  line.reserve(48 + topic.size() + payload.size() / 3 * 4 + 4);
  line += "{\"topic\":";
  append_json_string(line, topic);
  line += ",\"payload\":\"";
  append_base64(line, payload);
  line += "\",\"qos\":";
  line += qos == Qos::at_least_once ? '1' : '0';
  line += "}\n";
  return line;
}

struct HttpSubscriptions::Entry {
  std::uint64_t id;
  std::shared_ptr<Subscription> subscription;
  std::shared_ptr<transport::Session> session;
  std::string connection;
};

HttpSubscriptions::HttpSubscriptions(Limits limits, observe::MetricsRegistry& metrics, Subscribe subscribe,
                                     Unsubscribe unsubscribe, std::weak_ptr<void> alive)
    : limits_(limits),
      subscribe_(std::move(subscribe)),
      unsubscribe_(std::move(unsubscribe)),
      alive_(std::move(alive)),
      gauge_(metrics.gauge("macula_http_subscriptions", "Streaming subscriptions of HTTP/3 clients (GET /macula/v1/sub/...)")),
      // The help text is the family's, shared with the node's other drop reasons.
      dropped_(metrics.counter("macula_messages_dropped_total", "Messages dropped, by reason",
                               {{"reason", "http_subscriber_overflow"}})) {}

int HttpSubscriptions::accept(std::string_view encoded, const transport::Request& head,
                              std::shared_ptr<transport::Session> session, transport::SessionCallbacks& callbacks) {
  std::string pattern;
  if (!percent_decode(encoded, pattern)) return refuse(callbacks, 400, "the pattern's percent-encoding is invalid\n");
  if (auto ec = validate_pattern(pattern)) return refuse(callbacks, 400, "pattern " + pattern + ": " + ec.message() + "\n");
  if (entries_.size() >= limits_.total)
    return refuse(callbacks, 503,
                  "this node streams its maximum of " + std::to_string(limits_.total) + " subscriptions; retry later\n");
  std::string connection(head.channel_binding.begin(), head.channel_binding.end());
  if (auto c = per_connection_.find(connection); c != per_connection_.end() && c->second >= limits_.per_connection)
    return refuse(callbacks, 503,
                  "at most " + std::to_string(limits_.per_connection) + " streaming subscriptions per connection\n");
  SubscribeOptions options;
  options.queue_capacity = limits_.queue;
  options.overflow = SubscriberOverflow::drop_oldest;
  auto subscription = std::make_shared<Subscription>(pattern, MessageHandler{}, options);
  // too_many_subscriptions (the node's max_subscriptions) or not_started: both pass.
  if (auto ec = subscribe_(subscription)) return refuse(callbacks, 503, ec.message() + "\n");

  auto entry = std::make_shared<Entry>(Entry{next_id_++, std::move(subscription), std::move(session), std::move(connection)});
  entries_.emplace(entry->id, entry);
  ++per_connection_[entry->connection];
  gauge_.set(static_cast<double>(entries_.size()));
  callbacks.response_headers = {{"content-type", "application/x-ndjson"}, {"cache-control", "no-store"}};
  callbacks.on_data = [](std::span<const std::uint8_t>) {};  // a GET has no body: ignored
  callbacks.on_end = [] {};  // the end of the client's request is not the end of the stream
  callbacks.on_close = [weak = weak_from_this(), id = entry->id](std::error_code) {
    if (auto self = weak.lock()) self->remove(id);
  };
  pump(entry);
  return 200;
}

void HttpSubscriptions::pump(const std::shared_ptr<Entry>& e) {
  while (auto m = e->subscription->try_receive()) forward(*e, *m);
  // The queue is empty: the next push (on the strand, in the node's delivery) wakes this
  // waiter inline, so the message reaches the session on the strand.
  e->subscription->receive([weak = weak_from_this(), entry = std::weak_ptr<Entry>(e)](std::error_code ec, Message m) {
    if (ec) return;  // closed
    auto self = weak.lock();
    auto live = entry.lock();
    if (!self || !live) return;
    self->forward(*live, m);
    self->pump(live);
  });
}

void HttpSubscriptions::forward(Entry& e, const Message& m) {
  // A client that does not keep up loses messages rather than make the node hold them.
  if (e.session->buffered() > limits_.buffer_bound) return dropped_.inc();
  const std::string line = ndjson_line(m.topic(), m.payload(), m.qos());
  if (e.session->send({reinterpret_cast<const std::uint8_t*>(line.data()), line.size()}) == errc::queue_full)
    dropped_.inc();
}

void HttpSubscriptions::remove(std::uint64_t id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  auto e = std::move(it->second);
  entries_.erase(it);
  if (auto c = per_connection_.find(e->connection); c != per_connection_.end() && --c->second == 0) per_connection_.erase(c);
  gauge_.set(static_cast<double>(entries_.size()));
  e->subscription->close();
  if (auto node = alive_.lock()) unsubscribe_(e->subscription);
}

void HttpSubscriptions::close_all() {
  auto entries = std::move(entries_);
  entries_.clear();
  per_connection_.clear();
  gauge_.set(0);
  for (auto& [id, e] : entries) {
    e->subscription->close();
    if (auto node = alive_.lock()) unsubscribe_(e->subscription);
    e->session->close();
  }
}

}  // namespace macula::node
