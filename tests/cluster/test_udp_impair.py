#!/usr/bin/env python3
"""Behaviour of macula_udp_impair, the userspace UDP impairment proxy of the cluster harness.

    python3 test_udp_impair.py /path/to/macula_udp_impair

Loopback only (127.0.0.1), Python stdlib only, about 5 s. Each case starts the proxy in
front of a UDP echo server or sink (a thread here), drives datagrams through it, stops it with
SIGTERM and checks what arrived against the proxy's final JSON counters. Timing is asserted as
a lower bound only (the delay is behaviour; how fast a loaded machine is, is not).

Senders pace themselves (bursts of 50, then 5 ms): the counters must agree exactly with what
arrived, so no datagram may be lost in a kernel socket buffer instead of by the proxy.
"""
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

PROXY = sys.argv[1] if len(sys.argv) > 1 else ""
HOST = "127.0.0.1"
RCVBUF = 4 << 20
_procs = []


def udp_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    s.bind((HOST, 0))
    return s


class Peer(threading.Thread):
    """Receives on its own socket, timestamps each datagram and, as an echo server, sends it back."""

    def __init__(self, echo):
        super().__init__(daemon=True)
        self.sock = udp_socket()
        self.sock.settimeout(0.05)
        self.echo = echo
        self.got = []  # (monotonic time, payload, source address)
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.start()

    @property
    def addr(self):
        return self.sock.getsockname()

    def run(self):
        while not self.halt.is_set():
            try:
                data, src = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            now = time.monotonic()
            with self.lock:
                self.got.append((now, data, src))
            if self.echo:
                self.sock.sendto(data, src)

    def count(self):
        with self.lock:
            return len(self.got)

    def received(self):
        with self.lock:
            return list(self.got)

    def close(self):
        self.halt.set()
        self.join(2)
        self.sock.close()


class Proxy:
    def __init__(self, upstream, *flags):
        args = [PROXY, "--listen", f"{HOST}:0", "--upstream", f"{upstream[0]}:{upstream[1]}", *flags]
        # Unbuffered, so select() on the pipe never misses a line already read into a buffer.
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        _procs.append(self.proc)
        ready, _, _ = select.select([self.proc.stdout], [], [], 5)
        assert ready, f"no start line from {args}"
        line = self.proc.stdout.readline().decode()
        words = line.split()
        assert line.endswith("\n") and len(words) == 6 and words[:3] == ["udp_impair", "listening", "on"] \
            and words[4] == "upstream" and words[5] == f"{upstream[0]}:{upstream[1]}", f"start line: {line!r}"
        host, port = words[3].rsplit(":", 1)
        assert host == HOST and int(port) > 0, line
        self.addr = (host, int(port))

    def readline(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().decode() if ready else ""

    def stop(self, sig=signal.SIGTERM):
        """Signals the proxy, checks it exits 0 with a final JSON line, returns that line parsed."""
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=5)
        assert self.proc.returncode == 0, f"exit {self.proc.returncode}, stderr {err.decode()!r}"
        lines = out.decode().splitlines()
        assert lines, "no stats line on exit"
        stats = json.loads(lines[-1])
        assert stats["final"] is True, lines[-1]
        check_accounting(stats)
        return stats


def check_accounting(stats):
    """Every datagram the proxy read, or made by duplication, is accounted for exactly once."""
    for name, part in (("total", stats), ("to_upstream", stats["to_upstream"]), ("to_client", stats["to_client"])):
        outcomes = (part["forwarded"] + part["dropped_loss"] + part["dropped_queue_full"] + part["dropped_no_mapping"]
                    + part["dropped_send_error"] + part["queued"])
        assert part["received"] + part["duplicated"] == outcomes, f"{name}: {part}"
    for key in ("received", "forwarded", "dropped_loss", "duplicated", "dropped_queue_full", "dropped_no_mapping"):
        assert stats[key] == stats["to_upstream"][key] + stats["to_client"][key], key


def client():
    s = udp_socket()
    s.setblocking(True)
    return s


def send_paced(sock, dest, payloads):
    """Bursts of 50 then 5 ms: fast, yet never more than a socket buffer holds."""
    times = []
    for i, p in enumerate(payloads):
        times.append(time.monotonic())
        sock.sendto(p, dest)
        if i % 50 == 49:
            time.sleep(0.005)
    return times


