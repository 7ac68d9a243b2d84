// RpcEngine: the node's RPC — the procedures it serves, the providers peers announced, calls
// with provider choice, failover and deadlines, and the idempotent result cache.
//
// Calling: a call picks a provider (this node, or a peer with a live link that announced the
// procedure) by its strategy through a per-procedure core::ProviderSelector, sends RPC_CALL as
// a control frame (never dropped by backpressure) and waits in the bounded pending table. An
// attempt fails over on a closed link, its deadline, no_handler or overloaded; handler_error
// and payload_too_large are final. With no linked provider, discovery is asked once and the
// providers it finds are dialed.
// Serving: handlers run on the handler executor (TaskQueue), bounded per procedure by
// max_concurrency; their answers come back to the strand through the node's inbox.
//
// Gateways and leaves: a gateway announces its leaves' procedures as its own (to its peers and
// in the DHT) and relays calls for them: a call from a peer for a procedure only a leaf
// serves goes on to that leaf; a call from a leaf for a procedure this node does not serve
// goes into the mesh like this node's own call (peers, discovery, other leaves), never back to
// that leaf. A leaf with no known provider sends the call to its gateway. As with messages, a
// call from a non-leaf peer is relayed only to leaves, so calls never loop.
//
// Threading: every member runs on the strand.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "discovery/discovery.hpp"
#include "macula/core/concurrent_cache.hpp"
#include "macula/core/provider_selector.hpp"
#include "macula/rpc_client.hpp"
#include "macula/rpc_handler.hpp"
#include "node/dispatch_queue.hpp"
#include "node/engine_types.hpp"
#include "node/link_table.hpp"
#include "node/node_metrics.hpp"
#include "rpc/pending_calls.hpp"

#include <boost/asio/steady_timer.hpp>

namespace macula::node {

class RpcEngine {
 public:

  RpcEngine(const NodeOptions& options, NodeMetrics& metrics, LinkTable& links, DiscoveryRef discovery,
            std::shared_ptr<TaskQueue> tasks, RunOnStrand to_strand);

  void start(LinkTable::Strand strand, std::weak_ptr<void> owner);
  void set_tasks(std::shared_ptr<TaskQueue> tasks) { tasks_ = std::move(tasks); }

  struct Procedure {
    std::string name;
    RpcHandler handler;
    AdvertiseOptions options;
    std::size_t in_flight = 0;
  };
  void advertise(std::shared_ptr<Procedure> proc);
  void unadvertise(const std::string& procedure);
  void call(std::string procedure, Bytes args, CallOptions o, detail::Completion<std::error_code, Bytes> done);

  // ---- link events
  void on_link_up(LinkId link);
  void on_link_down(LinkId link);
  /// The peer's HELLO arrived (a leaf's gateway becomes its provider of last resort).
  void on_hello(PeerKey peer);
  void on_peer_gone(PeerKey peer);
  /// RPC_CALL, RPC_REPLY, PROVIDE_ADD / _REMOVE; false for other frames.
  bool on_frame(PeerKey peer, LinkId link, wire::Frame& frame);

  bool drained() const { return pending_.size() == 0 && serving_ == 0; }
  void fail_all();
  std::size_t pending() const noexcept { return pending_.size(); }
  core::CacheStats cache_stats() const { return result_cache_.stats(); }

 private:
  struct CallState;
  struct ProviderSet;
  struct Attempt {
    std::shared_ptr<CallState> call;
    LinkId link = 0;
    PeerKey peer = 0;
    std::shared_ptr<ProviderSet> set;  // for the selector's outstanding-call count
    std::size_t index = 0;
  };
  using Answer = std::function<void(wire::RpcStatus, Bytes)>;

  void run_procedure(const std::shared_ptr<Procedure>& proc, Bytes args, Answer answer);
  void serve(PeerKey peer, LinkId link, wire::RpcCall call);
  struct Relay {
    PeerKey from = 0;          // the peer the call came from: never chosen
    bool leaves_only = false;  // from a non-leaf peer: only leaves may serve it
  };
  void start_call(std::string procedure, Bytes args, CallOptions o, detail::Completion<std::error_code, Bytes> done,
                  Relay relay);
  bool allowed(const CallState& c, PeerKey k) const;
  void relay_announce(const std::string& procedure);
  void relay_withdraw(const std::string& procedure);
  std::size_t provider_count(const std::string& procedure) const;
  std::shared_ptr<ProviderSet> provider_set(const std::string& procedure);
  void providers_changed(const std::string& procedure) { provider_sets_.erase(procedure); }
  void add_provider(PeerKey peer, const std::string& procedure);
  void remove_provider(PeerKey peer, const std::string& procedure);
  std::optional<std::pair<std::shared_ptr<ProviderSet>, std::size_t>> choose(CallState& c);
  void next_attempt(const std::shared_ptr<CallState>& call);
  void discover_providers(const std::shared_ptr<CallState>& call);
  void attempt_answered(const std::shared_ptr<CallState>& call, wire::RpcStatus st, Bytes b);
  void attempt_failed(Attempt& a, std::error_code ec);
  void finish(CallState& c, std::error_code ec, Bytes result);
  void arm_timer();
  bool wait_for_providers(const std::shared_ptr<CallState>& call);
  void resume(const std::shared_ptr<CallState>& call);

  const NodeOptions& options_;
  NodeMetrics& m_;
  LinkTable& links_;
  DiscoveryRef discovery_;
  std::shared_ptr<TaskQueue> tasks_;
  RunOnStrand to_strand_;
  std::optional<LinkTable::Strand> strand_;
  std::weak_ptr<void> owner_;
  std::optional<boost::asio::steady_timer> timer_;
  Clock::time_point armed_ = Clock::time_point::max();

  std::map<std::string, std::shared_ptr<Procedure>> procedures_;
  std::map<std::string, std::vector<PeerKey>> providers_;
  std::unordered_map<PeerKey, std::set<std::string>> provides_;  // what each peer announced
  std::map<std::string, std::size_t> relayed_;  // leaves serving each procedure (a gateway's)
  // What we announced on behalf of each leaf (exactly that is withdrawn when it goes).
  std::unordered_map<PeerKey, std::set<std::string>> relay_provided_;
  std::unordered_map<std::string, std::shared_ptr<ProviderSet>> provider_sets_;
  rpc::PendingCalls<Attempt> pending_;
  std::size_t serving_ = 0;
  core::ConcurrentCache<std::string, Bytes> result_cache_;
};

}  // namespace macula::node
