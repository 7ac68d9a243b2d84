// The public Node, Advertisement and RpcResponder over the NodeCore engine.
#include "macula/node.hpp"

#include <fstream>

#include <future>

#include "macula/error.hpp"
#include "node/http_status_server.hpp"
#include "node/node_core.hpp"
#include "node/reply_slot.hpp"
#include "node/subscription.hpp"

namespace macula {

// ---- RpcResponder -----------------------------------------------------------------------------

void RpcResponder::reply(Bytes result) const {
  if (slot_) slot_->give(wire::RpcStatus::ok, std::move(result));
}
void RpcResponder::fail(std::string message) const {
  if (slot_) slot_->give(wire::RpcStatus::handler_error, Bytes(message.begin(), message.end()));
}
bool RpcResponder::answered() const noexcept { return slot_ && slot_->answered.load(); }

// ---- Advertisement ----------------------------------------------------------------------------

void Advertisement::reset() noexcept {
  if (procedure_.empty()) return;
  if (auto core = core_.lock()) core->unadvertise(procedure_);
  procedure_.clear();
  core_.reset();
}

// ---- Node -------------------------------------------------------------------------------------

Node::Node(boost::asio::io_context& io, NodeOptions options) : options_(std::move(options)), io_(&io) {}

Node::Node(NodeOptions options)
    : options_(std::move(options)), owned_io_(std::make_unique<boost::asio::io_context>()), io_(owned_io_.get()) {}

Node::~Node() {
  stop();
}

std::error_code Node::start() {
  if (core_) return {};
  start_error_.clear();
  std::error_code ec;
  transport::Identity identity;
  auto refuse = [&](const std::string& why) {
    start_error_ = why;
    if (options_.log_sink && options_.log_level <= LogLevel::error) options_.log_sink(LogLevel::error, "node", "not starting: " + why);
  };
  if (options_.key_file || options_.cert_file) {
    if (!options_.key_file || !options_.cert_file) {
      refuse(options_.key_file ? "key_file is set without cert_file: they go together"
                               : "cert_file is set without key_file: they go together");
      return errc::identity_invalid;
    }
    for (const auto* f : {&*options_.key_file, &*options_.cert_file})
      if (!std::ifstream(*f)) {
        refuse((f == &*options_.key_file ? "key_file " : "cert_file ") + *f + ": cannot be read");
        return errc::identity_invalid;
      }
    identity = transport::Identity::from_pem_files(*options_.key_file, *options_.cert_file, ec);
    if (ec) refuse("key_file " + *options_.key_file + " / cert_file " + *options_.cert_file + ": " + ec.message());
  } else {
    identity = transport::Identity::generate(ec);
    if (ec) refuse("generating an identity: " + ec.message());
  }
  if (ec) return ec;
  std::vector<boost::asio::ip::udp::endpoint> bootstrap;
  for (const auto& b : options_.bootstrap) {
    boost::asio::ip::udp::endpoint e;
    if ((ec = node::resolve_address(b, e))) {
      refuse("bootstrap " + b + ": " + ec.message());
      return ec;
    }
    bootstrap.push_back(e);
  }
  core_ = node::NodeCore::create(*io_, options_, std::move(identity), ec, start_error_);
  if (ec) return ec;
  if (owned_io_) {
    work_ = std::make_unique<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>(
        owned_io_->get_executor());
    const std::size_t n = options_.io_threads == 0 ? 1 : options_.io_threads;
    for (std::size_t i = 0; i < n; ++i) io_threads_.emplace_back([io = owned_io_.get()] { io->run(); });
  }
  if (!options_.http_listen.empty()) {
    // Not fatal: with many nodes in one process only the first gets the default port, and the
    // same pages are on every node's QUIC port anyway. Visible as a metric and a log line.
    std::error_code http_ec;
    http_ = node::HttpStatusServer::create(*io_, options_.http_listen, core_->status_pages(), http_ec);
    if (http_ec) {
      http_.reset();
      core_->note_http_status(false, "status pages not served on " + options_.http_listen + ": " + http_ec.message() +
                                         " (still served over HTTP/3 on " + local_address() + ")");
    } else {
      core_->note_http_status(true, "status pages on http://" + http_address() + "/metrics");
      const char* help = "Plain-HTTP status port connections refused or closed, by reason";
      auto counter = [weak = std::weak_ptr<node::HttpStatusServer>(http_)](std::uint64_t node::HttpStatusServer::Stats::*f) {
        return [weak, f] {
          auto s = weak.lock();
          return s ? double(s->stats().*f) : 0.0;
        };
      };
      core_->add_counter_callback("macula_http_status_refused_total", help, "per_address",
                                  counter(&node::HttpStatusServer::Stats::refused_per_address));
      core_->add_counter_callback("macula_http_status_refused_total", help, "global",
                                  counter(&node::HttpStatusServer::Stats::refused_global));
      core_->add_counter_callback("macula_http_status_refused_total", help, "header_timeout",
                                  counter(&node::HttpStatusServer::Stats::header_timeouts));
    }
  }
  // Bootstrap links come up in the background and are re-dialed when they drop.
  for (const auto& e : bootstrap) core_->connect(e, std::nullopt, true, [](std::error_code) {});
  return {};
}

void Node::stop() {
  if (http_) {
    http_->close();
    http_.reset();
  }
  if (core_) core_->stop();
  if (owned_io_) {
    work_.reset();
    owned_io_->stop();
    for (auto& t : io_threads_)
      if (t.joinable()) t.join();
    io_threads_.clear();
  }
}

std::string Node::http_address() const {
  if (!http_) return {};
  const auto e = http_->local_endpoint();
  return node::format_address(boost::asio::ip::udp::endpoint(e.address(), e.port()));
}

std::string Node::last_start_error() const { return start_error_; }

bool Node::running() const noexcept { return core_ && !core_->stopping(); }

const NodeId& Node::node_id() const {
  if (!core_) throw std::system_error(make_error_code(errc::not_started));
  return core_->node_id();
}

std::string Node::local_address() const {
  if (!core_) return {};
  return node::format_address(core_->local_endpoint());
}

void Node::connect_impl(std::string address, detail::Completion<std::error_code> done) {
  if (!core_ || core_->stopping()) return done(errc::not_started);
  // A name is resolved on the io threads, so this never blocks its caller.
  auto shared = std::make_shared<detail::Completion<std::error_code>>(std::move(done));  // std::function copies
  node::async_resolve_address(*io_, address, [core = core_, shared](std::error_code ec, boost::asio::ip::udp::endpoint e) {
    if (ec) return (*shared)(ec);
    if (core->stopping()) return (*shared)(errc::not_started);
    core->connect(e, std::nullopt, true, std::move(*shared));
  });
}

std::error_code Node::connect(const std::string& address) {
  if (node::CallbackScope::active()) return errc::would_deadlock;
  std::promise<std::error_code> p;
  auto f = p.get_future();
  if (!core_ || core_->stopping()) return errc::not_started;
  boost::asio::ip::udp::endpoint e;
  if (auto ec = node::resolve_address(address, e)) return ec;
  core_->connect(e, std::nullopt, true, [&p](std::error_code ec) { p.set_value(ec); });
  return f.get();
}

Advertisement Node::advertise(std::string procedure, RpcHandler handler, AdvertiseOptions options, std::error_code& ec) {
  if (!core_ || core_->stopping()) {
    ec = errc::not_started;
    return {};
  }
  ec = core_->advertise(procedure, std::move(handler), options);
  if (ec) return {};
  return Advertisement(core_, std::move(procedure));
}

Advertisement Node::advertise(std::string procedure, RpcHandler handler, AdvertiseOptions options) {
  std::error_code ec;
  auto a = advertise(procedure, std::move(handler), options, ec);
  if (ec) throw std::system_error(ec, "advertise " + procedure);
  return a;
}

NodeStats Node::stats() const { return core_ ? core_->stats() : NodeStats{}; }
std::string Node::metrics_text() const { return core_ ? core_->metrics_text() : std::string(); }

}  // namespace macula
