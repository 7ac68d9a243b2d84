#include "node/dht_requests.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "node/address.hpp"

namespace macula::node {

namespace asio = boost::asio;

namespace {
constexpr const char* kDhtPath = DhtRequests::kPath;
constexpr auto kDhtRequestTimeout = std::chrono::seconds(2);
}  // namespace

DhtRequests::DhtRequests(asio::io_context& io, std::shared_ptr<transport::Endpoint> endpoint, Strand strand,
                         std::weak_ptr<void> owner, const std::atomic<bool>& stopping, std::function<void()> after_work,
                         transport::RealmPolicy policy, core::Counter& refusals)
    : endpoint_(std::move(endpoint)),
      strand_(strand),
      owner_(std::move(owner)),
      stopping_(stopping),
      after_work_(std::move(after_work)),
      pool_(transport::ConnectionPool::create(io, endpoint_, transport::PoolOptions{})),
      policy_(std::make_shared<const transport::RealmPolicy>(std::move(policy))),
      refusals_(refusals) {}

void DhtRequests::request(const dht::Contact& to, wire::Frame req, std::function<void(std::optional<wire::Frame>)> done) {
  if (stopping_) return done(std::nullopt);
  asio::ip::udp::endpoint address;
  Bytes body;
  if (parse_address(to.endpoint, address) || wire::encode(req, body)) return done(std::nullopt);
  // Answers come back on the strand, and what they queued on links goes out.
  auto on_strand = [this, owner = owner_, done = std::move(done)](std::optional<wire::Frame> f) mutable {
    asio::post(strand_, [this, owner, done = std::move(done), f = std::move(f)]() mutable {
      if (!owner.lock()) return;
      done(std::move(f));
      after_work_();
    });
  };
  const NodeId self = endpoint_->node_id();
  pool_->get(to.id, address, [this, body = std::move(body), on_strand, self, policy = policy_](
                                 std::error_code ec, std::shared_ptr<transport::Connection> c) mutable {
    if (ec || !c || !c->peer_id()) return on_strand(std::nullopt);
    transport::Request r;
    r.method = "POST";
    r.path = kDhtPath;
    r.headers = transport::realm_headers(*policy, self, *c->peer_id(), c->channel_binding());
    r.body = std::move(body);
    c->request(std::move(r), kDhtRequestTimeout, [this, owner = owner_, on_strand, c, self, policy](
                                                     std::error_code e, transport::Response resp) mutable {
      wire::Frame reply;
      if (e || resp.status != 200) return on_strand(std::nullopt);
      // An answer is trusted only from a realm member: an outsider's contacts or records
      // would lead this node to dial it.
      if (!transport::acceptor_proof_valid(*policy, self, *c->peer_id(), c->channel_binding(), resp.headers)) {
        if (owner.lock()) refusals_.inc();
        return on_strand(std::nullopt);
      }
      if (wire::decode(resp.body, reply).error) return on_strand(std::nullopt);
      on_strand(std::move(reply));
    });
  });
}

void DhtRequests::after(std::chrono::nanoseconds delay, std::function<void()> f) {
  auto timer = std::make_shared<asio::steady_timer>(strand_);
  timer->expires_after(delay);
  timer->async_wait([this, owner = owner_, timer, f = std::move(f)](boost::system::error_code ec) {
    if (!owner.lock() || ec || stopping_) return;
    f();
    after_work_();
  });
}

void DhtRequests::serve(DiscoveryRef discovery) {
  endpoint_->route("POST", kDhtPath, [owner = owner_, discovery, policy = policy_, self = endpoint_->node_id(),
                                       refusals = &refusals_](transport::Request&& req, transport::Responder respond) {
    const auto node = owner.lock();
    transport::Response r;
    wire::Frame frame;
    if (!node || !req.peer) {
      if (node) refusals->inc();
      r.status = !node ? 503 : 401;  // node-to-node only
      return respond(std::move(r));
    }
    if (const int refused = transport::realm_admit(*policy, self, req, r.headers)) {
      refusals->inc();
      r.status = refused;
      return respond(std::move(r));
    }
    if (wire::decode(req.body, frame).error) {
      r.status = 400;
      return respond(std::move(r));
    }
    auto reply = discovery().handle(*req.peer, frame);
    if (!reply || wire::encode(*reply, r.body)) r.status = 404;
    respond(std::move(r));
  });
}

void DhtRequests::close() { pool_->close(); }

}  // namespace macula::node
