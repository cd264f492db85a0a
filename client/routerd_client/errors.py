"""Exceptions of the routerd client, and the one mapping from error replies to them.

::

    RouterdError
    ├── DaemonUnreachable          no daemon answers on the socket (routerctl exit 3)
    ├── ConnectionLost             the connection broke with requests in flight
    ├── RequestTimeout             no answer within the client's timeout (a TimeoutError too)
    ├── ProtocolViolation          the daemon sent something this client cannot understand
    └── RemoteError                the daemon answered a request with an ``error`` frame
        ├── BadFrame, FrameTooLarge, BadRequest, UnknownMethod, UnsupportedVersion,
        ├── NotFound, Unavailable, Timeout, Busy, Cancelled, SlowConsumer, Forbidden,
        └── BadConfig, Internal     (an unknown code maps to RemoteError itself)
"""

from __future__ import annotations

from typing import Any

from .protocol import ErrorCode

__all__ = [
    "RouterdError",
    "DaemonUnreachable",
    "ConnectionLost",
    "RequestTimeout",
    "ProtocolViolation",
    "RemoteError",
    "BadFrame",
    "FrameTooLarge",
    "BadRequest",
    "UnknownMethod",
    "UnsupportedVersion",
    "NotFound",
    "Unavailable",
    "Timeout",
    "Busy",
    "Cancelled",
    "SlowConsumer",
    "Forbidden",
    "BadConfig",
    "Internal",
    "error_from_reply",
]


class RouterdError(Exception):
    """Base of every exception this library raises."""


class DaemonUnreachable(RouterdError):
    """Nothing accepts connections on the socket path (absent, refused, or not a socket)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot reach routerd at {path}: {reason}")
        self.path = path
        self.reason = reason


class ConnectionLost(RouterdError):
    """The daemon closed the connection before a request got its final frame."""


class RequestTimeout(RouterdError, TimeoutError):
    """The daemon sent no final frame (or, on a stream, no next event) within the client's
    timeout. The client has sent a ``cancel`` for the request; the connection stays usable.

    Not to be confused with :class:`Timeout`, the daemon's own ``timeout`` error reply.
    """


class ProtocolViolation(RouterdError):
    """The daemon sent bytes or a message this client cannot make sense of."""


class RemoteError(RouterdError):
    """The daemon answered with an ``error`` frame. ``code`` is the stable error code."""

    code: str = ""

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadFrame(RemoteError):
    code = ErrorCode.BAD_FRAME


class FrameTooLarge(RemoteError):
    code = ErrorCode.FRAME_TOO_LARGE


class BadRequest(RemoteError):
    code = ErrorCode.BAD_REQUEST


class UnknownMethod(RemoteError):
    code = ErrorCode.UNKNOWN_METHOD


class UnsupportedVersion(RemoteError):
    code = ErrorCode.UNSUPPORTED_VERSION


class NotFound(RemoteError):
    code = ErrorCode.NOT_FOUND


class Unavailable(RemoteError):
    code = ErrorCode.UNAVAILABLE


class Timeout(RemoteError):
    code = ErrorCode.TIMEOUT


class Busy(RemoteError):
    code = ErrorCode.BUSY


class Cancelled(RemoteError):
    code = ErrorCode.CANCELLED


class SlowConsumer(RemoteError):
    code = ErrorCode.SLOW_CONSUMER


class Forbidden(RemoteError):
    code = ErrorCode.FORBIDDEN


class BadConfig(RemoteError):
    code = ErrorCode.BAD_CONFIG


class Internal(RemoteError):
    code = ErrorCode.INTERNAL


_BY_CODE: dict[str, type[RemoteError]] = {
    cls.code: cls
    for cls in (
        BadFrame, FrameTooLarge, BadRequest, UnknownMethod, UnsupportedVersion, NotFound,
        Unavailable, Timeout, Busy, Cancelled, SlowConsumer, Forbidden, BadConfig, Internal,
    )
}


def error_from_reply(code: str, message: str, data: dict[str, Any] | None = None) -> RemoteError:
    """Map an ``error`` frame to its exception (unknown codes give a plain RemoteError)."""
    return _BY_CODE.get(code, RemoteError)(code, message, data)
