// NodeOptions: everything a Node is configured with. Defaults follow the old Erlang system's
// numbers where it had them (kept as configuration); every bound here is enforced and visible
// in the node's metrics (docs/OPERATIONS.md lists the limits and the series).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "macula/client_access.hpp"
#include "macula/core/unique_function.hpp"
#include "macula/log.hpp"

namespace macula {

/// Runs a unit of work somewhere else (a user thread pool, an Asio executor: for one,
/// `[ex](auto f) { boost::asio::post(ex, std::move(f)); }`). Must not run `f` inline if the
/// caller may hold library locks: always queue it. Called from library threads.
using HandlerExecutor = std::function<void(core::detail::UniqueFunction<void()>)>;

struct NodeOptions {
  /// Nodes of different realms never exchange topics, procedures or records.
  std::string realm = "macula.default";
  /// Optional shared secret. With it, both ends of every link and of every DHT exchange prove
  /// they know it (an HMAC bound to both node ids and to the connection's TLS handshake), so
  /// a node that does not know it can neither join nor be used, however it was found.
  std::optional<std::string> realm_secret;
  /// What clients (connections without a node certificate) may do: see ClientAccess. The
  /// default is `token` in a realm with a secret, `open` otherwise.
  ClientAccess client_access = ClientAccess::automatic;
  /// The bearer token of `token` mode; unset: derive_client_token(realm, realm_secret).
  std::optional<std::string> client_token;
  /// UDP address to listen on, "host:port" or "[v6]:port" (a host name is resolved at start:
  /// its first IPv4 address, else its first IPv6 one); port 0 picks a free port.
  std::string listen = "127.0.0.1:0";
  /// The address other nodes should dial to reach this one ("host:port"; a host name is
  /// resolved once, at start, and the address announced): what it announces in its HELLO and
  /// its DHT records. Empty: the listen address as bound. Needed when listening on 0.0.0.0 or
  /// [::] (start() refuses that without it: peers cannot dial "any address") or behind a port
  /// mapping. Not checked for reachability.
  std::string advertise_address;
  /// PEM files of the node's ECDSA P-256 key and certificate; both or neither. Neither: an
  /// ephemeral identity is generated at start (the node id changes each run).
  std::optional<std::string> key_file;
  std::optional<std::string> cert_file;
  /// Peers ("host:port"; names resolved once, at start) linked at start and re-linked with
  /// backoff whenever the link drops. A malformed or unresolvable one fails start()
  /// (address_invalid / address_unresolved), and the log names it.
  std::vector<std::string> bootstrap;
  /// Discover RPC providers and remote subscribers through the Kademlia DHT (requests over
  /// HTTP/3 to other nodes) in addition to direct links: any node reaches any other node of
  /// the realm, not only its neighbours. The first publish to a topic not looked up in the
  /// last minute waits (at most `discovery_hold`) until the lookup and the links to the
  /// subscribers it found are up, so it reaches them; later publishes to that topic wait
  /// behind it, publishes to other topics do not. Off: links only (a node reaches its direct
  /// neighbours and the leaves linked to them).
  bool dht = true;
  /// A leaf accepts no inbound links and is reached only through the nodes it dials (its
  /// gateways): they register its subscriptions and procedures in the DHT under their own
  /// address, relay the messages and calls for it, and carry its own publishes and calls into
  /// the mesh. For processes that can dial out but not be dialed (behind NAT, short-lived
  /// tools). A leaf makes no DHT requests itself (`dht` is ignored) and advertises no address.
  bool leaf = false;
  /// The longest a publish waits for the subscriber lookup of its topic (see `dht`); after
  /// it, the publish goes to the subscribers known by then (a later answer still links them
  /// for the next publishes). Longer than one DHT request's timeout (2 s), so one dead
  /// contact does not cost the first message. Checked once a second.
  std::chrono::milliseconds discovery_hold{3000};
  /// How long the DHT keeps this node's records (its procedures, the interest of its
  /// subscribers and leaves) once it stops refreshing them, e.g. because it died: until then
  /// other nodes may find it and try it (a try that costs a failed-over attempt). Refreshed at
  /// 4/5 of it while the node runs; other nodes honour the shorter of this and their own
  /// (at least 300 s). 30 s to 1 day: shorter forgets dead nodes sooner and costs more DHT
  /// traffic (and leaves less time for a refresh to get through before the record expires).
  std::chrono::seconds dht_record_ttl{300};
  /// Plain HTTP/1.1 GET /metrics, /health, /ready, /live on this TCP "host:port" (port 0 picks
  /// one; Node::http_address() tells which). Empty (the default): off — an embedded library
  /// opens no TCP port unless asked (`macula node` asks for 127.0.0.1:8080). The same pages are
  /// always served over HTTP/3 on the node's QUIC port. If the port is taken, the node still
  /// starts: it logs a warning and serves the pages over HTTP/3 only, and metric
  /// macula_http_status_up is 0.
  std::string http_listen;

