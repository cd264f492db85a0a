"""Windows named pipes in memory: a fake of the calls behind routerd's pipe transport.

One :class:`PipeKernel` is both sides: the server calls of ``routerd.shell.winpipe.PipeOps``
(``create``, ``connect``, ``client_pid``, ``close``) and the client calls of
``routerd_client.trio_pipe.ClientPipeOps`` (``open``, ``wait_busy``), with the handle I/O both
share (``read``, ``write``, ``aclose``). So a real ``PipeListener`` and a real client stream
talk to each other through it, and everything above the Windows calls runs on any platform.

The rules of Windows it keeps: an instance serves one client; a name taken with
FILE_FLAG_FIRST_PIPE_INSTANCE cannot be taken again while any instance of it is open; opening
a name nobody serves is FileNotFoundError, and while every instance is connected the open is
"busy" (``None``); a reader gets what was written, then 0 bytes once the other end closed;
writing to a closed end is a broken pipe; closing a handle fails the I/O pending on it with
``trio.ClosedResourceError`` (what trio raises when a handle is closed under it). Writes may be
cut short (``write_chunk``) so callers must loop. Not modelled: buffer limits (writes never
block), security descriptors (set ``refuse_with`` to make opens fail as a DACL would).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import trio

__all__ = ["PipeKernel", "PipeInstance"]


@dataclass(eq=False)
class PipeInstance:
    name: str
    first: bool
    server: int
    client: int | None = None
    client_pid: int | None = None
    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    server_closed: bool = False
    client_closed: bool = False


class PipeKernel:
    """Named pipes in memory; handles are ints. See the module docstring."""

    def __init__(self, *, write_chunk: int | None = None, pid: int = 4242) -> None:
        self.write_chunk = write_chunk
        self.pid = pid  # the process id of every client that opens a pipe
        self.instances: list[PipeInstance] = []
        self.fail_create = False
        self.refuse_with: OSError | None = None
        self.busy_opens = 0
        self._ends: dict[int, tuple[PipeInstance, bool]] = {}  # handle -> (instance, server?)
        self._next = 100
        self._wake = trio.Event()

    # --- bookkeeping ----------------------------------------------------------------------------

    def _handle(self, inst: PipeInstance, server: bool) -> int:
        self._next += 1
        self._ends[self._next] = (inst, server)
        return self._next

    def _poke(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    def live(self, name: str) -> list[PipeInstance]:
        """Instances of ``name`` whose server handle is open."""
        return [i for i in self.instances if i.name == name and not i.server_closed]

    def waiting(self, name: str) -> list[PipeInstance]:
        """Instances of ``name`` a client could open now."""
        return [i for i in self.live(name) if i.client is None]

    @staticmethod
    def _closed(inst: PipeInstance, server: bool) -> bool:
        return inst.server_closed if server else inst.client_closed

    # --- server side (PipeOps) ------------------------------------------------------------------

    def create(self, name: str, first: bool) -> int:
        from routerd.shell.winpipe import PipeInUse

        if first and self.live(name):
            raise PipeInUse(f"another process already serves {name}")
        if self.fail_create:
            raise OSError(errno.EAGAIN, "all pipe instances are busy")
        inst = PipeInstance(name, first, server=0)
        inst.server = self._handle(inst, True)
        self.instances.append(inst)
        self._poke()
        return inst.server

    async def connect(self, handle: int) -> None:
        inst, _ = self._ends[handle]
        while inst.client is None:
            if inst.server_closed:
                raise trio.ClosedResourceError("another task closed this resource")
            await self._wake.wait()

    def client_pid(self, handle: int) -> int | None:
        return self._ends[handle][0].client_pid

    def close(self, handle: int) -> None:
        inst, server = self._ends[handle]
        if server:
            inst.server_closed = True
        else:
            inst.client_closed = True
        self._poke()

    # --- client side (ClientPipeOps) ------------------------------------------------------------

    def open(self, name: str) -> int | None:
        if self.refuse_with is not None:
            raise self.refuse_with
        if not self.live(name):
            raise FileNotFoundError(errno.ENOENT, "The system cannot find the file specified")
        waiting = self.waiting(name)
        if not waiting:
            self.busy_opens += 1
            return None
        inst = waiting[0]
        inst.client = self._handle(inst, False)
        inst.client_pid = self.pid
        self._poke()
        return inst.client

    async def wait_busy(self, name: str) -> None:
        await self._wake.wait()

    # --- both sides (HandleOps) -----------------------------------------------------------------

    async def read(self, handle: int, buffer: bytearray) -> int:
        inst, server = self._ends[handle]
        while True:
            if self._closed(inst, server):
                raise trio.ClosedResourceError("another task closed this resource")
            inbound = inst.to_server if server else inst.to_client
            if inbound:
                count = min(len(buffer), len(inbound))
                buffer[:count] = inbound[:count]
                del inbound[:count]
                return count
            if self._closed(inst, not server):
                return 0  # the other end has gone and everything it wrote was read
            await self._wake.wait()

    async def write(self, handle: int, data: memoryview) -> int:
        await trio.lowlevel.checkpoint()
        inst, server = self._ends[handle]
        if self._closed(inst, server):
            raise OSError(errno.EBADF, "The handle is invalid")
        if self._closed(inst, not server):
            raise BrokenPipeError(errno.EPIPE, "The pipe is being closed")
        chunk = bytes(data if self.write_chunk is None else data[: self.write_chunk])
        (inst.to_client if server else inst.to_server).extend(chunk)
        self._poke()
        return len(chunk)

    async def aclose(self, handle: int) -> None:
        self.close(handle)  # first: a cancelled aclose must still close (trio's rule)
        await trio.lowlevel.checkpoint()
