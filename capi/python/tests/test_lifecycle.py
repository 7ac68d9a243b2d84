"""Ownership and closing: context managers, children closed with their node, use after close,
callbacks released, closing from callbacks, interpreter exit with things still open."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import macula
from conftest import Inbox, wait_for


def test_context_managers_close_everything() -> None:
    with macula.Mesh(nodes=3) as mesh:
        assert len(mesh) == 3 and mesh[0] is mesh.nodes[0] is mesh.node(0)
        a, b, c = mesh
        with b.subscribe("cm.#", lambda m: None) as sub, c.advertise("cm.rpc", lambda x: x) as ad:
            mesh.settle()
            assert not sub.closed and not ad.closed
        assert sub.closed and ad.closed
        keep_sub = b.subscribe("cm.#", lambda m: None)
        keep_ad = c.advertise("cm.rpc", lambda x: x)
    assert mesh.closed and a.closed and keep_sub.closed and keep_ad.closed
    with pytest.raises(macula.ClosedError):
        a.publish("cm.x", b"")
    with pytest.raises(macula.ClosedError):
        mesh.settle()
    assert wait_for(lambda: macula._callbacks.live_count() == 0)


def test_closing_a_node_closes_its_children_and_pending_replies() -> None:
    mesh = macula.Mesh(nodes=2)
    a, b = mesh.nodes
    held: list = []
    sub = b.subscribe("x.#", lambda m: None)
    ad = b.advertise_deferred("x.hold", lambda args, reply: held.append(reply))
    mesh.settle()
    fut = a.call_future("x.hold", timeout=30)
    assert wait_for(lambda: held)
    b.close()  # a mesh node: closes its subscription, advertisement and the unanswered reply
    assert sub.closed and ad.closed and held[0].answered
    with pytest.raises(macula.HandlerError):
        fut.result(10)
    mesh.close()
    mesh.close()  # idempotent


def test_real_node_close_with_children_and_calls_in_flight() -> None:
    a = macula.Node(http_listen="", start=True)
    held: list = []
    sub = a.subscribe("y.#", lambda m: None)
    ad = a.advertise_deferred("y.hold", lambda args, reply: held.append(reply))
    fut = a.call_future("y.hold", timeout=30)
    assert wait_for(lambda: held)
    a.close()
    assert sub.closed and ad.closed and held[0].answered
    assert isinstance(fut.exception(10), macula.MaculaError)
    assert wait_for(lambda: macula._callbacks.live_count() == 0), macula._callbacks._entries


def test_mesh_node_keeps_mesh_alive_and_dropping_everything_is_safe() -> None:
    for _ in range(5):
        node = macula.Mesh(nodes=1).nodes[0]
        sub = node.subscribe("drop.#", lambda m: None)
        ad = node.advertise("drop.rpc", lambda x: x)
        assert node.call("drop.rpc", b"still alive") == b"still alive"  # the mesh lives on via its node
        del node, sub, ad
        gc.collect()
    assert wait_for(lambda: macula._callbacks.live_count() == 0)


def test_closing_a_node_from_a_callback_is_refused(inbox: Inbox) -> None:
    with macula.Mesh(nodes=2) as mesh:
        a, b = mesh.nodes

        def handler(m: macula.Message) -> None:
            try:
                b.close()
            except macula.WouldDeadlockError as e:
                inbox(e)

        with b.subscribe("close.#", handler):
            mesh.settle()
            a.publish("close.x", b"", qos=1)
            assert inbox.wait(1)
            assert not b.closed


def test_dropped_subscriptions_in_a_loop_never_crash() -> None:
    with macula.Mesh(nodes=2) as mesh:
        a, b = mesh.nodes
        stop = threading.Event()

        def flood() -> None:
            while not stop.is_set():
                try:
                    a.publish("churn.x", b"x", qos=0)
                except macula.ClosedError:
                    return

        t = threading.Thread(target=flood)
        t.start()
        try:
            for i in range(300):
                s = b.subscribe("churn.#", lambda m: None)
                if i % 3 == 0:
                    s.close()
                del s
        finally:
            stop.set()
            t.join()
    assert wait_for(lambda: macula._callbacks.live_count() == 0)


def test_exit_with_everything_still_open_is_clean() -> None:
    """Nothing closed explicitly, callbacks busy at exit: the atexit hook closes it all before
    the interpreter finalizes (exit code 0, no crash)."""
    code = textwrap.dedent("""
        import threading, macula
        mesh = macula.Mesh(nodes=2)
        a, b = mesh.nodes
        subs = [b.subscribe("exit.#", lambda m: None) for _ in range(3)]
        ad = b.advertise("exit.rpc", lambda x: x)
        node = macula.Node(http_listen="", start=True, log=lambda *e: None)
        node.subscribe("exit.#", lambda m: None)
        mesh.settle()
        for _ in range(200):
            a.publish("exit.x", b"x")
        a.call_future("exit.rpc", b"x")
        print("bye")
    """)
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "bye"
