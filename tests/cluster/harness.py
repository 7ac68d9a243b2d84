"""A mesh of `macula node` processes on their own addresses, on this one machine.

Each host is a network namespace with one interface (eth0) whose veth peer sits on a bridge in
a switch namespace of its own, so no test traffic ever touches the machine's own namespace or
its interfaces. Addresses come from 198.18.0.0/15 (RFC 2544's benchmarking range), used only
inside these namespaces. Every name carries the harness's process id, so two runs never collide,
and namespaces left behind by a run that was killed are removed by the next one.

Impairments:
  loss(host, pct)           nft: `numgen random` drops on the host's eth0, inbound
  partition(hosts)          nft: the hosts' eth0 drops everything, both ways
  bandwidth(host, rate)     tc tbf on both ends of the host's veth (egress and ingress)
  proxy(host, ...)          tests/cluster/udp_impair.cpp in the host: delay, jitter, duplication

Needs root (CI runs as root), iproute2, nftables, curl, openssl. Logs, keys and each node's
final /metrics go to a temporary folder, removed after a passing run unless MACULA_CLUSTER_KEEP
is set, kept (and the logs printed) after a failing one. Where a namespace cannot be
made, the harness raises HarnessError: a scenario then fails, it never passes silently.
"""

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

SUBNET = "198.18.0"
PORT = 4433
HTTP_PORT = 8080
REALM = "cluster.test"


class HarnessError(Exception):
    pass


