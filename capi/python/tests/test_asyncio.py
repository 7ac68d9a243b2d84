"""asyncio: awaitable call and publish, async iteration over a subscription, async handlers.
(Plain pytest: each test runs its own loop with asyncio.run.)"""
from __future__ import annotations

import asyncio

import pytest

import macula
from conftest import wait_for


def test_call_async(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes

    async def main() -> None:
        with b.advertise("text.upper", lambda args: args.upper()):
            mesh.settle()
            results = await asyncio.gather(*(a.call_async("text.upper", b"x%d" % i) for i in range(20)))
            assert results == [b"X%d" % i for i in range(20)]
            with pytest.raises(macula.NoProviderError):
                await a.call_async("text.missing")
            with pytest.raises(TypeError):
                await a.call_async("text.upper", "str")  # type: ignore[arg-type]

    asyncio.run(main())


def test_call_async_timeout_and_cancellation(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes
    held: list = []

    async def main() -> None:
        with b.advertise_deferred("slow.never", lambda args, reply: held.append(reply)):
            mesh.settle()
            with pytest.raises(macula.MaculaTimeoutError):
                await a.call_async("slow.never", timeout=0.2)
            # Cancelling the awaiting task is safe; the library's completion later finds the
            # future cancelled and is ignored.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(a.call_async("slow.never", timeout=0.3), 0.05)
            await asyncio.sleep(0.4)

    asyncio.run(main())
    for r in held:
        r.close()


def test_publish_async_qos1_and_async_for(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes

    async def main() -> None:
        async with b.subscribe_async("sensors.#", maxsize=100) as sub:
            assert isinstance(sub, macula.AsyncSubscription)
            mesh.settle()
            for i in range(5):
                await a.publish_async("sensors.t%d" % i, b"%d" % i, qos=1)
            got = []
            async for msg in sub:
                got.append((msg.topic, msg.payload))
                if len(got) == 5:
                    break
            assert sorted(got) == [("sensors.t%d" % i, b"%d" % i) for i in range(5)]
            with pytest.raises(macula.NoSubscribersError):
                await a.publish_async("nobody.here", b"x", qos=1)
        assert sub.closed
        got_after = [m async for m in sub]  # a closed subscription ends the iteration at once
        assert got_after == []

    asyncio.run(main())


def test_async_subscription_drops_newest_when_full_and_counts(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes

    async def main() -> None:
        sub = b.subscribe_async("burst.#", maxsize=3)
        mesh.settle()
        for i in range(10):  # the loop is not consuming meanwhile: only 3 fit
            a.publish("burst.x", b"%d" % i, qos=1)
        # (a QoS 1 acknowledgement may precede the hand-over to the subscription's callback)
        assert wait_for(lambda: sub.qsize() + sub.queue_dropped + sub.dropped == 10)
        assert sub.qsize() == 3
        assert sub.queue_dropped == 10 - 3 - sub.dropped
        first = [await sub.get() for _ in range(3)]
        assert len({m.payload for m in first}) == 3
        sub.close()
        with pytest.raises(macula.ClosedError):
            await sub.get()

    asyncio.run(main())


def test_close_wakes_a_waiting_iterator(mesh: macula.Mesh) -> None:
    _, b = mesh.nodes

    async def main() -> None:
        sub = b.subscribe_async("quiet.#")

        async def consume() -> list:
            return [m async for m in sub]

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        sub.close()
        assert await asyncio.wait_for(task, 5) == []

    asyncio.run(main())


def test_advertise_async(mesh: macula.Mesh) -> None:
    a, b = mesh.nodes

    async def main() -> None:
        async def slow_upper(args: bytes) -> bytes:
            await asyncio.sleep(0.01)
            return args.upper()

        async def failing(args: bytes) -> bytes:
            raise KeyError("missing key")

        with b.advertise_async("async.upper", slow_upper), b.advertise_async("async.fail", failing):
            mesh.settle()
            assert await a.call_async("async.upper", b"abc") == b"ABC"
            with pytest.raises(macula.HandlerError, match="missing key"):
                await a.call_async("async.fail")
            # A blocking call from a thread other than the loop's also works.
            assert await asyncio.get_running_loop().run_in_executor(None, a.call, "async.upper", b"xyz") == b"XYZ"

    asyncio.run(main())


def test_subscribe_async_needs_a_loop(mesh: macula.Mesh) -> None:
    with pytest.raises(RuntimeError):
        mesh.nodes[0].subscribe_async("x.#")
