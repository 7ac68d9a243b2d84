#include "macula/publisher.hpp"

#include "macula/error.hpp"
#include "macula/names.hpp"
#include "node/node_core.hpp"

namespace macula {

namespace {
node::Outgoing outgoing(std::shared_ptr<detail::MessageBody> body, Qos qos, const PublisherOptions& o,
                        const std::shared_ptr<detail::PublisherState>& state) {
  return node::Outgoing{std::move(body), qos, o.congestion.value_or(node::default_congestion(qos)),
                        state, {}};
}
}  // namespace

Publisher::Publisher(Node& node, std::string topic) : node_(&node) { options_.topic = std::move(topic); }
Publisher::Publisher(Node& node, PublisherOptions options) : node_(&node), options_(std::move(options)) {}

std::error_code Publisher::publish(std::string_view topic, std::span<const std::uint8_t> payload, Qos qos) {
  auto core = node::NodeAccess::core(*node_);
  if (!core) return errc::not_started;
  const auto congestion = options_.congestion.value_or(node::default_congestion(qos));
  // A refused or lost publish costs the producer no copy and the io thread nothing.
  if (congestion == CongestionControl::drop && payload.size() <= kMaxPayloadBytes && !validate_topic(topic)) {
    if (core->refuses(payload.size(), &state_->drops)) return errc::queue_full;
    if (qos == Qos::at_most_once && core->drops_for_full_links(topic, *state_)) return {};  // as the strand would
  }
  auto m = outgoing(detail::make_message_body(topic, payload), qos, options_, state_);  // the one copy
  std::optional<node::Clock::time_point> wait;
  if (m.congestion == CongestionControl::block) wait = node::Clock::now() + options_.block_timeout;
  return core->publish(std::move(m), wait);
}

void Publisher::publish_impl(std::string topic, Bytes payload, Qos qos, detail::Completion<std::error_code> done) {
  auto core = node::NodeAccess::core(*node_);
  if (!core) return done(errc::not_started);
  auto slot = std::make_shared<detail::Completion<std::error_code>>(std::move(done));
  auto m = outgoing(detail::make_message_body(topic, std::move(payload)), qos, options_, state_);
  m.done = [slot](std::error_code e) { (*slot)(e); };
  // publish() hands `done` over only when it accepts the message; errors it returns now.
  if (auto ec = core->publish(std::move(m), std::nullopt)) (*slot)(ec);
}

}  // namespace macula
