"""Real nodes (macula_node_*) on 127.0.0.1 with ephemeral ports, plain HTTP off."""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import macula
from conftest import Inbox, wait_for


def until_ok(fn, exceptions, timeout: float = 15.0):  # noqa: ANN001, ANN201
    """Retries ``fn`` while it raises one of ``exceptions`` (discovery takes a moment)."""
    result: list = []

    def attempt() -> bool:
        try:
            result.append(fn())
            return True
        except exceptions:
            return False

    assert wait_for(attempt, timeout, 0.05), f"still failing after {timeout} s"
    return result[0]


@pytest.fixture
def pair() -> Iterator[Tuple[macula.Node, macula.Node]]:
    with macula.Node(listen="127.0.0.1:0", http_listen="", realm="python.real") as a:
        with macula.Node(listen="127.0.0.1:0", http_listen="", realm="python.real", bootstrap=[a.address]) as b:
            yield a, b


def test_two_nodes_pubsub_and_rpc(pair: Tuple[macula.Node, macula.Node], inbox: Inbox) -> None:
    a, b = pair
    assert a.started and b.started
    assert re.fullmatch(r"[0-9a-f]{64}", a.id) and a.id != b.id
    assert re.fullmatch(r"127\.0\.0\.1:\d+", a.address) and a.address != b.address
    with b.subscribe("sensors.#", inbox), b.advertise("svc.echo", lambda args: args):
        assert until_ok(lambda: a.call("svc.echo", b"over quic", timeout=2), macula.NoProviderError) == b"over quic"
        until_ok(lambda: a.publish("sensors.kitchen.temp", b"21.5", qos=1), macula.NoSubscribersError)
        assert inbox.wait(1)
        assert inbox.items[0].payload == b"21.5" and inbox.items[0].publisher == a.id


def test_connect_and_metrics() -> None:
    with macula.Node(http_listen="", realm="python.connect") as a, \
         macula.Node(http_listen="", realm="python.connect") as b:
        b.connect(a.address)
        with a.advertise("svc.ping", lambda args: b"pong"):
            assert until_ok(lambda: b.call("svc.ping", timeout=2), macula.NoProviderError) == b"pong"
        text = a.metrics()
        assert "macula_" in text
        assert re.search(r"^# (HELP|TYPE) macula_", text, re.M)
        with pytest.raises(macula.MaculaError):
            b.connect("not an address")


def test_log_callback_receives_events() -> None:
    events: List[tuple] = []
    lock = threading.Lock()

    def log(level: macula.LogLevel, component: str, message: str) -> None:
        with lock:
            events.append((level, component, message))

    with macula.Node(http_listen="", realm="python.log", log=log, log_level="debug") as a:
        with macula.Node(http_listen="", realm="python.log", bootstrap=[a.address]):
            assert wait_for(lambda: any(c == "link" for _, c, _m in events))
    assert any(c == "node" and "started" in m for _, c, m in events)
    assert all(isinstance(lv, macula.LogLevel) for lv, _, _ in events)
    assert macula._callbacks.live_count() == 0  # the sink is released with its node


