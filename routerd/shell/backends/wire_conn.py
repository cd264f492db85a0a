"""One connection of the lean model client (``wire``), and the answer read on it.

Contract (the rest is in ``wire``'s docstring):

* :class:`Conn` is a socket between answers or carrying one; it is closed without waiting
  (``close``), and ``read_nowait`` takes only what the kernel already holds.
* :class:`WireResponse` reads its body as it comes (``async for``), raising httpx's exception
  types; :meth:`WireResponse.close` never waits: the connection goes back to the pool when the
  body was read to its end, to a background drain when the end marker is only late
  (``drain=True``), and is closed otherwise.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import zlib
from typing import Any, Final, Protocol

import httpx
import trio

from routerd.core.http1 import END, NEED_DATA, Head, HttpError, ResponseParser

__all__ = ["DRAIN_MAX", "RECEIVE", "Conn", "Pool", "WireResponse", "body_decoder", "open_socket"]

#: The most bytes read while draining.
DRAIN_MAX: Final = 64 * 1024
#: Bytes asked of the kernel per read.
RECEIVE: Final = 64 * 1024


class Pool(Protocol):
    """What an answer needs of the client that keeps its connections."""

    @property
    def drain_grace(self) -> float: ...

    def release(self, key: tuple[str, int], conn: Conn) -> None:
        """Keep ``conn`` for the next request to ``key`` (or close it if it cannot be)."""
        ...

    def drain(self, conn: Conn, response: WireResponse) -> bool:
        """Drain ``conn`` in the background; False if that cannot be done now."""
        ...

    def drained(self, key: tuple[str, int]) -> None:
        """A background drain of a connection to ``key`` ended."""
        ...


class Conn:
    """One connection: the stream, the parser of the answer in progress, when it went idle."""

    __slots__ = ("idle_since", "parser", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.parser = ResponseParser()
        self.idle_since = 0.0

    def close(self) -> None:
        """Close the socket now (never waits)."""
        self.stream.socket.close()

    # An idle connection with something to read: the server closed it (EOF) or sent bytes
    # nobody asked for; either way it is not reusable. Which one is defined is decided here,
    # once: this runs for every request that reuses a connection.
    if sys.platform == "win32":

        def looks_closed(self) -> bool:
            fd = self.stream.socket.fileno()
            if fd < 0:
                return True
            return bool(select.select([fd], [], [], 0)[0])  # Windows has no poll()

    else:

        def looks_closed(self) -> bool:
            fd = self.stream.socket.fileno()
            if fd < 0:
                return True
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))

    async def receive(self) -> None:
        """Read what the server sent into the parser (EOF included)."""
        try:
            data = await self.stream.receive_some(RECEIVE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from None
        if data:
            self.parser.feed(data)
        else:
            self.parser.feed_eof()

    def read_nowait(self) -> bool:
        """Feed the parser what the kernel holds already, without waiting; False if nothing
        (nobody else waits on this socket: it is between answers)."""
        try:
            data = os.read(self.stream.socket.fileno(), RECEIVE)
        except OSError:  # BlockingIOError: nothing yet; anything else: the next read says
            return False
        if data:
            self.parser.feed(data)
        else:
            self.parser.feed_eof()
        return True

    def next_event(self) -> Head | bytes | object:
        try:
            return self.parser.next_event()
        except HttpError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from None


def body_decoder(encoding: bytes) -> Any:
    """A decompressor for ``Content-Encoding`` ``encoding`` (None for none); raises
    DecodingError for a coding it does not know."""
    if encoding in (b"", b"identity"):
        return None
    if encoding in (b"gzip", b"x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if encoding == b"deflate":
        return zlib.decompressobj()
    raise httpx.DecodingError(f"unsupported content-encoding {encoding.decode(errors='replace')}")


class WireResponse:
    """An answer being read: ``status_code``, ``header(name)``, then the body by
    ``async for chunk in response`` (or ``anext``); :meth:`close` when done."""

    __slots__ = ("_client", "_conn", "_decode", "_done", "_key", "headers", "status_code")

    def __init__(self, client: Pool, key: tuple[str, int], conn: Conn, head: Head) -> None:
        self._client = client
        self._key = key
        self._conn: Conn | None = conn
        self.status_code = head.status
        self.headers = head.headers
        self._done = False
        self._decode = body_decoder(self.header("content-encoding").strip().lower().encode())

    def header(self, name: str) -> str:
        """The first value of header ``name`` (case-insensitive; "" if absent)."""
        key = name.lower().encode()
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return ""

    @property
    def complete(self) -> bool:
        """The body was read to its end."""
        return self._done

    def __aiter__(self) -> WireResponse:
        return self

    async def __anext__(self) -> bytes:
        while True:
            data = await self._next_data()
            if data is None:
                raise StopAsyncIteration
            if self._decode is not None:
                try:
                    data = self._decode.decompress(data)
                except zlib.error as exc:
                    raise httpx.DecodingError(f"bad compressed body: {exc}") from None
                if not data:
                    continue
            return data

    async def _next_data(self) -> bytes | None:
        conn = self._conn
        if conn is None:
            if self._done:
                return None
            raise httpx.ReadError("the response was closed")
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                await conn.receive()
            elif event is END:
                self._done = True
                if self._decode is not None:
                    tail = self._decode.flush()
                    self._decode = None
                    if tail:
                        return bytes(tail)
                return None
            else:
                assert isinstance(event, bytes)
                return event

    def _buffered_end(self, conn: Conn) -> bool:
        """Read what has arrived, without waiting; True if the end of the body is there."""
        size = 0
        peeked = False
        while size <= DRAIN_MAX:
            try:
                event = conn.parser.next_event()
            except HttpError:
                return False
            if event is END:
                self._done = True
                return True
            if event is NEED_DATA:
                if peeked or not conn.read_nowait():
                    return False
                peeked = True
                continue
            assert isinstance(event, bytes)
            size += len(event)
        return False

    async def aclose(self, *, drain: bool = False) -> None:
        """:meth:`close`, for the ``Upstream`` protocol (it does not wait either)."""
        self.close(drain=drain)

    def close(self, *, drain: bool = False) -> None:
        """Done with this answer (never waits; see the module docstring). ``drain``: the
        answer ended well, keep the connection if its end marker comes soon."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done or (drain and self._buffered_end(conn)):
            self._client.release(self._key, conn)
        elif not (drain and self._client.drain(conn, self)):
            conn.close()

    async def run_drain(self, conn: Conn) -> None:
        """Background: read up to the end marker within the grace, then keep or close."""
        self._conn = conn
        size = 0
        try:
            with trio.move_on_after(self._client.drain_grace):
                while size <= DRAIN_MAX:
                    data = await self._next_data()
                    if data is None:
                        break
                    size += len(data)
        except httpx.HTTPError:
            pass
        finally:
            self._conn = None
            if self._done:
                self._client.release(self._key, conn)
            else:
                conn.close()
            self._client.drained(self._key)


async def open_socket(addr: str, port: int) -> trio.SocketStream:
    """A TCP connection to a literal address (no resolving, no racing: the addresses were
    checked one by one, and are tried one by one)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((addr, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)  # sets TCP_NODELAY
