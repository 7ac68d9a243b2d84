#include "node/http_api.hpp"

#include <array>
#include <utility>

#include "macula/error.hpp"
#include "macula/limits.hpp"
#include "macula/names.hpp"
#include "node/http_subscription.hpp"

namespace macula::node {

namespace {
const std::string kPub = "/macula/v1/pub/";
const std::string kRpc = "/macula/v1/rpc/";
const std::string kSub = "/macula/v1/sub/";

transport::Response text_response(int status, const std::string& body) {
  transport::Response r;
  r.status = status;
  r.headers.push_back({"content-type", "text/plain"});
  r.body.assign(body.begin(), body.end());
  return r;
}

std::string too_large(std::size_t size) {
  return "payload of " + std::to_string(size) + " bytes is larger than the maximum of " + std::to_string(kMaxPayloadBytes) +
         " bytes\n";
}
transport::Response refusal(int status) {
  auto r = text_response(status, status == 403 ? "this node's client API is closed\n"
                                               : "a client token is required: authorization: Bearer <token>\n");
  if (status == 401) r.headers.push_back({"www-authenticate", "Bearer"});
  return r;
}
// A streaming route answers a refusal through its callbacks, not a Responder.
int refuse_stream(transport::SessionCallbacks& cb, transport::Response r) {
  cb.response_headers = std::move(r.headers);
  cb.refusal_body.assign(r.body.begin(), r.body.end());
  return r.status;
}
}  // namespace

bool HttpApi::client_route(std::string_view path) {
  return path.starts_with(kPub) || path.starts_with(kRpc) || path.starts_with(kSub) || path.starts_with("/metrics");
}

int HttpApi::refuse(const transport::Request& req) const {
  const int status = gate.check(req.headers);
  if (status && refusals) refusals->inc();
  return status;
}

int http_status(std::error_code ec) {
  if (!ec) return 200;
  if (ec.category() != error_category()) return 500;
  static constexpr std::array<std::pair<errc, int>, 18> kTable{{
      {errc::name_empty, 400},
      {errc::name_too_long, 400},
      {errc::name_empty_segment, 400},
      {errc::name_invalid_character, 400},
      {errc::name_wildcard_not_allowed, 400},
      {errc::no_provider, 404},
      {errc::no_subscribers, 404},
      {errc::unauthorized, 401},
      {errc::payload_too_large, 413},
      {errc::body_too_large, 413},
      {errc::timed_out, 504},
      {errc::overloaded, 503},
      {errc::too_many_pending, 503},
      {errc::queue_full, 503},
      {errc::would_block, 503},
      {errc::not_started, 503},
      {errc::cancelled, 503},
      {errc::handler_error, 500},
  }};
  for (const auto& [e, status] : kTable)
    if (ec == e) return status;
  return 500;
}

void HttpApi::install(transport::Endpoint& endpoint, std::shared_ptr<const HttpApi> api, std::weak_ptr<void> alive) {
  // Each handler holds the node for its whole run: api's callbacks use it.
  endpoint.route("POST", kPub, [api, alive](transport::Request&& req, transport::Responder respond) {
    const auto node = alive.lock();
    if (!node || api->stopping()) return respond(text_response(503, "stopping\n"));
    if (const int refused = api->refuse(req)) return respond(refusal(refused));
    std::string topic = req.path.substr(kPub.size());
    // ?qos=1: answered once every subscriber acknowledged it (200), or 404 when nobody wants it.
    Qos qos = Qos::at_most_once;
    if (const auto q = topic.find('?'); q != std::string::npos) {
      const std::string query = topic.substr(q + 1);
      topic.resize(q);
      if (query == "qos=1") qos = Qos::at_least_once;
      else if (query != "qos=0") return respond(text_response(400, "unknown query '" + query + "': use ?qos=0 or ?qos=1\n"));
    }
    if (auto ec = validate_topic(topic)) return respond(text_response(http_status(ec), ec.message() + "\n"));
    if (req.body.size() > kMaxPayloadBytes) return respond(text_response(413, too_large(req.body.size())));
    detail::Completion<std::error_code> done;
    if (qos == Qos::at_least_once)
      done = detail::Completion<std::error_code>([respond](std::error_code ec) {
        respond(ec ? text_response(http_status(ec), ec.message() + "\n") : text_response(200, "delivered\n"));
      });
    const bool answered_later = static_cast<bool>(done);
    if (auto ec = api->publish(Outgoing{detail::make_message_body(topic, std::move(req.body)), qos, default_congestion(qos), nullptr,
                                        std::move(done)}))
      return respond(text_response(http_status(ec), ec.message() + "\n"));
    if (!answered_later) respond(text_response(202, "published\n"));
  });
  endpoint.route("POST", kRpc, [api, alive](transport::Request&& req, transport::Responder respond) {
    const auto node = alive.lock();
    if (!node || api->stopping()) return respond(text_response(503, "stopping\n"));
    if (const int refused = api->refuse(req)) return respond(refusal(refused));
    if (req.body.size() > kMaxPayloadBytes) return respond(text_response(413, too_large(req.body.size())));
    auto done = detail::Completion<std::error_code, Bytes>([respond](std::error_code ec, Bytes result) {
      if (!ec) {
        transport::Response r;
        r.body = std::move(result);
        return respond(std::move(r));
      }
      const std::string msg = ec == errc::handler_error ? std::string(result.begin(), result.end()) : ec.message();
      respond(text_response(http_status(ec), msg + "\n"));
    });
    api->call(req.path.substr(kRpc.size()), std::move(req.body), std::move(done));
  });
  // Answered on the strand when the request's head is in; the stream then lives as long as
  // the client keeps it open (HttpSubscriptions).
  if (api->subscriptions)
    endpoint.stream_route("GET", kSub, [api, alive](const transport::Request& head, std::shared_ptr<transport::Session> s,
                                                   transport::SessionCallbacks& cb) {
      const auto node = alive.lock();
      if (!node || api->stopping()) return refuse_stream(cb, text_response(503, "stopping\n"));
      if (const int refused = api->refuse(head)) return refuse_stream(cb, refusal(refused));
      return api->subscriptions->accept(std::string_view(head.path).substr(kSub.size()), head, std::move(s), cb);
    });
  // The status pages over HTTP/3: the same StatusPages the plain-HTTP server answers from.
  for (std::string_view path : StatusPages::kPaths)
    endpoint.route("GET", std::string(path), [api, alive](transport::Request&& req, transport::Responder respond) {
      if (req.path.starts_with("/metrics"))
        if (const int refused = api->refuse(req)) return respond(refusal(refused));
      const StatusPage page = alive.lock() ? api->pages.answer(req.path) : StatusPage{503, "text/plain", "not ready: stopping\n"};
      transport::Response r;
      r.status = page.status;
      r.headers.push_back({"content-type", page.content_type});
      r.body.assign(page.body.begin(), page.body.end());
      respond(std::move(r));
    });
}

}  // namespace macula::node
