"""An in-process mesh of linked nodes on loopback (``macula_mesh_*``), for tests and demos.

Ownership: the Mesh owns its nodes (``mesh.nodes``; each keeps the mesh alive). ``close()``
(or leaving ``with``) closes every node's subscriptions and advertisements, then stops and frees
the nodes. Closing a mesh from a libmacula callback raises :class:`~macula.WouldDeadlockError`.
"""
from __future__ import annotations

import ctypes
from typing import Any, Iterator, Optional, Tuple

from . import _ffi
from ._handle import Handle
from ._payload import opt_str
from .errors import check
from .node import Node


class Mesh(Handle):
    """``Mesh(nodes=2, realm=None)``: starts ``nodes`` linked nodes in realm ``realm`` (None: the
    library's default) and waits until their links are up."""

    _what = "mesh"
    _free_blocks_callbacks = True

    def __init__(self, nodes: int = 2, realm: Optional[str] = None) -> None:
        super().__init__()
        self.nodes: Tuple[Node, ...] = ()
        count = int(nodes)
        if count < 1:
            raise ValueError("a mesh needs at least one node")
        r = opt_str(realm, "realm")
        out = ctypes.c_void_p()
        check(_ffi.lib.macula_mesh_new(ctypes.byref(out), count, r), "mesh")
        self._adopt(out.value)  # type: ignore[arg-type]
        self.nodes = tuple(Node._borrowed(_ffi.lib.macula_mesh_node(out, i), self) for i in range(count))

    def node(self, index: int) -> Node:
        """The ``index``-th node (same as ``mesh.nodes[index]``)."""
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def settle(self) -> None:
        """Waits until the subscriptions and advertisements made before the call are known to
        every node. Blocking."""
        with self._use() as h:
            check(_ffi.lib.macula_mesh_settle(h), "settle")

    def _release_children(self) -> None:
        for n in self.nodes:
            n.close()

    def _free(self, ptr: int) -> None:
        _ffi.lib.macula_mesh_free(ptr)

    def __enter__(self) -> "Mesh":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<macula.Mesh {len(self.nodes)} nodes{' closed' if self.closed else ''}>"
