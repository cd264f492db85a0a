"""The daemon's Windows transport: a named-pipe listener built on trio's IOCP primitives.

trio has no named-pipe server, so this one is built from ``register_with_iocp``,
``wait_overlapped`` (an overlapped ``ConnectNamedPipe``), ``readinto_overlapped`` and
``write_overlapped``. :class:`PipeListener` is a ``trio.abc.Listener`` of
:class:`~routerd_client.trio_pipe.PipeStream` (the client package's trio stream over a pipe
handle, shared with the AsyncClient): the same interface as ``trio.SocketListener`` and
``SocketStream`` over the Unix socket, so the server code above them need not know which it has.

Invariants:

* The pipe admits only the user the daemon runs as: its security descriptor is
  :func:`pipe_sddl` (a protected DACL: one allow entry for that user's SID, network logons
  denied), and remote clients are rejected (``PIPE_REJECT_REMOTE_CLIENTS``).
* The first instance is created with ``FILE_FLAG_FIRST_PIPE_INSTANCE`` when the listener is
  made, so a second daemon (or a squatter that got there first) is refused at start
  (:class:`PipeInUse`) rather than sharing the name.
* A pipe instance is always waiting for the next client: a new one is created as soon as the
  previous one is connected, before :meth:`PipeListener.accept` returns it.

The OS calls sit behind :class:`PipeOps`, so everything above them is tested on any platform
with a fake; :class:`_Win32Ops` is the real one. NOT RUN ON WINDOWS YET: it is type-checked
with ``mypy --platform win32`` but has never run on a Windows machine (docs/operations.md).
"""

from __future__ import annotations

import re
import sys
from typing import Final, Protocol

import trio

from routerd_client.trio_pipe import PIPE_BUFFER, HandleOps, PipeStream

__all__ = [
    "PIPE_BUFFER",
    "PipeInUse",
    "PipeOps",
    "PipeStream",
    "PipeListener",
    "pipe_sddl",
    "open_mode",
    "PIPE_MODE",
]

_PIPE_ACCESS_DUPLEX: Final = 0x00000003
_FILE_FLAG_OVERLAPPED: Final = 0x40000000
_FILE_FLAG_FIRST_PIPE_INSTANCE: Final = 0x00080000
_PIPE_TYPE_BYTE: Final = 0x00000000
_PIPE_READMODE_BYTE: Final = 0x00000000
_PIPE_WAIT: Final = 0x00000000
_PIPE_REJECT_REMOTE_CLIENTS: Final = 0x00000008

#: ``dwPipeMode``: a byte stream (our frames carry their own lengths), local clients only.
PIPE_MODE: Final = _PIPE_TYPE_BYTE | _PIPE_READMODE_BYTE | _PIPE_WAIT | _PIPE_REJECT_REMOTE_CLIENTS

_SID = re.compile(r"S-1-\d+(-\d+)+")


def open_mode(first: bool) -> int:
    """``dwOpenMode`` for an instance: duplex, overlapped, and for the first one, exclusive."""
    mode = _PIPE_ACCESS_DUPLEX | _FILE_FLAG_OVERLAPPED
    return mode | _FILE_FLAG_FIRST_PIPE_INSTANCE if first else mode


def pipe_sddl(user_sid: str) -> str:
    """The security descriptor (SDDL) of routerd's pipe: only ``user_sid`` may use it.

    ``D:P`` is a protected DACL (nothing inherited); ``(D;;GA;;;NU)`` denies network logons;
    ``(A;;GA;;;SID)`` allows the daemon's user everything, including creating more instances.
    Raises ValueError if ``user_sid`` is not a SID string (nothing else may reach the SDDL).
    """
    if not _SID.fullmatch(user_sid):
        raise ValueError(f"not a SID: {user_sid!r}")
    return f"D:P(D;;GA;;;NU)(A;;GA;;;{user_sid})"


class PipeInUse(OSError):
    """Another process already serves (or squats) the pipe name."""


