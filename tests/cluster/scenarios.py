#!/usr/bin/env python3
"""Cluster scenarios: `scenarios.py NAME BIN_DIR`. Each builds its own namespaces (harness.py),
runs `macula node` processes that know only the seed (DHT discovery, the CLI's default), puts
load on them with macula_mesh_agent and `macula sub`, asserts what must hold and prints its
figures as `FIGURE name: value` lines. Exit 0: passed; 1: failed (logs printed); the harness
failing to build its network is a failure too, never a skip."""

import signal
import sys
import time
import traceback

from harness import Cluster, HarnessError, exactly_once, figure, stop_proxy

ECHO = "cluster.echo"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def settle(host, topic, timeout=20):
    """QoS 1 probes from `host` until one is acknowledged: the subscribers' gateways have their
    interest in the DHT and `host` found them. Returns the seconds it took."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        r = host.agent("pub", "--topic", topic, "--qos", 1, "--count", 1, "--prefix", "probe",
                       timeout=max(1.0, timeout - (time.time() - t0)) + 10)
        if r["ok"] == 1:
            return time.time() - t0
        time.sleep(0.2)
    raise AssertionError(f"a QoS 1 publish to {topic} from h{host.index} never reached a subscriber")


def assert_once(sub, topic, prefix, n, what, timeout=30):
    counts = sub.wait_for(topic, n, timeout)
    missing, dup = exactly_once(counts, prefix, n)
    check(not missing, f"{what}: {len(missing)} of {n} missing (first: {missing[:5]})")
    check(not dup, f"{what}: {len(dup)} delivered twice (first: {dup[:5]})")


def discovery(c):
    """6 nodes knowing only the seed: subscribers on 5 (sensors.#) and 4 (*.hall.temp) receive
    node 2's publishes; node 1 calls a procedure only node 6 serves. All found through the DHT."""
    t0 = time.time()
    c.start(echo={6: [ECHO]})
    figure("discovery.nodes_ready_s", f"{time.time() - t0:.2f}")
    s5 = c.host(5).subscribe("sensors.#", "sub5")
    s4 = c.host(4).subscribe("*.hall.temp", "sub4")
    # Probes from node 3, so that node 2's first publish is a first one, found through the DHT.
    figure("discovery.subscriber_on_5_found_s", f"{settle(c.host(3), 'sensors.probe'):.2f}")
    figure("discovery.subscriber_on_4_found_s", f"{settle(c.host(3), 'probe.hall.temp'):.2f}")
    n = 200
    hall = c.host(2).agent("pub", "--topic", "sensors.hall.temp", "--qos", 1, "--count", n, "--prefix", "h")
    roof = c.host(2).agent("pub", "--topic", "sensors.roof.wind", "--qos", 1, "--count", n, "--prefix", "r")
    q0 = c.host(2).agent("pub", "--topic", "sensors.hall.temp", "--qos", 0, "--count", n, "--rate", 500, "--prefix", "z")
    for r, what in ((hall, "hall"), (roof, "roof"), (q0, "qos0")):
        check(r["ok"] == n, f"node 2's {what} publishes: {r}")
    assert_once(s5, "sensors.hall.temp", "h", n, "QoS 1 sensors.hall.temp at node 5")
    assert_once(s4, "sensors.hall.temp", "h", n, "QoS 1 sensors.hall.temp at node 4")
    assert_once(s5, "sensors.roof.wind", "r", n, "QoS 1 sensors.roof.wind at node 5")
    assert_once(s5, "sensors.hall.temp", "z", n, "QoS 0 sensors.hall.temp at node 5")
    assert_once(s4, "sensors.hall.temp", "z", n, "QoS 0 sensors.hall.temp at node 4")
    check(not s4.counts("sensors.roof.wind"), "node 4 received sensors.roof.wind, which *.hall.temp does not match")
    figure("discovery.qos1_publish_p50_us", hall["p50_us"])
    calls = c.host(1).agent("call", "--procedure", ECHO, "--count", 500, "--window", 1)
    check(calls["ok"] == 500, f"node 1's calls to node 6: {calls}")
    figure("discovery.rpc_1_to_6_p50_us", calls["p50_us"])
    figure("discovery.rpc_1_to_6_p99_us", calls["p99_us"])
    # Node 1 reached node 6 over a link of its own, which the DHT told it about.
    check(c.host(6).metric("macula_rpc_calls_served_total", metrics=c.host(6).metrics()) >= 500,
          "node 6 did not serve the calls")


def failover(c):
    """kill -9 of a provider in the middle of an RPC loop: every call succeeds within its deadline
    through failover; the node restarts with the same key file and serves again."""
    svc = "cluster.svc"
    ttl = 30
    ttl_flag = ("--dht-record-ttl", ttl)
    c.start(echo={5: [svc], 6: [svc]}, extra=ttl_flag)
    warm = c.host(1).agent("call", "--procedure", svc, "--count", 20)
    check(warm["ok"] == 20, f"warm-up calls: {warm}")
    before = c.host(6).node_id()
    loop = c.host(1).agent("call", "--procedure", svc, "--seconds", 30, "--rate", 100, "--timeout-ms", 4000, wait=False)
    time.sleep(5)
    served_before_kill = c.host(6).metric("macula_rpc_calls_served_total")
    c.host(6).kill()
    t_kill = time.time()
    time.sleep(7)
    c.host(6).start_node(bootstrap=c.host(1).address, echo=[svc], extra=ttl_flag).wait_ready()
    figure("failover.restart_ready_s", f"{time.time() - t_kill:.2f}")
    check(c.host(6).node_id() == before, "the restarted node has another node id despite the same key file")
    r = loop.result()
    figure("failover.calls", r["issued"])
    figure("failover.calls_ok", r["ok"])
    figure("failover.p50_us", r.get("p50_us"))
    figure("failover.p99_us", r.get("p99_us"))
    figure("failover.max_us", r.get("max_us"))
    figure("failover.failovers_at_node_1", int(c.host(1).metric("macula_rpc_failovers_total")))
    check(r["ok"] == r["issued"], f"calls through the kill: {r}")
    check(served_before_kill > 0, "node 6 served nothing before it was killed")
    served_after = c.host(6).metric("macula_rpc_calls_served_total")
    figure("failover.served_by_restarted_node", int(served_after))
    check(served_after > 0, "the restarted node 6 served no call of the loop's last 18 s")

    # Node 5 dies for good: its DHT records outlive it, for at most their TTL. A caller that
    # looks the procedure up now finds both nodes and must still succeed (it goes on with the
    # provider it could link); one that looks it up after the TTL finds node 6 only.
    c.host(5).kill()
    t5 = time.time()
    early = c.host(2).agent("call", "--procedure", svc, "--count", 20, "--window", 1, "--timeout-ms", 4000)
    check(early["ok"] == 20, f"calls from node 2 right after node 5 died: {early}")
    figure("failover.fresh_caller_before_ttl_p50_us", early.get("p50_us"))
    figure("failover.fresh_caller_before_ttl_max_us", early.get("max_us"))
    # It did find the dead node's record: its dial fails (after connect_timeout, 5 s).
    deadline = time.time() + 10
    while time.time() < deadline and c.host(2).metric("macula_link_dials_failed_total") == 0:
        time.sleep(0.2)
    figure("failover.fresh_caller_before_ttl_dials_failed", int(c.host(2).metric("macula_link_dials_failed_total")))
    check(c.host(2).metric("macula_link_dials_failed_total") > 0, "node 2 never tried the dead node 5's record")
    time.sleep(max(0.0, t5 + ttl + 2 - time.time()))
    late = c.host(3).agent("call", "--procedure", svc, "--count", 20, "--window", 1, "--timeout-ms", 4000)
    check(late["ok"] == 20, f"calls from node 3 after the TTL: {late}")
    m3 = c.host(3).metrics()
    figure("failover.fresh_caller_after_ttl_failovers", int(c.host(3).metric("macula_rpc_failovers_total", metrics=m3)))
    figure("failover.fresh_caller_after_ttl_links", int(c.host(3).metric("macula_links", metrics=m3)))
    figure("failover.fresh_caller_after_ttl_dials_failed", int(c.host(3).metric("macula_link_dials_failed_total", metrics=m3)))
    check(c.host(3).metric("macula_rpc_failovers_total", metrics=m3) == 0 and
          c.host(3).metric("macula_link_dials_failed_total", metrics=m3) == 0,
          "a caller that looked the procedure up after the TTL still tried the dead node 5")


def partition(c):
    """A subscriber's node cut off for 20 s while QoS 1 flows, then healed: every message arrives,
    none twice."""
    c.start()
    sub = c.host(4).subscribe("part.#", "sub4")
    settle(c.host(3), "part.probe")
    n = 1500
    pub = c.host(2).agent("pub", "--topic", "part.x", "--qos", 1, "--count", n, "--rate", 50, "--window", 256, "--prefix", "p",
                          wait=False)
    time.sleep(5)
    c.partition([4])
    t_cut = time.time()
    received_at_cut = len(sub.counts("part.x"))
    time.sleep(20)
    during = len(sub.counts("part.x")) - received_at_cut
    c.heal()
    t_heal = time.time()
    figure("partition.received_while_cut", during)
    r = pub.result()
    figure("partition.publish_ok", r["ok"])
    figure("partition.publish_failed", r["failed"])
    check(r["ok"] == n, f"QoS 1 publishes across the partition: {r}")
    assert_once(sub, "part.x", "p", n, "QoS 1 across a 20 s partition", timeout=60)
    figure("partition.all_delivered_after_heal_s", f"{time.time() - t_heal:.2f}")
    figure("partition.cut_s", f"{t_heal - t_cut:.1f}")


def loss(c):
    """2% random loss on every node for 60 s under mixed QoS 0 / QoS 1 / RPC load."""
    c.start(echo={6: [ECHO]})
    sub = c.host(5).subscribe("load.#", "sub5")
    settle(c.host(3), "load.probe")
    warm = c.host(1).agent("call", "--procedure", ECHO, "--count", 5)
    check(warm["ok"] == 5, f"warm-up calls: {warm}")
    for h in c.hosts:
        c.loss(h.index, 2)
    secs = 60
    q1 = c.host(2).agent("pub", "--topic", "load.q1", "--qos", 1, "--seconds", secs, "--rate", 300, "--window", 256,
                         "--prefix", "a", wait=False)
    q0 = c.host(3).agent("pub", "--topic", "load.q0", "--qos", 0, "--seconds", secs, "--rate", 300, "--prefix", "b",
                         wait=False)
    rpc = c.host(1).agent("call", "--procedure", ECHO, "--seconds", secs, "--rate", 100, "--timeout-ms", 5000, wait=False)
    r1, r0, rr = q1.result(), q0.result(), rpc.result()
    n1 = r1["issued"]
    check(r1["ok"] == n1, f"QoS 1 publishes under loss: {r1}")
    missing, dup = exactly_once(sub.wait_for("load.q1", n1, 30), "a", n1)
    figure("loss.qos1_lost", len(missing))
    figure("loss.qos1_duplicated", len(dup))
    assert_once(sub, "load.q1", "a", n1, "QoS 1 under 2% loss")
    got0 = len(sub.wait_for("load.q0", r0["issued"], 5))
    dropped = sum(c.loss_dropped(h.index) for h in c.hosts)
    figure("loss.packets_dropped_by_nft", dropped)
    check(dropped > 0, "the loss rules dropped nothing")
    figure("loss.qos1_sent", n1)
    figure("loss.qos1_publish_p50_us", r1.get("p50_us"))
    figure("loss.qos1_publish_p99_us", r1.get("p99_us"))
    figure("loss.qos0_delivered", f"{got0}/{r0['issued']}")
    figure("loss.rpc_ok", f"{rr['ok']}/{rr['issued']}")
    figure("loss.rpc_p50_us", rr.get("p50_us"))
    figure("loss.rpc_p99_us", rr.get("p99_us"))
    check(rr["ok"] == rr["issued"], f"RPC under loss: {rr}")


def bandwidth(c):
    """One node capped at 5 Mbit/s: the others keep their throughput, the slow-consumer policy
    acts on that node's links only."""
    c.start()
    fast = c.host(5).subscribe("bulk.#", "sub5")
    settle(c.host(3), "bulk.probe")
    # 16 Mbit/s offered for 10 s: more than a 5 Mbit/s link plus its 4 MiB link queue can hold.
    secs, rate = 10, 2000
    payload_args = ("--seconds", secs, "--rate", rate)
    alone = c.host(2).agent("pub", "--topic", "bulk.a", "--qos", 0, *payload_args, "--prefix", "a" * 1000)
    got_alone = len(fast.wait_for("bulk.a", alone["issued"], 10))
    c.bandwidth(4, "5mbit")
    slow = c.host(4).subscribe("bulk.#", "sub4")
    settle(c.host(3), "bulk.probe2")
    shared = c.host(2).agent("pub", "--topic", "bulk.b", "--qos", 0, *payload_args, "--prefix", "b" * 1000)
    got_fast = len(fast.wait_for("bulk.b", shared["issued"], 10))
    m2 = c.host(2).metrics()
    figure("bandwidth.node2_link_queue_bytes_at_end", {k: v for k, v in m2.items() if k.startswith("macula_link_queue_bytes")})
    time.sleep(8)
    got_slow = len(slow.counts("bulk.b"))
    m2 = c.host(2).metrics()
    m4 = c.host(4).metrics()
    figure("bandwidth.node4_dropped", {k: v for k, v in m4.items() if k.startswith("macula_messages_dropped_total") and v})
    figure("bandwidth.fast_subscriber_alone", f"{got_alone}/{alone['issued']} in {alone['seconds']:.1f} s")
    figure("bandwidth.fast_subscriber_beside_capped", f"{got_fast}/{shared['issued']} in {shared['seconds']:.1f} s")
    figure("bandwidth.capped_subscriber", f"{got_slow}/{shared['issued']}")
    figure("bandwidth.node2_dropped", {k: v for k, v in m2.items() if k.startswith("macula_messages_dropped_total") and v})
    figure("bandwidth.node2_slow_peer_disconnects", c.host(2).metric("macula_slow_peer_disconnects_total", metrics=m2))
    # The offered load must exceed the cap for the scenario to mean anything (a slow machine
    # may not reach 2,000/s; 1,000/s of 1 KB is still 8 Mbit/s).
    check(shared["issued"] / shared["seconds"] >= rate / 2, f"the publisher offered only {shared['issued'] / shared['seconds']:.0f}/s")
    # QoS 0 to a `macula sub` leaf: its own 1,024-message queue may drop a few on a loaded
    # machine (counted there); the point is that the capped node's link does not slow this one.
    check(got_alone >= 0.99 * alone["issued"], f"the fast subscriber lost messages before any cap: {got_alone}/{alone['issued']}")
    check(got_fast >= 0.99 * shared["issued"] and got_fast >= 0.99 * got_alone,
          f"the fast subscriber lost messages beside the capped node: {got_fast}/{shared['issued']} (alone: {got_alone})")
    check(got_slow < shared["issued"], "the capped node received everything: the cap did not bite")
    check(m2.get('macula_messages_dropped_total{reason="link_backpressure"}', 0) + c.host(2).metric("macula_slow_peer_disconnects_total", metrics=m2) > 0,
          "node 2 neither dropped for nor disconnected the capped node")


def seed_loss(c):
    """The seed killed: nodes that joined keep working with each other; a new node joins through
    any live member."""
    c.start(hosts=[1, 2, 3, 4, 5, 6], echo={6: [ECHO]})
    sub = c.host(5).subscribe("after.#", "sub5")
    settle(c.host(3), "after.probe")
    c.host(1).kill()
    n = 100
    r = c.host(3).agent("pub", "--topic", "after.x", "--qos", 1, "--count", n, "--prefix", "x")
    check(r["ok"] == n, f"QoS 1 from node 3 with the seed dead: {r}")
    assert_once(sub, "after.x", "x", n, "QoS 1 with the seed dead")
    calls = c.host(2).agent("call", "--procedure", ECHO, "--count", 100)
    check(calls["ok"] == 100, f"node 2 calling node 6 with the seed dead: {calls}")
    t0 = time.time()
    c.host(7).start_node(bootstrap=c.host(4).address).wait_ready()
    figure("seed_loss.new_node_ready_s", f"{time.time() - t0:.2f}")
    calls7 = c.host(7).agent("call", "--procedure", ECHO, "--count", 100, "--window", 1)
    check(calls7["ok"] == 100, f"the new node 7 calling node 6: {calls7}")
    settle(c.host(7), "after.probe7")
    r7 = c.host(7).agent("pub", "--topic", "after.y", "--qos", 1, "--count", n, "--prefix", "y")
    check(r7["ok"] == n, f"QoS 1 from the new node 7: {r7}")
    assert_once(sub, "after.y", "y", n, "QoS 1 from the node that joined after the seed died")
    figure("seed_loss.new_node_rpc_p50_us", calls7.get("p50_us"))
    figure("seed_loss.new_node_first_call_us", calls7.get("max_us"))  # the DHT lookup and the dial


def wan(c):
    """Two nodes over a wide-area link made by udp_impair: 50 ms RTT, 3 ms jitter (reordering),
    2% loss and 1% duplication each way. QoS 1 arrives exactly once; a call takes one RTT."""
    c.host(1).start_node(echo=[ECHO], extra=("--dht", "off"))
    c.host(1).wait_ready()
    proxy, out = c.proxy(2, 5433, c.host(1).address, "--delay-ms", 25, "--jitter-ms", 3, "--loss", 2, "--duplicate", 1)
    c.host(2).start_node(bootstrap=f"{c.host(2).ip}:5433", extra=("--dht", "off"))
    c.host(2).wait_ready()
    sub = c.host(1).subscribe("wan.#", "sub1")
    settle(c.host(2), "wan.probe")
    n = 20000
    pub = c.host(2).agent("pub", "--topic", "wan.x", "--qos", 1, "--count", n, "--window", 1024, "--prefix", "w")
    check(pub["ok"] == n, f"QoS 1 over the impaired link: {pub}")
    assert_once(sub, "wan.x", "w", n, "QoS 1 over 50 ms RTT, 2% loss, 1% duplication", timeout=60)
    figure("wan.qos1_msgs_per_s", f"{n / pub['seconds']:.0f}")
    calls = c.host(2).agent("call", "--procedure", ECHO, "--count", 200, "--window", 1)
    check(calls["ok"] == 200, f"calls over the impaired link: {calls}")
    figure("wan.rpc_p50_us", calls["p50_us"])
    figure("wan.rpc_p99_us", calls["p99_us"])
    check(calls["p50_us"] >= 50000, "a call took less than the link's round trip: the proxy was bypassed")
    stats = stop_proxy(proxy, out)
    figure("wan.proxy", stats)
    check(stats.get("dropped_loss", 0) > 0 and stats.get("duplicated", 0) > 0, f"the proxy impaired nothing: {stats}")


SCENARIOS = {
    "discovery": (6, discovery),
    "failover": (6, failover),
    "partition": (6, partition),
    "loss": (6, loss),
    "bandwidth": (6, bandwidth),
    "seed_loss": (7, seed_loss),
    "wan": (2, wan),
}


WATCHDOG_S = 200  # below CTest's TIMEOUT (240 s): the harness tears down and prints logs itself


def _watchdog(signum, frame):
    raise HarnessError(f"scenario watchdog: still running after {WATCHDOG_S} s")


def _terminated(signum, frame):
    raise SystemExit(f"terminated by signal {signum}")  # unwinds through the teardown


def main():
    name, bin_dir = sys.argv[1], sys.argv[2]
    hosts, run = SCENARIOS[name]
    signal.signal(signal.SIGALRM, _watchdog)
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGHUP, _terminated)
    signal.alarm(WATCHDOG_S)
    t0 = time.time()
    try:
        with Cluster(hosts, bin_dir) as c:
            try:
                run(c)
            finally:
                c.collect_metrics("end")
    except (AssertionError, HarnessError) as e:
        traceback.print_exc()
        print(f"FAILED {name}: {e}")
        return 1
    print(f"PASSED {name} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
