"""Pub/sub on the in-process mesh."""
from __future__ import annotations

import array
import gc
import logging
import threading

import pytest

import macula
from conftest import Inbox, wait_for


def test_wildcard_delivery_and_message_fields(mesh: macula.Mesh, inbox: Inbox) -> None:
    a, b = mesh.nodes
    with b.subscribe("sensors.*.temp", inbox) as sub:
        mesh.settle()
        a.publish("sensors.kitchen.temp", b"21.5", qos=1)
        assert inbox.wait(1)
        m = inbox.items[0]
        assert isinstance(m, macula.Message)
        assert (m.topic, m.pattern, m.payload, m.qos) == ("sensors.kitchen.temp", "sensors.*.temp", b"21.5", 1)
        assert m.publisher == a.id and len(m.publisher) == 64
        assert m.sequence >= 1
        assert sub.dropped == 0
        assert repr(sub).startswith("<macula.Subscription")
    assert sub.closed


def test_bytes_like_payloads(mesh: macula.Mesh, inbox: Inbox) -> None:
    a, b = mesh.nodes
    sub = b.subscribe("bin.#", inbox)
    mesh.settle()
    payloads = [b"", bytearray(b"\x00\x01\xff"), memoryview(b"view"), array.array("B", [1, 2, 3]),
                memoryview(b"abcdef")[::2]]
    for p in payloads:
        a.publish("bin.x", p, qos=1)
    assert inbox.wait(len(payloads))
    assert sorted(m.payload for m in inbox.items) == sorted(bytes(p) for p in payloads)
    sub.close()


def test_str_payload_raises_type_error(mesh: macula.Mesh) -> None:
    a, _ = mesh.nodes
    for bad in ("21.5", 21.5, None, ["x"]):
        with pytest.raises(TypeError):
            a.publish("sensors.kitchen.temp", bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            a.publish_future("sensors.kitchen.temp", bad, qos=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        a.publish(b"topic", b"x")  # type: ignore[arg-type]


def test_invalid_names_and_arguments(mesh: macula.Mesh) -> None:
    a, _ = mesh.nodes
    with pytest.raises(macula.InvalidNameError):
        a.publish("bad..topic", b"x")
    with pytest.raises(macula.InvalidNameError):
        a.publish("wild.*", b"x")
    with pytest.raises(macula.InvalidNameError):
        a.subscribe("", print)
    with pytest.raises(macula.InvalidNameError):
        a.publish("nul\0topic", b"x")
    with pytest.raises(ValueError):
        a.publish("t.x", b"x", qos=2)
    with pytest.raises(TypeError):
        a.subscribe("t.x", "not callable")  # type: ignore[arg-type]
    with pytest.raises(macula.PayloadTooLargeError):
        a.publish("t.x", bytes(macula.MAX_PAYLOAD_BYTES + 1))


def test_qos1_without_subscribers(mesh: macula.Mesh) -> None:
    a, _ = mesh.nodes
    with pytest.raises(macula.NoSubscribersError):
        a.publish("nobody.listens", b"x", qos=1)
    a.publish("nobody.listens", b"x", qos=0)  # fire and forget: no error
    a.publish("nobody.listens", b"x", qos=1, wait=False)
    fut = a.publish_future("nobody.listens", b"x", qos=1)
    with pytest.raises(macula.NoSubscribersError):
        fut.result(10)


def test_closed_subscription_stops_delivery(mesh: macula.Mesh, inbox: Inbox) -> None:
    a, b = mesh.nodes
    sub = b.subscribe("stop.#", inbox)
    mesh.settle()
    a.publish("stop.now", b"1", qos=1)
    assert inbox.wait(1)
    sub.close()
    sub.close()  # idempotent
    with pytest.raises(macula.ClosedError):
        _ = sub.dropped
    n = len(inbox.items)
    a.publish("stop.now", b"2", qos=0)
    a.publish_future("stop.now", b"3", qos=1).exception(10)
    assert len(inbox.items) == n
    assert wait_for(lambda: macula._callbacks.live_count() == 0)


def test_dropping_the_reference_unsubscribes_without_crashing(mesh: macula.Mesh) -> None:
    """The documented rule: a Subscription keeps its callback alive while it is referenced and
    unsubscribes when garbage collected; messages then stop. Dropping it while messages are
    being delivered must never crash."""
    a, b = mesh.nodes
    counter = {"n": 0}
    lock = threading.Lock()

    def count(_m: macula.Message) -> None:
        with lock:
            counter["n"] += 1

    keep = b.subscribe("gc.#", lambda m: None)  # keeps the topic subscribed on b
    mesh.settle()
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            a.publish("gc.tick", b"x", qos=0)

    t = threading.Thread(target=flood)
    t.start()
    try:
        for _ in range(200):
            b.subscribe("gc.#", count)  # the result is dropped at once
            gc.collect() if _ % 50 == 0 else None
    finally:
        stop.set()
        t.join()
    gc.collect()
    before = counter["n"]
    a.publish("gc.tick", b"x", qos=1)
    assert counter["n"] == before  # every dropped subscription is gone
    keep.close()
    assert wait_for(lambda: macula._callbacks.live_count() == 0)


def test_callback_exception_is_logged_not_propagated(mesh: macula.Mesh, inbox: Inbox,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    a, b = mesh.nodes

    def boom(m: macula.Message) -> None:
        inbox(m)
        raise RuntimeError("boom in callback")

    with caplog.at_level(logging.ERROR, logger="macula"):
        with b.subscribe("boom.#", boom):
            mesh.settle()
            a.publish("boom.x", b"1", qos=1)
            a.publish("boom.x", b"2", qos=1)
            assert inbox.wait(2)
            assert wait_for(lambda: sum("boom in callback" in r.exc_text if r.exc_text else
                                        "boom in callback" in str(r.exc_info) for r in caplog.records) >= 2)


def test_subscription_can_close_itself_from_its_callback(mesh: macula.Mesh, inbox: Inbox) -> None:
    a, b = mesh.nodes
    holder: dict = {}

    def once(m: macula.Message) -> None:
        inbox(m)
        holder["sub"].close()

    holder["sub"] = b.subscribe("once.#", once)
    mesh.settle()
    a.publish("once.x", b"1", qos=1)
    assert inbox.wait(1)
    assert wait_for(lambda: holder["sub"].closed)
    a.publish_future("once.x", b"2", qos=1).exception(10)
    assert len(inbox.items) == 1


def test_publish_from_a_message_callback(mesh: macula.Mesh, inbox: Inbox) -> None:
    a, b = mesh.nodes
    relay = b.subscribe("in.#", lambda m: b.publish("out.x", m.payload, qos=1, wait=False))
    out = a.subscribe("out.#", inbox)
    mesh.settle()
    a.publish("in.x", b"relayed", qos=1)
    assert inbox.wait(1)
    assert inbox.items[0].payload == b"relayed"
    relay.close()
    out.close()
