"""pytest setup: the package from this source tree unless PYTHONPATH already provides one, and
libmacula from $MACULA_LIB (CTest sets both) or else the release build of this checkout."""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
if not os.environ.get("MACULA_LIB"):
    for candidate in (REPO / "build" / "release" / "capi" / "libmacula.so",):
        if candidate.exists():
            os.environ["MACULA_LIB"] = str(candidate)
            break
try:
    import macula  # noqa: F401
except ImportError:
    sys.path.insert(0, str(HERE.parent))
    import macula  # noqa: F401


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Polls ``predicate`` until it is truthy or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@pytest.fixture
def mesh() -> Iterator["macula.Mesh"]:
    with macula.Mesh(nodes=2, realm="python.tests") as m:
        yield m


class Inbox:
    """Collects messages from a callback thread."""

    def __init__(self) -> None:
        self.items: list = []
        self.cond = threading.Condition()

    def __call__(self, item: object) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def wait(self, n: int = 1, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.items) >= n, timeout)


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()
