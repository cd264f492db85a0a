"""A trio stream over a named-pipe handle: the AsyncClient's Windows transport, and the
daemon's (``routerd.shell.winpipe`` builds its listener on :class:`PipeStream`).

Needs trio (extra ``routerd-client[trio]``); ``import routerd_client`` never loads it.

:class:`PipeStream` is a ``trio.abc.Stream`` over one connected pipe handle, so the code above
it cannot tell it from the ``trio.SocketStream`` of a Unix socket. The operating system sits
behind :class:`HandleOps` (reading, writing, closing a handle) and :class:`ClientPipeOps`
(opening a pipe by name), so the stream and :func:`open_pipe_stream` are tested on any
platform against a fake; :class:`Win32PipeIO` and ``_Win32ClientOps`` are the real calls,
trio's IOCP operations (``register_with_iocp``, ``readinto_overlapped``, ``write_overlapped``)
on a handle opened overlapped. NOT RUN ON WINDOWS YET: they are type-checked with
``mypy --platform win32`` only (docs/operations.md, "Windows").

Invariants: one task sends and one receives at a time (``trio.BusyResourceError`` otherwise);
``receive_some`` returns ``b""`` once the other end has gone; ``send_all`` to a gone peer
raises ``trio.BrokenResourceError``; after ``aclose`` both raise ``trio.ClosedResourceError``.
"""

from __future__ import annotations

import errno
import sys
from typing import Final, Protocol

import trio

from ._pipe import PIPE_PREFIX, is_pipe_name

__all__ = ["PIPE_BUFFER", "HandleOps", "ClientPipeOps", "PipeStream", "open_pipe_stream"]

#: Bytes a receive asks for when the caller gives no size (also the daemon's pipe buffers).
PIPE_BUFFER: Final = 64 * 1024


class HandleOps(Protocol):
    """I/O on connected pipe handles (ints)."""

    async def read(self, handle: int, buffer: bytearray) -> int:
        """Read into ``buffer``; the byte count, 0 once the other end has gone."""
        ...

    async def write(self, handle: int, data: memoryview) -> int:
        """Write ``data``; the byte count. Raises BrokenPipeError if the other end has gone."""
        ...

    async def aclose(self, handle: int) -> None:
        """Close the handle, even if cancelled (then at once, as ``trio.aclose_forcefully``
        wants); the daemon may first let the client read what it wrote."""
        ...


class ClientPipeOps(HandleOps, Protocol):
    """What a client needs to open a pipe by name."""

    def open(self, name: str) -> int | None:
        """A handle connected to the pipe ``name``, ready for :class:`HandleOps`; ``None``
        while every instance of it is busy. Raises FileNotFoundError if nobody serves the
        name, PermissionError if its security descriptor shuts this user out."""
        ...

    async def wait_busy(self, name: str) -> None:
        """Return once an instance of ``name`` may be free (or after a second or so)."""
        ...


class PipeStream(trio.abc.Stream):
    """One connected pipe. ``peer_pid`` is the other end's process id, if known."""

    def __init__(self, handle: int, ops: HandleOps, *, peer_pid: int | None = None) -> None:
        self._handle = handle
        self._ops = ops
        self.peer_pid = peer_pid
        self._closed = False
        self._sending = False
        self._receiving = False

    def _check(self, busy: bool, what: str) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the pipe is closed")
        if busy:
            raise trio.BusyResourceError(f"another task is {what} on this pipe")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check(self._sending, "sending")
        self._sending = True
        try:
            view = memoryview(data).cast("B")
            if not view:
                await trio.lowlevel.checkpoint()
                return
            while view:
                try:
                    sent = await self._ops.write(self._handle, view)
                except BrokenPipeError as exc:
                    raise trio.BrokenResourceError("the other end closed the pipe") from exc
                if self._closed:
                    raise trio.ClosedResourceError("the pipe was closed while sending")
                view = view[sent:]
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._check(self._sending, "sending")
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self._check(self._receiving, "receiving")
        size = PIPE_BUFFER if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be at least 1")
        self._receiving = True
        try:
            buffer = bytearray(size)
            count = await self._ops.read(self._handle, buffer)
            return bytes(buffer[:count])
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        await self._ops.aclose(self._handle)


async def open_pipe_stream(name: str, *, ops: ClientPipeOps | None = None) -> PipeStream:
    """Connect to the named pipe ``name``, waiting while every instance is busy (bound the
    wait with a trio timeout). ``ops`` defaults to the real Windows calls.

    Raises OSError: FileNotFoundError if nobody serves ``name``, PermissionError if the pipe
    admits only another user, EINVAL if ``name`` is not ``\\\\.\\pipe\\NAME``; off Windows,
    OSError saying named pipes need Windows.
    """
    if not is_pipe_name(name):
        raise OSError(errno.EINVAL, f"not a named pipe ({PIPE_PREFIX}NAME)", name)
    if ops is None:
        ops = _default_client_ops()
    while True:
        handle = ops.open(name)
        if handle is not None:
            return PipeStream(handle, ops)
        await ops.wait_busy(name)


def _default_client_ops() -> ClientPipeOps:
    if sys.platform == "win32":
        return _Win32ClientOps()
    raise OSError(errno.ENOTSUP, "named pipes need Windows; use the Unix socket here")


if sys.platform == "win32":
    import _winapi

    from ._pipe import open_pipe_handle

    _ERROR_BROKEN_PIPE: Final = 109
    _ERROR_PIPE_NOT_CONNECTED: Final = 233
    #: Longest one WaitNamedPipe call blocks a worker thread (it cannot be interrupted).
    _BUSY_WAIT_MS: Final = 1000

    class Win32PipeIO:
        """Reads and writes on a pipe handle registered with trio's IOCP."""

        async def read(self, handle: int, buffer: bytearray) -> int:
            try:
                return await trio.lowlevel.readinto_overlapped(handle, buffer)
            except BrokenPipeError:
                return 0
            except OSError as exc:
                if getattr(exc, "winerror", None) in (_ERROR_BROKEN_PIPE, _ERROR_PIPE_NOT_CONNECTED):
                    return 0
                raise

        async def write(self, handle: int, data: memoryview) -> int:
            return await trio.lowlevel.write_overlapped(handle, data)

    class _Win32ClientOps(Win32PipeIO):
        """CreateFile (overlapped, identification-only) and WaitNamedPipe."""

        def open(self, name: str) -> int | None:
            handle = open_pipe_handle(name)
            if handle is None:
                return None
            try:
                trio.lowlevel.register_with_iocp(handle)
            except BaseException:
                _winapi.CloseHandle(handle)
                raise
            return handle

        async def wait_busy(self, name: str) -> None:
            try:
                await trio.to_thread.run_sync(
                    _winapi.WaitNamedPipe, name, _BUSY_WAIT_MS, abandon_on_cancel=True
                )
            except OSError:
                pass  # timed out, or gone: the next open says which

        async def aclose(self, handle: int) -> None:
            _winapi.CloseHandle(handle)
            await trio.lowlevel.checkpoint()
