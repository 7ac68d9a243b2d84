#include "macula/publisher.hpp"

#include "macula/error.hpp"
#include "node/node_core.hpp"

namespace macula {

Publisher::Publisher(Node& node, std::string topic) : node_(&node), topic_(std::move(topic)) {}

std::error_code Publisher::publish(std::string_view topic, std::span<const std::uint8_t> payload, Qos qos) {
  auto core = node_->core();
  if (!core) return errc::not_started;
  return core->publish(std::string(topic), Bytes(payload.begin(), payload.end()), qos, {});
}

void Publisher::publish_impl(std::string topic, Bytes payload, Qos qos, detail::Completion<std::error_code> done) {
  auto core = node_->core();
  if (!core) return done(errc::not_started);
  auto slot = std::make_shared<detail::Completion<std::error_code>>(std::move(done));
  // publish() hands `done` over only when it accepts the message; errors it returns now.
  if (auto ec = core->publish(std::move(topic), std::move(payload), qos, [slot](std::error_code e) { (*slot)(e); }))
    (*slot)(ec);
}

}  // namespace macula
