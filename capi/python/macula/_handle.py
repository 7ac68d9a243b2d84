"""Ownership of one C handle (internal): open/closed state, use counting, closing at exit.

A :class:`Handle` owns a C pointer until :meth:`Handle.close` releases it (also from ``__del__``
and, for anything still open, at interpreter exit, children before parents, so no libmacula
thread calls into a finalizing interpreter). Methods borrow the pointer with :meth:`_use`;
``close()`` waits until no other thread is inside a libmacula call through this object, so a
concurrent ``close()`` never frees a handle under a running call.
"""
from __future__ import annotations

import atexit
import itertools
import threading
import weakref
from typing import Any, Dict, Iterator, Optional
from contextlib import contextmanager

from . import _callbacks
from .errors import ClosedError, Status, WouldDeadlockError

_order = itertools.count(1)
_live: "weakref.WeakValueDictionary[int, Handle]" = weakref.WeakValueDictionary()
_in_use = threading.local()  # ids of the handles this thread is using (a call into C)


class Handle:
    """Base of the objects that own a libmacula handle. Context manager: ``with`` closes."""

    # True when releasing the handle from a libmacula callback would deadlock (nodes, meshes):
    # close() then raises WouldDeadlockError, and __del__ hands the release to a helper thread.
    _free_blocks_callbacks = False
    _what = "handle"

    def __init__(self) -> None:
        self._ptr: Optional[int] = None
        self._cond = threading.Condition(threading.Lock())
        self._users = 0
        self._closing = False
        self._seq = next(_order)

    def _adopt(self, ptr: int) -> None:
        """Takes ownership of ``ptr`` (after a successful C constructor)."""
        self._ptr = ptr
        _live[self._seq] = self

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has started (the handle is released or being released)."""
        return self._ptr is None or self._closing

    @contextmanager
    def _use(self) -> Iterator[int]:
        if _callbacks.current_kind() == _callbacks.LOG:
            raise WouldDeadlockError(Status.EWOULDDEADLOCK, "a log callback must not call back into libmacula")
        with self._cond:
            if self._ptr is None or self._closing:
                raise ClosedError(Status.EINVAL, f"{self._what} is closed")
            self._users += 1
        mine: Dict[int, int] = _in_use.__dict__.setdefault("ids", {})
        mine[id(self)] = mine.get(id(self), 0) + 1
        try:
            yield self._ptr
        finally:
            n = mine[id(self)] - 1
            if n:
                mine[id(self)] = n
            else:
                del mine[id(self)]
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    self._cond.notify_all()

    def _release_children(self) -> None:
        """Closes what depends on this handle (overridden by nodes and meshes)."""

    def _free(self, ptr: int) -> None:
        raise NotImplementedError

    def _after_free(self) -> None:
        """Runs after the C free returned (no callback of this handle runs any more)."""

    def close(self) -> None:
        """Releases the handle (idempotent). After it returns, none of this object's callbacks
        run any more. Children (subscriptions, advertisements, pending replies of a node; the
        nodes of a mesh) are closed first."""
        if self._free_blocks_callbacks and _callbacks.current_kind() is not None and not self.closed:
            raise WouldDeadlockError(Status.EWOULDDEADLOCK,
                                     f"closing a {self._what} from a libmacula callback would deadlock")
        with self._cond:
            if self._ptr is None or self._closing:
                return
            if _in_use.__dict__.get("ids", {}).get(id(self)):
                raise WouldDeadlockError(Status.EWOULDDEADLOCK,
                                         f"{self._what}.close() from inside a call through it")
            self._closing = True
            while self._users:
                self._cond.wait()
        try:
            self._release_children()
        finally:
            ptr, self._ptr = self._ptr, None
            _live.pop(self._seq, None)
            if ptr is not None:
                self._free(ptr)
            self._after_free()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if getattr(self, "_ptr", None) is None:
                return
            if self._free_blocks_callbacks and _callbacks.current_kind() is not None:
                threading.Thread(target=self.close, name=f"macula-close-{self._what}", daemon=True).start()
            else:
                self.close()
        except Exception:  # noqa: BLE001 - nothing sensible to do in a finalizer
            pass


def close_all() -> None:
    """Closes every handle still open, newest first (children before their parents)."""
    for seq in sorted(list(_live.keys()), reverse=True):
        h = _live.get(seq)
        if h is not None:
            try:
                h.close()
            except Exception as e:  # noqa: BLE001
                _callbacks.report(f"closing {h._what} at exit", e)


atexit.register(close_all)
