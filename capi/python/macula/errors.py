"""Status codes (``macula_status``) and the exceptions they become.

Every failing libmacula call raises a :class:`MaculaError` subclass carrying the status
(``code``) and the library's message (``macula_last_error()`` for synchronous calls; for
asynchronous completions, the status's description or, for :class:`HandlerError`, the remote
handler's own message). Several classes also derive from the matching built-in exception, so
``except TimeoutError`` or ``except ValueError`` work as expected::

    MaculaError
    ├── InvalidArgumentError (ValueError)      EINVAL
    │   ├── InvalidNameError                   ENAME_*
    │   ├── AddressInvalidError                EADDRESS_INVALID
    │   ├── IdentityInvalidError               EIDENTITY_INVALID
    │   ├── OptionsInvalidError                EOPTIONS_INVALID
    │   └── ClosedError                        (Python side: the object was closed)
    ├── PayloadTooLargeError (ValueError)      EPAYLOAD_TOO_LARGE
    ├── MaculaTimeoutError (TimeoutError)      ETIMED_OUT
    ├── NoProviderError                        ENO_PROVIDER
    ├── HandlerError                           EHANDLER
    ├── NoSubscribersError                     ENO_SUBSCRIBERS
    ├── OverloadedError                        EOVERLOADED
    │   ├── QueueFullError                     EQUEUE_FULL
    │   ├── TooManyPendingError                ETOO_MANY_PENDING
    │   ├── TooManySubscriptionsError          ETOO_MANY_SUBSCRIPTIONS
    │   └── WouldBlockError                    EWOULD_BLOCK
    ├── MaculaConnectionError (ConnectionError) ETRANSPORT, ECONNECTION_CLOSED
    │   ├── HandshakeTimeoutError (TimeoutError) EHANDSHAKE_TIMEOUT
    │   ├── RefusedError (ConnectionRefusedError) ECONNECTION_REFUSED
    │   ├── AddressUnresolvedError             EADDRESS_UNRESOLVED
    │   └── RealmMismatchError                 EREALM_MISMATCH (also a RefusedError)
    ├── RealmProofError (PermissionError)      EREALM_PROOF
    ├── UnauthorizedError (PermissionError)    EUNAUTHORIZED
    ├── NotStartedError                        ENOT_STARTED
    ├── OperationCancelledError                ECANCELLED
    ├── WouldDeadlockError (RuntimeError)      EWOULDDEADLOCK
    ├── OutOfMemoryError (MemoryError)         ENOMEM
    ├── InternalError                          EINTERNAL
    └── OtherError (OSError)                   EOTHER
"""
from __future__ import annotations

import enum
from typing import Any, Dict, Tuple, Type

from . import _ffi


class Status(enum.IntEnum):
    """``macula_status`` (macula.h): 0 success, positive library conditions, negative C-ABI ones."""
    OK = 0
    ENAME_EMPTY = 1
    ENAME_TOO_LONG = 2
    ENAME_EMPTY_SEGMENT = 3
    ENAME_INVALID_CHARACTER = 4
    ENAME_WILDCARD_NOT_ALLOWED = 5
    EQUEUE_FULL = 8
    ENO_PROVIDER = 13
    EIDENTITY_INVALID = 22
    ETRANSPORT = 24
    EHANDSHAKE_TIMEOUT = 25
    ECONNECTION_CLOSED = 26
    ECONNECTION_REFUSED = 27
    EADDRESS_INVALID = 29
    ETIMED_OUT = 30
    ETOO_MANY_PENDING = 32
    ECANCELLED = 34
    ETOO_MANY_SUBSCRIPTIONS = 35
    EHANDLER = 36
    ENOT_STARTED = 38
    EOVERLOADED = 39
    EWOULDDEADLOCK = 40
    EWOULD_BLOCK = 42
    EPAYLOAD_TOO_LARGE = 43
    EREALM_PROOF = 44
    EUNAUTHORIZED = 45
    EOPTIONS_INVALID = 46
    ENO_SUBSCRIBERS = 47
    EADDRESS_UNRESOLVED = 48
    EREALM_MISMATCH = 49
    EINVAL = -1
    ENOMEM = -2
    EINTERNAL = -3
    EOTHER = -4


