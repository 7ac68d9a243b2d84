"""RPC on the in-process mesh: results, the exception classes, deferred and failing handlers."""
from __future__ import annotations

import threading

import pytest

import macula


def test_call_and_bytes_like_arguments(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes
    with b.advertise("text.upper", lambda args: args.upper()), b.advertise("echo.len", lambda args: b"%d" % len(args)):
        mesh.settle()
        assert a.call("text.upper", b"hello") == b"HELLO"
        assert a.call("text.upper", bytearray(b"ab")) == b"AB"
        assert a.call("text.upper", memoryview(b"cd")) == b"CD"
        assert a.call("echo.len") == b"0"
        assert a.call("echo.len", bytes(100_000)) == b"100000"
        assert b.call("text.upper", b"local") == b"LOCAL"  # the provider's own node


def test_str_arguments_and_results_raise_type_error(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes
    with b.advertise("text.str", lambda args: args.decode()):  # returns str: not allowed
        mesh.settle()
        with pytest.raises(TypeError):
            a.call("text.str", "hello")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            a.call_future("text.str", "hello")  # type: ignore[arg-type]
        with pytest.raises(macula.HandlerError, match="bytes-like"):
            a.call("text.str", b"hello")


def test_no_provider(mesh: macula.Mesh) -> None:
    a, _ = mesh.nodes
    with pytest.raises(macula.NoProviderError) as info:
        a.call("text.missing")
    assert info.value.code == macula.Status.ENO_PROVIDER == 13
    assert "text.missing" in str(info.value)
    with pytest.raises(macula.NoProviderError):
        a.call_future("text.missing").result(10)


def test_handler_exception_is_a_handler_error_with_its_text(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes

    def fail(args: bytes) -> bytes:
        raise ValueError("no thanks")

    with b.advertise("text.fail", fail):
        mesh.settle()
        with pytest.raises(macula.HandlerError) as info:
            a.call("text.fail")
        assert info.value.message == "no thanks"
        assert info.value.code == macula.Status.EHANDLER
        with pytest.raises(macula.HandlerError, match="no thanks"):
            a.call_future("text.fail").result(10)


def test_timeout_with_a_handler_that_never_replies(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes
    held: list = []
    with b.advertise_deferred("slow.never", lambda args, reply: held.append(reply)):
        mesh.settle()
        with pytest.raises(macula.MaculaTimeoutError) as info:
            a.call("slow.never", b"x", timeout=0.2)
        assert isinstance(info.value, TimeoutError)
        assert info.value.code == macula.Status.ETIMED_OUT
        with pytest.raises(macula.MaculaTimeoutError):
            a.call_future("slow.never", timeout=0.2).result(10)
        assert held and not held[0].answered
    # A Reply may outlive its advertisement; releasing it answers nobody (the callers timed out).
    for r in held:
        r.close()
        assert r.answered


def test_deferred_reply_from_another_thread(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes

    def later(args: bytes, reply: macula.Reply) -> None:
        threading.Timer(0.05, reply.send, args=(args[::-1],)).start()

    with b.advertise_deferred("text.reverse", later):
        mesh.settle()
        assert a.call("text.reverse", b"abc") == b"cba"


def test_reply_rules(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes
    errors: list = []

    def handler(args: bytes, reply: macula.Reply) -> None:
        if args == b"drop":
            return  # the Reply is garbage collected unanswered
        if args == b"fail":
            reply.fail("declined")
        else:
            try:
                reply.send("text")  # type: ignore[arg-type]
            except TypeError:
                errors.append("TypeError")
            reply.send(b"ok")
        try:
            reply.send(b"again")
        except macula.ClosedError:
            errors.append("ClosedError")

    with b.advertise_deferred("reply.rules", handler):
        mesh.settle()
        assert a.call("reply.rules", b"x") == b"ok"
        with pytest.raises(macula.HandlerError, match="declined"):
            a.call("reply.rules", b"fail")
        with pytest.raises(macula.HandlerError, match="did not answer"):
            a.call("reply.rules", b"drop", timeout=5)
    assert errors == ["TypeError", "ClosedError", "ClosedError"]


def test_blocking_call_from_a_handler_is_refused_but_call_future_works(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes
    inner = b.advertise("inner.x", lambda args: b"inner")
    outer_blocking = b.advertise("outer.blocking", lambda args: b.call("inner.x"))

    def nested(args: bytes, reply: macula.Reply) -> None:
        fut = b.call_future("inner.x")
        fut.add_done_callback(lambda f: reply.send(b"outer+" + f.result()))

    outer_async = b.advertise_deferred("outer.future", nested)
    mesh.settle()
    with pytest.raises(macula.HandlerError, match="(?i)callback|deadlock"):
        a.call("outer.blocking")
    assert a.call("outer.future") == b"outer+inner"
    for x in (inner, outer_blocking, outer_async):
        x.close()


def test_payload_too_large(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes
    with b.advertise("big.result", lambda args: bytes(macula.MAX_PAYLOAD_BYTES + 1)):
        mesh.settle()
        with pytest.raises(macula.PayloadTooLargeError):
            a.call("big.result", bytes(macula.MAX_PAYLOAD_BYTES + 1))
        with pytest.raises(macula.PayloadTooLargeError):  # the result: the library refuses it
            a.call("big.result")


def test_withdrawn_procedure_is_gone(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes
    ad = b.advertise("gone.soon", lambda args: b"here")
    mesh.settle()
    assert a.call("gone.soon") == b"here"
    ad.close()
    assert ad.closed
    mesh.settle()
    with pytest.raises((macula.NoProviderError, macula.HandlerError)):
        a.call("gone.soon", timeout=2)


def test_invalid_procedure_and_timeout(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes
    with pytest.raises(macula.InvalidNameError):
        a.call("bad..name")
    with pytest.raises(macula.InvalidNameError):
        b.advertise("wild.*", lambda args: b"")
    with pytest.raises(ValueError):
        a.call("x.y", timeout=0)
    with pytest.raises(ValueError):
        a.call("x.y", timeout=-1)


def test_concurrent_calls_from_many_threads(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes
    with b.advertise("math.double", lambda args: b"%d" % (2 * int(args))):
        mesh.settle()
        results: dict = {}

        def worker(i: int) -> None:
            results[i] = a.call("math.double", b"%d" % i)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {i: b"%d" % (2 * i) for i in range(16)}
