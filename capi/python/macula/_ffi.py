"""Loading ``libmacula.so`` and the ctypes declarations of ``macula.h`` (internal).

Where the library comes from, in this order (the first that loads wins):

1. ``$MACULA_LIB`` when set (a path; nothing else is tried when it does not load);
2. ``libmacula.so*`` next to this file (the copy bundled into the package for a pip install of
   the built tree);
3. relative to the installed package: ``cmake --install`` puts the package in a directory on
   python3's sys.path (``<prefix>/lib/python3.X/dist-packages/macula`` for /usr/local on
   Debian, ``<prefix>/lib/python3/dist-packages/macula`` for /usr; CMake's
   ``MACULA_PYTHON_INSTALL_DIR``) and the library at ``<prefix>/<libdir>/libmacula.so.0``; the
   path from one to the other is in the generated ``_installed.py`` that it installs alongside;
4. the system loader (``ctypes.util.find_library("macula")``, then ``libmacula.so.0``).

When none works, importing :mod:`macula` raises :class:`ImportError` naming every place looked at.

The struct layouts below follow ``macula.h`` field by field; ``macula_node_options`` only ever
grows at its end, and we tell the library our size through ``struct_size``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import os
from pathlib import Path
from typing import Any, List, Optional, Tuple

c_void_p = ctypes.c_void_p
c_size_t = ctypes.c_size_t
c_int = ctypes.c_int
c_char_p = ctypes.c_char_p
c_uint8 = ctypes.c_uint8
c_uint32 = ctypes.c_uint32
c_uint64 = ctypes.c_uint64
POINTER = ctypes.POINTER

_SONAME = "libmacula.so.0"


def _try_load(path: str, tried: List[str]) -> Any:
    try:
        return ctypes.CDLL(path)
    except OSError as e:
        tried.append(f"{path}: {e}")
        return None


def _installed_libdir(here: Path) -> Optional[Path]:
    """``<prefix>/<libdir>`` of a package that ``cmake --install`` put there, else None."""
    try:
        # Imported by name: the module exists only in an installed copy, not in the sources.
        installed = importlib.import_module(f"{__package__}._installed")
    except ImportError:
        return None
    return Path(os.path.normpath(here / str(installed.LIBDIR)))


def _load() -> Tuple[ctypes.CDLL, str]:
    env = os.environ.get("MACULA_LIB")
    if env:
        try:
            return ctypes.CDLL(env), env
        except OSError as e:
            raise ImportError(f"macula: MACULA_LIB={env!r} could not be loaded: {e}") from None
    tried: List[str] = ["$MACULA_LIB: not set"]
    here = Path(__file__).resolve().parent
    # 2. bundled next to the package; the SONAME first, then the development link, then others.
    bundled = sorted(here.glob("libmacula.so*"), key=lambda p: (p.name != _SONAME, p.name != "libmacula.so", p.name))
    if not bundled:
        tried.append(f"{here}/libmacula.so*: none")
    # 3. the installed package's <prefix>/<libdir>/libmacula.so.0
    libdir = _installed_libdir(here)
    installed = [libdir / _SONAME, libdir / "libmacula.so"] if libdir else []
    if libdir is None:
        tried.append(f"{here}/_installed.py: none (not installed by cmake --install)")
    for p in [*bundled, *installed]:
        if p.exists():
            lib = _try_load(str(p), tried)
            if lib is not None:
                return lib, str(p)
        elif p not in bundled:
            tried.append(f"{p}: not found")
    # 4. the system loader (LD_LIBRARY_PATH, ld.so.cache, default directories).
    found = ctypes.util.find_library("macula")
    if found:
        lib = _try_load(found, tried)
        if lib is not None:
            return lib, found
    else:
        tried.append("ctypes.util.find_library('macula'): nothing")
    lib = _try_load(_SONAME, tried)
    if lib is not None:
        return lib, _SONAME
    raise ImportError("macula: cannot load libmacula.so; looked at:\n  " + "\n  ".join(tried) +
                      "\nSet MACULA_LIB to the library's path, or install libmacula (cmake --install).")


lib, library_path = _load()


# ---- structs ---------------------------------------------------------------------------------
class Message(ctypes.Structure):
    _fields_ = [("topic", c_void_p), ("topic_len", c_size_t),
                ("pattern", c_void_p), ("pattern_len", c_size_t),
                ("payload", c_void_p), ("payload_len", c_size_t),
                ("publisher", c_uint8 * 32), ("sequence", c_uint64), ("qos", c_int)]


MESSAGE_FN = ctypes.CFUNCTYPE(None, c_void_p, POINTER(Message))
DROP_FN = ctypes.CFUNCTYPE(None, c_void_p)
RESULT_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_void_p, c_size_t)
HANDLER_FN = ctypes.CFUNCTYPE(None, c_void_p, c_void_p, c_size_t, c_void_p)
LOG_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_char_p, c_char_p)


class MessageCallback(ctypes.Structure):
    _fields_ = [("context", c_void_p), ("call", MESSAGE_FN), ("drop", DROP_FN)]


class ResultCallback(ctypes.Structure):
    _fields_ = [("context", c_void_p), ("call", RESULT_FN), ("drop", DROP_FN)]


class Handler(ctypes.Structure):
    _fields_ = [("context", c_void_p), ("call", HANDLER_FN), ("drop", DROP_FN)]


class NodeOptions(ctypes.Structure):
    """``macula_node_options``, in the header's field order."""
    _fields_ = [
        ("struct_size", c_size_t),
        ("realm", c_char_p),
        ("realm_secret", c_char_p),
        ("listen", c_char_p),
        ("key_file", c_char_p),
        ("cert_file", c_char_p),
        ("bootstrap", POINTER(c_char_p)),
        ("bootstrap_count", c_size_t),
        ("worker_threads", c_size_t),
        ("io_threads", c_size_t),
        ("rpc_timeout_ms", c_uint32),
        ("dht", c_int),
        ("http_listen", c_char_p),
        ("log", LOG_FN),
        ("log_user_data", c_void_p),
        ("log_level", c_int),
        ("client_access", c_int),
        ("client_token", c_char_p),
        ("leaf", c_int),
        # added after 0.1's first release (the header puts the pointer first)
        ("advertise_address", c_char_p),
        ("dht_record_ttl_s", c_uint32),
    ]


