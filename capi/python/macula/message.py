"""A delivered message (a copy: it stays valid after the callback returns)."""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Message:
    """One message delivered to a subscription.

    ``topic`` is the topic it was published to, ``pattern`` the subscription's pattern,
    ``payload`` its bytes, ``publisher`` the publishing node's id (64 hex characters),
    ``sequence`` the publisher's sequence number, ``qos`` 0 or 1.
    """
    topic: str
    pattern: str
    payload: bytes
    publisher: str
    sequence: int
    qos: int

    @classmethod
    def _from_c(cls, m: Any) -> "Message":
        def text(ptr: Any, n: int) -> str:
            return ctypes.string_at(ptr, n).decode("utf-8", "replace") if ptr and n else ""
        return cls(topic=text(m.topic, m.topic_len),
                   pattern=text(m.pattern, m.pattern_len),
                   payload=ctypes.string_at(m.payload, m.payload_len) if m.payload and m.payload_len else b"",
                   publisher=bytes(m.publisher).hex(),
                   sequence=int(m.sequence),
                   qos=int(m.qos))