class PipeOps(HandleOps, Protocol):
    """The operating system, as far as the pipe listener and its streams need it
    (``HandleOps``: read, write, and ``aclose``, which lets the client read what was written,
    bounded, then closes the handle)."""

    def create(self, name: str, first: bool) -> int:
        """A new instance of pipe ``name`` (registered with the IOCP); raises
        :class:`PipeInUse` if ``first`` and the name is taken."""
        ...

    async def connect(self, handle: int) -> None:
        """Return once a client has connected to ``handle``."""
        ...

    def client_pid(self, handle: int) -> int | None:
        """The connected client's process id (GetNamedPipeClientProcessId), if Windows says."""
        ...

    def close(self, handle: int) -> None:
        """Close the handle now; pending I/O on it fails."""
        ...


class PipeListener(trio.abc.Listener[PipeStream]):
    """Accepts clients on the named pipe ``name``; the first instance exists on return.

    ``ops`` defaults to the real Windows calls with :func:`pipe_sddl` for the current user.
    Raises :class:`PipeInUse` if the name is already served.
    """

    def __init__(self, name: str, ops: PipeOps | None = None) -> None:
        self.name = name
        self._ops = ops if ops is not None else _default_ops()
        self._pending: int | None = self._ops.create(name, True)
        self._closed = False

    async def accept(self) -> PipeStream:
        if self._closed:
            raise trio.ClosedResourceError("the listener is closed")
        if self._pending is None:
            self._pending = self._ops.create(self.name, False)
        handle = self._pending
        await self._ops.connect(handle)  # cancelled: the instance stays for the next accept
        stream = PipeStream(handle, self._ops, peer_pid=self._ops.client_pid(handle))
        self._pending = None
        try:
            self._pending = self._ops.create(self.name, False)  # the next client's instance
        except OSError:
            pass  # made at the next accept; this client is served regardless
        return stream

    def close(self) -> None:
        """Close the waiting instance now (idempotent): no client can connect any more."""
        self._closed = True
        handle, self._pending = self._pending, None
        if handle is not None:
            self._ops.close(handle)

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()


def _default_ops() -> PipeOps:
    if sys.platform == "win32":
        return _Win32Ops(pipe_sddl(_current_user_sid()))
    raise OSError("named pipes need Windows; use the Unix socket here")


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    from routerd_client.trio_pipe import Win32PipeIO

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)

    # Handles are pointer-sized: without these, ctypes would pass and return 32-bit ints.
    _kernel32.CreateNamedPipeW.restype = wintypes.HANDLE
    _kernel32.CreateNamedPipeW.argtypes = [
        wintypes.LPCWSTR, wintypes.DWORD, wintypes.DWORD, wintypes.DWORD, wintypes.DWORD,
        wintypes.DWORD, wintypes.DWORD, ctypes.c_void_p,
    ]
    _kernel32.ConnectNamedPipe.argtypes = [wintypes.HANDLE, ctypes.c_void_p]
    _kernel32.GetNamedPipeClientProcessId.argtypes = [wintypes.HANDLE, ctypes.c_void_p]
    _kernel32.FlushFileBuffers.argtypes = [wintypes.HANDLE]
    _kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    _kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    _kernel32.LocalFree.argtypes = [ctypes.c_void_p]
    _advapi32.OpenProcessToken.argtypes = [wintypes.HANDLE, wintypes.DWORD, ctypes.c_void_p]

    _INVALID_HANDLE_VALUE: Final = ctypes.c_void_p(-1).value
    _ERROR_ACCESS_DENIED: Final = 5
    _ERROR_PIPE_CONNECTED: Final = 535
    _ERROR_IO_PENDING: Final = 997
    _PIPE_UNLIMITED_INSTANCES: Final = 255
    _SDDL_REVISION_1: Final = 1
    _TOKEN_QUERY: Final = 0x0008
    _TOKEN_USER_CLASS: Final = 1
    _FLUSH_TIMEOUT: Final = 2.0

    class _OVERLAPPED(ctypes.Structure):
        _fields_ = [
            ("Internal", ctypes.c_void_p),
            ("InternalHigh", ctypes.c_void_p),
            ("Offset", wintypes.DWORD),
            ("OffsetHigh", wintypes.DWORD),
            ("hEvent", wintypes.HANDLE),
        ]

    class _SECURITY_ATTRIBUTES(ctypes.Structure):
        _fields_ = [
            ("nLength", wintypes.DWORD),
            ("lpSecurityDescriptor", ctypes.c_void_p),
            ("bInheritHandle", wintypes.BOOL),
        ]

    def _current_user_sid() -> str:
        token = wintypes.HANDLE()
        process = _kernel32.GetCurrentProcess()
        if not _advapi32.OpenProcessToken(process, _TOKEN_QUERY, ctypes.byref(token)):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            size = wintypes.DWORD()
            _advapi32.GetTokenInformation(token, _TOKEN_USER_CLASS, None, 0, ctypes.byref(size))
            info = ctypes.create_string_buffer(size.value)
            if not _advapi32.GetTokenInformation(
                token, _TOKEN_USER_CLASS, info, size, ctypes.byref(size)
            ):
                raise ctypes.WinError(ctypes.get_last_error())
            # TOKEN_USER starts with SID_AND_ATTRIBUTES, whose first field is the PSID.
            psid = ctypes.c_void_p.from_buffer(info).value
            text = wintypes.LPWSTR()
            if not _advapi32.ConvertSidToStringSidW(ctypes.c_void_p(psid), ctypes.byref(text)):
                raise ctypes.WinError(ctypes.get_last_error())
            try:
                return str(text.value)
            finally:
                _kernel32.LocalFree(text)
        finally:
            _kernel32.CloseHandle(token)

    class _Win32Ops(Win32PipeIO):
        """The real calls: CreateNamedPipeW, overlapped ConnectNamedPipe on trio's IOCP (reads
        and writes: ``Win32PipeIO``, shared with the client)."""

        def __init__(self, sddl: str) -> None:
            self._sd = ctypes.c_void_p()
            if not _advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl, _SDDL_REVISION_1, ctypes.byref(self._sd), None
            ):
                raise ctypes.WinError(ctypes.get_last_error())
            self._sa = _SECURITY_ATTRIBUTES(
                ctypes.sizeof(_SECURITY_ATTRIBUTES), self._sd, False
            )

        def create(self, name: str, first: bool) -> int:
            handle = _kernel32.CreateNamedPipeW(
                name, open_mode(first), PIPE_MODE, _PIPE_UNLIMITED_INSTANCES,
                PIPE_BUFFER, PIPE_BUFFER, 0, ctypes.byref(self._sa),
            )
            if handle is None or handle == _INVALID_HANDLE_VALUE:
                err = ctypes.get_last_error()
                if first and err == _ERROR_ACCESS_DENIED:
                    raise PipeInUse(
                        None, f"another process already serves {name}; stop it first, or "
                        "choose another pipe with ROUTERD_SOCKET", None, err,
                    )
                raise ctypes.WinError(err)
            handle = int(handle)
            try:
                trio.lowlevel.register_with_iocp(handle)
            except BaseException:
                _kernel32.CloseHandle(handle)
                raise
            return handle

        async def connect(self, handle: int) -> None:
            ov = _OVERLAPPED()
            if not _kernel32.ConnectNamedPipe(handle, ctypes.byref(ov)):
                err = ctypes.get_last_error()
                if err == _ERROR_PIPE_CONNECTED:
                    return  # a client connected between CreateNamedPipe and now
                if err != _ERROR_IO_PENDING:
                    raise ctypes.WinError(err)
            # Pending (or done at once, which still posts a completion to the IOCP).
            await trio.lowlevel.wait_overlapped(handle, ctypes.addressof(ov))

        def client_pid(self, handle: int) -> int | None:
            pid = wintypes.ULONG()
            if _kernel32.GetNamedPipeClientProcessId(handle, ctypes.byref(pid)):
                return int(pid.value)
            return None

        async def aclose(self, handle: int) -> None:
            # FlushFileBuffers blocks until the client has read everything: in a thread, and
            # bounded, so a client that stopped reading cannot hold the daemon. Cancelled
            # (aclose_forcefully, as Connection.run closes), it is skipped: the handle is
            # closed at once, and what the client has not read stays readable to it (no
            # DisconnectNamedPipe, which would discard it).
            try:
                with trio.move_on_after(_FLUSH_TIMEOUT):
                    await trio.to_thread.run_sync(
                        _kernel32.FlushFileBuffers, handle, abandon_on_cancel=True
                    )
            finally:
                self.close(handle)

        def close(self, handle: int) -> None:
            _kernel32.CloseHandle(handle)

        def __del__(self) -> None:
            if self._sd:
                _kernel32.LocalFree(self._sd)
