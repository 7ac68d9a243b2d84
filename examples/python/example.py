"""Two libmacula nodes driven from Python through the C ABI: pub/sub with a wildcard and an RPC.
Run: MACULA_LIB=/path/to/libmacula.so python3 example.py  (CTest sets MACULA_LIB)."""
import sys
import threading

import macula

print("libmacula", macula.version())
got, event = [], threading.Event()
with macula.Mesh(nodes=2, realm="python.demo") as mesh:
    a, b = mesh.nodes
    sub = b.subscribe("sensors.*.temp", lambda m: (got.append((m.topic, m.payload)), event.set()))
    upper = b.advertise("text.upper", lambda args: args.upper())
    bad = b.advertise("text.fail", lambda args: (_ for _ in ()).throw(ValueError("no thanks")))
    mesh.settle()
    a.publish("sensors.kitchen.temp", b"21.5", qos=1)
    ok = event.wait(5)
    print("B got", got)
    result = a.call("text.upper", b"hello from python")
    print("A called text.upper ->", result)
    try:
        a.call("text.fail")
        failed = None
    except macula.MaculaError as e:
        failed = e
    print("A called text.fail ->", failed)
    try:
        a.call("text.missing")
    except macula.MaculaError as e:
        missing = e
    print("A called text.missing ->", missing)
    sub.close()
    upper.close()
    bad.close()
checks = [ok and got == [("sensors.kitchen.temp", b"21.5")], result == b"HELLO FROM PYTHON",
          failed is not None and "no thanks" in str(failed), missing.status == 13]
print("python example:", "ok" if all(checks) else f"FAILED {checks}")
sys.exit(0 if all(checks) else 1)
