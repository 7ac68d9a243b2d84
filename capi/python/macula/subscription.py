"""Subscriptions: a callback per message (:class:`Subscription`), or an asyncio stream
(:class:`AsyncSubscription`, ``async for msg in sub``).

Ownership: the Subscription owns its ``macula_subscription``. It keeps its callback alive while
it is open, and it keeps its :class:`~macula.Node` alive. It is closed (unsubscribed) by
:meth:`close`, by leaving a ``with`` block, when its node or mesh closes, or when it is garbage
collected: **keep a reference for as long as you want messages**; once it is closed no more
messages arrive and the callback is released. After ``close()`` returns the callback is not
running and will not run again.

Threads: the callback runs on one of the node's worker threads (several messages may be
delivered concurrently on different workers). It may use this package, but the blocking
operations (``Node.call``, ``connect``, ``stop``, closing a node or mesh, ``Mesh.settle``) raise
:class:`~macula.WouldDeadlockError` there: use ``call_future``/``publish(..., wait=False)``.
Exceptions it raises are logged to the ``macula`` logger and the message counts as delivered.
"""
from __future__ import annotations

import asyncio
import collections
import ctypes
import threading
from typing import TYPE_CHECKING, Any, Callable, Deque, Optional

from . import _callbacks, _ffi
from ._handle import Handle
from .errors import check
from .message import Message

if TYPE_CHECKING:
    from .node import Node

MessageCallback = Callable[[Message], Any]


class _Deliver:
    """What the C side holds for a callback subscription (registered under its context id)."""
    __slots__ = ("callback", "where")

    def __init__(self, callback: MessageCallback, where: str) -> None:
        self.callback = callback
        self.where = where

    def on_message(self, m: Any) -> None:
        self.callback(Message._from_c(m))


class Subscription(Handle):
    """A subscription of a pattern on a node; create it with :meth:`macula.Node.subscribe`."""

    _what = "subscription"

    def __init__(self, node: "Node", pattern: str, state: Any) -> None:
        super().__init__()
        self.node = node
        self.pattern = pattern
        self._state = state
        from ._payload import name
        c_pattern = name(pattern, "pattern")
        out = ctypes.c_void_p()
        with node._use() as h:
            ctx = _callbacks.register(state)
            cb = _ffi.MessageCallback(ctx, _callbacks.on_message, _callbacks.on_drop)
            # On failure the library calls drop, which releases ``state``.
            check(_ffi.lib.macula_subscribe(ctypes.byref(out), h, c_pattern, cb), f"subscribe {pattern}")
        self._adopt(out.value)  # type: ignore[arg-type]
        node._add_child(self)

    @property
    def dropped(self) -> int:
        """Messages the library dropped for this subscription because its queue was full
        (``macula_subscription_dropped``)."""
        with self._use() as h:
            return int(_ffi.lib.macula_subscription_dropped(h))

    def _free(self, ptr: int) -> None:
        _ffi.lib.macula_subscription_free(ptr)  # waits for a running callback, then drop

    def __repr__(self) -> str:
        return f"<macula.Subscription {self.pattern!r}{' closed' if self.closed else ''}>"


class _Stream:
    """The bounded buffer between the worker threads and an asyncio loop."""
    __slots__ = ("loop", "maxsize", "buffer", "lock", "waiter", "wake_pending", "ended", "queue_dropped", "where")

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int, where: str) -> None:
        self.loop = loop
        self.maxsize = maxsize
        self.buffer: Deque[Message] = collections.deque()
        self.lock = threading.Lock()
        self.waiter: Optional[asyncio.Future[None]] = None
        self.wake_pending = False
        self.ended = False
        self.queue_dropped = 0
        self.where = where

    # worker thread
    def on_message(self, m: Any) -> None:
        msg = Message._from_c(m)
        with self.lock:
            if self.ended:
                return
            if len(self.buffer) >= self.maxsize:
                self.queue_dropped += 1
                return
            self.buffer.append(msg)
        self._wake()

    # any thread: once the library will not deliver any more
    def on_drop(self) -> None:
        with self.lock:
            self.ended = True
        self._wake()

    def _wake(self) -> None:
        with self.lock:
            if self.wake_pending:
                return
            self.wake_pending = True
        try:
            self.loop.call_soon_threadsafe(self._wake_in_loop)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            with self.lock:
                self.wake_pending = False

    # loop thread
    def _wake_in_loop(self) -> None:
        with self.lock:
            self.wake_pending = False
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class AsyncSubscription(Subscription):
    """A subscription read with ``async for msg in sub`` (or ``await sub.get()``), created by
    :meth:`macula.Node.subscribe_async` for one asyncio event loop.

    Worker threads put each message into a bounded buffer (``maxsize`` messages) and wake the
    loop with ``loop.call_soon_threadsafe``. **When the buffer is full, the arriving message is
    dropped** (the buffered ones are kept) and counted in :attr:`queue_dropped`; messages the
    library itself dropped are counted in :attr:`dropped`. Closing (``close()``, leaving
    ``with``/``async with``, closing the node) discards what is buffered and ends the iteration
    (``StopAsyncIteration``) right away. Iterate it on the loop it was created for.
    """

    _what = "subscription"

    def __init__(self, node: "Node", pattern: str, maxsize: int, loop: asyncio.AbstractEventLoop) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._stream = _Stream(loop, maxsize, f"subscription {pattern!r}")
        super().__init__(node, pattern, self._stream)

    @property
    def queue_dropped(self) -> int:
        """Messages dropped because the buffer was full (the consumer was too slow)."""
        return self._stream.queue_dropped

    @property
    def maxsize(self) -> int:
        """The buffer's bound, in messages."""
        return self._stream.maxsize

    def qsize(self) -> int:
        """Messages buffered now."""
        with self._stream.lock:
            return len(self._stream.buffer)

    def _after_free(self) -> None:
        s = self._stream
        with s.lock:
            s.ended = True
            s.buffer.clear()
        s._wake()

    def __aiter__(self) -> "AsyncSubscription":
        return self

    async def __anext__(self) -> Message:
        s = self._stream
        while True:
            with s.lock:
                if s.buffer:
                    return s.buffer.popleft()
                if s.ended or self.closed:
                    raise StopAsyncIteration
            if s.loop is not asyncio.get_running_loop():
                raise RuntimeError("this AsyncSubscription belongs to another event loop")
            s.waiter = s.loop.create_future()
            try:
                with s.lock:  # a message may have arrived since the check above
                    ready = bool(s.buffer) or s.ended
                if not ready:
                    await s.waiter
            finally:
                s.waiter = None

    async def get(self) -> Message:
        """The next message; :class:`~macula.ClosedError` once the subscription is closed."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            from .errors import ClosedError
            raise ClosedError(message="subscription is closed") from None

    async def __aenter__(self) -> "AsyncSubscription":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<macula.AsyncSubscription {self.pattern!r}{' closed' if self.closed else ''}>"
