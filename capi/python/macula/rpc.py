"""RPC serving: advertisements (a handler per procedure) and replies.

Three ways to serve a procedure, all created on a :class:`~macula.Node`:

- :meth:`~macula.Node.advertise` ``(procedure, fn)``: ``fn(args: bytes)`` returns the result
  (bytes-like; ``None`` means empty). An exception it raises becomes a handler-error reply with
  the exception's text: the caller gets :class:`~macula.HandlerError`.
- :meth:`~macula.Node.advertise_deferred` ``(procedure, fn)``: ``fn(args, reply)`` owns the
  :class:`Reply` and answers now or later, from any thread, with ``reply.send(data)`` or
  ``reply.fail(message)``.
- :meth:`~macula.Node.advertise_async` ``(procedure, coro_fn)``: ``await coro_fn(args)`` runs
  on an asyncio loop; its return value or exception is the answer.

Ownership: an :class:`Advertisement` owns its ``macula_advertisement`` and keeps its handler and
its node alive while open; it withdraws the procedure on :meth:`~Advertisement.close`, at the end
of a ``with`` block, when its node or mesh closes, or when garbage collected (so keep a
reference). After ``close()`` returns no handler call is running or will start.

Threads: handlers run on the node's worker threads (concurrently for concurrent calls).
Blocking operations (e.g. :meth:`~macula.Node.call`) raise :class:`~macula.WouldDeadlockError`
there; use :meth:`~macula.Node.call_future` or a deferred reply instead.
"""
from __future__ import annotations

import asyncio
import ctypes
import inspect
import threading
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional

from . import _callbacks, _ffi
from ._handle import Handle
from ._payload import name, payload
from .errors import ClosedError, Status, check

if TYPE_CHECKING:
    from .node import Node


def _describe(e: BaseException) -> str:
    return str(e) or type(e).__name__


class Reply:
    """The right to answer one call (``macula_reply``). Exactly one of :meth:`send`,
    :meth:`fail` or :meth:`close` consumes it; any thread may use it. Dropping an unanswered
    Reply (or closing the node) answers the caller with a handler error ("handler did not
    answer"). Thread-safe."""

    __slots__ = ("_ptr", "_lock", "procedure", "__weakref__")

    def __init__(self, ptr: int, procedure: str) -> None:
        self._ptr: Optional[int] = ptr
        self._lock = threading.Lock()
        self.procedure = procedure

    @property
    def answered(self) -> bool:
        """True once send, fail or close consumed the reply."""
        return self._ptr is None

    def _take(self) -> int:
        with self._lock:
            ptr, self._ptr = self._ptr, None
        if ptr is None:
            raise ClosedError(Status.EINVAL, f"the reply to {self.procedure!r} was already answered")
        return ptr

    def send(self, data: Any = b"") -> None:
        """Answers with ``data`` (bytes-like; ``TypeError`` for ``str``, and the reply stays
        unanswered). A result above :data:`macula.MAX_PAYLOAD_BYTES` consumes the reply too: the
        caller gets :class:`~macula.PayloadTooLargeError`."""
        b = payload(data, "result")
        check(_ffi.lib.macula_reply_send(self._take(), b, len(b)), "reply")

    def fail(self, message: str) -> None:
        """Answers with a handler error: the caller gets :class:`~macula.HandlerError` with
        ``message``."""
        m = str(message).replace("\0", " ").encode("utf-8", "replace")
        check(_ffi.lib.macula_reply_fail(self._take(), m), "reply")

    def close(self) -> None:
        """Releases the reply without answering (idempotent)."""
        with self._lock:
            ptr, self._ptr = self._ptr, None
        if ptr is not None:
            _ffi.lib.macula_reply_free(ptr)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __repr__(self) -> str:
        return f"<macula.Reply {self.procedure!r}{' answered' if self.answered else ''}>"


Handler = Callable[[bytes], Any]
DeferredHandler = Callable[[bytes, Reply], Any]
AsyncHandler = Callable[[bytes], Awaitable[Any]]


class _Serve:
    """``fn(args) -> result``."""
    __slots__ = ("fn", "node", "where")

    def __init__(self, fn: Callable[..., Any], node: "Node", where: str) -> None:
        self.fn, self.node, self.where = fn, node, where

    def _reply(self, reply_ptr: Any) -> Reply:
        r = Reply(reply_ptr, self.where)
        self.node._add_child(r)
        return r

    def on_call(self, args: bytes, reply_ptr: Any) -> None:
        reply = self._reply(reply_ptr)
        try:
            result = self.fn(args)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError("the handler returned an awaitable: serve coroutines with advertise_async")
            reply.send(b"" if result is None else result)
        except BaseException as e:  # noqa: BLE001 - the caller gets the text
            if not reply.answered:
                reply.fail(_describe(e))
            else:
                raise


class _ServeDeferred(_Serve):
    """``fn(args, reply)``: the handler owns the reply."""
    __slots__ = ()

    def on_call(self, args: bytes, reply_ptr: Any) -> None:
        reply = self._reply(reply_ptr)
        try:
            self.fn(args, reply)
        except BaseException as e:  # noqa: BLE001
            if not reply.answered:
                reply.fail(_describe(e))
            else:
                raise


class _ServeAsync(_Serve):
    """``await fn(args)`` on ``loop``."""
    __slots__ = ("loop",)

    def __init__(self, fn: AsyncHandler, node: "Node", where: str, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(fn, node, where)
        self.loop = loop

    def on_call(self, args: bytes, reply_ptr: Any) -> None:
        reply = self._reply(reply_ptr)
        coro = None
        try:
            coro = self.fn(args)
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except BaseException as e:  # noqa: BLE001 - e.g. the loop is closed
            if inspect.iscoroutine(coro):
                coro.close()
            reply.fail(_describe(e))
            return

        def done(f: Any) -> None:  # on the loop's thread
            try:
                if f.cancelled():
                    reply.fail("handler cancelled")
                elif f.exception() is not None:
                    reply.fail(_describe(f.exception()))
                else:
                    result = f.result()
                    reply.send(b"" if result is None else result)
            except BaseException as e:  # noqa: BLE001
                if not reply.answered:
                    reply.fail(_describe(e))
                else:
                    _callbacks.report(self.where, e)

        future.add_done_callback(done)


class Advertisement(Handle):
    """A procedure served by a node; create it with :meth:`macula.Node.advertise` (or
    ``advertise_deferred`` / ``advertise_async``)."""

    _what = "advertisement"

    def __init__(self, node: "Node", procedure: str, state: _Serve) -> None:
        super().__init__()
        self.node = node
        self.procedure = procedure
        c_procedure = name(procedure, "procedure")
        out = ctypes.c_void_p()
        with node._use() as h:
            ctx = _callbacks.register(state)
            cb = _ffi.Handler(ctx, _callbacks.on_call, _callbacks.on_drop)
            # On failure the library calls drop, which releases ``state``.
            check(_ffi.lib.macula_advertise(ctypes.byref(out), h, c_procedure, cb), f"advertise {procedure}")
        self._adopt(out.value)  # type: ignore[arg-type]
        node._add_child(self)

    def _free(self, ptr: int) -> None:
        _ffi.lib.macula_advertisement_free(ptr)  # waits for running handlers, then drop

    def __repr__(self) -> str:
        return f"<macula.Advertisement {self.procedure!r}{' closed' if self.closed else ''}>"
