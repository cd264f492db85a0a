"""Where the routerd socket lives, and why a connection to it failed.

Shared by the clients and the daemon, so both sides agree on the default path. Standard
library only; nothing here opens a socket.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Callable, Mapping
from typing import Final

from ._pipe import DEFAULT_PIPE, is_pipe_name

__all__ = [
    "SOCKET_ENV",
    "SYSTEM_SOCKET",
    "DEFAULT_PIPE",
    "is_pipe_name",
    "user_socket_path",
    "default_socket_path",
    "describe_connect_error",
]

#: Environment variable naming the socket path; it wins over every default.
SOCKET_ENV: Final = "ROUTERD_SOCKET"

#: The socket of a system-wide daemon (systemd system unit with ``RuntimeDirectory=routerd``).
SYSTEM_SOCKET: Final = "/run/routerd/routerd.sock"


def user_socket_path(env: Mapping[str, str]) -> str | None:
    """The per-user socket path, ``$XDG_RUNTIME_DIR/routerd/routerd.sock``, or ``None`` when
    ``XDG_RUNTIME_DIR`` is unset, empty or not absolute (the XDG spec says to ignore it then)."""
    runtime_dir = env.get("XDG_RUNTIME_DIR", "")
    if not runtime_dir or not os.path.isabs(runtime_dir):
        return None
    return os.path.join(runtime_dir, "routerd", "routerd.sock")


def default_socket_path(
    env: Mapping[str, str] | None = None,
    *,
    exists: Callable[[str], bool] = os.path.exists,
    platform: str = sys.platform,
) -> str:
    """Return the socket path a client should use when none was given.

    Order: ``$ROUTERD_SOCKET`` (if set and non-empty); the per-user socket if it exists; the
    system socket (``/run/routerd/routerd.sock``) if it exists; the per-user path if
    ``XDG_RUNTIME_DIR`` is set; else the system path. So a running daemon is found whichever
    way it was started, and with none running the error names the most likely path.

    On Windows (``platform`` ``"win32"``) routerd serves a named pipe: ``$ROUTERD_SOCKET`` or
    ``\\\\.\\pipe\\routerd``.

    ``env`` defaults to ``os.environ``; ``exists`` is the existence test (a parameter so tests
    need no real files).
    """
    if env is None:
        env = os.environ
    explicit = env.get(SOCKET_ENV, "")
    if explicit:
        return explicit
    if platform == "win32":
        return DEFAULT_PIPE
    user = user_socket_path(env)
    if user is not None and exists(user):
        return user
    if exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    return user if user is not None else SYSTEM_SOCKET


def describe_connect_error(path: str, exc: OSError) -> str:
    """Say in a few words why connecting to the Unix socket ``path`` failed with ``exc``.

    Linux answers ``ECONNREFUSED`` both for a socket nobody listens on and for a path that is
    not a socket at all, so the path is looked at to tell the two apart.
    """
    code = exc.errno
    if isinstance(exc, TimeoutError) or code == errno.ETIMEDOUT:
        return "timed out connecting"
    if code == errno.ENOENT:
        parent = os.path.dirname(path) or "."
        if not os.path.isdir(parent):
            return f"no such file (the directory {parent} does not exist)"
        return "no such file"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if code == errno.ENOTDIR:
        return "a part of the path is not a directory"
    if code in (errno.ECONNREFUSED, errno.ENOTSOCK, errno.EPROTOTYPE):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISSOCK(mode):
            return "not a socket"
        return "connection refused (the socket file is there but no routerd listens on it)"
    if code == errno.EAGAIN:
        return "the daemon's accept queue is full"
    return exc.strerror or str(exc)
