#include "dht/dht_discovery.hpp"

#include <openssl/sha.h>

#include "macula/error.hpp"

#include <memory>
#include <utility>

namespace macula::dht {

NodeId procedure_key(std::string_view realm, std::string_view procedure) {
  std::string text = "macula.rpc";
  text.push_back('\0');
  text.append(realm);
  text.push_back('\0');
  text.append(procedure);
  NodeId::Bytes digest;
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest.data());
  return NodeId(digest);
}

struct DhtDiscovery::Active {
  Lookup lookup;
  bool want_value;
  std::vector<wire::Record> values;
  std::function<void(Active&)> done;
  bool finished = false;
};

DhtDiscovery::DhtDiscovery(NodeId self, std::string self_endpoint, std::string realm, DhtTransport& transport, Options o)
    : self_(self),
      self_endpoint_(std::move(self_endpoint)),
      realm_(std::move(realm)),
      transport_(transport),
      options_(o),
      table_(self, o.lookup.k) {}

void DhtDiscovery::on_peer(const NodeId& id, const std::string& endpoint) {
  table_.observe(Contact{id, endpoint, {}, 0}, Clock::now());
  if (!bootstrapped_) {
    // Join: look up our own id through the first peer, filling the routing table (and
    // telling the nodes on the way about us), then store what we advertised meanwhile.
    bootstrapped_ = true;
    lookup(self_, false, [this](Active&) {
      for (const auto& p : advertised_) store_at_closest(procedure_key(realm_, p));
    });
  }
}

void DhtDiscovery::advertise_procedure(std::string_view procedure) {
  advertised_.emplace(procedure);
  if (table_.size() > 0) store_at_closest(procedure_key(realm_, procedure));
  schedule_republish();
}

void DhtDiscovery::withdraw_procedure(std::string_view procedure) {
  // Stop republishing; stored records expire within their TTL.
  advertised_.erase(std::string(procedure));
}

void DhtDiscovery::schedule_republish() {
  if (republish_armed_) return;
  republish_armed_ = true;
  transport_.after(options_.republish, [this] {
    republish_armed_ = false;
    for (const auto& p : advertised_) store_at_closest(procedure_key(realm_, p));
    if (!advertised_.empty()) schedule_republish();
  });
}

void DhtDiscovery::store_at_closest(const NodeId& key) {
  lookup(key, false, [this, key](Active& a) {
    wire::Record record{self_, static_cast<std::uint32_t>(options_.record_ttl.count()),
                        std::vector<std::uint8_t>(self_endpoint_.begin(), self_endpoint_.end())};
    auto closest = a.lookup.closest();
    // This node is one of the k closest too when nothing closer answered.
    (void)store_.put(key, self_, record.data, options_.record_ttl);
    for (const auto& c : closest)
      transport_.request(c, wire::DhtStore{0, key, record}, [](std::optional<wire::Frame>) {});
  });
}

void DhtDiscovery::find_providers(std::string_view procedure, node::PeersFound done) {
  const NodeId key = procedure_key(realm_, procedure);
  auto local = store_.get(key);
  if (!local.empty()) {
    std::vector<node::PeerAddress> out;
    for (auto& [r, ttl] : local)
      if (r.owner != self_) out.push_back({r.owner, std::string(r.data.begin(), r.data.end())});
    if (!out.empty()) return done(std::move(out));
  }
  lookup(key, true, [this, done = std::move(done)](Active& a) {
    std::vector<node::PeerAddress> out;
    for (const auto& r : a.values)
      if (r.owner != self_) out.push_back({r.owner, std::string(r.data.begin(), r.data.end())});
    done(std::move(out));
  });
}

void DhtDiscovery::lookup(const NodeId& target, bool want_value, std::function<void(Active&)> done) {
  auto a = std::make_shared<Active>(Active{Lookup(target, table_.closest(target, options_.lookup.k), options_.lookup),
                                           want_value, {}, std::move(done)});
  pump(a);
}

void DhtDiscovery::pump(const std::shared_ptr<Active>& a) {
  if (a->finished) return;
  for (const auto& c : a->lookup.next()) {
    wire::Frame req = a->want_value ? wire::Frame(wire::DhtFindValue{0, a->lookup.target()})
                                    : wire::Frame(wire::DhtFindNode{0, a->lookup.target()});
    transport_.request(c, std::move(req), [this, a, id = c.id, endpoint = c.endpoint](std::optional<wire::Frame> reply) {
      if (a->finished) return;
      std::vector<Contact> closer;
      bool value = false;
      if (reply) table_.observe(Contact{id, endpoint, {}, 0}, Clock::now());
      if (auto* n = reply ? std::get_if<wire::DhtNodes>(&*reply) : nullptr) {
        for (const auto& x : n->contacts) closer.push_back(Contact{x.id, x.endpoint, {}, 0});
      } else if (auto* v = reply ? std::get_if<wire::DhtValues>(&*reply) : nullptr) {
        if (!v->records.empty()) {
          a->values = v->records;
          value = true;
        }
        for (const auto& x : v->closer) closer.push_back(Contact{x.id, x.endpoint, {}, 0});
      }
      if (!reply) {
        a->lookup.on_failure(id);
        table_.on_failed(id, 3);
      } else if (value) {
        a->lookup.on_value(id);
      } else {
        for (const auto& x : closer) table_.observe(x, Clock::now());
        a->lookup.on_response(id, closer);
      }
      pump(a);
    });
  }
  if (a->lookup.done() && a->lookup.in_flight() == 0 && !a->finished) {
    a->finished = true;
    a->done(*a);
  }
}

std::optional<wire::Frame> DhtDiscovery::handle(const NodeId& from, const wire::Frame& request) {
  auto contacts = [&](const NodeId& target) {
    std::vector<wire::Contact> out;
    for (const auto& c : table_.closest(target, options_.lookup.k))
      if (!c.endpoint.empty()) out.push_back(wire::Contact{c.id, c.endpoint});
    return out;
  };
  if (auto* f = std::get_if<wire::DhtFindNode>(&request)) return wire::DhtNodes{f->request_id, contacts(f->target)};
  if (auto* f = std::get_if<wire::DhtFindValue>(&request)) {
    wire::DhtValues v{f->request_id, {}, {}};
    for (auto& [r, ttl] : store_.get(f->key))
      v.records.push_back(wire::Record{r.owner, static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(ttl).count()), r.data});
    if (v.records.empty()) v.closer = contacts(f->key);
    return v;
  }
  if (auto* f = std::get_if<wire::DhtStore>(&request)) {
    // Records are stored for their owner only: a peer cannot plant records in another's name.
    if (f->record.owner != from)
      return wire::DhtStoreAck{f->request_id, static_cast<std::uint32_t>(errc::peer_identity_mismatch)};
    const auto ttl = std::min<std::uint32_t>(f->record.ttl_s, static_cast<std::uint32_t>(options_.record_ttl.count()));
    const auto ec = store_.put(f->key, f->record.owner, f->record.data, std::chrono::seconds(ttl));
    return wire::DhtStoreAck{f->request_id, static_cast<std::uint32_t>(ec.value())};
  }
  return std::nullopt;
}

}  // namespace macula::dht
