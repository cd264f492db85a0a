"""What differs between POSIX and Windows below the daemon's features, in one place.

Every branch is ``if sys.platform == "win32":`` written out, so ``mypy --platform win32``
checks the Windows side and skips the POSIX one (and the other way round on Linux). The
constants are chosen at import; the functions branch when called (none is on a hot path).
Nothing here imports a POSIX-only module on Windows.

Contract, per platform:

* **Identity.** :func:`effective_uid` / :func:`effective_gid` are the daemon's ids on POSIX.
  Windows has no uids, and the named pipe's security descriptor admits only the daemon's own
  user (``routerd.shell.winpipe``), so there one stand-in, :data:`SELF_UID` (-1), is both the
  daemon's uid (:func:`effective_uid`) and every pipe peer's (``routerd.shell.connection``):
  a pipe peer owns its sessions and operates the daemon like the daemon's own user on POSIX.
  -1 is never a POSIX uid (``(uid_t)-1`` means "no uid" to the kernel), so it cannot grant a
  POSIX peer anything. :func:`effective_gid` is ``None`` on Windows (no groups).
  :func:`user_id`, :func:`group_id`, :func:`home_of` and :func:`user_groups` read the user and
  group databases; on Windows they find nothing.
* **Private files.** POSIX files are made 0600 and their mode bits say who may read them. On
  Windows mode bits carry only the read-only flag, so :func:`others_may_access` is always False
  and :func:`make_private` does nothing: the daemon's files live in its per-user state directory
  (``%LOCALAPPDATA%\\routerd``, ``routerd.shell.state_dir``), whose ACL admits that user, the
  administrators and SYSTEM, and new files inherit it.
* **Open flags.** :data:`O_CLOEXEC` and :data:`O_NOFOLLOW` are 0 on Windows: ``os.open``
  makes its descriptors non-inheritable there anyway (PEP 446: ``O_NOINHERIT``), and there is no
  "don't follow" flag (creating a symbolic link needs a privilege an ordinary user lacks unless
  Developer Mode is on). :data:`O_BINARY` is 0 on POSIX and ``os.O_BINARY`` on Windows, where a
  descriptor opened without it translates ``\\n`` to ``\\r\\n`` on write.
* **Locks.** :func:`lock_exclusive` takes an exclusive lock on an open file or raises
  :class:`BlockingIOError`: ``flock`` on POSIX (the whole file); on Windows ``msvcrt.locking``
  of the file's first byte (the descriptor must be at offset 0). Either lock goes with the
  descriptor's close.
* **Listening ports.** :func:`set_reuse_address` lets a restarted daemon bind its port at
  once while nobody else can bind it beside us: ``SO_REUSEADDR`` on POSIX; on Windows
  ``SO_EXCLUSIVEADDRUSE``, as ``SO_REUSEADDR`` there would let any process bind the same port.
* **Process groups.** :data:`NEW_PROCESS_GROUP` is the keyword arguments for
  ``trio.lowlevel.open_process`` that start a child in a group of its own:
  ``start_new_session=True`` on POSIX, ``CREATE_NEW_PROCESS_GROUP`` on Windows.
  :func:`kill_process_group` kills such a group: ``SIGKILL`` to the whole group on POSIX; on
  Windows it terminates the leader only (``TerminateProcess``): its own children survive, as
  nothing puts them in a job object.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from typing import Any, Final

__all__ = [
    "NEW_PROCESS_GROUP",
    "O_BINARY",
    "O_CLOEXEC",
    "O_NOFOLLOW",
    "SELF_UID",
    "effective_gid",
    "effective_uid",
    "group_id",
    "home_of",
    "kill_process_group",
    "lock_exclusive",
    "make_private",
    "others_may_access",
    "set_reuse_address",
    "user_groups",
    "user_id",
]

#: The uid that stands for the daemon's own user where there are no uids (Windows): the
#: daemon's and every named-pipe peer's. Defined on every platform (tests use it on Linux).
SELF_UID: Final = -1

if sys.platform == "win32":
    import msvcrt

    O_CLOEXEC: Final = 0
    O_NOFOLLOW: Final = 0
    O_BINARY: Final = os.O_BINARY
    NEW_PROCESS_GROUP: Final[dict[str, Any]] = {
        "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP
    }
else:
    import fcntl
    import grp
    import pwd

    O_CLOEXEC: Final = os.O_CLOEXEC
    O_NOFOLLOW: Final = os.O_NOFOLLOW
    O_BINARY: Final = 0
    NEW_PROCESS_GROUP: Final[dict[str, Any]] = {"start_new_session": True}


def effective_uid() -> int:
    """The daemon's effective uid; :data:`SELF_UID` on Windows (no uids there)."""
    if sys.platform == "win32":
        return SELF_UID
    else:
        return os.geteuid()


