#include "dht/dht_discovery.hpp"

#include <openssl/sha.h>

#include "macula/error.hpp"
#include "macula/names.hpp"

#include <algorithm>

#include <memory>
#include <utility>

namespace macula::dht {

namespace {
// SHA-256 of kind NUL realm NUL name: the DHT key of one kind of record (docs/PROTOCOL.md).
NodeId record_key(std::string_view kind, std::string_view realm, std::string_view name) {
  std::string text(kind);
  text.push_back('\0');
  text.append(realm);
  text.push_back('\0');
  text.append(name);
  NodeId::Bytes digest;
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest.data());
  return NodeId(digest);
}
}  // namespace

NodeId procedure_key(std::string_view realm, std::string_view procedure) {
  return record_key("macula.rpc", realm, procedure);
}

NodeId interest_key(std::string_view realm, std::string_view first_segment) {
  return record_key("macula.topic", realm, first_segment);
}

std::string first_segment_key(std::string_view pattern) {
  const std::string_view first = pattern.substr(0, pattern.find('.'));
  return first == "*" || first == "#" || first == "**" ? std::string("*") : std::string(first);
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
    lookup(self_, false, [this](Active&) { republish_all(); });
    schedule_refresh();
  }
}

void DhtDiscovery::advertise_procedure(std::string_view procedure) {
  advertised_.emplace(procedure);
  if (table_.size() > 0)
    store_at_closest(procedure_key(realm_, procedure), std::vector<std::uint8_t>(self_endpoint_.begin(), self_endpoint_.end()));
  schedule_republish();
}

// A store keeps one record per owner and key, so the record of a key lists every pattern of
// ours under that first segment ("host:port\npattern\npattern..."), capped in size.
std::vector<std::uint8_t> DhtDiscovery::interest_record(const std::string& segment) const {
  std::string data = self_endpoint_;
  for (const auto& p : interests_)
    if (first_segment_key(p) == segment && data.size() + 1 + p.size() <= kMaxInterestRecordBytes) data.append("\n").append(p);
  return {data.begin(), data.end()};
}

void DhtDiscovery::advertise_interest(std::string_view pattern) {
  interests_.emplace(pattern);
  const std::string segment = first_segment_key(pattern);
  if (table_.size() > 0) store_at_closest(interest_key(realm_, segment), interest_record(segment));
  schedule_republish();
}

void DhtDiscovery::withdraw_interest(std::string_view pattern) {
  // The other patterns under the segment stay findable at once; the withdrawn one disappears
  // when the stored record is replaced (now) or expires (the last one: not republished).
  if (!interests_.erase(std::string(pattern))) return;
  const std::string segment = first_segment_key(pattern);
  const bool others = std::any_of(interests_.begin(), interests_.end(), [&](const std::string& p) { return first_segment_key(p) == segment; });
  if (others && table_.size() > 0) store_at_closest(interest_key(realm_, segment), interest_record(segment));
}

void DhtDiscovery::republish_all() {
  for (const auto& p : advertised_)
    store_at_closest(procedure_key(realm_, p), std::vector<std::uint8_t>(self_endpoint_.begin(), self_endpoint_.end()));
  std::set<std::string> segments;
  for (const auto& p : interests_) segments.insert(first_segment_key(p));
  for (const auto& segment : segments) store_at_closest(interest_key(realm_, segment), interest_record(segment));
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
    republish_all();
    if (!advertised_.empty() || !interests_.empty()) schedule_republish();
  });
}

void DhtDiscovery::store_at_closest(const NodeId& key, std::vector<std::uint8_t> data) {
  lookup(key, false, [this, key, data = std::move(data)](Active& a) {
    wire::Record record{self_, static_cast<std::uint32_t>(options_.record_ttl.count()), data};
    auto closest = a.lookup.closest();
    // This node is one of the k closest too when nothing closer answered.
    (void)store_.put(key, self_, record.data, options_.record_ttl);
    for (const auto& c : closest)
      transport_.request(c, wire::DhtStore{0, key, record}, [](std::optional<wire::Frame>) {});
  });
}

void DhtDiscovery::find_records(const NodeId& key, std::function<void(std::vector<wire::Record>)> done) {
  std::vector<wire::Record> local;
  for (auto& [r, ttl] : store_.get(key))
    if (r.owner != self_) local.push_back(wire::Record{r.owner, 0, r.data});
  if (!local.empty()) return done(std::move(local));
  lookup(key, true, [done = std::move(done)](Active& a) { done(a.values); });
}

