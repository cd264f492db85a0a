"""The listening Unix socket: take it over safely, or inherit it from systemd.

Invariants:

* At most one daemon serves a socket path. A daemon binding a path holds an exclusive ``flock``
  on ``<socket>.lock`` for as long as it runs, so two daemons starting at once cannot both take
  the path over; a socket file that accepts connections is never replaced.
* A socket file nobody listens on (left by a killed daemon) is replaced; a path that exists but
  is not a socket is never deleted.
* The socket file is created with mode 0600 (umask during ``bind``, so it is never wider), or
  0660 with the configured group; a parent directory we create is 0700 (0750 with a group).
* An inherited socket (systemd ``LISTEN_FDS``) is used as is and never unlinked; a socket file
  and lock file are removed at exit only if this process created them and they are still ours.

POSIX only: Python has no ``AF_UNIX`` on Windows, where the daemon serves a named pipe
(``routerd.shell.transport``). The module imports there (the HTTP fronts import it), but
:func:`open_listener` refuses at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import struct
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from .osdeps import O_CLOEXEC, group_id, lock_exclusive
from .paths import check_socket_path, lock_path_for
from .transport import SocketInUse, StartupError  # defined there (no fcntl): Windows too

__all__ = ["StartupError", "SocketInUse", "Listener", "open_listener", "LISTEN_FDS_START"]

log = logging.getLogger(__name__)

#: The first file descriptor systemd passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3

_LISTEN_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


@dataclass(eq=False)
class Listener:
    """A listening AF_UNIX stream socket and what is needed to clean up after it."""

    sock: socket.socket
    path: str
    inherited: bool
    _lock_fd: int | None = None
    _ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file we bound

    def close(self) -> None:
        """Close the socket; remove the socket and lock files if this process made them."""
        self.sock.close()
        if self.inherited:
            return
        if self._ident is not None and _ident_of(self.path) == self._ident:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self._ident = None
        if self._lock_fd is not None:
            lock = lock_path_for(self.path)
            # Unlink while still holding the lock; a daemon that opened the old file re-checks
            # the inode after flock and starts over (see _acquire_lock).
            if _ident_of(lock) == _fd_ident(self._lock_fd):
                with contextlib.suppress(OSError):
                    os.unlink(lock)
            os.close(self._lock_fd)
            self._lock_fd = None


def open_listener(
    path: str,
    *,
    group: str | None = None,
    env: Mapping[str, str],
    backlog: int = 128,
) -> Listener:
    """Return a listening socket for ``path``, or the one systemd passed in ``env``.

    Raises :class:`SocketInUse` if another daemon is live on ``path`` and
    :class:`StartupError` for every other reason the socket cannot be served (on Windows,
    always: no Unix sockets there).
    """
    if sys.platform == "win32":
        raise StartupError(f"cannot serve {path}: Unix sockets are not available on Windows")
    inherited = _inherited_socket(env)
    if inherited is not None:
        name = inherited.getsockname()
        served = name if isinstance(name, str) and name else path
        log.info("using the listening socket passed by systemd (%s)", served)
        return Listener(inherited, served, inherited=True)
    try:
        check_socket_path(path)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    gid = _group_id(group) if group else None
    _ensure_parent(path, gid)
    lock_fd = _acquire_lock(path)
    try:
        _remove_stale(path)
        sock = _bind(path, gid, backlog)
    except BaseException:
        os.close(lock_fd)
        raise
    return Listener(sock, path, inherited=False, _lock_fd=lock_fd, _ident=_ident_of(path))


# --- systemd socket activation ----------------------------------------------------------------


def _inherited_socket(env: Mapping[str, str]) -> socket.socket | None:
    if sys.platform == "win32":
        raise AssertionError("Unix only: open_listener refuses on Windows")
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    if count < 1:
        return None
    if count > 1:
        log.warning("systemd passed %d sockets; routerd uses only the first", count)
    try:
        sock = socket.socket(fileno=LISTEN_FDS_START)
    except OSError as exc:
        raise StartupError(f"LISTEN_FDS is set but fd 3 is not a socket: {exc.strerror}") from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise StartupError("the socket passed by systemd is not a Unix stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise StartupError("the socket passed by systemd is not listening")
    sock.set_inheritable(False)
    if isinstance(env, MutableMapping):
        # Keep them from leaking into child processes (they name *our* pid).
        for key in _LISTEN_ENV:
            env.pop(key, None)
    return sock


# --- taking over a socket path ----------------------------------------------------------------


def _group_id(group: str) -> int:
    if group.isdigit():
        return int(group)
    gid = group_id(group)
    if gid is None:
        raise StartupError(f"socket group {group!r} (daemon.socket_group) does not exist")
    return gid


def _ensure_parent(path: str, gid: int | None) -> None:
    if sys.platform == "win32":
        raise AssertionError("Unix only: open_listener refuses on Windows")
    parent = os.path.dirname(path)
    if os.path.isdir(parent):
        return  # an existing directory (perhaps /tmp) is never re-permissioned
    mode = 0o750 if gid is not None else 0o700
    try:
        os.makedirs(parent, mode=mode, exist_ok=True)
        os.chmod(parent, mode)
        if gid is not None:
            os.chown(parent, -1, gid)
    except OSError as exc:
        raise StartupError(f"cannot create the socket directory {parent}: {exc.strerror}") from None


def _acquire_lock(path: str) -> int:
    lock = lock_path_for(path)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StartupError(f"cannot open the lock file {lock}: {exc.strerror}") from None
        try:
            lock_exclusive(fd)
        except BlockingIOError:
            os.close(fd)
            pid = _live_pid(path)
            if pid is not None:
                raise SocketInUse(_in_use_message(path, pid)) from None
            raise SocketInUse(
                f"another routerd holds {lock} (it is starting or stopping on {path}); "
                "wait for it, or stop it first"
            ) from None
        # The previous holder may have unlinked the file between our open and our flock.
        if _ident_of(lock) == _fd_ident(fd):
            return fd
        os.close(fd)


def _remove_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"{path} exists and is not a socket; remove it or choose another --socket")
    pid = _live_pid(path)
    if pid is not None:
        raise SocketInUse(_in_use_message(path, pid))
    log.info("replacing stale socket %s (nothing listens on it)", path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StartupError(f"cannot remove the stale socket {path}: {exc.strerror}") from None


def _live_pid(path: str) -> int | None:
    """The pid serving ``path`` (0 if unknown), or ``None`` if nothing listens there.

    Errors other than "refused"/"absent" count as live: never delete what we cannot check.
    """
    if sys.platform == "win32":
        raise AssertionError("Unix only: open_listener refuses on Windows")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return None
    except OSError as exc:
        if exc.errno == errno.EACCES:
            raise StartupError(
                f"{path} exists but this user may not connect to it; "
                "is another user's routerd serving it?"
            ) from None
        return 0
    else:
        peer = getattr(socket, "SO_PEERCRED", None)
        if peer is None:
            return 0
        try:
            raw = probe.getsockopt(socket.SOL_SOCKET, peer, struct.calcsize("3i"))
        except OSError:
            return 0
        return int(struct.unpack("3i", raw)[0])
    finally:
        probe.close()


def _in_use_message(path: str, pid: int) -> str:
    who = f"another routerd (pid {pid})" if pid else "another routerd"
    stop = f"`kill {pid}`" if pid else "SIGTERM to its process"
    return (
        f"{who} is already serving {path}; stop it first ({stop}, or `systemctl stop routerd` "
        "if systemd runs it), or choose another socket with --socket"
    )


def _bind(path: str, gid: int | None, backlog: int) -> socket.socket:
    if sys.platform == "win32":
        raise AssertionError("Unix only: open_listener refuses on Windows")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        old = os.umask(0o177)  # the file is born 0600: no window with wider access
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        bound = True
        if gid is not None:
            os.chown(path, -1, gid)
            os.chmod(path, 0o660)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if bound:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if exc.errno == errno.EADDRINUSE:
            raise SocketInUse(_in_use_message(path, _live_pid(path) or 0)) from None
        raise StartupError(f"cannot listen on {path}: {exc.strerror}") from None
    return sock


def _ident_of(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _fd_ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino
