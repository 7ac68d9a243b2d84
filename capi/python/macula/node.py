"""A libmacula node: a real one (:class:`Node` with listen address, realm, bootstrap peers,
identity, ...) or one of an in-process :class:`~macula.Mesh`'s nodes.

Ownership: a Node created here owns its ``macula_node`` and frees it on :meth:`Node.close`
(also at the end of a ``with`` block, at garbage collection, and at interpreter exit); closing
first closes its subscriptions, advertisements and unanswered replies. A mesh's nodes belong to
the mesh: closing one only closes its subscriptions and advertisements and makes the Python
object unusable; the mesh stops them. Subscriptions and advertisements keep their node alive.

Threads: see :mod:`macula.subscription` and :mod:`macula.rpc` for message and RPC handlers
(worker threads). Completions of :meth:`Node.call_future` / :meth:`Node.publish_future` run on
the node's I/O thread and only complete a :class:`concurrent.futures.Future`; asyncio awaiters
are resumed on their own loop. The log callback runs on any of the node's threads, possibly
concurrently, and must be quick and not call this package (doing so raises
:class:`~macula.WouldDeadlockError`). Blocking methods (``call``, ``connect``, ``stop``,
``close``) raise :class:`~macula.WouldDeadlockError` when called from a libmacula callback; a
waiting QoS 1 ``publish`` raises it only on the I/O thread (in completion callbacks).

All methods are thread-safe. ``close()`` waits for calls other threads are making through the
node to return.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import enum
import logging
import math
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Union

from . import _callbacks, _ffi
from ._completion import Completion
from ._handle import Handle
from ._payload import BytesLike, name, opt_str, payload
from .errors import HandlerError, Status, WouldDeadlockError, check, error_from_status
from .rpc import AsyncHandler, Advertisement, DeferredHandler, Handler, _Serve, _ServeAsync, _ServeDeferred
from .subscription import AsyncSubscription, MessageCallback, Subscription, _Deliver

if TYPE_CHECKING:
    from .mesh import Mesh


class LogLevel(enum.IntEnum):
    """Log event levels (``macula_log_fn``'s ``level``)."""
    DEBUG = 0
    INFO = 1
    WARN = 2
    ERROR = 3


class ClientAccess(enum.IntEnum):
    """``macula_client_access``: what HTTP/3 clients (no node certificate) may do."""
    AUTOMATIC = 0  #: TOKEN when the realm has a secret or client_token is set, else OPEN
    OPEN = 1       #: anyone who reaches the port (refused at start in a realm with a secret)
    TOKEN = 2      #: requests carry "authorization: Bearer <token>"
    CLOSED = 3     #: publish, call and /metrics over HTTP/3 answer 403


#: ``log(level, component, message)``.
LogCallback = Callable[[LogLevel, str, str], Any]

_PY_LEVELS = {LogLevel.DEBUG: logging.DEBUG, LogLevel.INFO: logging.INFO,
              LogLevel.WARN: logging.WARNING, LogLevel.ERROR: logging.ERROR}


def logging_sink(logger: Optional[logging.Logger] = None) -> LogCallback:
    """A ``log=`` callback forwarding node events to :mod:`logging` (``logger``, default the
    ``macula.node`` logger; the component becomes ``extra={"component": ...}`` and a prefix)."""
    target = logger or logging.getLogger("macula.node")

    def sink(level: LogLevel, component: str, message: str) -> None:
        target.log(_PY_LEVELS.get(level, logging.INFO), "%s: %s", component, message,
                   extra={"component": component})
    return sink


class _LogSink:
    __slots__ = ("fn",)

    def __init__(self, fn: LogCallback) -> None:
        self.fn = fn

    def on_log(self, level: int, component: str, message: str) -> None:
        self.fn(LogLevel(level) if 0 <= level <= 3 else level, component, message)  # type: ignore[arg-type]


def _level(value: Union[int, str, LogLevel]) -> int:
    if isinstance(value, str):
        try:
            return int(LogLevel[value.upper().replace("WARNING", "WARN")])
        except KeyError:
            raise ValueError(f"log_level {value!r}: use debug, info, warn or error") from None
    return int(value)


def _access(value: Union[int, str, ClientAccess]) -> int:
    if isinstance(value, str):
        try:
            return int(ClientAccess[value.upper()])
        except KeyError:
            raise ValueError(f"client_access {value!r}: use automatic, open, token or closed") from None
    return int(value)


def _timeout_ms(timeout: Optional[float]) -> int:
    """Seconds -> the C ABI's milliseconds; None -> 0 (the node's rpc_timeout)."""
    if timeout is None:
        return 0
    if not (timeout > 0) or math.isinf(timeout):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    ms = max(1, math.ceil(timeout * 1000))
    if ms > 0xFFFFFFFF:
        raise ValueError(f"timeout {timeout!r} s is too long")
    return ms


def _qos(qos: int) -> int:
    if qos not in (0, 1):
        raise ValueError(f"qos must be 0 or 1, not {qos!r}")
    return int(qos)


def _uint(value: Optional[int], what: str, bits: int) -> Optional[int]:
    if value is None:
        return None
    v = int(value)
    if v < 0 or v >= 1 << bits:
        raise ValueError(f"{what} out of range: {value!r}")
    return v


class Node(Handle):
    """A libmacula node (``macula_node``).

    ``Node(**options)`` creates a node that is not started yet; :meth:`start` (or entering a
    ``with`` block, which starts it if needed) binds and links to the bootstrap peers. Options
    left at ``None`` keep the library's defaults (``macula_node_options_init``):

    - ``realm`` (``"macula.default"``), ``realm_secret`` (none): nodes of a realm with a secret
      must prove it;
    - ``listen`` (``"127.0.0.1:0"``), ``advertise_address`` ("host:port" other nodes dial, a
      name resolved once at start; default the bound address; required when listening on
      0.0.0.0 / [::]);
    - ``bootstrap``: "host:port" peers linked at start and re-linked;
    - ``key_file``/``cert_file`` (PEM; none: an ephemeral identity);
    - ``http_listen``: "host:port" of the plain-HTTP /metrics /health /ready /live endpoint;
      ``""`` turns it off (HTTP/3 serves them always). None keeps the library's default (off;
      earlier libmacula builds defaulted to "127.0.0.1:8080", so pass ``""`` explicitly
      when running several nodes on one host with an older library);
    - ``dht`` (True), ``leaf`` (False), ``dht_record_ttl_s`` (300; 30..86400, else
      :class:`~macula.OptionsInvalidError` at start),
      ``worker_threads`` (2), ``io_threads`` (1), ``rpc_timeout_ms`` (5000),
      ``client_access`` (:class:`ClientAccess` or its name), ``client_token``;
    - ``log``: ``log(level, component, message)`` receiving the node's events at
      ``log_level`` (:class:`LogLevel`, its name, or 0..3; default info) and above. The node
      keeps ``log`` alive until it is freed. See :func:`logging_sink`.

    ``start=True`` starts the node in the constructor.
    """

    _what = "node"
    _free_blocks_callbacks = True
    _log_ctx: Optional[int] = None

    def __init__(self, *, realm: Optional[str] = None, realm_secret: Optional[str] = None,
                 listen: Optional[str] = None, bootstrap: Iterable[str] = (),
                 key_file: Optional[str] = None, cert_file: Optional[str] = None,
                 http_listen: Optional[str] = None, dht: Optional[bool] = None, leaf: Optional[bool] = None,
                 advertise_address: Optional[str] = None, dht_record_ttl_s: Optional[int] = None,
                 worker_threads: Optional[int] = None, io_threads: Optional[int] = None,
                 rpc_timeout_ms: Optional[int] = None,
                 client_access: Union[None, int, str, ClientAccess] = None, client_token: Optional[str] = None,
                 log: Optional[LogCallback] = None, log_level: Union[None, int, str, LogLevel] = None,
                 start: bool = False) -> None:
        super().__init__()
        self._init_common(None)
        o = _ffi.default_node_options()
        keep = []  # the C side copies every string during macula_node_new
        for field, text in (("realm", realm), ("realm_secret", realm_secret), ("listen", listen),
                             ("key_file", key_file), ("cert_file", cert_file), ("http_listen", http_listen),
                             ("advertise_address", advertise_address), ("client_token", client_token)):
            b = opt_str(text, field)
            if b is not None:
                setattr(o, field, b)
        if isinstance(bootstrap, str):
            bootstrap = [bootstrap]
        peers = [name(p, "bootstrap address") for p in bootstrap]
        if peers:
            array = (ctypes.c_char_p * len(peers))(*peers)
            keep.append(array)
            o.bootstrap = ctypes.cast(array, ctypes.POINTER(ctypes.c_char_p))
            o.bootstrap_count = len(peers)
        for field, number, bits in (("worker_threads", worker_threads, 32), ("io_threads", io_threads, 32),
                                   ("rpc_timeout_ms", rpc_timeout_ms, 32), ("dht_record_ttl_s", dht_record_ttl_s, 32)):
            v = _uint(number, field, bits)
            if v is not None:
                setattr(o, field, v)
        if dht is not None:
            o.dht = 1 if dht else 0
        if leaf is not None:
            o.leaf = 1 if leaf else 0
        if client_access is not None:
            o.client_access = _access(client_access)
        if log_level is not None:
            o.log_level = _level(log_level)
        if log is not None:
            if not callable(log):
                raise TypeError("log must be callable: log(level, component, message)")
            self._log_ctx = _callbacks.register(_LogSink(log))
            o.log = _callbacks.on_log
            o.log_user_data = self._log_ctx
        out = ctypes.c_void_p()
        status = _ffi.lib.macula_node_new(ctypes.byref(out), ctypes.byref(o))
        if status != 0:
            message = _ffi.last_error()
            self._after_free()
            raise error_from_status(status, message)
        del keep
        self._adopt(out.value)  # type: ignore[arg-type]
        if start:
            self.start()

    def _init_common(self, mesh: Optional["Mesh"]) -> None:
        self._children: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._children_lock = threading.Lock()  # handlers add replies from worker threads
        self._mesh = mesh
        self._started = mesh is not None
        self._log_ctx = None

    @classmethod
    def _borrowed(cls, ptr: int, mesh: "Mesh") -> "Node":
        node = cls.__new__(cls)
        Handle.__init__(node)
        node._init_common(mesh)
        node._adopt(ptr)
        return node

    @property
    def mesh(self) -> Optional["Mesh"]:
        """The mesh this node belongs to, or None for a node created with ``Node(...)``."""
        return self._mesh

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "Node":
        """Binds, starts serving and starts linking to the bootstrap peers (``macula_node_start``).
        Returns the node. A refusal raises the status's exception (:class:`OptionsInvalidError`,
        :class:`AddressInvalidError`, :class:`IdentityInvalidError`, ...) whose message names the
        option and the reason."""
        with self._use() as h:
            check(_ffi.lib.macula_node_start(h), "start")
        self._started = True
        return self

    @property
    def started(self) -> bool:
        """True once :meth:`start` succeeded (always for a mesh's node)."""
        return self._started

    def stop(self) -> None:
        """Graceful stop (waits up to 2 s for work in flight); idempotent. Blocking. The node
        stays allocated until :meth:`close`."""
        with self._use() as h:
            check(_ffi.lib.macula_node_stop(h), "stop")

    def _add_child(self, child: Any) -> None:
        """Something to close before this node: a subscription, advertisement or reply."""
        with self._children_lock:
            self._children.add(child)

    def _release_children(self) -> None:
        with self._children_lock:
            children = list(self._children)
        for child in children:
            child.close()

    def _free(self, ptr: int) -> None:
        if self._mesh is None:
            _ffi.lib.macula_node_free(ptr)  # stops, then no callback (log included) runs

    def _after_free(self) -> None:
        if self._log_ctx is not None:
            _callbacks.release(self._log_ctx)
            self._log_ctx = None

    def __enter__(self) -> "Node":
        if not self._started:
            self.start()
        return self

    # ---- identity and state --------------------------------------------------------------------
    @property
    def id(self) -> str:
        """The node id: 64 lower-case hex characters (:class:`~macula.NotStartedError` before
        start)."""
        buf = ctypes.create_string_buffer(65)
        with self._use() as h:
            check(_ffi.lib.macula_node_id(h, buf), "node id")
        return buf.value.decode("ascii")

    @property
    def address(self) -> str:
        """The "host:port" the node listens on (after start)."""
        buf = ctypes.create_string_buffer(512)
        with self._use() as h:
            check(_ffi.lib.macula_node_address(h, buf, len(buf)), "node address")
        return buf.value.decode("utf-8", "replace")

    def connect(self, address: str) -> None:
        """Links to the node at ``address`` ("host:port") and keeps re-linking. Blocking."""
        a = name(address, "address")
        with self._use() as h:
            check(_ffi.lib.macula_node_connect(h, a), f"connect {address}")

    def metrics(self) -> str:
        """The node's metrics as Prometheus text (0.0.4)."""
        out = ctypes.c_void_p()
        with self._use() as h:
            check(_ffi.lib.macula_node_metrics(ctypes.byref(out), h), "metrics")
        try:
            return (ctypes.string_at(out.value) if out.value else b"").decode("utf-8", "replace")
        finally:
            _ffi.lib.macula_free(out)

    # ---- pub/sub ---------------------------------------------------------------------------------
    def publish(self, topic: str, data: BytesLike = b"", qos: int = 0, *, wait: bool = True) -> None:
        """Publishes ``data`` (bytes-like; ``str`` raises ``TypeError``) to ``topic``.

        QoS 0 is fire and forget. QoS 1 with ``wait`` (the default) returns once every
        interested peer acknowledged, and raises e.g. :class:`~macula.NoSubscribersError` when
        nobody received it; ``wait=False`` does not wait (use :meth:`publish_future` to learn the
        outcome later). Waiting raises :class:`~macula.WouldDeadlockError` on the node's I/O
        thread (in a completion callback)."""
        t = name(topic, "topic")
        b = payload(data)
        q = _qos(qos)
        if q == 1 and wait:
            if _callbacks.current_kind() == _callbacks.IO:
                raise WouldDeadlockError(Status.EWOULDDEADLOCK,
                                         "a QoS 1 publish cannot wait on the node's I/O thread: use publish_future")
            self._publish(t, b, q, topic).result()
            return
        with self._use() as h:
            check(_ffi.lib.macula_publish(h, t, b, len(b), q, None), f"publish {topic}")

    def _publish(self, t: bytes, b: bytes, q: int, topic: str) -> "concurrent.futures.Future[None]":
        completion = Completion(f"publish {topic}", void=True)
        with self._use() as h:
            ctx = _callbacks.register(completion)
            cb = _ffi.ResultCallback(ctx, _callbacks.on_result, _callbacks.on_drop)
            status = _ffi.lib.macula_publish(h, t, b, len(b), q, ctypes.byref(cb))
            if status != 0:  # the library dropped the callback (which released it)
                raise error_from_status(status, _ffi.last_error())
        return completion.future

    def publish_future(self, topic: str, data: BytesLike = b"", qos: int = 0) -> "concurrent.futures.Future[None]":
        """Publishes without waiting; the returned future completes with None when the publish
        is done (QoS 1: acknowledged) or with the exception. Errors found before sending (a bad
        topic, a closed node, ...) raise here. As for :meth:`call_future`, done-callbacks run on
        the node's I/O thread."""
        return self._publish(name(topic, "topic"), payload(data), _qos(qos), topic)

    async def publish_async(self, topic: str, data: BytesLike = b"", qos: int = 0) -> None:
        """``await``-able :meth:`publish_future` (QoS 1: returns once acknowledged)."""
        await asyncio.wrap_future(self.publish_future(topic, data, qos))

    def subscribe(self, pattern: str, callback: MessageCallback) -> Subscription:
        """Calls ``callback(message)`` on a worker thread for every message matching
        ``pattern`` ('*' one segment, '#'/'**' the rest). Keep the returned
        :class:`~macula.Subscription`: closing it, or losing the last reference, unsubscribes."""
        if not callable(callback):
            raise TypeError("callback must be callable: callback(message)")
        return Subscription(self, pattern, _Deliver(callback, f"subscription {pattern!r}"))

    def subscribe_async(self, pattern: str, *, maxsize: int = 1024,
                        loop: Optional[asyncio.AbstractEventLoop] = None) -> AsyncSubscription:
        """A subscription to read with ``async for msg in sub`` on ``loop`` (default: the
        running loop). At most ``maxsize`` messages wait in its buffer; when it is full, new
        messages are dropped and counted in ``sub.queue_dropped``."""
        return AsyncSubscription(self, pattern, maxsize, loop or asyncio.get_running_loop())

    # ---- RPC -------------------------------------------------------------------------------------
    def advertise(self, procedure: str, handler: Handler) -> Advertisement:
        """Serves ``procedure`` with ``handler(args: bytes) -> bytes-like | None`` on a worker
        thread; an exception it raises is the caller's :class:`~macula.HandlerError` (with the
        exception's text). Keep the returned :class:`~macula.Advertisement`."""
        if not callable(handler):
            raise TypeError("handler must be callable: handler(args) -> bytes")
        return Advertisement(self, procedure, _Serve(handler, self, procedure))

    def advertise_deferred(self, procedure: str, handler: DeferredHandler) -> Advertisement:
        """Serves ``procedure`` with ``handler(args, reply)``; the handler owns the
        :class:`~macula.Reply` and answers now or later from any thread."""
        if not callable(handler):
            raise TypeError("handler must be callable: handler(args, reply)")
        return Advertisement(self, procedure, _ServeDeferred(handler, self, procedure))

    def advertise_async(self, procedure: str, handler: AsyncHandler, *,
                        loop: Optional[asyncio.AbstractEventLoop] = None) -> Advertisement:
        """Serves ``procedure`` with ``await handler(args)`` on ``loop`` (default: the running
        loop); the coroutine's result is the answer, its exception a handler error."""
        if not callable(handler):
            raise TypeError("handler must be an async function: async def handler(args) -> bytes")
        return Advertisement(self, procedure, _ServeAsync(handler, self, procedure, loop or asyncio.get_running_loop()))

    def call(self, procedure: str, args: BytesLike = b"", *, timeout: Optional[float] = None) -> bytes:
        """Calls ``procedure`` with failover across providers and returns the result. Blocking
        (``timeout`` in seconds; None: the node's ``rpc_timeout_ms``). Raises
        :class:`~macula.NoProviderError`, :class:`~macula.MaculaTimeoutError`,
        :class:`~macula.HandlerError` (with the handler's message), ..."""
        p = name(procedure, "procedure")
        b = payload(args, "args")
        ms = _timeout_ms(timeout)
        out, n = ctypes.c_void_p(), ctypes.c_size_t()
        with self._use() as h:
            status = _ffi.lib.macula_call_blocking(ctypes.byref(out), ctypes.byref(n), h, p, b, len(b), ms)
            message = _ffi.last_error() if status else ""
        data = _ffi.take_buffer(out, n.value)
        if status == Status.EHANDLER:
            raise HandlerError(status, data.decode("utf-8", "replace") or message)
        if status != 0:
            raise error_from_status(status, message)
        return data

    def call_future(self, procedure: str, args: BytesLike = b"", *,
                    timeout: Optional[float] = None) -> "concurrent.futures.Future[bytes]":
        """Starts a call (``macula_call``) and returns a future for its result; safe from
        callbacks. Errors found before sending raise here. The future is completed on the
        node's I/O thread, so callbacks added with ``add_done_callback`` run there: keep them
        short and non-blocking (hand work to another thread or loop)."""
        p = name(procedure, "procedure")
        b = payload(args, "args")
        ms = _timeout_ms(timeout)
        completion = Completion(f"call {procedure}")
        with self._use() as h:
            ctx = _callbacks.register(completion)
            cb = _ffi.ResultCallback(ctx, _callbacks.on_result, _callbacks.on_drop)
            status = _ffi.lib.macula_call(h, p, b, len(b), ms, cb)
            if status != 0:
                raise error_from_status(status, _ffi.last_error())
        return completion.future

    async def call_async(self, procedure: str, args: BytesLike = b"", *, timeout: Optional[float] = None) -> bytes:
        """``await``-able :meth:`call` (does not block the event loop)."""
        return await asyncio.wrap_future(self.call_future(procedure, args, timeout=timeout))

    def __repr__(self) -> str:
        kind = "mesh node" if self._mesh is not None else "node"
        state = "closed" if self.closed else ("started" if self._started else "not started")
        return f"<macula.Node ({kind}, {state})>"