void DhtDiscovery::find_providers(std::string_view procedure, discovery::PeersFound done) {
  if (auto cached = provider_cache_.get(std::string(procedure))) return done(std::move(*cached));
  find_records(procedure_key(realm_, procedure),
               [this, name = std::string(procedure), done = std::move(done)](std::vector<wire::Record> records) {
                 std::vector<discovery::PeerAddress> out;
                 for (const auto& r : records)
                   if (r.owner != self_) out.push_back({r.owner, std::string(r.data.begin(), r.data.end())});
                 if (!out.empty()) provider_cache_.put(name, out, options_.provider_cache_ttl);
                 done(std::move(out));
               });
}

void DhtDiscovery::lookup_value(const NodeId& key, std::function<void(std::vector<wire::Record>)> done) {
  lookup(key, true, [done = std::move(done)](Active& a) { done(a.values); });
}

void DhtDiscovery::schedule_refresh() {
  // Buckets nobody touched for an hour get a lookup of a random id in their range, so the
  // table keeps live contacts in every distance band (Kademlia's bucket refresh).
  transport_.after(options_.refresh_check, [this] {
    for (std::size_t b : table_.stale_buckets(Clock::now())) {
      NodeId::Bytes r;
      for (auto& x : r) x = static_cast<std::uint8_t>(rng_());
      table_.touch_bucket(b, Clock::now());
      lookup(table_.random_id_in_bucket(b, NodeId(r)), false, [](Active&) {});
    }
    store_.reap(10'000);  // expired records go within a bounded amount of work per tick
    schedule_refresh();
  });
}

void DhtDiscovery::find_subscribers(std::string_view topic, discovery::PeersFound done) {
  // Two keys: the topic's first segment, and "*" (patterns that start with a wildcard).
  auto found = std::make_shared<std::vector<discovery::PeerAddress>>();
  auto remaining = std::make_shared<int>(2);
  auto collect = [this, found, remaining, topic = std::string(topic), done](std::vector<wire::Record> records) {
    for (const auto& r : records) {
      if (r.owner == self_) continue;
      const std::string data(r.data.begin(), r.data.end());
      const auto nl = data.find('\n');
      if (nl == std::string::npos) continue;
      bool matches = false;
      for (std::size_t at = nl + 1; at <= data.size() && !matches;) {
        const auto end = std::min(data.find('\n', at), data.size());
        matches = pattern_matches(std::string_view(data).substr(at, end - at), topic);
        at = end + 1;
      }
      if (!matches) continue;
      if (std::none_of(found->begin(), found->end(), [&](const discovery::PeerAddress& p) { return p.id == r.owner; }))
        found->push_back({r.owner, data.substr(0, nl)});
    }
    if (--*remaining == 0) done(std::move(*found));
  };
  find_records(interest_key(realm_, first_segment_key(topic)), collect);
  find_records(interest_key(realm_, "*"), collect);
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
      // The routing table learns from every answer and every timeout, also those that come
      // after a FIND_VALUE ended at its first value: dead contacts must still be counted out.
      if (reply) table_.observe(Contact{id, endpoint, {}, 0}, Clock::now());
      else table_.on_failed(id, 3);
      if (a->finished) return;
      std::vector<Contact> closer;
      bool value = false;
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
      } else if (value) {
        a->lookup.on_value(id);
      } else {
        for (const auto& x : closer) table_.observe(x, Clock::now());
        a->lookup.on_response(id, closer);
      }
      pump(a);
    });
  }
  // A value ends a FIND_VALUE at once: requests still out (one to a dead contact waits for its
  // timeout) cannot change the answer. Other lookups want the closest set: they wait for all.
  const bool answered = a->want_value && !a->values.empty();
  if (a->lookup.done() && (a->lookup.in_flight() == 0 || answered) && !a->finished) {
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
    const auto ttl = std::min<std::uint32_t>(f->record.ttl_s, static_cast<std::uint32_t>(options_.max_record_ttl.count()));
    const auto ec = store_.put(f->key, f->record.owner, f->record.data, std::chrono::seconds(ttl));
    return wire::DhtStoreAck{f->request_id, static_cast<std::uint32_t>(ec.value())};
  }
  return std::nullopt;
}

discovery::DiscoveryStats DhtDiscovery::stats() const {
  const auto cs = provider_cache_.stats();
  return {table_.size(), store_.keys(), cs.hits, cs.misses, cs.evictions};
}

bool DhtDiscovery::find_value(const NodeId& key, std::function<void(std::size_t)> done) {
  lookup_value(key, [done = std::move(done)](std::vector<wire::Record> r) { done(r.size()); });
  return true;
}

}  // namespace macula::dht
