"""Errors that become ``error`` frames on the wire.

A method handler raises one of these to answer its request with an error; the daemon turns it
into ``{"type": "error", "id": ..., "code": exc.code, "message": exc.message, "data": exc.data}``.
Any other exception escaping a handler is a bug: the daemon logs its traceback and answers
``internal`` with a generic message.

::

    RouterdError                 code given per instance (any protocol ErrorCode)
    ├── BadRequest               bad_request
    ├── UnknownMethod            unknown_method
    ├── UnsupportedVersion       unsupported_version
    ├── NotFound                 not_found
    ├── Unavailable              unavailable
    ├── Timeout                  timeout
    ├── Busy                     busy
    ├── Cancelled                cancelled
    ├── SlowConsumer             slow_consumer
    ├── Forbidden                forbidden
    ├── BadConfig                bad_config
    └── Internal                 internal

Invariants:

* ``message`` is exactly one line (later lines are dropped) and carries no traceback.
* ``code`` is one of ``routerd_client.protocol.ERROR_CODES``.
* ``data``, when present, is a msgpack-encodable map.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from routerd_client.protocol import ERROR_CODES, ErrorCode

__all__ = [
    "RouterdError",
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
    "error_for_code",
    "one_line",
]


def one_line(text: str) -> str:
    """Return the first non-empty line of ``text``, stripped (``"error"`` if there is none)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "error"


class RouterdError(Exception):
    """A failure to report to the client as an ``error`` frame.

    Subclasses fix ``code``; the base class takes it as a keyword so that any protocol code can
    be raised (``RouterdError("...", code=ErrorCode.TIMEOUT)``).
    """

    code: ClassVar[str] = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        data: Mapping[str, Any] | None = None,
        code: str | None = None,
    ) -> None:
        self.message = one_line(message)
        super().__init__(self.message)
        if code is not None:
            if code not in ERROR_CODES:
                raise ValueError(f"unknown error code {code!r}")
            # An instance attribute shadows the class default for this one error.
            self.code = code  # type: ignore[misc]
        self.data: dict[str, Any] | None = dict(data) if data is not None else None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadRequest(RouterdError):
    code = ErrorCode.BAD_REQUEST


class UnknownMethod(RouterdError):
    code = ErrorCode.UNKNOWN_METHOD


class UnsupportedVersion(RouterdError):
    code = ErrorCode.UNSUPPORTED_VERSION


class NotFound(RouterdError):
    code = ErrorCode.NOT_FOUND


class Unavailable(RouterdError):
    code = ErrorCode.UNAVAILABLE


class Timeout(RouterdError):
    code = ErrorCode.TIMEOUT


class Busy(RouterdError):
    code = ErrorCode.BUSY


class Cancelled(RouterdError):
    code = ErrorCode.CANCELLED


class SlowConsumer(RouterdError):
    code = ErrorCode.SLOW_CONSUMER


class Forbidden(RouterdError):
    code = ErrorCode.FORBIDDEN


class BadConfig(RouterdError):
    code = ErrorCode.BAD_CONFIG


class Internal(RouterdError):
    code = ErrorCode.INTERNAL


_BY_CODE: dict[str, type[RouterdError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        UnknownMethod,
        UnsupportedVersion,
        NotFound,
        Unavailable,
        Timeout,
        Busy,
        Cancelled,
        SlowConsumer,
        Forbidden,
        BadConfig,
        Internal,
    )
}


def error_for_code(code: str, message: str, data: Mapping[str, Any] | None = None) -> RouterdError:
    """Return the exception for protocol error ``code`` (raises ``ValueError`` if unknown).

    Codes without a subclass of their own (``bad_frame``, ``frame_too_large``) give a
    :class:`RouterdError` carrying that code.
    """
    cls = _BY_CODE.get(code)
    if cls is None:
        return RouterdError(message, data=data, code=code)
    return cls(message, data=data)
