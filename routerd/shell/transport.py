"""Which transport the daemon serves, by platform: a Unix socket, or on Windows a named pipe.

:func:`open_endpoint` returns an :class:`Endpoint` whose ``listener`` is a
``trio.abc.Listener``: ``trio.SocketListener`` over the Unix socket of
:mod:`routerd.shell.listener`, or :class:`~routerd.shell.winpipe.PipeListener` on Windows. The
server accepts from it without knowing which. The choices themselves (:func:`serve_address`,
:func:`signal_names`) are pure functions of the platform, so they are tested on any.

Invariants:

* On Windows nothing Unix-only is imported (``fcntl``, ``grp``, the Unix listener), and the
  address is always a named pipe: ``--socket``, ``ROUTERD_SOCKET`` and ``daemon.socket`` must
  each be ``\\\\.\\pipe\\NAME`` when set, else :class:`StartupError` (never a silent fallback to
  another name).
* Admission on Windows is the pipe's security descriptor: only the daemon's own user can open
  it (the twin of the socket's mode 0600), so every accepted client is that user.
  ``daemon.socket_group`` does not apply there and is ignored with a warning.
* Windows has no SIGHUP: the configuration is reloaded with the ``config.reload`` request only;
  SIGINT (Ctrl+C) and SIGBREAK (Ctrl+Break) shut down.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from routerd.core.config import DaemonConfig
from routerd_client.paths import DEFAULT_PIPE, is_pipe_name

from .paths import SOCKET_ENV, resolve_socket_path

__all__ = [
    "StartupError",
    "SocketInUse",
    "Endpoint",
    "serve_address",
    "signal_names",
    "open_endpoint",
]

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The daemon cannot start serving; ``str()`` is one line saying why and what to do."""


class SocketInUse(StartupError):
    """Another live daemon serves (or is taking over) the socket path or pipe name."""


@dataclass(eq=False)
class Endpoint:
    """Where the daemon listens: ``address`` (socket path or pipe name) and the listener.

    :meth:`close` releases what was taken at start (the socket and lock files, the pipe);
    the listener may already have been closed by the server.
    """

    address: str
    listener: trio.abc.Listener[Any]
    _cleanup: Callable[[], None]

    def close(self) -> None:
        self._cleanup()


def serve_address(
    option: str | None,
    env: Mapping[str, str],
    configured: str | None,
    *,
    platform: str = sys.platform,
) -> str:
    """The address to serve: ``option`` (``--socket``), then ``ROUTERD_SOCKET``, then
    ``configured`` (``daemon.socket``), then the platform's default.

    Raises :class:`StartupError` on Windows if the one chosen is not a named pipe.
    """
    if platform != "win32":
        return resolve_socket_path(option, env, configured)
    sources = (("--socket", option), (SOCKET_ENV, env.get(SOCKET_ENV)), ("daemon.socket", configured))
    for source, candidate in sources:
        if candidate:
            if not is_pipe_name(candidate):
                raise StartupError(
                    f"{source} is {candidate!r}, which is not a named pipe: on Windows routerd "
                    f"serves {DEFAULT_PIPE} or another \\\\.\\pipe\\NAME"
                )
            return candidate
    return DEFAULT_PIPE


def signal_names(platform: str = sys.platform) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(shut down on, reload on)``: the names of the signals the daemon handles."""
    if platform == "win32":
        return ("SIGTERM", "SIGINT", "SIGBREAK"), ()
    return ("SIGTERM", "SIGINT"), ("SIGHUP",)


def open_endpoint(daemon: DaemonConfig, address: str, env: Mapping[str, str]) -> Endpoint:
    """Start listening on ``address`` (from :func:`serve_address`) as ``daemon`` says.

    Call it inside ``trio.run`` (the pipe registers with trio's I/O completion port). Raises
    :class:`SocketInUse` if another daemon serves ``address``, :class:`StartupError` for
    every other reason it cannot be served.
    """
    return _open(daemon, address, env)


if sys.platform == "win32":

    def _open(daemon: DaemonConfig, address: str, env: Mapping[str, str]) -> Endpoint:
        from .winpipe import PipeInUse, PipeListener

        if daemon.socket_group:
            log.warning(
                "daemon.socket_group does not apply on Windows: the pipe %s admits only the "
                "user routerd runs as", address,
            )  # fmt: skip
        try:
            listener = PipeListener(address)
        except PipeInUse as exc:
            raise SocketInUse(exc.strerror or str(exc)) from None
        except OSError as exc:
            raise StartupError(f"cannot serve {address}: {exc.strerror or exc}") from None
        return Endpoint(address, listener, listener.close)

else:

    def _open(daemon: DaemonConfig, address: str, env: Mapping[str, str]) -> Endpoint:
        from .listener import open_listener

        unix = open_listener(address, group=daemon.socket_group, env=env)
        try:
            sock = trio.socket.from_stdlib_socket(unix.sock)
            return Endpoint(unix.path, trio.SocketListener(sock), unix.close)
        except BaseException:
            unix.close()
            raise