def sh(*args, check=True, timeout=30, ns=None, input=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL when the harness dies, however it dies (CTest's
    timeout kills it with SIGKILL, which no handler sees). `ip netns exec` execs the command,
    and the setting survives the exec."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(args, **kw):
    return subprocess.Popen(args, preexec_fn=_die_with_parent, **kw)


def remove_orphans():
    """Namespaces of earlier runs whose harness process is gone, and anything still running
    in them (deleting a namespace does not stop its processes)."""
    r = sh("ip", "netns", "list", check=False)
    for line in r.stdout.splitlines():
        m = re.match(r"^(mc(\d+)(?:sw|h\d+))\b", line)
        if m and not os.path.exists(f"/proc/{m.group(2)}"):
            for pid in sh("ip", "netns", "pids", m.group(1), check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            sh("ip", "netns", "del", m.group(1), check=False)


class Host:
    def __init__(self, cluster, index):
        self.cluster = cluster
        self.index = index
        self.ns = f"{cluster.prefix}h{index}"
        self.ip = f"{SUBNET}.{index}"
        self.address = f"{self.ip}:{PORT}"
        self.http = f"{self.ip}:{HTTP_PORT}"
        self.node = None  # the running `macula node` process
        self.node_args = None
        self.key = os.path.join(cluster.dir, f"h{index}.key")
        self.cert = os.path.join(cluster.dir, f"h{index}.crt")
        self.starts = 0

    def log_path(self, what):
        return os.path.join(self.cluster.dir, f"h{self.index}.{what}")

    # ---- the node ------------------------------------------------------------------------
    def start_node(self, bootstrap=None, echo=(), extra=()):
        """Starts `macula node` with this host's key (the same node id on every start)."""
        if not os.path.exists(self.key):
            sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-keyout", self.key, "-out", self.cert, "-subj", f"/CN=h{self.index}", "-days", "2")
        # Any address, announcing the host's own: what a node in a container or on a multi-homed
        # host runs with.
        args = [self.cluster.macula, "node", "--listen", f"0.0.0.0:{PORT}", "--advertise", self.address,
                "--http", self.http, "--realm", REALM,
                "--key", self.key, "--cert", self.cert]
        for b in ([bootstrap] if isinstance(bootstrap, str) else bootstrap or []):
            args += ["--bootstrap", b]
        for p in echo:
            args += ["--echo", p]
        args += [str(a) for a in extra]
        self.node_args = args
        self.starts += 1
        out = open(self.log_path(f"node{self.starts}.log"), "w")
        self.node = spawn(["ip", "netns", "exec", self.ns] + args, stdout=out, stderr=subprocess.STDOUT)
        self.cluster.processes.append(self.node)
        return self

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.node.poll() is not None:
                raise HarnessError(f"node h{self.index} exited {self.node.returncode}: {self.tail()}")
            r = self.curl("/ready", check=False)
            if r.returncode == 0 and r.stdout.startswith("ok"):
                return
            time.sleep(0.1)
        raise HarnessError(f"node h{self.index} not ready within {timeout}s: {self.curl('/ready', check=False).stdout!r}")

    def node_id(self):
        with open(self.log_path(f"node{self.starts}.log")) as f:
            for line in f:
                m = re.match(r"node ([0-9a-f]+) listening", line)
                if m:
                    return m.group(1)
        return None

    def kill(self, sig=signal.SIGKILL):
        # `ip netns exec` execs the node, so the pid is the node's own.
        if self.node and self.node.poll() is None:
            self.node.send_signal(sig)
            self.node.wait(timeout=10)

    def curl(self, path, check=True):
        return sh("curl", "-s", "--max-time", "2", f"http://{self.http}{path}", ns=self.ns, check=check)

    def metrics(self):
        """{'name{labels}': value} of the node's /metrics."""
        out = {}
        for line in self.curl("/metrics").stdout.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                try:
                    out[key] = float(value)
                except ValueError:
                    pass
        return out

    def metric(self, name, default=0.0, metrics=None):
        """Sum over every label set of `name`."""
        m = metrics if metrics is not None else self.metrics()
        values = [v for k, v in m.items() if k == name or k.startswith(name + "{")]
        return sum(values) if values else default

    def tail(self, lines=30):
        try:
            with open(self.log_path(f"node{self.starts}.log")) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    # ---- applications on this host -------------------------------------------------------
    def subscribe(self, pattern, name):
        """A `macula sub` leaf on this host, printing 'topic payload' lines to a file."""
        out = self.log_path(f"{name}.out")
        err = self.log_path(f"{name}.err")
        p = spawn(["ip", "netns", "exec", self.ns, self.cluster.macula, "sub", "--node", self.address,
                              "--realm", REALM, pattern], stdout=open(out, "w"), stderr=open(err, "w"))
        self.cluster.processes.append(p)
        deadline = time.time() + 15
        while time.time() < deadline:
            if "subscribed" in open(err).read():
                return Subscription(p, out, err)
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise HarnessError(f"sub {pattern} on h{self.index} did not link: {open(err).read()}")

    def agent(self, *args, wait=True, timeout=150):
        """macula_mesh_agent on this host (a leaf linked to this host's node); its JSON result."""
        out = self.log_path(f"agent{len(self.cluster.processes)}.out")
        p = spawn(["ip", "netns", "exec", self.ns, self.cluster.agent, args[0], "--node", self.address,
                              "--realm", REALM] + [str(a) for a in args[1:]],
                             stdout=subprocess.PIPE, stderr=open(out, "w"), text=True)
        self.cluster.processes.append(p)
        job = AgentJob(p, out, f"h{self.index} agent {' '.join(map(str, args))}")
        return job.result(timeout) if wait else job


class AgentJob:
    def __init__(self, process, err, what):
        self.process, self.err, self.what = process, err, what

    def result(self, timeout=150):
        try:
            stdout, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise HarnessError(f"{self.what}: did not finish within {timeout}s")
        if self.process.returncode != 0:
            raise HarnessError(f"{self.what}: exit {self.process.returncode}: {open(self.err).read()}")
        return json.loads(stdout.strip().splitlines()[-1])


class Subscription:
    def __init__(self, process, out, err):
        self.process, self.out, self.err = process, out, err

    def lines(self):
        with open(self.out) as f:
            return [l.rstrip("\n") for l in f if l.strip()]

    def counts(self, topic):
        """payload -> times received, for one topic."""
        c = {}
        for l in self.lines():
            t, _, payload = l.partition(" ")
            if t == topic:
                c[payload] = c.get(payload, 0) + 1
        return c

    def wait_for(self, topic, n, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.counts(topic)) < n:
            time.sleep(0.1)
        return self.counts(topic)


def exactly_once(counts, prefix, n):
    """(missing, duplicated) payloads among prefix0..prefix{n-1}."""
    missing = [i for i in range(n) if counts.get(f"{prefix}{i}", 0) == 0]
    dup = [i for i in range(n) if counts.get(f"{prefix}{i}", 0) > 1]
    return missing, dup


class Cluster:
    """N hosts on one bridge. Use as a context manager: teardown runs even when the scenario fails."""

    def __init__(self, hosts, bin_dir, keep_dir=None):
        self.prefix = f"mc{os.getpid()}"
        self.macula = os.path.join(bin_dir, "macula")
        self.agent = os.path.join(bin_dir, "macula_mesh_agent")
        self.proxy_bin = os.path.join(bin_dir, "macula_udp_impair")
        self.dir = keep_dir or tempfile.mkdtemp(prefix="macula-cluster-")
        self.processes = []
        self.switch = f"{self.prefix}sw"
        self.hosts = [Host(self, i) for i in range(1, hosts + 1)]
        self.namespaces = []

    def __enter__(self):
        if os.geteuid() != 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise HarnessError("the cluster harness needs root: it creates network namespaces")
        for tool in ("ip", "nft", "tc", "curl", "openssl"):
            if not shutil.which(tool):
                raise HarnessError(f"{tool} is not installed (cmake/install-deps.sh installs it)")
        try:
            remove_orphans()
            self._build()
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(self, *exc):
        self._teardown(failed=exc[0] is not None)
        return False

    def host(self, i):
        return self.hosts[i - 1]

    def _netns(self, name):
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "link", "set", "lo", "up", ns=name)

    def _build(self):
        self._netns(self.switch)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=self.switch)
        sh("ip", "link", "set", "br0", "up", ns=self.switch)
        for h in self.hosts:
            self._netns(h.ns)
            # Created inside the switch namespace, so no interface ever appears in the machine's own.
            sh("ip", "link", "add", f"p{h.index}", "type", "veth", "peer", "name", "eth0", "netns", h.ns, ns=self.switch)
            sh("ip", "link", "set", f"p{h.index}", "master", "br0", "up", ns=self.switch)
            sh("ip", "addr", "add", f"{h.ip}/16", "dev", "eth0", ns=h.ns)
            sh("ip", "link", "set", "eth0", "up", ns=h.ns)

    def _teardown(self, failed=False):
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 3
        for p in self.processes:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces = []
        if not failed and not os.environ.get("MACULA_CLUSTER_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        if failed:
            print(f"--- logs in {self.dir}")
            for name in sorted(os.listdir(self.dir)):
                if name.endswith((".log", ".err")) or (name.startswith(("agent", "proxy")) and name.endswith(".out")):
                    with open(os.path.join(self.dir, name)) as f:
                        text = f.read()
                    print(f"--- {name} (last 40 lines)\n" + "".join(text.splitlines(True)[-40:]))

    # ---- starting the mesh ---------------------------------------------------------------
    def start(self, hosts=None, echo=None, extra=()):
        """Host 1 is the seed; every other node knows only the seed's address."""
        echo = echo or {}
        hosts = hosts or [h.index for h in self.hosts]
        for i in hosts:
            boot = None if i == 1 else self.host(1).address
            self.host(i).start_node(bootstrap=boot, echo=echo.get(i, ()), extra=extra)
        for i in hosts:
            self.host(i).wait_ready()

    def collect_metrics(self, label):
        """Every running node's /metrics into the run's folder."""
        for h in self.hosts:
            if h.node and h.node.poll() is None:
                r = h.curl("/metrics", check=False)
                with open(h.log_path(f"{label}.metrics"), "w") as f:
                    f.write(r.stdout)

    # ---- impairments ---------------------------------------------------------------------
    def loss(self, i, pct):
        """Drops pct% of the packets arriving at host i from the network."""
        h = self.host(i)
        rules = (f"table inet macula_loss {{\n chain in {{\n  type filter hook input priority 0; policy accept;\n"
                 f"  iifname \"eth0\" numgen random mod 100 < {pct} counter drop\n }}\n}}\n")
        sh("nft", "-f", "-", ns=h.ns, input=rules)

    def loss_dropped(self, i):
        """Packets the loss rule of host i dropped so far (proof that the impairment bit)."""
        r = sh("nft", "list", "table", "inet", "macula_loss", ns=self.host(i).ns, check=False)
        m = re.search(r"counter packets (\d+)", r.stdout)
        return int(m.group(1)) if m else 0

    def clear_loss(self, i):
        sh("nft", "delete", "table", "inet", "macula_loss", ns=self.host(i).ns, check=False)

    def partition(self, isolated, others=None):
        """Cuts the isolated hosts off from the others (default: from everyone), both ways."""
        others = others if others is not None else [h.index for h in self.hosts if h.index not in isolated]
        for a, b in ((isolated, others), (others, isolated)):
            addrs = ", ".join(self.host(j).ip for j in b)
            for i in a:
                rules = (f"table inet macula_partition {{\n chain in {{\n  type filter hook input priority 0; policy accept;\n"
                         f"  ip saddr {{ {addrs} }} drop\n }}\n"
                         f" chain out {{\n  type filter hook output priority 0; policy accept;\n"
                         f"  ip daddr {{ {addrs} }} drop\n }}\n}}\n")
                sh("nft", "-f", "-", ns=self.host(i).ns, input=rules)

    def heal(self):
        for h in self.hosts:
            sh("nft", "delete", "table", "inet", "macula_partition", ns=h.ns, check=False)

    def bandwidth(self, i, rate):
        """Caps host i's link at `rate` (tc syntax, e.g. '5mbit') in both directions."""
        h = self.host(i)
        tbf = ["tbf", "rate", rate, "burst", "16kb", "latency", "100ms"]
        sh("tc", "qdisc", "add", "dev", "eth0", "root", *tbf, ns=h.ns)
        sh("tc", "qdisc", "add", "dev", f"p{i}", "root", *tbf, ns=self.switch)

    def proxy(self, i, listen_port, upstream, *flags):
        """udp_impair on host i: listen on host i's address, forward to upstream ('ip:port')."""
        h = self.host(i)
        out = h.log_path(f"proxy{listen_port}.out")
        p = spawn(["ip", "netns", "exec", h.ns, self.proxy_bin, "--listen", f"{h.ip}:{listen_port}",
                              "--upstream", upstream] + [str(f) for f in flags], stdout=open(out, "w"),
                             stderr=subprocess.STDOUT)
        self.processes.append(p)
        deadline = time.time() + 5
        while time.time() < deadline and "listening" not in open(out).read():
            time.sleep(0.05)
        if "listening" not in open(out).read():
            raise HarnessError(f"udp_impair on h{i} did not start: {open(out).read()}")
        return p, out


def stop_proxy(p, out):
    """Stops a udp_impair process; its final statistics (JSON)."""
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=5)
    with open(out) as f:
        lines = [l for l in f if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def figure(name, value):
    """One measured figure, in a form the closing note and CI logs can grep."""
    print(f"FIGURE {name}: {value}", flush=True)
