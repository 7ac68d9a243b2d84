"""Argument conversion (internal): bytes-like payloads and names."""
from __future__ import annotations

from typing import Union

from .errors import InvalidNameError, Status

#: What a payload may be: any object exporting a buffer (bytes, bytearray, memoryview,
#: array.array, ...). ``str`` is refused: encode it first (``text.encode()``).
BytesLike = Union[bytes, bytearray, memoryview]


def payload(data: object, what: str = "payload") -> bytes:
    """``data`` as bytes (no copy for ``bytes``). ``TypeError`` for ``str`` or a non-buffer."""
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        raise TypeError(f"{what} must be bytes-like (bytes, bytearray, memoryview), not str: "
                        f"encode it first, e.g. {what}.encode()")
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be bytes-like (bytes, bytearray, memoryview), "
                        f"not {type(data).__name__}") from None
    with view:
        return view.tobytes()


def name(value: object, what: str) -> bytes:
    """A topic, pattern, procedure or address as NUL-terminated UTF-8 for C."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    if "\0" in value:
        raise InvalidNameError(Status.ENAME_INVALID_CHARACTER, f"{what} {value!r} contains a NUL character")
    return value.encode("utf-8")


def opt_str(value: object, what: str) -> Union[bytes, None]:
    """An optional string option: None stays None (the library's default)."""
    return None if value is None else name(value, what)
