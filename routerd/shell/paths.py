"""Where the daemon's socket lives. Pure functions: the environment is a parameter.

Order (docs/protocol.md section 1): the ``--socket`` option, ``ROUTERD_SOCKET``,
``daemon.socket`` in the config, ``$XDG_RUNTIME_DIR/routerd/routerd.sock``,
``/run/routerd/routerd.sock``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = [
    "SOCKET_ENV",
    "SYSTEM_SOCKET",
    "MAX_SOCKET_PATH",
    "SocketPathError",
    "resolve_socket_path",
    "check_socket_path",
    "lock_path_for",
]

SOCKET_ENV = "ROUTERD_SOCKET"
SYSTEM_SOCKET = "/run/routerd/routerd.sock"

#: Longest AF_UNIX path in bytes: ``sun_path`` is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


class SocketPathError(ValueError):
    """The socket path cannot be used (too long, empty, relative where it must not be)."""


def resolve_socket_path(
    option: str | None, env: Mapping[str, str], configured: str | None
) -> str:
    """Return the socket path to serve, as an absolute path (not yet checked)."""
    for candidate in (option, env.get(SOCKET_ENV), configured):
        if candidate:
            return os.path.abspath(os.path.expanduser(candidate))
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "routerd", "routerd.sock")
    return SYSTEM_SOCKET


def check_socket_path(path: str) -> None:
    """Raise :class:`SocketPathError` if ``path`` cannot be bound as an AF_UNIX socket."""
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise SocketPathError(
            f"socket path {path} is {size} bytes long; AF_UNIX allows at most "
            f"{MAX_SOCKET_PATH}: choose a shorter path with --socket or {SOCKET_ENV}"
        )
    if path.endswith(os.sep):
        raise SocketPathError(f"socket path {path} names a directory, not a socket file")


def lock_path_for(socket_path: str) -> str:
    """The lock file beside the socket that serializes daemons starting on it."""
    return socket_path + ".lock"
