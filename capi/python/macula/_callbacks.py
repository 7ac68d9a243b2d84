"""The C callbacks (internal): one ctypes trampoline per callback signature, for the whole process.

Every registration (a subscription, an advertisement, one asynchronous call or publish, a node's
log sink) puts a Python object into :data:`_entries` under an integer id and passes that id to
C as the callback's ``context``. The trampolines look the object up; the C ``drop`` callback,
which libmacula calls exactly once when it will not call ``call`` again, removes it. So the
Python callable lives exactly as long as libmacula may call it, and the ctypes function objects
themselves are module globals that are never freed (no "callback freed while C still holds it").

Exceptions raised by user code inside a callback never reach C: they are logged to the
``macula`` logger (``logging.getLogger("macula")``; without logging configured, Python's
last-resort handler prints them to stderr).

Which thread calls: message and RPC handler callbacks run on a node's worker threads; completion
callbacks (publish, call) on its I/O thread; log callbacks on any of the node's threads; drop on
whichever thread releases the registration (often the one calling ``close()``).
"""
from __future__ import annotations

import ctypes
import itertools
import logging
import threading
from typing import Any, Dict, Optional

from . import _ffi

log = logging.getLogger("macula")

_entries: Dict[int, Any] = {}
_ids = itertools.count(1)
_local = threading.local()

WORKER = "worker"  # message and RPC handler callbacks
IO = "io"          # completion callbacks: must not block
LOG = "log"        # log sink: must not call back into the library


def register(obj: Any) -> int:
    """Keeps ``obj`` alive until libmacula drops the context ``id`` returned."""
    i = next(_ids)
    _entries[i] = obj
    return i


def release(i: int) -> Any:
    """Forgets ``i`` (when the C side will not call with it again); returns its object."""
    return _entries.pop(i, None)


def live_count() -> int:
    """How many registrations libmacula still holds (for tests and leak checks)."""
    return len(_entries)


def current_kind() -> Optional[str]:
    """WORKER, IO or LOG when the calling thread is inside a libmacula callback, else None."""
    return getattr(_local, "kind", None)


def report(where: str, exc: BaseException) -> None:
    """Logs an exception that escaped user code in a callback (it must not reach C)."""
    try:
        log.error("exception in %s", where, exc_info=(type(exc), exc, exc.__traceback__))
    except Exception:  # logging itself failed (e.g. at interpreter shutdown): nothing to do
        pass


class _Scope:
    __slots__ = ("kind", "previous")

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __enter__(self) -> None:
        self.previous = getattr(_local, "kind", None)
        _local.kind = self.kind

    def __exit__(self, *exc: Any) -> None:
        _local.kind = self.previous


def _on_message(context: Optional[int], message: Any) -> None:
    entry = _entries.get(context or 0)
    if entry is None:
        return
    try:
        with _Scope(WORKER):
            entry.on_message(message.contents)
    except BaseException as e:  # noqa: BLE001 - nothing may propagate into C
        report(f"the message callback of {getattr(entry, 'where', entry)!s}", e)


def _on_call(context: Optional[int], args: Optional[int], length: int, reply: Optional[int]) -> None:
    entry = _entries.get(context or 0)
    if entry is None:  # not reachable through the C contract; answer rather than leak the reply
        _ffi.lib.macula_reply_fail(reply, b"procedure withdrawn")
        return
    try:
        with _Scope(WORKER):
            data = ctypes.string_at(args, length) if args and length else b""
            entry.on_call(data, reply)
    except BaseException as e:  # noqa: BLE001
        report(f"the RPC handler of {getattr(entry, 'where', entry)!s}", e)


def _on_result(context: Optional[int], status: int, data: Optional[int], length: int) -> None:
    entry = _entries.get(context or 0)
    if entry is None:
        return
    try:
        with _Scope(IO):
            entry.on_result(status, ctypes.string_at(data, length) if data and length else b"")
    except BaseException as e:  # noqa: BLE001
        report(f"the completion of {getattr(entry, 'where', entry)!s}", e)


def _on_drop(context: Optional[int]) -> None:
    entry = release(context or 0)
    drop = getattr(entry, "on_drop", None)
    if drop is None:
        return
    try:
        drop()
    except BaseException as e:  # noqa: BLE001
        report(f"the drop of {getattr(entry, 'where', entry)!s}", e)


def _on_log(context: Optional[int], level: int, component: Optional[bytes], message: Optional[bytes]) -> None:
    entry = _entries.get(context or 0)
    if entry is None:
        return
    try:
        with _Scope(LOG):
            entry.on_log(level, (component or b"").decode("utf-8", "replace"),
                         (message or b"").decode("utf-8", "replace"))
    except BaseException as e:  # noqa: BLE001
        report("the log callback", e)


# The ctypes function objects handed to C: module globals, never freed.
on_message = _ffi.MESSAGE_FN(_on_message)
on_call = _ffi.HANDLER_FN(_on_call)
on_result = _ffi.RESULT_FN(_on_result)
on_drop = _ffi.DROP_FN(_on_drop)
on_log = _ffi.LOG_FN(_on_log)
