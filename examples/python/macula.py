"""A ctypes binding of libmacula's C ABI (macula.h): a proof that other languages can drive
the mesh through libmacula.so with no compiled glue.

Callbacks follow the C ABI's {context, call, drop} contract: the Python callable is kept alive
by its handle until the library calls drop. Message and handler callbacks run on libmacula's
worker threads, completion callbacks on its I/O thread (ctypes takes the GIL for them).
"""
import ctypes
import ctypes.util
import os
import threading

_lib = ctypes.CDLL(os.environ.get("MACULA_LIB") or ctypes.util.find_library("macula") or "libmacula.so.0")

c_void_p, c_size_t, c_int, c_char_p, c_uint32, c_uint64 = (
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint64)
c_uint8_p = ctypes.POINTER(ctypes.c_uint8)


class _Message(ctypes.Structure):
    _fields_ = [("topic", c_void_p), ("topic_len", c_size_t), ("pattern", c_void_p), ("pattern_len", c_size_t),
                ("payload", c_void_p), ("payload_len", c_size_t), ("publisher", ctypes.c_uint8 * 32),
                ("sequence", c_uint64), ("qos", c_int)]


_MESSAGE_FN = ctypes.CFUNCTYPE(None, c_void_p, ctypes.POINTER(_Message))
_DROP_FN = ctypes.CFUNCTYPE(None, c_void_p)
_RESULT_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_void_p, c_size_t)
_HANDLER_FN = ctypes.CFUNCTYPE(None, c_void_p, c_void_p, c_size_t, c_void_p)


class _MessageCallback(ctypes.Structure):
    _fields_ = [("context", c_void_p), ("call", _MESSAGE_FN), ("drop", _DROP_FN)]


class _ResultCallback(ctypes.Structure):
    _fields_ = [("context", c_void_p), ("call", _RESULT_FN), ("drop", _DROP_FN)]


class _Handler(ctypes.Structure):
    _fields_ = [("context", c_void_p), ("call", _HANDLER_FN), ("drop", _DROP_FN)]


def _sig(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype, f.argtypes = restype, list(argtypes)
    return f


_version = _sig("macula_version", c_char_p)
_strerror = _sig("macula_strerror", c_char_p, c_int)
_last_error = _sig("macula_last_error", c_char_p)
_free = _sig("macula_free", None, c_void_p)
_mesh_new = _sig("macula_mesh_new", c_int, ctypes.POINTER(c_void_p), c_size_t, c_char_p)
_mesh_node = _sig("macula_mesh_node", c_void_p, c_void_p, c_size_t)
_mesh_settle = _sig("macula_mesh_settle", c_int, c_void_p)
_mesh_free = _sig("macula_mesh_free", None, c_void_p)
_node_address = _sig("macula_node_address", c_int, c_void_p, ctypes.c_char_p, c_size_t)
_publish = _sig("macula_publish", c_int, c_void_p, c_char_p, c_void_p, c_size_t, c_int, ctypes.POINTER(_ResultCallback))
_subscribe = _sig("macula_subscribe", c_int, ctypes.POINTER(c_void_p), c_void_p, c_char_p, _MessageCallback)
_subscription_free = _sig("macula_subscription_free", None, c_void_p)
_advertise = _sig("macula_advertise", c_int, ctypes.POINTER(c_void_p), c_void_p, c_char_p, _Handler)
_advertisement_free = _sig("macula_advertisement_free", None, c_void_p)
_reply_send = _sig("macula_reply_send", c_int, c_void_p, c_void_p, c_size_t)
_reply_fail = _sig("macula_reply_fail", c_int, c_void_p, c_char_p)
_call_blocking = _sig("macula_call_blocking", c_int, ctypes.POINTER(c_void_p), ctypes.POINTER(c_size_t), c_void_p,
                      c_char_p, c_void_p, c_size_t, c_uint32)


class MaculaError(Exception):
    def __init__(self, status, where):
        super().__init__(f"{where}: {_strerror(status).decode()} ({_last_error().decode()})")
        self.status = status


def _check(status, where):
    if status != 0:
        raise MaculaError(status, where)


def version():
    return _version().decode()


class Message:
    def __init__(self, m):
        self.topic = ctypes.string_at(m.topic, m.topic_len).decode()
        self.pattern = ctypes.string_at(m.pattern, m.pattern_len).decode()
        self.payload = ctypes.string_at(m.payload, m.payload_len) if m.payload_len else b""
        self.publisher = bytes(m.publisher).hex()
        self.sequence = m.sequence


class Node:
    """A node owned by a Mesh (borrowed handle)."""

    def __init__(self, handle):
        self._h = handle

    @property
    def address(self):
        buf = ctypes.create_string_buffer(128)
        _check(_node_address(self._h, buf, len(buf)), "address")
        return buf.value.decode()

    def publish(self, topic, payload=b"", qos=0):
        _check(_publish(self._h, topic.encode(), payload, len(payload), qos, None), f"publish {topic}")

    def subscribe(self, pattern, fn):
        return Subscription(self._h, pattern, fn)

    def advertise(self, procedure, fn):
        """fn(args: bytes) -> bytes; raising an exception answers the caller with its message."""
        return Advertisement(self._h, procedure, fn)

    def call(self, procedure, args=b"", timeout_ms=0):
        out, n = c_void_p(), c_size_t()
        status = _call_blocking(ctypes.byref(out), ctypes.byref(n), self._h, procedure.encode(), args, len(args), timeout_ms)
        data = ctypes.string_at(out, n.value) if out.value else b""
        _free(out)
        _check(status, f"call {procedure}")
        return data


class Subscription:
    def __init__(self, node, pattern, fn):
        self._dropped = threading.Event()
        self._call = _MESSAGE_FN(lambda ctx, m: fn(Message(m.contents)))
        self._drop = _DROP_FN(lambda ctx: self._dropped.set())
        self._h = c_void_p()
        _check(_subscribe(ctypes.byref(self._h), node, pattern.encode(), _MessageCallback(None, self._call, self._drop)),
               f"subscribe {pattern}")

    def close(self):
        if self._h:
            _subscription_free(self._h)  # returns after drop: no callback runs afterwards
            self._h = c_void_p()


class Advertisement:
    def __init__(self, node, procedure, fn):
        def call(ctx, args, n, reply):
            try:
                result = fn(ctypes.string_at(args, n) if n else b"")
                _reply_send(reply, result, len(result))
            except Exception as e:  # the caller gets MACULA_EHANDLER with this message
                _reply_fail(reply, str(e).encode())
        self._call = _HANDLER_FN(call)
        self._drop = _DROP_FN(lambda ctx: None)
        self._h = c_void_p()
        _check(_advertise(ctypes.byref(self._h), node, procedure.encode(), _Handler(None, self._call, self._drop)),
               f"advertise {procedure}")

    def close(self):
        if self._h:
            _advertisement_free(self._h)
            self._h = c_void_p()


class Mesh:
    """N linked nodes in this process (macula_mesh_*), for tests and demos."""

    def __init__(self, nodes=2, realm="python.realm"):
        self._h = c_void_p()
        _check(_mesh_new(ctypes.byref(self._h), nodes, realm.encode()), "mesh")
        self.nodes = [Node(_mesh_node(self._h, i)) for i in range(nodes)]

    def settle(self):
        _check(_mesh_settle(self._h), "settle")

    def close(self):
        if self._h:
            _mesh_free(self._h)
            self._h = c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
