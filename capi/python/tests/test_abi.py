"""The binding against the header: status codes, struct layout, plain functions."""
from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

import macula
from macula import _ffi

HEADER = Path(__file__).resolve().parents[2] / "include" / "macula" / "macula.h"


def header() -> str:
    if not HEADER.exists():
        pytest.skip("macula.h not next to this source tree")
    return HEADER.read_text()


def test_status_enum_matches_header() -> None:
    enum = re.search(r"typedef enum macula_status \{(.*?)\} macula_status;", header(), re.S).group(1)
    codes = {name: int(value) for name, value in re.findall(r"MACULA_(\w+)\s*=\s*(-?\d+)", enum)}
    assert codes == {s.name: int(s) for s in macula.Status}


def test_every_error_status_has_a_specific_exception() -> None:
    for status in macula.Status:
        if status == macula.Status.OK:
            continue
        cls = macula.error_class(status)
        assert cls is not macula.MaculaError, status
        err = macula.error_from_status(status, "m")
        assert isinstance(err, macula.MaculaError) and err.code == status and err.message == "m"
        assert err.description == macula.strerror(status)


def test_exception_classes() -> None:
    S = macula.Status
    assert macula.error_class(S.ETIMED_OUT) is macula.MaculaTimeoutError
    assert issubclass(macula.MaculaTimeoutError, TimeoutError)
    assert macula.error_class(S.ENO_PROVIDER) is macula.NoProviderError
    assert macula.error_class(S.EHANDLER) is macula.HandlerError
    assert macula.error_class(S.ENO_SUBSCRIBERS) is macula.NoSubscribersError
    assert issubclass(macula.error_class(S.EQUEUE_FULL), macula.OverloadedError)
    assert macula.error_class(S.EOVERLOADED) is macula.OverloadedError
    assert issubclass(macula.error_class(S.EINVAL), ValueError)
    assert issubclass(macula.error_class(S.EOPTIONS_INVALID), macula.InvalidArgumentError)
    assert macula.error_class(S.ECONNECTION_REFUSED) is macula.RefusedError
    assert issubclass(macula.RefusedError, ConnectionRefusedError)
    assert macula.error_class(S.ENOT_STARTED) is macula.NotStartedError
    assert macula.error_class(S.EPAYLOAD_TOO_LARGE) is macula.PayloadTooLargeError
    assert macula.error_class(12345) is macula.MaculaError
    assert "12345" in str(macula.error_from_status(12345))


def test_node_options_layout_matches_header() -> None:
    body = re.search(r"typedef struct macula_node_options \{(.*?)\} macula_node_options;", header(), re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    fields = [m.group(1) for m in re.finditer(r"(\w+)\s*;", body)]
    assert fields == [f[0] for f in _ffi.NodeOptions._fields_]
    # The library's own sizeof(macula_node_options) (its legacy initialiser writes it).
    size = _ffi.library_options_size()
    assert size is None or size == ctypes.sizeof(_ffi.NodeOptions)
    assert _ffi.default_node_options().struct_size == ctypes.sizeof(_ffi.NodeOptions)
    assert _ffi.MAX_PAYLOAD_BYTES == 1048576 - 1024


def test_every_header_function_is_bound() -> None:
    declared = set(re.findall(r"MACULA_API\s+[\w\s\*]+?\b(macula_\w+)\s*\(", header()))
    assert declared and declared <= set(_ffi._SIGNATURES)
    assert declared - _ffi._OPTIONAL <= _ffi.bound


def test_plain_functions() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", macula.version())
    assert macula.library_path
    assert macula.strerror(0) == "success"
    token = macula.client_token("vault", "a long random secret")
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert token == macula.client_token("vault", "a long random secret") != macula.client_token("vault", "other")
    with pytest.raises(TypeError):
        macula.client_token(b"vault", "s")  # type: ignore[arg-type]


def test_py_typed_is_shipped() -> None:
    assert (Path(macula.__file__).parent / "py.typed").exists()