# ---- functions -------------------------------------------------------------------------------
_SIGNATURES = {
    "macula_client_token": (c_int, [c_char_p, c_char_p, c_char_p, c_size_t]),
    "macula_version": (c_char_p, []),
    "macula_strerror": (c_char_p, [c_int]),
    "macula_last_error": (c_char_p, []),
    "macula_free": (None, [c_void_p]),
    "macula_node_options_init_sized": (None, [c_void_p, c_size_t]),
    "macula_node_options_init": (None, [c_void_p]),  # legacy export: the library's own sizeof
    "macula_node_new": (c_int, [POINTER(c_void_p), POINTER(NodeOptions)]),
    "macula_node_start": (c_int, [c_void_p]),
    "macula_node_stop": (c_int, [c_void_p]),
    "macula_node_free": (None, [c_void_p]),
    "macula_node_id": (c_int, [c_void_p, c_char_p]),
    "macula_node_address": (c_int, [c_void_p, c_char_p, c_size_t]),
    "macula_node_connect": (c_int, [c_void_p, c_char_p]),
    "macula_node_metrics": (c_int, [POINTER(c_void_p), c_void_p]),
    "macula_publish": (c_int, [c_void_p, c_char_p, c_void_p, c_size_t, c_int, POINTER(ResultCallback)]),
    "macula_subscribe": (c_int, [POINTER(c_void_p), c_void_p, c_char_p, MessageCallback]),
    "macula_subscription_free": (None, [c_void_p]),
    "macula_subscription_dropped": (c_uint64, [c_void_p]),
    "macula_reply_send": (c_int, [c_void_p, c_void_p, c_size_t]),
    "macula_reply_fail": (c_int, [c_void_p, c_char_p]),
    "macula_reply_free": (None, [c_void_p]),
    "macula_advertise": (c_int, [POINTER(c_void_p), c_void_p, c_char_p, Handler]),
    "macula_advertisement_free": (None, [c_void_p]),
    "macula_call": (c_int, [c_void_p, c_char_p, c_void_p, c_size_t, c_uint32, ResultCallback]),
    "macula_call_blocking": (c_int, [POINTER(c_void_p), POINTER(c_size_t), c_void_p, c_char_p, c_void_p, c_size_t,
                                     c_uint32]),
    "macula_mesh_new": (c_int, [POINTER(c_void_p), c_size_t, c_char_p]),
    "macula_mesh_node": (c_void_p, [c_void_p, c_size_t]),
    "macula_mesh_settle": (c_int, [c_void_p]),
    "macula_mesh_free": (None, [c_void_p]),
}