def test_log_callback_exception_does_not_break_the_node(caplog: pytest.LogCaptureFixture) -> None:
    def bad_log(level: macula.LogLevel, component: str, message: str) -> None:
        raise RuntimeError("log sink failed")

    with macula.Node(http_listen="", log=bad_log) as a:
        assert a.id
    assert any("log sink failed" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


def test_log_callback_may_not_call_back_into_the_library() -> None:
    refused: List[bool] = []
    holder: dict = {}

    def log(level: macula.LogLevel, component: str, message: str) -> None:
        node = holder.get("node")
        if node is not None:
            try:
                node.metrics()
            except macula.WouldDeadlockError:
                refused.append(True)

    with macula.Node(http_listen="", realm="python.log2", log=log) as a:
        holder["node"] = a
        with macula.Node(http_listen="", realm="python.log2", bootstrap=[a.address]):
            assert wait_for(lambda: refused)
        holder.clear()


def test_logging_sink_forwards_to_logging(caplog: pytest.LogCaptureFixture) -> None:
    import logging
    with caplog.at_level(logging.INFO, logger="macula.node"):
        with macula.Node(http_listen="", log=macula.logging_sink()):
            pass
    assert any(r.name == "macula.node" and "started" in r.getMessage() for r in caplog.records)


def test_realm_secret() -> None:
    with macula.Node(http_listen="", realm="python.vault", realm_secret="s3cret") as a, \
         macula.Node(http_listen="", realm="python.vault", realm_secret="s3cret", bootstrap=[a.address]) as b:
        with a.advertise("vault.get", lambda args: b"gold"):
            assert until_ok(lambda: b.call("vault.get", timeout=2), macula.NoProviderError) == b"gold"


def test_options_are_validated() -> None:
    with pytest.raises(macula.OptionsInvalidError):
        macula.Node(http_listen="", dht_record_ttl_s=5, start=True)
    with pytest.raises(macula.OptionsInvalidError):
        macula.Node(http_listen="", listen="0.0.0.0:0", start=True)  # needs advertise_address
    with macula.Node(http_listen="", listen="0.0.0.0:0", advertise_address="127.0.0.1:1") as n:
        assert n.started
    with pytest.raises(ValueError):
        macula.Node(log_level="loud")
    with pytest.raises(ValueError):
        macula.Node(client_access="sometimes")
    with pytest.raises(macula.InvalidArgumentError):
        macula.Node(client_access=7)  # out of range: refused by macula_node_new
    with pytest.raises(TypeError):
        macula.Node(log="not callable")  # type: ignore[arg-type]
    n = macula.Node(http_listen="", leaf=True, dht=True, worker_threads=1, io_threads=1, rpc_timeout_ms=1000,
                    client_access=macula.ClientAccess.CLOSED, dht_record_ttl_s=60)
    with n:
        assert n.started
    assert n.closed


@pytest.mark.parametrize("options, error, named", [
    ({"dht_record_ttl_s": 5}, macula.OptionsInvalidError, "dht_record_ttl 5 s: must be 30 s to 1 day"),
    ({"listen": "0.0.0.0:0"}, macula.OptionsInvalidError, "needs advertise_address"),
    ({"advertise_address": "0.0.0.0:7000"}, macula.OptionsInvalidError, "advertise_address 0.0.0.0:7000"),
    ({"listen": "localhost"}, macula.AddressInvalidError, "listen localhost"),
    ({"realm_secret": "s3cret", "client_access": "open"}, macula.OptionsInvalidError, "client_access open"),
    ({"client_token": "t", "client_access": "closed"}, macula.OptionsInvalidError, "client_token is set"),
    ({"key_file": "/nonexistent.key"}, macula.IdentityInvalidError, "key_file is set without cert_file"),
    ({"key_file": "/nonexistent.key", "cert_file": "/nonexistent.crt"}, macula.IdentityInvalidError,
     "key_file /nonexistent.key: cannot be read"),
    ({"bootstrap": ["nowhere"]}, macula.AddressInvalidError, "bootstrap nowhere"),
])
def test_refused_start_names_the_option(options: dict, error: type, named: str) -> None:
    # The status alone says "invalid options"; the message has to say which one and why.
    with pytest.raises(error) as e:
        macula.Node(http_listen="", start=True, **options)
    assert named in e.value.message
    assert named in str(e.value)


def test_not_started_node() -> None:
    with macula.Node(http_listen="", start=False) as n:
        pass  # __enter__ started it
    n = macula.Node(http_listen="")
    try:
        assert not n.started
        with pytest.raises(macula.NotStartedError):
            _ = n.id
        with pytest.raises(macula.NotStartedError):
            n.publish("a.b", b"x")
        with pytest.raises(macula.NotStartedError):
            n.call("a.b")
        n.start()
        assert n.id
        n.stop()
        n.stop()  # idempotent
    finally:
        n.close()
    with pytest.raises(macula.ClosedError):
        n.start()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_key_and_cert_give_a_stable_id(tmp_path: Path) -> None:
    key, cert = tmp_path / "node.key", tmp_path / "node.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=node", "-days", "2"],
                   check=True, capture_output=True)
    ids = []
    for _ in range(2):
        with macula.Node(http_listen="", key_file=str(key), cert_file=str(cert)) as n:
            ids.append(n.id)
    assert ids[0] == ids[1]
    with pytest.raises(macula.IdentityInvalidError):
        macula.Node(http_listen="", key_file=str(tmp_path / "missing.key"), cert_file=str(cert), start=True)


def test_http_listen_on_an_ephemeral_port() -> None:
    with macula.Node(http_listen="127.0.0.1:0") as n:
        assert "macula_" in n.metrics()
