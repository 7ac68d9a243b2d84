#include <catch2/catch.hpp>

#include <functional>
#include <random>
#include <set>

#include "macula/error.hpp"
#include "pubsub/dedup_window.hpp"
#include "pubsub/local_interest.hpp"
#include "pubsub/qos1_tracker.hpp"
#include "pubsub/remote_interest.hpp"
#include "rpc/pending_calls.hpp"

using namespace macula;
using namespace std::chrono_literals;

TEST_CASE("local interest: one announcement per distinct pattern, withdrawn with the last subscriber",
          "[pubsub]") {
  pubsub::LocalInterest li;
  CHECK(li.add("sensors.#") == "sensors.#");
  CHECK(li.add("sensors.**").empty());  // same canonical pattern: no second announcement
  CHECK(li.add("a.*") == "a.*");
  CHECK(li.subscribers("sensors.#") == 2);
  CHECK(li.distinct_patterns() == 2);
  CHECK(li.remove("sensors.#").empty());  // one subscriber left
  CHECK(li.remove("sensors.**") == "sensors.#");
  CHECK(li.remove("sensors.#").empty());  // unknown now: nothing changes
  CHECK(li.snapshot() == std::vector<std::string>{"a.*"});
}

TEST_CASE("remote interest: a publish reaches each interested link once; bounds per link", "[pubsub]") {
  pubsub::RemoteInterest ri(3);
  CHECK_FALSE(ri.add(1, "sensors.#"));
  CHECK_FALSE(ri.add(1, "sensors.*.temp"));  // also matches: link 1 must still appear once
  CHECK_FALSE(ri.add(2, "sensors.kitchen.temp"));
  CHECK_FALSE(ri.add(3, "alerts.#"));
  std::vector<pubsub::LinkId> out;
  ri.links_for("sensors.kitchen.temp", out);
  CHECK(out == std::vector<pubsub::LinkId>{1, 2});
  CHECK_FALSE(ri.add(1, "sensors.#"));  // idempotent
  CHECK(ri.patterns(1) == 2);
  CHECK_FALSE(ri.add(1, "x"));
  CHECK(ri.add(1, "y") == errc::too_many_subscriptions);
  CHECK(ri.add(1, "bad..p") == errc::name_empty_segment);
  CHECK(ri.remove(1, "sensors.**"));  // canonical spelling
  out.clear();
  ri.links_for("sensors.a.b", out);
  CHECK(out.empty());
  ri.drop_link(1);
  ri.drop_link(2);
  out.clear();
  ri.links_for("sensors.kitchen.temp", out);
  CHECK(out.empty());
  CHECK(ri.links() == 1);
}

TEST_CASE("dedup window: each (publisher, id) once, across reordering; bounded", "[pubsub][qos1]") {
  pubsub::DedupWindow w(2);
  NodeId::Bytes b{};
  b[0] = 1;
  const NodeId p1(b);
  b[0] = 2;
  const NodeId p2(b);
  b[0] = 3;
  const NodeId p3(b);
  // In order, then retried, then reordered within the window.
  for (std::uint64_t i = 1; i <= 100; ++i) CHECK(w.first_time(p1, i));
  for (std::uint64_t i = 1; i <= 100; ++i) CHECK_FALSE(w.first_time(p1, i));
  CHECK(w.duplicates() == 100);
  CHECK(w.first_time(p1, 105));
  CHECK(w.first_time(p1, 103));  // arrives late but within the window
  CHECK_FALSE(w.first_time(p1, 103));
  CHECK(w.first_time(p1, 5000));
  CHECK(w.first_time(p1, 101));  // 4,899 behind: too old to tell, delivered (at least once)
  CHECK(w.too_old() == 1);
  // A random permutation of ids delivered twice: exactly one "first" each.
  std::vector<std::uint64_t> ids;
  for (std::uint64_t i = 10'000; i < 10'500; ++i) ids.push_back(i);
  std::mt19937 rng(5);
  std::shuffle(ids.begin(), ids.end(), rng);
  int firsts = 0;
  for (auto id : ids) firsts += w.first_time(p2, id);
  for (auto id : ids) firsts += w.first_time(p2, id);
  CHECK(firsts == 500);
  // Bounded: a third publisher evicts the least recently active one (p1).
  CHECK(w.first_time(p3, 1));
  CHECK(w.publishers() == 2);
  CHECK(w.evicted() == 1);
}

