"""Client library for routerd: the wire contract, a blocking Client, and routerctl.

Public surface:

* :class:`Client` (blocking, standard-library sockets) and :class:`Stream`;
* :class:`AsyncClient` (trio; extra ``routerd-client[trio]``), loaded from
  ``routerd_client.aio`` on first use so that ``import routerd_client`` never imports trio;
* :func:`default_socket_path`, :func:`detect_agent`;
* the exception tree of :mod:`routerd_client.errors`;
* the wire types in :mod:`routerd_client.protocol` and the framing in
  :mod:`routerd_client.framing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._conn import StreamEvent
from ._sync import Client, Stream
from ._version import __version__
from .agent import detect_agent
from .errors import (
    BadConfig,
    BadFrame,
    BadRequest,
    Busy,
    Cancelled,
    ConnectionLost,
    DaemonUnreachable,
    Forbidden,
    FrameTooLarge,
    Internal,
    NotFound,
    ProtocolViolation,
    RemoteError,
    RequestTimeout,
    RouterdError,
    SlowConsumer,
    Timeout,
    Unavailable,
    UnknownMethod,
    UnsupportedVersion,
)
from .paths import default_socket_path
from .protocol import PROTOCOL_VERSION, AgentInfo

if TYPE_CHECKING:
    from .aio import AsyncClient, AsyncStream

__all__ = [
    "__version__",
    "PROTOCOL_VERSION",
    "Client", "Stream", "StreamEvent", "AsyncClient", "AsyncStream",
    "AgentInfo", "default_socket_path", "detect_agent",
    "RouterdError", "DaemonUnreachable", "ConnectionLost", "RequestTimeout", "ProtocolViolation",
    "RemoteError", "BadFrame", "FrameTooLarge", "BadRequest", "UnknownMethod",
    "UnsupportedVersion", "NotFound", "Unavailable", "Timeout", "Busy", "Cancelled",
    "SlowConsumer", "Forbidden", "BadConfig", "Internal",
]


def __getattr__(name: str) -> Any:
    # Lazy: only touching AsyncClient/AsyncStream imports trio.
    if name in ("AsyncClient", "AsyncStream"):
        from . import aio

        return getattr(aio, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
