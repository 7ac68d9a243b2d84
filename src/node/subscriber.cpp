#include "macula/subscriber.hpp"

#include "macula/error.hpp"
#include "macula/names.hpp"
#include "node/node_core.hpp"
#include "node/subscription.hpp"

namespace macula {

void Subscriber::init(Node& node, std::string pattern, MessageHandler handler, SubscribeOptions options,
                      std::error_code& ec) {
  auto core = node::NodeAccess::core(node);
  if (!core) {
    ec = errc::not_started;
    return;
  }
  if ((ec = validate_pattern(pattern))) return;
  auto state = std::make_shared<node::Subscription>(std::move(pattern), std::move(handler), options);
  if ((ec = core->subscribe(state))) return;
  state_ = std::move(state);
  core_ = core;
  io_ = &boost::asio::query(node.get_executor(), boost::asio::execution::context);
}

Subscriber::Subscriber(Node& node, std::string pattern, MessageHandler handler, SubscribeOptions options,
                       std::error_code& ec) {
  init(node, std::move(pattern), std::move(handler), options, ec);
}
Subscriber::Subscriber(Node& node, std::string pattern, MessageHandler handler, SubscribeOptions options) {
  std::error_code ec;
  init(node, pattern, std::move(handler), options, ec);
  if (ec) throw std::system_error(ec, "subscribe " + pattern);
}
Subscriber::Subscriber(Node& node, std::string pattern, SubscribeOptions options, std::error_code& ec) {
  init(node, std::move(pattern), {}, options, ec);
}
Subscriber::Subscriber(Node& node, std::string pattern, SubscribeOptions options) {
  std::error_code ec;
  init(node, pattern, {}, options, ec);
  if (ec) throw std::system_error(ec, "subscribe " + pattern);
}

Subscriber::Subscriber(Subscriber&& o) noexcept
    : state_(std::move(o.state_)), core_(std::move(o.core_)), io_(o.io_) {}

Subscriber& Subscriber::operator=(Subscriber&& o) noexcept {
  if (this != &o) {
    unsubscribe();
    state_ = std::move(o.state_);
    core_ = std::move(o.core_);
    io_ = o.io_;
  }
  return *this;
}

Subscriber::~Subscriber() { unsubscribe(); }

void Subscriber::unsubscribe() noexcept {
  if (!state_) return;
  state_->close();
  if (auto core = core_.lock()) core->unsubscribe(state_);
  state_.reset();
}

void Subscriber::receive_impl(detail::Completion<std::error_code, Message> done) {
  if (!state_) return done(errc::cancelled, Message{});
  state_->receive(std::move(done));
}

std::optional<Message> Subscriber::try_receive() {
  if (!state_) return std::nullopt;
  return state_->try_receive();
}

const std::string& Subscriber::pattern() const noexcept {
  static const std::string kNone;
  return state_ ? *state_->pattern() : kNone;
}
std::size_t Subscriber::queued() const noexcept { return state_ ? state_->queued() : 0; }
std::size_t Subscriber::high_water() const noexcept { return state_ ? state_->high_water() : 0; }
std::uint64_t Subscriber::dropped() const noexcept { return state_ ? state_->dropped() : 0; }
std::uint64_t Subscriber::received() const noexcept { return state_ ? state_->received() : 0; }
std::uint64_t Subscriber::handler_errors() const noexcept { return state_ ? state_->handler_errors() : 0; }

}  // namespace macula