class MaculaError(Exception):
    """A libmacula failure: ``code`` is the ``macula_status`` value, ``message`` the library's
    text about this failure, ``description`` what ``macula_strerror(code)`` says."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = int(code)
        self.message = message
        super().__init__(self.code, message)

    @property
    def description(self) -> str:
        """``macula_strerror(code)``."""
        return _ffi.strerror(self.code)

    @property
    def status(self) -> int:
        """Same as ``code``."""
        return self.code

    def __str__(self) -> str:
        name = Status(self.code).name if self.code in Status._value2member_map_ else str(self.code)
        description = self.description
        if not self.message or description in self.message:
            return f"{self.message or description} [{name}]"
        return f"{self.message} [{name}: {description}]"

    def __reduce__(self) -> Tuple[Any, ...]:  # picklable across processes
        return (type(self), (self.code, self.message))


class InvalidArgumentError(MaculaError, ValueError):
    """A NULL/out-of-range argument (EINVAL) or an invalid value."""


class InvalidNameError(InvalidArgumentError):
    """A topic, pattern or procedure name that is empty, too long, has an empty segment, an
    invalid character, or a wildcard where none is allowed (ENAME_*)."""


class AddressInvalidError(InvalidArgumentError):
    """A "host:port" that does not parse (EADDRESS_INVALID)."""


class IdentityInvalidError(InvalidArgumentError):
    """The key or certificate could not be used (EIDENTITY_INVALID)."""


class OptionsInvalidError(InvalidArgumentError):
    """Node options contradict each other (EOPTIONS_INVALID); the message says which."""


class ClosedError(InvalidArgumentError):
    """The Python object was closed (its C handle was released); raised by this package."""

    def __init__(self, code: int = Status.EINVAL, message: str = "closed") -> None:
        super().__init__(code, message)


class PayloadTooLargeError(MaculaError, ValueError):
    """A payload, RPC argument or result above :data:`macula.MAX_PAYLOAD_BYTES`."""


class MaculaTimeoutError(MaculaError, TimeoutError):
    """The operation timed out (ETIMED_OUT): no answer within the call's timeout, or a QoS 1
    publish not acknowledged in time."""


class NoProviderError(MaculaError):
    """No node serves the procedure (ENO_PROVIDER)."""


class HandlerError(MaculaError):
    """The remote handler failed (EHANDLER); ``message`` is its text (e.g. the exception it
    raised, or "handler did not answer")."""


class NoSubscribersError(MaculaError):
    """A QoS 1 publish found no subscriber anywhere: nobody received it (ENO_SUBSCRIBERS)."""


class OverloadedError(MaculaError):
    """The node or a peer is overloaded (EOVERLOADED); base of the queue/limit conditions."""


class QueueFullError(OverloadedError):
    """A bounded queue is full (EQUEUE_FULL)."""


class TooManyPendingError(OverloadedError):
    """Too many calls or publishes in flight (ETOO_MANY_PENDING)."""


class TooManySubscriptionsError(OverloadedError):
    """The subscription limit was reached (ETOO_MANY_SUBSCRIPTIONS)."""


class WouldBlockError(OverloadedError):
    """A blocking publish found no room in time (EWOULD_BLOCK)."""


class MaculaConnectionError(MaculaError, ConnectionError):
    """A transport failure or a closed connection (ETRANSPORT, ECONNECTION_CLOSED)."""


class HandshakeTimeoutError(MaculaConnectionError, TimeoutError):
    """The QUIC/TLS handshake timed out (EHANDSHAKE_TIMEOUT)."""


class RefusedError(MaculaConnectionError, ConnectionRefusedError):
    """The peer refused the connection (ECONNECTION_REFUSED)."""


class AddressUnresolvedError(MaculaConnectionError):
    """A host name in an address could not be resolved (EADDRESS_UNRESOLVED)."""


class RealmMismatchError(RefusedError):
    """The node dialed is in another realm and refused the link (EREALM_MISMATCH); the
    node's log names its realm when it has no secret."""


