#include "macula/publisher.hpp"

#include "macula/error.hpp"
#include "macula/names.hpp"
#include "node/node_core.hpp"

namespace macula {

namespace {
node::Outgoing outgoing(std::string topic, Bytes payload, Qos qos, const PublisherOptions& o,
                        const std::shared_ptr<std::atomic<std::uint64_t>>& drops) {
  return node::Outgoing{std::move(topic), std::move(payload), qos, o.congestion.value_or(node::default_congestion(qos)),
                        drops, {}};
}
}  // namespace

Publisher::Publisher(Node& node, std::string topic) : node_(&node) { options_.topic = std::move(topic); }
Publisher::Publisher(Node& node, PublisherOptions options) : node_(&node), options_(std::move(options)) {}

std::error_code Publisher::publish(std::string_view topic, std::span<const std::uint8_t> payload, Qos qos) {
  auto core = node::NodeAccess::core(*node_);
  if (!core) return errc::not_started;
  const auto congestion = options_.congestion.value_or(node::default_congestion(qos));
  if (congestion == CongestionControl::drop && payload.size() <= kMaxPayloadBytes && !validate_topic(topic) &&
      core->refuses(payload.size(), drops_.get()))
    return errc::queue_full;  // refused before the payload is copied
  auto m = outgoing(std::string(topic), Bytes(payload.begin(), payload.end()), qos, options_, drops_);
  std::optional<node::Clock::time_point> wait;
  if (m.congestion == CongestionControl::block) wait = node::Clock::now() + options_.block_timeout;
  return core->publish(std::move(m), wait);
}

void Publisher::publish_impl(std::string topic, Bytes payload, Qos qos, detail::Completion<std::error_code> done) {
  auto core = node::NodeAccess::core(*node_);
  if (!core) return done(errc::not_started);
  auto slot = std::make_shared<detail::Completion<std::error_code>>(std::move(done));
  auto m = outgoing(std::move(topic), std::move(payload), qos, options_, drops_);
  m.done = [slot](std::error_code e) { (*slot)(e); };
  // publish() hands `done` over only when it accepts the message; errors it returns now.
  if (auto ec = core->publish(std::move(m), std::nullopt)) (*slot)(ec);
}

}  // namespace macula
