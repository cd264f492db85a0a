"""The seam between a chat request and the HTTP client that carries it.

``run_chat`` speaks to a :class:`ChatTransport`: ``open(call, timeouts)`` sends the planned POST
and returns an :class:`Upstream` once the answer's status and headers are in; the body is read
with ``anext``; ``aclose(drain=...)`` ends it. Two transports:

* :class:`HttpxTransport`: any ``httpx.AsyncClient`` (tests, ``https://`` servers, URLs with
  credentials);
* :class:`WireTransport`: routerd's lean client (``wire.WireClient``) for what it handles,
  the httpx transport for the rest. The daemon uses this one.

Both raise httpx's exception types (``backends.errors`` translates them) and never hold up
the caller's end for long: ``aclose`` takes at most ``CLOSE_GRACE`` seconds (httpx) or none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

import httpx
import trio

from routerd.core.chat import ChatCall
from routerd.core.fallback import Timeouts

from .wire import DRAIN_GRACE, WireClient

__all__ = [
    "CLOSE_GRACE",
    "ChatTransport",
    "HttpxTransport",
    "Upstream",
    "WireTransport",
    "read_some",
]

#: Seconds allowed to close an httpx response once we are done with it.
CLOSE_GRACE = 2.0
#: Most buffered pieces read after closing before the closed connection's error shows.
_DRAIN_STEPS = 1000


class Upstream(Protocol):
    """An answer being read."""

    @property
    def status_code(self) -> int: ...

    def header(self, name: str) -> str:
        """The value of header ``name`` ("" if absent)."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self, *, drain: bool = False) -> None:
        """Done with it; ``drain``: it ended well, keep the connection if that is cheap."""
        ...


class ChatTransport(Protocol):
    """Sends one planned chat call."""

    async def open(
        self, call: ChatCall, timeouts: Timeouts, on_sent: Callable[[], None] | None = None
    ) -> Upstream:
        """Send ``call``; return once the status and headers are in. Raises
        ``httpx.RequestError`` (or ``httpx.InvalidURL``); no read timeout applies.
        ``on_sent`` is called once the request is written (or just before, where the
        transport cannot tell), while the server works on it; it must not block."""
        ...


async def read_some(chunks: AsyncIterator[bytes], limit: int, idle: float) -> bytes:
    """Up to ``limit`` bytes of a body, giving up quietly on a stall or a broken connection."""
    body = bytearray()
    while len(body) < limit:
        data: bytes | None = None
        with trio.move_on_after(idle):
            try:
                data = await anext(chunks, None)
            except httpx.RequestError:
                pass
        if data is None:
            break
        body += data
    return bytes(body[:limit])


class _HttpxUpstream:
    __slots__ = ("_chunks", "_response")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.aiter_bytes()

    @property
    def status_code(self) -> int:
        return self._response.status_code

    def header(self, name: str) -> str:
        return str(self._response.headers.get(name, ""))

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self, *, drain: bool = False) -> None:
        """Close the response (which closes its connection unless it was read to the end),
        then let httpx's chain of body generators finish.

        ``drain``: read what little may follow the answer's end marker (the end of the
        chunked body), for at most ``DRAIN_GRACE`` s, so the connection can be kept alive.

        httpx reads a body through nested async generators; closing only the outermost one
        would leave the inner ones suspended for the garbage collector (trio warns about
        each). Reading once more after ``response.aclose()`` makes the innermost read fail on
        the closed connection, and that error ends every generator of the chain.
        """
        chunks = self._chunks
        if drain:
            with trio.move_on_after(DRAIN_GRACE):
                await read_some(chunks, 64 * 1024, DRAIN_GRACE)
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE):
            await self._response.aclose()
            for _ in range(_DRAIN_STEPS):
                try:
                    if await anext(chunks, None) is None:
                        break
                except Exception:  # the closed connection's error: the chain has ended
                    break


class HttpxTransport:
    """:class:`ChatTransport` over an ``httpx.AsyncClient``."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def open(
        self, call: ChatCall, timeouts: Timeouts, on_sent: Callable[[], None] | None = None
    ) -> Upstream:
        # No httpx read timeout: first-token and idle deadlines are kept by the caller.
        timeout = httpx.Timeout(
            connect=timeouts.connect, read=None, write=timeouts.idle, pool=timeouts.connect
        )
        request = self.client.build_request(
            "POST", call.url, content=call.body, headers=call.headers, timeout=timeout
        )
        if on_sent is not None:
            on_sent()  # httpx sends and waits for the head in one call: just before, then
        return _HttpxUpstream(await self.client.send(request, stream=True))


class WireTransport:
    """:class:`ChatTransport` over the lean client where it applies, httpx elsewhere."""

    def __init__(self, wire: WireClient, fallback: ChatTransport) -> None:
        self.wire = wire
        self.fallback = fallback

    async def open(
        self, call: ChatCall, timeouts: Timeouts, on_sent: Callable[[], None] | None = None
    ) -> Upstream:
        if not self.wire.handles(call.url):
            return await self.fallback.open(call, timeouts, on_sent)
        return await self.wire.post(
            call.url,
            call.body,
            call.headers,
            connect_timeout=timeouts.connect,
            write_timeout=timeouts.idle,
            on_sent=on_sent,
        )
