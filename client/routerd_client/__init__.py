"""Client library for routerd: the wire contract, a blocking Client, and routerctl.

The trio ``AsyncClient`` lives in ``routerd_client.aio`` (extra ``routerd-client[trio]``) so
that importing this package never imports trio.
"""

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
    RouterdError,
    SlowConsumer,
    Timeout,
    Unavailable,
    UnknownMethod,
    UnsupportedVersion,
)
from .protocol import PROTOCOL_VERSION

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "PROTOCOL_VERSION",
    "RouterdError", "DaemonUnreachable", "ConnectionLost", "ProtocolViolation", "RemoteError",
    "BadFrame", "FrameTooLarge", "BadRequest", "UnknownMethod", "UnsupportedVersion",
    "NotFound", "Unavailable", "Timeout", "Busy", "Cancelled", "SlowConsumer", "Forbidden",
    "BadConfig", "Internal",
]