  /// Log events go to this sink (see macula/log.hpp); none installed: the node is silent.
  LogSink log_sink;
  LogLevel log_level = LogLevel::info;

  /// Where subscription and RPC handlers run. Empty: a worker pool of `worker_threads`.
  HandlerExecutor handler_executor;
  std::size_t worker_threads = 2;
  /// Shards of the node's concurrent indexes (subscription tries, result cache); 16 keeps
  /// writers on different shards apart without making reads visit many.
  std::size_t shards = 16;
  /// Threads for the io_context when the node owns it (the Node(NodeOptions) constructor).
  std::size_t io_threads = 1;

  // Bounds.
  std::size_t max_clients = 10'000;             ///< connections from certificate-less clients
  std::size_t max_pending_calls = 100'000;      ///< RPC calls waiting for replies
  std::size_t max_subscriptions = 100'000;      ///< local subscriptions
  std::size_t max_patterns_per_link = 10'000;   ///< interest one peer may announce
  /// Publishes handed to the node and not yet accepted by their links (a block-policy message
  /// waiting for room counts until it goes out), by count and by payload bytes. Past either,
  /// a synchronous block-policy publish waits (up to its block_timeout) and anything else
  /// answers queue_full. The count is sized for bursts of small messages (a few hundred
  /// thousand), the bytes for large ones.
  std::size_t max_publish_queue = 262'144;
  std::size_t max_publish_queue_bytes = 64u << 20;
  /// QoS 1 messages waiting for acknowledgements, by count and by payload bytes; a block-policy
  /// publish waits for room, a drop-policy one completes with queue_full.
  std::size_t max_qos1_in_flight = 100'000;
  std::size_t max_qos1_in_flight_bytes = 64u << 20;
  /// Payload bytes of publishes waiting on one link for room in its send buffer. Past it a
  /// drop-policy QoS 0 message is dropped for that link, and a block-policy one waits.
  std::size_t link_queue_bytes = 4u << 20;
  /// Request bodies (publishes and calls from clients over HTTP/3, DHT requests) held in
  /// memory until answered, for the whole node and per connection. A request that would pass
  /// either gets 503 and its upload is stopped; metric macula_transport_bodies_refused_total.
  std::size_t max_request_body_bytes = 64u << 20;
  std::size_t max_connection_request_body_bytes = 16u << 20;
  /// An upload that sends nothing for this long gets 408 and its bytes are released.
  std::chrono::milliseconds request_body_idle_timeout{10000};
  std::size_t result_cache_capacity = 10'000;   ///< idempotent RPC results kept
  std::size_t max_dedup_publishers = 10'000;    ///< QoS 1 publishers remembered for de-duplication

  // Health and slow consumers (docs/OPERATIONS.md).
  /// /ready answers 503 when a queue (publish, dispatch, a subscription's) holds more than
  /// this many items for longer than `health_queue_grace`.
  std::size_t health_queue_threshold = 1'000;
  std::chrono::milliseconds health_queue_grace{3000};
  /// A peer that stops reading: once its link's send buffer has refused frames continuously
  /// for this long, the link is closed (CloseCode slow_consumer, metric
  /// macula_slow_peer_disconnects_total, a warn log line). QoS 0 frames it refused are counted
  /// as dropped (link_backpressure); QoS 1 frames wait for it in the tracker as usual.
  std::chrono::milliseconds slow_peer_timeout{5000};
  /// /metrics lists the drops and depth of this many subscriptions, those with the most drops
  /// (bounded cardinality: the total over all subscriptions is always there).
  std::size_t metrics_top_subscriptions = 10;

  // Timing.
  std::chrono::milliseconds rpc_timeout{5000};         ///< default per-call deadline
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(5)};
  std::chrono::milliseconds reconnect_max_backoff{5000};  ///< redial backoff doubles up to this
  /// How long a peer's announced interest and procedures outlive its last link (it may be
  /// reconnecting; QoS 1 messages for it wait meanwhile, and are re-sent when it is back).
  /// QoS 1 messages still unacknowledged by a peer forgotten past it complete with timed_out.
  std::chrono::milliseconds peer_grace{15000};
  /// stop() waits this long for in-flight QoS 1 acks, RPC replies and running handlers.
  std::chrono::milliseconds stop_timeout{2000};
};

}  // namespace macula