TEST_CASE("pending calls: bounded, each call leaves exactly once by reply or deadline", "[rpc]") {
  using Handler = std::function<void(std::error_code)>;
  rpc::PendingCalls<Handler> pc(3);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> log;
  std::error_code ec;
  const auto a = pc.insert(t0 + 30ms, [&](std::error_code e) { log.push_back("a:" + e.message()); }, ec);
  REQUIRE_FALSE(ec);
  const auto b = pc.insert(t0 + 10ms, [&](std::error_code e) { log.push_back("b:" + e.message()); }, ec);
  const auto c = pc.insert(t0 + 20ms, [&](std::error_code e) { log.push_back("c:" + e.message()); }, ec);
  CHECK(pc.insert(t0, [](std::error_code) {}, ec) == 0);
  CHECK(ec == errc::too_many_pending);
  CHECK(pc.next_deadline() == t0 + 10ms);
  auto h = pc.take(c);  // reply arrives
  REQUIRE(h);
  (*h)({});
  CHECK_FALSE(pc.take(c));  // a second (late, duplicate or forged) reply finds nothing
  std::vector<std::pair<std::uint64_t, Handler>> expired;
  pc.expire(t0 + 30ms, expired);
  REQUIRE(expired.size() == 2);
  CHECK(expired[0].first == b);  // earliest first
  CHECK(expired[1].first == a);
  for (auto& [id, handler] : expired) handler(errc::timed_out);
  CHECK(pc.size() == 0);
  CHECK_FALSE(pc.next_deadline());
  CHECK(log.size() == 3);
}

TEST_CASE("qos1 tracker: done once the last peer acks; bounded by count and bytes; a gone peer ends its messages",
          "[pubsub][qos1]") {
  using Done = std::function<void(std::error_code)>;
  pubsub::Qos1Tracker<int, Done> t(3, 100);
  std::vector<std::pair<int, std::error_code>> finished;
  auto done_for = [&](int id) { return Done([&, id](std::error_code ec) { finished.emplace_back(id, ec); }); };
  REQUIRE_FALSE(t.track(1, 10, 40, {7, 8}, done_for(1)));
  REQUIRE_FALSE(t.track(2, 20, 40, {8}, done_for(2)));
  CHECK_FALSE(t.has_room(40));                             // 80 + 40 bytes > 100
  CHECK(t.track(3, 30, 40, {7}, done_for(3)) == errc::too_many_pending);
  CHECK(t.has_room(20));
  REQUIRE_FALSE(t.track(3, 30, 20, {7}, done_for(3)));
  CHECK_FALSE(t.has_room(1));                              // three messages: the count bound
  CHECK(t.bytes() == 100);

  std::optional<Done> d;
  CHECK(t.ack(1, 7, d));
  CHECK_FALSE(d);                                          // peer 8 still owes message 1
  CHECK_FALSE(t.ack(1, 7, d));                             // a second ack from 7 changes nothing
  CHECK_FALSE(t.ack(9, 7, d));                             // unknown id
  std::vector<std::uint64_t> owed;
  t.for_peer(8, [&](std::uint64_t id, auto&) { owed.push_back(id); });
  CHECK(owed == std::vector<std::uint64_t>{1, 2});         // in publish order, for a re-send
  CHECK(t.ack(1, 8, d));
  REQUIRE(d);
  (*d)({});
  CHECK(t.size() == 2);
  CHECK(t.bytes() == 60);

  // Peer 8 is gone for good: message 2 waited for it alone and ends; 3 does not involve it.
  t.forget_peer(8, [&](Done done) { done(errc::timed_out); });
  CHECK(t.size() == 1);
  REQUIRE(finished.size() == 2);
  CHECK(finished[0] == std::make_pair(1, std::error_code{}));
  CHECK(finished[1] == std::make_pair(2, make_error_code(errc::timed_out)));
  auto rest = t.remove(3);
  REQUIRE(rest);
  CHECK(t.size() == 0);
  CHECK(t.bytes() == 0);
  CHECK(t.has_room(1000));                                 // one message always fits an empty tracker
}