class RealmProofError(MaculaError, PermissionError):
    """A peer node did not prove the realm secret (EREALM_PROOF)."""


class UnauthorizedError(MaculaError, PermissionError):
    """A client request without the node's client token (EUNAUTHORIZED)."""


class NotStartedError(MaculaError):
    """The node is not started (ENOT_STARTED)."""


class OperationCancelledError(MaculaError):
    """The operation was cancelled, e.g. its node stopped before it completed (ECANCELLED)."""


class WouldDeadlockError(MaculaError, RuntimeError):
    """A blocking function was called from a libmacula callback thread (EWOULDDEADLOCK)."""


class OutOfMemoryError(MaculaError, MemoryError):
    """Allocation failed inside the library (ENOMEM)."""


class InternalError(MaculaError):
    """An unexpected error inside the library (EINTERNAL)."""


class OtherError(MaculaError, OSError):
    """Another system error (EOTHER)."""


_CLASSES: Dict[int, Type[MaculaError]] = {
    Status.ENAME_EMPTY: InvalidNameError,
    Status.ENAME_TOO_LONG: InvalidNameError,
    Status.ENAME_EMPTY_SEGMENT: InvalidNameError,
    Status.ENAME_INVALID_CHARACTER: InvalidNameError,
    Status.ENAME_WILDCARD_NOT_ALLOWED: InvalidNameError,
    Status.EQUEUE_FULL: QueueFullError,
    Status.ENO_PROVIDER: NoProviderError,
    Status.EIDENTITY_INVALID: IdentityInvalidError,
    Status.ETRANSPORT: MaculaConnectionError,
    Status.EHANDSHAKE_TIMEOUT: HandshakeTimeoutError,
    Status.ECONNECTION_CLOSED: MaculaConnectionError,
    Status.ECONNECTION_REFUSED: RefusedError,
    Status.EADDRESS_INVALID: AddressInvalidError,
    Status.ETIMED_OUT: MaculaTimeoutError,
    Status.ETOO_MANY_PENDING: TooManyPendingError,
    Status.ECANCELLED: OperationCancelledError,
    Status.ETOO_MANY_SUBSCRIPTIONS: TooManySubscriptionsError,
    Status.EHANDLER: HandlerError,
    Status.ENOT_STARTED: NotStartedError,
    Status.EOVERLOADED: OverloadedError,
    Status.EWOULDDEADLOCK: WouldDeadlockError,
    Status.EWOULD_BLOCK: WouldBlockError,
    Status.EPAYLOAD_TOO_LARGE: PayloadTooLargeError,
    Status.EREALM_PROOF: RealmProofError,
    Status.EUNAUTHORIZED: UnauthorizedError,
    Status.EOPTIONS_INVALID: OptionsInvalidError,
    Status.ENO_SUBSCRIBERS: NoSubscribersError,
    Status.EADDRESS_UNRESOLVED: AddressUnresolvedError,
    Status.EREALM_MISMATCH: RealmMismatchError,
    Status.EINVAL: InvalidArgumentError,
    Status.ENOMEM: OutOfMemoryError,
    Status.EINTERNAL: InternalError,
    Status.EOTHER: OtherError,
}


def error_class(code: int) -> Type[MaculaError]:
    """The exception class for ``code`` (:class:`MaculaError` for an unknown one)."""
    return _CLASSES.get(code, MaculaError)


def error_from_status(code: int, message: str = "") -> MaculaError:
    """An exception instance for ``code`` with ``message``."""
    return error_class(code)(code, message)


def check(status: int, where: str = "") -> None:
    """Raises the exception for a non-zero ``status`` of the libmacula call just made on this
    thread, with ``macula_last_error()`` (or ``where``) as its message."""
    if status != 0:
        message = _ffi.last_error() or where
        raise error_from_status(status, message)
