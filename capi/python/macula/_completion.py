"""One asynchronous operation's completion (internal): a C result callback feeding a
:class:`concurrent.futures.Future`.

The library calls ``on_result`` once on the node's I/O thread (it must not block: we only
complete the future; asyncio awaiters are woken through ``asyncio.wrap_future``, i.e.
``loop.call_soon_threadsafe``), then ``on_drop``. A drop without a result (the node closed
first) fails the future with :class:`~macula.OperationCancelledError`.
"""
from __future__ import annotations

import concurrent.futures
from typing import Any

from .errors import HandlerError, OperationCancelledError, Status, error_from_status
from . import _ffi


class Completion:
    __slots__ = ("future", "where", "void")

    def __init__(self, where: str, void: bool = False) -> None:
        self.future: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
        self.where = where
        self.void = void  # the result is None (publish), not the bytes (call)

    def on_result(self, status: int, data: bytes) -> None:
        if status == 0:
            self._settle(None if self.void else data, None)
        elif status == Status.EHANDLER:
            self._settle(None, HandlerError(status, data.decode("utf-8", "replace")))
        else:
            self._settle(None, error_from_status(status, f"{self.where}: {_ffi.strerror(status)}"))

    def on_drop(self) -> None:
        if not self.future.done():
            self._settle(None, OperationCancelledError(Status.ECANCELLED,
                                                       f"{self.where}: no result (its node closed first)"))

    def _settle(self, result: Any, exc: Any) -> None:
        try:
            if exc is None:
                self.future.set_result(result)
            else:
                self.future.set_exception(exc)
        except concurrent.futures.InvalidStateError:  # cancelled by its owner meanwhile
            pass