# Symbols a library may lack: the legacy options initialiser, or the sized one in an older build.
_OPTIONAL = {"macula_node_options_init", "macula_node_options_init_sized"}
bound = set()
for _name, (_restype, _argtypes) in _SIGNATURES.items():
    try:
        _f = getattr(lib, _name)
    except AttributeError:
        if _name in _OPTIONAL:
            continue
        raise ImportError(f"macula: {library_path} has no {_name}: it is older than this package") from None
    _f.restype = _restype
    _f.argtypes = _argtypes
    bound.add(_name)
if not bound & _OPTIONAL:
    raise ImportError(f"macula: {library_path} exports no macula_node_options_init*")

MAX_PAYLOAD_BYTES = 1048576 - 1024  # MACULA_MAX_PAYLOAD_BYTES


def last_error() -> str:
    """``macula_last_error()``: the calling thread's last failure message."""
    s: Optional[bytes] = lib.macula_last_error()
    return s.decode("utf-8", "replace") if s else ""


def strerror(status: int) -> str:
    """``macula_strerror(status)``."""
    s: Optional[bytes] = lib.macula_strerror(status)
    return s.decode("utf-8", "replace") if s else ""


def take_buffer(ptr: c_void_p, length: int) -> bytes:
    """Copies ``length`` bytes at ``ptr`` and releases ``ptr`` with ``macula_free``."""
    try:
        return ctypes.string_at(ptr.value, length) if ptr.value and length else b""
    finally:
        if ptr.value:
            lib.macula_free(ptr)


def default_node_options() -> NodeOptions:
    """The defaults for our struct, with ``struct_size`` = our size:
    ``macula_node_options_init_sized(&o, sizeof o)``; with a library that only has the legacy
    ``macula_node_options_init``, that into a buffer larger than ours (a newer library may have
    more fields), then our part of it."""
    size = ctypes.sizeof(NodeOptions)
    if "macula_node_options_init_sized" in bound:
        opts = NodeOptions()
        lib.macula_node_options_init_sized(ctypes.byref(opts), size)
    else:
        buf = (ctypes.c_char * (size + 1024))()
        lib.macula_node_options_init(buf)
        opts = NodeOptions.from_buffer_copy(buf, 0)
    opts.struct_size = size
    return opts


def library_options_size() -> "int | None":
    """``sizeof(macula_node_options)`` as the library was compiled (what its legacy
    ``macula_node_options_init`` writes into ``struct_size``), or None when not exported."""
    if "macula_node_options_init" not in bound:
        return None
    buf = (ctypes.c_char * (ctypes.sizeof(NodeOptions) + 1024))()
    lib.macula_node_options_init(buf)
    return c_size_t.from_buffer(buf).value