def effective_gid() -> int | None:
    """The daemon's effective gid; None on Windows."""
    if sys.platform == "win32":
        return None
    else:
        return os.getegid()


def user_id(name: str) -> int | None:
    """The uid of user ``name``, or None if there is none (always None on Windows)."""
    if sys.platform == "win32":
        return None
    else:
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            return None


def group_id(name: str) -> int | None:
    """The gid of group ``name``, or None if there is none (always None on Windows)."""
    if sys.platform == "win32":
        return None
    else:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None


def home_of(uid: int) -> str | None:
    """The home directory of ``uid`` in the user database, or None if unknown (and on
    Windows)."""
    if sys.platform == "win32":
        return None
    else:
        try:
            return pwd.getpwuid(uid).pw_dir
        except KeyError:
            return None


def user_groups(uid: int, gid: int | None) -> list[int]:
    """The gids of ``uid``'s groups in the group database, ``gid`` (else the user's primary
    group) included; [] if the user is unknown, and on Windows."""
    if sys.platform == "win32":
        return []
    else:
        try:
            pw = pwd.getpwuid(uid)
            return os.getgrouplist(pw.pw_name, gid if gid is not None else pw.pw_gid)
        except (KeyError, OSError):
            return []


def others_may_access(st_mode: int) -> bool:
    """Whether mode ``st_mode`` lets anyone but the owner in (group or other bits). Always
    False on Windows, where mode bits say nothing about who may read a file."""
    if sys.platform == "win32":
        return False
    else:
        return bool(st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def make_private(fd: int) -> None:
    """Make the open file ``fd`` 0600 (nothing on Windows: the directory's ACL decides)."""
    if sys.platform != "win32":
        os.fchmod(fd, 0o600)


def lock_exclusive(fd: int) -> None:
    """Lock the open file ``fd`` for this process without waiting; raise BlockingIOError if
    another process holds the lock. Closing ``fd`` releases it."""
    if sys.platform == "win32":
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:  # EACCES or EDEADLOCK: another descriptor holds the byte
            raise BlockingIOError(exc.errno, f"locked by another process: {exc}") from None
    else:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def set_reuse_address(sock: socket.socket) -> None:
    """Before ``bind``: the option that lets a listening TCP socket rebind its port at once
    (see the module docstring)."""
    if sys.platform == "win32":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


def kill_process_group(pgid: int) -> bool:
    """Kill process group ``pgid`` (its leader's pid) at once; True if it was signalled,
    False if it is gone or not ours. Never the daemon's own group, nor init's. On Windows
    only the leader is terminated (see the module docstring)."""
    if sys.platform == "win32":
        if pgid <= 0 or pgid == os.getpid():
            return False
        try:
            os.kill(pgid, signal.SIGTERM)  # TerminateProcess, exit status 15
        except OSError:  # gone (ERROR_INVALID_PARAMETER) or not ours (access denied)
            return False
        return True
    else:
        if pgid <= 1 or pgid == os.getpgrp():
            return False
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return False
        return True