def wait_quiet(peers, quiet=0.3, timeout=5.0):
    """Waits until none of `peers` has received anything for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        now_counts = [p.count() for p in peers]
        if now_counts != last:
            last, since = now_counts, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.02)


def payload(tag, i, size):
    head = f"{tag}:{i:06d}:".encode()
    return head + os.urandom(max(0, size - len(head)))


def test_delay():
    echo, back = Peer(echo=True), Peer(echo=False)
    proxy = Proxy(echo.addr, "--delay-ms", "25")
    try:
        sent = [payload("d", i, 20 + (i * 37) % 1200) for i in range(200)]
        # From the collector's socket, so replies arrive where they are timestamped.
        times = send_paced(back.sock, proxy.addr, sent)
        deadline = time.monotonic() + 5
        while back.count() < len(sent) and time.monotonic() < deadline:
            time.sleep(0.01)
        got = back.received()
        stats = proxy.stop()
    finally:
        echo.close(), back.close()
    assert len(got) == len(sent), f"{len(got)} of {len(sent)} came back"
    # Without jitter the proxy keeps the order, and loopback does too.
    assert [data for _, data, _ in got] == sent, "payloads changed or reordered"
    rtts = [t - times[i] for i, (t, _, _) in enumerate(got)]
    assert min(rtts) >= 0.050, f"a datagram came back after {min(rtts) * 1000:.2f} ms, under 2 x 25 ms"
    assert stats["to_upstream"]["forwarded"] == 200 and stats["to_client"]["forwarded"] == 200, stats
    print(f"delay: 200/200 back intact and in order, RTT min {min(rtts) * 1000:.1f} ms "
          f"max {max(rtts) * 1000:.1f} ms (>= 50 ms)")


def test_jitter():
    echo, back = Peer(echo=True), Peer(echo=False)
    proxy = Proxy(echo.addr, "--delay-ms", "20", "--jitter-ms", "10")
    try:
        sent = [payload("j", i, 100) for i in range(200)]
        times = send_paced(back.sock, proxy.addr, sent)
        deadline = time.monotonic() + 5
        while back.count() < len(sent) and time.monotonic() < deadline:
            time.sleep(0.01)
        got = back.received()
        proxy.stop()
    finally:
        echo.close(), back.close()
    assert sorted(data for _, data, _ in got) == sorted(sent), f"{len(got)} of {len(sent)} came back, or changed"
    sent_at = {p: t for p, t in zip(sent, times)}
    rtts = [t - sent_at[data] for t, data, _ in got]
    assert min(rtts) >= 0.020, f"a datagram came back after {min(rtts) * 1000:.2f} ms, under 2 x (20 - 10) ms"
    # Bursts of 50 within well under a millisecond, each held 10..30 ms: jitter reorders them.
    assert [data for _, data, _ in got] != sent, "jitter of 10 ms reordered nothing"
    print(f"jitter: 200/200 back, reordered, RTT {min(rtts) * 1000:.1f}..{max(rtts) * 1000:.1f} ms (>= 20 ms)")


def run_loss(seed):
    sink = Peer(echo=False)
    proxy = Proxy(sink.addr, "--loss", "20", "--seed", str(seed))
    sock = client()
    try:
        send_paced(sock, proxy.addr, [payload("l", i, 100) for i in range(2000)])
        wait_quiet([sink])
        stats = proxy.stop()
        wait_quiet([sink])  # what it forwarded just before it stopped is read too
        arrived = sorted(int(data.split(b":")[1]) for _, data, _ in sink.received())
    finally:
        sink.close(), sock.close()
    return stats, arrived


def test_loss():
    stats, arrived = run_loss(7)
    up = stats["to_upstream"]
    assert up["received"] == 2000, f"the proxy read {up['received']} of 2000 (kernel drops before it): {up}"
    assert len(arrived) == up["forwarded"], f"{len(arrived)} arrived, proxy says {up['forwarded']} forwarded"
    assert up["received"] == up["forwarded"] + up["dropped_loss"], up
    assert len(set(arrived)) == len(arrived), "a datagram arrived twice without --duplicate"
    fraction = up["dropped_loss"] / 2000
    assert 0.10 <= fraction <= 0.30, f"dropped {fraction:.1%} with --loss 20"
    # Seeded: the same seed drops the same datagrams, another seed others.
    _, again = run_loss(7)
    assert again == arrived, "--seed 7 twice dropped different datagrams"
    _, other = run_loss(8)
    assert other != arrived, "--seed 8 dropped the same datagrams as --seed 7"
    print(f"loss: {up['dropped_loss']}/2000 dropped ({fraction:.1%}), {len(arrived)} arrived = forwarded; "
          "same seed, same drops")


def test_duplicate():
    echo, back = Peer(echo=True), Peer(echo=False)
    proxy = Proxy(echo.addr, "--duplicate", "50")
    n = 500
    try:
        send_paced(back.sock, proxy.addr, [payload("u", i, 200) for i in range(n)])
        wait_quiet([echo, back])
        stats = proxy.stop()
        wait_quiet([echo, back])
        at_echo = [data for _, data, _ in echo.received()]
        at_client = [data for _, data, _ in back.received()]
    finally:
        echo.close(), back.close()
    up, down = stats["to_upstream"], stats["to_client"]
    assert len(set(at_echo)) == n, f"{len(set(at_echo))} of {n} distinct datagrams reached the echo server"
    assert len(at_echo) - n == up["duplicated"] > 0, f"{len(at_echo) - n} extra at the echo server, stats {up}"
    # Every copy the echo server got was echoed: the way back duplicates those again.
    assert down["received"] == len(at_echo), down
    assert len(at_client) - len(at_echo) == down["duplicated"] > 0, \
        f"{len(at_client) - len(at_echo)} extra at the client, stats {down}"
    assert set(at_client) == set(at_echo), "payloads changed"
    print(f"duplicate: {up['duplicated']} extra copies upstream, {down['duplicated']} back, as counted")


def test_mapping():
    echo = Peer(echo=True)
    a, b = Peer(echo=False), Peer(echo=False)
    proxy = Proxy(echo.addr)
    try:
        for i in range(50):
            a.sock.sendto(f"A:{i}".encode(), proxy.addr)
            b.sock.sendto(f"B:{i}".encode(), proxy.addr)
        wait_quiet([a, b])
        stats = proxy.stop()
        got_a = sorted(data.decode() for _, data, _ in a.received())
        got_b = sorted(data.decode() for _, data, _ in b.received())
        upstream_peers = {src for _, _, src in echo.received()}
    finally:
        echo.close(), a.close(), b.close()
    assert got_a == sorted(f"A:{i}" for i in range(50)), f"client A got {len(got_a)}: {got_a[:5]}..."
    assert got_b == sorted(f"B:{i}" for i in range(50)), f"client B got {len(got_b)}: {got_b[:5]}..."
    assert len(upstream_peers) == 2 and proxy.addr not in upstream_peers, \
        f"the echo server saw {upstream_peers}, expected one socket per client"
    assert stats["mappings"] == 2 and stats["mappings_created"] == 2, stats
    print("mapping: two clients, each got exactly its own 50 replies through its own upstream socket")


def test_mapping_bounds():
    echo = Peer(echo=True)
    a, b = Peer(echo=False), Peer(echo=False)
    proxy = Proxy(echo.addr, "--max-mappings", "1", "--idle-timeout-ms", "200")
    try:
        a.sock.sendto(b"A:first", proxy.addr)
        wait_quiet([a], quiet=0.1)
        b.sock.sendto(b"B:refused", proxy.addr)  # the table is full: dropped and counted
        time.sleep(0.7)  # A's mapping is idle longer than 200 ms: removed, the slot frees up
        b.sock.sendto(b"B:second", proxy.addr)
        wait_quiet([a, b], quiet=0.1)
        stats = proxy.stop()
        got_a = [data for _, data, _ in a.received()]
        got_b = [data for _, data, _ in b.received()]
    finally:
        echo.close(), a.close(), b.close()
    assert got_a == [b"A:first"] and got_b == [b"B:second"], (got_a, got_b)
    assert stats["to_upstream"]["dropped_no_mapping"] == 1, stats
    assert stats["mappings_created"] == 2 and stats["mappings_reaped"] >= 1 and stats["mappings"] <= 1, stats
    print("mapping bounds: a second client dropped while the table was full, served once the idle one was reaped")


def test_bad_flags():
    base = [PROXY, "--listen", f"{HOST}:0", "--upstream", f"{HOST}:9"]
    cases = [
        (base + ["--delay-ms", "abc"], "--delay-ms"),
        (base + ["--bogus"], "--bogus"),
        (base + ["--loss", "101"], "--loss"),
        (base + ["--jitter-ms"], "--jitter-ms"),
        ([PROXY, "--listen", HOST, "--upstream", f"{HOST}:9"], "--listen"),
        ([PROXY, "--listen", f"{HOST}:0"], "--upstream"),
    ]
    for args, flag in cases:
        r = subprocess.run(args, capture_output=True, timeout=5)
        err = r.stderr.decode()
        assert r.returncode == 2, f"{args[1:]}: exit {r.returncode}"
        assert flag in err.splitlines()[0], f"{args[1:]}: stderr does not name {flag}: {err!r}"
        assert r.stdout == b"", f"{args[1:]}: printed {r.stdout!r} to stdout"
    print(f"bad flags: {len(cases)} cases exit 2 naming the flag")


def test_signals():
    sink = Peer(echo=False)
    proxy = Proxy(sink.addr, "--stats-interval-ms", "100")
    try:
        line = proxy.readline(3)
        periodic = json.loads(line)
        assert periodic["final"] is False, line
        check_accounting(periodic)
        proxy.stop(signal.SIGINT)
        proxy = Proxy(sink.addr)
        proxy.stop(signal.SIGTERM)
    finally:
        sink.close()
    print("signals: periodic stats line; SIGINT and SIGTERM exit 0 with the final JSON line")


def main():
    if not PROXY or not os.access(PROXY, os.X_OK):
        print(f"usage: {sys.argv[0]} /path/to/macula_udp_impair", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        for case in (test_bad_flags, test_signals, test_delay, test_jitter, test_loss, test_duplicate, test_mapping,
                     test_mapping_bounds):
            case()
    finally:
        for p in _procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    print(f"all passed in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
