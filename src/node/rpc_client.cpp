#include "macula/rpc_client.hpp"

#include <future>

#include "macula/error.hpp"
#include "node/node_core.hpp"
#include "node/subscription.hpp"

namespace macula {

void RpcClient::call_impl(std::string procedure, Bytes args, CallOptions options,
                          detail::Completion<std::error_code, Bytes> done) {
  auto core = node::NodeAccess::core(*node_);
  if (!core) return done(errc::not_started, Bytes{});
  core->call(std::move(procedure), std::move(args), std::move(options), std::move(done));
}

Bytes RpcClient::call(std::string procedure, Bytes args, std::error_code& ec, CallOptions options) {
  if (node::CallbackScope::active()) {
    ec = errc::would_deadlock;
    return {};
  }
  auto core = node::NodeAccess::core(*node_);
  if (!core) {
    ec = errc::not_started;
    return {};
  }
  std::promise<std::pair<std::error_code, Bytes>> p;
  auto f = p.get_future();
  core->call(std::move(procedure), std::move(args), std::move(options),
             [&p](std::error_code e, Bytes b) { p.set_value({e, std::move(b)}); });
  auto [e, b] = f.get();
  ec = e;
  return std::move(b);
}

}  // namespace macula
