"""The Windows transport: a named pipe (``\\\\.\\pipe\\routerd``) behind the socket interface.

On Windows routerd listens on a named pipe instead of a Unix socket. :class:`Transport` is the
small interface the blocking client uses (``settimeout``, ``sendall``, ``recv``, ``close``):
a connected ``socket.socket`` has it, and so has :class:`PipeSocket`, which does the same over
a pipe handle with overlapped I/O (standard library ``_winapi``, as ``multiprocessing`` does).

The naming rules and the byte-level behaviour (:class:`PipeSocket` over a :class:`PipeIO`) are
platform-independent and tested everywhere; only :class:`_WinPipeIO` touches Windows.
NOT RUN ON WINDOWS YET: the Windows parts are type-checked (``mypy --platform win32``) but have
not been run on a Windows machine.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Final, Protocol

__all__ = [
    "PIPE_PREFIX",
    "DEFAULT_PIPE",
    "Transport",
    "PipeIO",
    "PipeSocket",
    "is_pipe_name",
    "default_pipe_name",
    "describe_pipe_error",
    "connect_pipe",
]

#: Every named pipe's path starts with this (the local machine's pipe namespace).
PIPE_PREFIX: Final = "\\\\.\\pipe\\"

#: The pipe routerd serves on Windows unless ``ROUTERD_SOCKET`` names another.
DEFAULT_PIPE: Final = PIPE_PREFIX + "routerd"

#: Longest pipe name Windows accepts, prefix included (``CreateNamedPipe``: 256 characters).
MAX_PIPE_NAME: Final = 256


class Transport(Protocol):
    """What the blocking client needs of a connection; ``socket.socket`` fits it."""

    def settimeout(self, value: float | None, /) -> None: ...
    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, bufsize: int, /) -> bytes: ...
    def close(self) -> None: ...


def is_pipe_name(path: str) -> bool:
    """True if ``path`` names a local named pipe (``\\\\.\\pipe\\NAME``, NAME non-empty and
    without backslashes, at most :data:`MAX_PIPE_NAME` characters in all)."""
    if not path.lower().startswith(PIPE_PREFIX):
        return False
    name = path[len(PIPE_PREFIX):]
    return bool(name) and "\\" not in name and len(path) <= MAX_PIPE_NAME


def default_pipe_name(env: Mapping[str, str]) -> str:
    """The pipe a client or daemon uses on Windows: ``ROUTERD_SOCKET`` if it names a pipe,
    else :data:`DEFAULT_PIPE`. Raises ValueError if ``ROUTERD_SOCKET`` is set to anything else
    (a Unix path cannot be served on Windows; say so rather than use another pipe)."""
    explicit = env.get("ROUTERD_SOCKET", "")
    if not explicit:
        return DEFAULT_PIPE
    if not is_pipe_name(explicit):
        raise ValueError(
            f"ROUTERD_SOCKET={explicit!r} is not a named pipe; on Windows use "
            f"{DEFAULT_PIPE!r} or another {PIPE_PREFIX}NAME"
        )
    return explicit


class PipeIO(Protocol):
    """Blocking I/O on one connected pipe handle; ``timeout`` in seconds, ``None``: no limit.

    ``read`` returns b"" once the other end has closed; ``write`` returns how many bytes went
    out. Both raise TimeoutError when ``timeout`` passes (the operation is then cancelled).
    """

    def read(self, size: int, timeout: float | None) -> bytes: ...
    def write(self, data: bytes, timeout: float | None) -> int: ...
    def close(self) -> None: ...


class PipeSocket:
    """A connected pipe with the :class:`Transport` interface of a socket."""

    def __init__(self, io: PipeIO) -> None:
        self._io: PipeIO | None = io
        self._timeout: float | None = None

    def settimeout(self, value: float | None, /) -> None:
        if value is not None and value < 0:
            raise ValueError("timeout must be non-negative or None")
        self._timeout = value

    def _open(self) -> PipeIO:
        if self._io is None:
            raise OSError("the pipe is closed")
        return self._io

    def sendall(self, data: bytes, /) -> None:
        io = self._open()
        view = memoryview(data)
        while view:
            sent = io.write(bytes(view), self._timeout)
            if sent <= 0:
                raise BrokenPipeError("the pipe accepted no data")
            view = view[sent:]

    def recv(self, bufsize: int, /) -> bytes:
        if bufsize < 1:
            raise ValueError("bufsize must be at least 1")
        return self._open().read(bufsize, self._timeout)

    def close(self) -> None:
        io, self._io = self._io, None
        if io is not None:
            io.close()


def describe_pipe_error(exc: OSError) -> str:
    """Say in a few words why opening a pipe failed (the counterpart of
    :func:`~routerd_client.paths.describe_connect_error` for Unix sockets)."""
    if isinstance(exc, TimeoutError):
        return "timed out connecting (every instance of the pipe stayed busy)"
    if isinstance(exc, FileNotFoundError):
        return "no such pipe (routerd is not running for this name)"
    if isinstance(exc, PermissionError):
        return "permission denied (the pipe admits only the user who started routerd)"
    return exc.strerror or str(exc)


def connect_pipe(name: str, timeout: float | None) -> PipeSocket:
    """Open the named pipe ``name`` (waiting up to ``timeout`` seconds while every instance is
    busy). Raises FileNotFoundError if nobody serves it, PermissionError if its security
    descriptor shuts this user out, TimeoutError, or another OSError."""
    if sys.platform == "win32":
        return PipeSocket(_WinPipeIO.connect(name, timeout))
    raise OSError(f"named pipes need Windows; {name} cannot be opened here")


if sys.platform == "win32":
    import _winapi
    import time

    _ERROR_PIPE_BUSY: Final = 231
    _ERROR_BROKEN_PIPE: Final = 109
    _ERROR_IO_PENDING: Final = 997
    _ERROR_OPERATION_ABORTED: Final = 995
    _WAIT_TIMEOUT: Final = 258
    _FILE_FLAG_OVERLAPPED: Final = 0x40000000
    # Let the server identify us but never impersonate us (a squatter on the pipe name).
    _SECURITY_SQOS_PRESENT: Final = 0x00100000
    _SECURITY_IDENTIFICATION: Final = 0x00010000

    def _millis(timeout: float | None) -> int:
        return _winapi.INFINITE if timeout is None else max(0, int(timeout * 1000))

    def open_pipe_handle(name: str) -> int | None:
        """Open the pipe ``name`` overlapped; ``None`` while every instance is busy.

        The handle asks for identification-only impersonation: the server may learn who we
        are but never act as us (a process squatting on the name). Raises OSError otherwise.
        """
        flags = _FILE_FLAG_OVERLAPPED | _SECURITY_SQOS_PRESENT | _SECURITY_IDENTIFICATION
        try:
            return _winapi.CreateFile(
                name,
                _winapi.GENERIC_READ | _winapi.GENERIC_WRITE,
                0,
                _winapi.NULL,
                _winapi.OPEN_EXISTING,
                flags,
                _winapi.NULL,
            )
        except OSError as exc:
            if getattr(exc, "winerror", None) == _ERROR_PIPE_BUSY:
                return None
            raise

    class _WinPipeIO:
        """Overlapped reads and writes on a pipe handle, waited on with a timeout."""

        def __init__(self, handle: int) -> None:
            self._handle = handle

        @classmethod
        def connect(cls, name: str, timeout: float | None) -> _WinPipeIO:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                handle = open_pipe_handle(name)
                if handle is not None:
                    return cls(handle)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"every instance of {name} stayed busy")
                # Wait for an instance to free up, then race for it again.
                try:
                    _winapi.WaitNamedPipe(name, _millis(left) if left is not None else 1000)
                except OSError:
                    pass  # timed out, or gone: the next open says which

        def _finish(self, ov: _winapi.Overlapped, err: int, timeout: float | None) -> int:
            """Wait for ``ov``; return the bytes transferred. A timeout cancels the operation,
            unless it completed meanwhile: then its result stands (no data may be lost)."""
            timed_out = False
            if err == _ERROR_IO_PENDING:
                res = _winapi.WaitForMultipleObjects([ov.event], False, _millis(timeout))
                if res == _WAIT_TIMEOUT:
                    timed_out = True
                    ov.cancel()
            done, err = ov.GetOverlappedResult(True)
            if err == _ERROR_OPERATION_ABORTED and timed_out:
                raise TimeoutError("timed out on the pipe")
            if err != 0:
                raise OSError(None, "pipe I/O failed", None, err)
            return done

        def read(self, size: int, timeout: float | None) -> bytes:
            try:
                ov, err = _winapi.ReadFile(self._handle, size, overlapped=True)
                self._finish(ov, err, timeout)
            except BrokenPipeError:
                return b""
            except OSError as exc:
                if getattr(exc, "winerror", None) == _ERROR_BROKEN_PIPE:
                    return b""  # the daemon closed its end
                raise
            return bytes(ov.getbuffer() or b"")

        def write(self, data: bytes, timeout: float | None) -> int:
            ov, err = _winapi.WriteFile(self._handle, data, overlapped=True)
            return self._finish(ov, err, timeout)

        def close(self) -> None:
            _winapi.CloseHandle(self._handle)
