"""macula: Python bindings for libmacula, a QUIC/HTTP/3 pub/sub and RPC mesh.

Pure Python over the C ABI (``macula.h``) with :mod:`ctypes`; no compiled glue. The library is
found through ``$MACULA_LIB``, next to this package, relative to the installed package
(``<prefix>/<libdir>/libmacula.so.0``), or by the system loader (see :mod:`macula._ffi`);
:data:`library_path` says which one was loaded.

Quick start::

    import macula

    with macula.Mesh(nodes=2) as mesh:
        a, b = mesh.nodes
        sub = b.subscribe("sensors.*.temp", lambda m: print(m.topic, m.payload))
        upper = b.advertise("text.upper", lambda args: args.upper())
        mesh.settle()
        a.publish("sensors.kitchen.temp", b"21.5", qos=1)
        print(a.call("text.upper", b"hello"))     # b'HELLO'

Rules that hold everywhere:

- Payloads, RPC arguments and results are bytes-like; ``str`` raises ``TypeError``.
- A :class:`Subscription` / :class:`Advertisement` keeps its callback alive while it is open;
  it is closed by ``close()``, ``with``, its node or mesh closing, or garbage collection
  (keep a reference!). :class:`Node` and :class:`Mesh` are context managers too; whatever is
  still open at interpreter exit is closed then.
- Callbacks run on libmacula's threads (message and RPC handlers on worker threads,
  completions on the I/O thread); an exception escaping a callback is logged to the
  ``macula`` logger, never propagated into C; in an RPC handler it becomes the caller's
  :class:`HandlerError`.
- Failures raise :class:`MaculaError` subclasses (see :mod:`macula.errors`).
- asyncio: ``await node.call_async(...)``, ``await node.publish_async(..., qos=1)``,
  ``async for msg in node.subscribe_async(...)``, ``node.advertise_async(...)``.
"""
from __future__ import annotations

import ctypes

from . import _ffi
from ._ffi import MAX_PAYLOAD_BYTES, library_path
from ._handle import close_all
from ._payload import BytesLike
from .errors import (AddressInvalidError, AddressUnresolvedError, ClosedError, HandlerError, HandshakeTimeoutError, IdentityInvalidError,
                     InternalError, InvalidArgumentError, InvalidNameError, MaculaConnectionError, MaculaError,
                     MaculaTimeoutError, NoProviderError, NoSubscribersError, NotStartedError, OperationCancelledError,
                     OptionsInvalidError, OtherError, OutOfMemoryError, OverloadedError, PayloadTooLargeError,
                     QueueFullError, RealmProofError, RefusedError, Status, TooManyPendingError,
                     TooManySubscriptionsError, UnauthorizedError, WouldBlockError, WouldDeadlockError, check,
                     error_class, error_from_status)
from .mesh import Mesh
from .message import Message
from .node import ClientAccess, LogCallback, LogLevel, Node, logging_sink
from .rpc import Advertisement, Reply
from .subscription import AsyncSubscription, Subscription

__version__ = "0.1.0"


def version() -> str:
    """The loaded library's version ("MAJOR.MINOR.PATCH", ``macula_version``)."""
    v: bytes = _ffi.lib.macula_version()
    return v.decode("ascii")


def strerror(status: int) -> str:
    """A description of a status code (``macula_strerror``)."""
    return _ffi.strerror(status)


def client_token(realm: str, secret: str) -> str:
    """The bearer token clients of ``realm`` with shared ``secret`` present to a node in TOKEN
    mode (``macula_client_token``): 64 hex characters. It does not reveal the secret."""
    from ._payload import name
    out = ctypes.create_string_buffer(65)
    check(_ffi.lib.macula_client_token(name(realm, "realm"), name(secret, "secret"), out, len(out)), "client token")
    return out.value.decode("ascii")


__all__ = [
    "AddressInvalidError", "AddressUnresolvedError", "Advertisement", "AsyncSubscription", "BytesLike", "ClientAccess", "ClosedError",
    "HandlerError", "HandshakeTimeoutError", "IdentityInvalidError", "InternalError", "InvalidArgumentError",
    "InvalidNameError", "LogCallback", "LogLevel", "MAX_PAYLOAD_BYTES", "MaculaConnectionError", "MaculaError",
    "MaculaTimeoutError", "Mesh", "Message", "NoProviderError", "NoSubscribersError", "Node", "NotStartedError",
    "OperationCancelledError", "OptionsInvalidError", "OtherError", "OutOfMemoryError", "OverloadedError",
    "PayloadTooLargeError", "QueueFullError", "RealmProofError", "RefusedError", "Reply", "Status", "Subscription",
    "TooManyPendingError", "TooManySubscriptionsError", "UnauthorizedError", "WouldBlockError", "WouldDeadlockError",
    "check", "client_token", "close_all", "error_class", "error_from_status", "library_path", "logging_sink",
    "strerror", "version",
]
