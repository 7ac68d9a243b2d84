"""Two libmacula nodes driven from Python with the `macula` package (capi/python: ctypes over
libmacula.so, no compiled glue): pub/sub with a wildcard, RPC with its error classes, asyncio.

Run: PYTHONPATH=capi/python python3 examples/python/example.py
(CTest sets PYTHONPATH and MACULA_LIB; an installed package finds the library by itself.)
"""
import asyncio
import sys
import threading

import macula

print("libmacula", macula.version(), "from", macula.library_path)
got, event = [], threading.Event()


def on_temp(m: macula.Message) -> None:  # a worker thread of node b
    got.append((m.topic, m.payload))
    event.set()


def fail(args: bytes) -> bytes:
    raise ValueError("no thanks")  # the caller gets macula.HandlerError("no thanks")


async def with_asyncio(a: macula.Node, b: macula.Node, mesh: macula.Mesh) -> list:
    async with b.subscribe_async("alerts.#") as alerts:
        mesh.settle()
        await a.publish_async("alerts.door", b"open", qos=1)  # returns once b acknowledged
        first = await alerts.get()
        lower = await a.call_async("text.lower", b"ASYNC")
    return [first.topic == "alerts.door", first.payload == b"open", lower == b"async"]


with macula.Mesh(nodes=2, realm="python.demo") as mesh:
    a, b = mesh.nodes
    # Keep what subscribe()/advertise() return: they keep the callbacks alive, and dropping them
    # unsubscribes / withdraws. The `with` blocks close them.
    with b.subscribe("sensors.*.temp", on_temp), \
         b.advertise("text.upper", lambda args: args.upper()), \
         b.advertise("text.lower", lambda args: args.lower()), \
         b.advertise("text.fail", fail):
        mesh.settle()
        a.publish("sensors.kitchen.temp", b"21.5", qos=1)
        ok = event.wait(5)
        print("B got", got)
        result = a.call("text.upper", b"hello from python")
        print("A called text.upper ->", result)
        try:
            a.call("text.fail")
            failed = None
        except macula.HandlerError as e:
            failed = e
        print("A called text.fail ->", failed)
        try:
            a.call("text.missing")
            missing = None
        except macula.NoProviderError as e:
            missing = e
        print("A called text.missing ->", missing)
        try:
            a.publish("sensors.kitchen.temp", "21.5")  # str is not a payload
            str_refused = False
        except TypeError as e:
            str_refused = True
            print("str payload ->", e)
        async_checks = asyncio.run(with_asyncio(a, b, mesh))
        print("asyncio ->", async_checks)

checks = [ok and got == [("sensors.kitchen.temp", b"21.5")], result == b"HELLO FROM PYTHON",
          failed is not None and failed.message == "no thanks",
          missing is not None and missing.code == macula.Status.ENO_PROVIDER, str_refused, all(async_checks)]
print("python example:", "ok" if all(checks) else f"FAILED {checks}")
sys.exit(0 if all(checks) else 1)
