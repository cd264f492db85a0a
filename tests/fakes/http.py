"""A minimal HTTP/1.1 server on trio for the fake model servers.

h11 parses requests; responses are written byte for byte as the handler gives them (h11 would
move and re-case framing headers, and the fakes must answer exactly like the captures).

Contract:

* ``HTTPServer(handler, host, port)``; ``url = await nursery.start(server.run)`` binds and
  serves until the nursery is cancelled; ``serve_http(handler)`` is the same as an async
  context manager yielding the server.
* ``await server.down()`` closes the listener and every open connection: once it returns,
  connects are refused. ``await server.up()`` listens again on the same port.
* A handler is ``async def handler(request: Request, ex: Exchange) -> None``. It answers with
  ``ex.respond`` (whole body) or ``ex.start`` / ``ex.write`` / ``ex.end`` (chunked, piece by
  piece), and may ``ex.pause``, ``ex.hang``, ``ex.abort`` or ``ex.send_raw`` garbage.
* Once the request is read, a watcher reads the socket: when the client goes away,
  ``ex.client_gone`` is set and the handler's next ``write``/``pause``/``hang`` raises
  ``ClientDisconnected`` (the server swallows it and closes the connection).
* Keep-alive: after a complete response the connection serves the next request unless the
  request or the response said ``Connection: close``, or the body was close-delimited.
* Any other exception from a handler propagates: a broken fake fails the test loudly.
"""

from __future__ import annotations

import itertools
import json
import socket as _stdsocket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import trio

__all__ = [
    "ClientDisconnected",
    "Exchange",
    "HTTPServer",
    "Handler",
    "Headers",
    "Request",
    "serve_http",
]

Headers = Sequence[tuple[str, str]]
_READ_SIZE = 65536


class ClientDisconnected(Exception):
    """The client closed the connection while the handler was answering."""


@dataclass(frozen=True)
class Request:
    """One parsed request. Header names are lower-cased; ``path`` has no query string."""

    method: str
    target: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    http_version: str
    #: How many requests this connection served before this one (0 for the first).
    seq: int = 0

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    def json(self) -> Any:
        """The body decoded as JSON (``json.JSONDecodeError`` if it is not)."""
        return json.loads(self.body)

    def params(self) -> dict[str, list[str]]:
        """The query string, decoded."""
        return parse_qs(self.query)

    @property
    def bearer(self) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` header."""
        auth = self.header("authorization") or ""
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None


Handler = Callable[[Request, "Exchange"], Awaitable[None]]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _head(status: int, headers: Headers, reason: str | None) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status) if reason is None else reason}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _has(headers: Headers, name: str, token: str | None = None) -> bool:
    for key, value in headers:
        if key.lower() == name and (token is None or token in value.lower()):
            return True
    return False


class Exchange:
    """The answering side of one request: the handler's only way to write to the client."""

    def __init__(self, stream: trio.SocketStream, request: Request, gone: trio.Event) -> None:
        self.request = request
        self.client_gone = gone
        self.head_sent = False
        self.finished = False
        self.closed = False
        self.close_after = False
        self._stream = stream
        self._chunked = False

    async def _send(self, data: bytes) -> None:
        if self.closed:
            raise ClientDisconnected("connection already closed")
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.client_gone.set()
            raise ClientDisconnected(str(exc)) from exc

    async def respond(
        self, status: int, headers: Headers, body: bytes = b"", *, reason: str | None = None
    ) -> None:
        """Send a whole response. ``Content-Length`` is appended when ``headers`` lack it."""
        headers = list(headers)
        if not _has(headers, "content-length"):
            headers.append(("Content-Length", str(len(body))))
        self.close_after = _has(headers, "connection", "close")
        payload = b"" if self.request.method == "HEAD" else body
        self.head_sent = True
        await self._send(_head(status, headers, reason) + payload)
        self.finished = True

    async def start(self, status: int, headers: Headers, *, reason: str | None = None) -> None:
        """Send the head of a streamed response.

        With ``Transfer-Encoding: chunked`` in ``headers`` each ``write`` is one chunk;
        without it the body is close-delimited (the connection closes at ``end``).
        """
        self._chunked = _has(headers, "transfer-encoding", "chunked")
        self.close_after = not self._chunked or _has(headers, "connection", "close")
        self.head_sent = True
        await self._send(_head(status, headers, reason))

    async def write(self, data: bytes) -> None:
        """Send one piece of a streamed body (one chunk when chunked)."""
        if not data:
            return
        if self.client_gone.is_set():
            raise ClientDisconnected("client went away")
        if self._chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        await self._send(data)

    async def end(self) -> None:
        """Finish a streamed body cleanly (the terminating chunk)."""
        if self._chunked:
            await self._send(b"0\r\n\r\n")
        self.finished = True

    async def abort(self) -> None:
        """Drop the connection at once, mid-response or before any answer."""
        self.closed = True
        self.close_after = True
        self._stream.socket.close()
        await trio.lowlevel.checkpoint()

    async def send_raw(self, data: bytes, *, close: bool = True) -> None:
        """Write ``data`` as is (not HTTP), then close the connection."""
        self.head_sent = True
        await self._send(data)
        self.finished = True
        if close:
            await self.abort()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``; raise ``ClientDisconnected`` as soon as the client leaves."""
        if seconds > 0:
            with trio.move_on_after(seconds):
                await self.client_gone.wait()
        if self.client_gone.is_set():
            raise ClientDisconnected("client went away")

    async def hang(self) -> None:
        """Never answer: wait until the client gives up, then raise ``ClientDisconnected``."""
        await self.client_gone.wait()
        raise ClientDisconnected("client went away")


class _Parsed:
    def __init__(self, request: Request, leftover: bytes, eof: bool, keep_alive: bool) -> None:
        self.request = request
        self.leftover = leftover
        self.eof = eof
        self.keep_alive = keep_alive


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(_READ_SIZE)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


async def _read_request(
    stream: trio.SocketStream, leftover: bytes, eof: bool, seq: int
) -> _Parsed | None:
    """The next request on the connection, or ``None`` at EOF or on a malformed request."""
    conn = h11.Connection(h11.SERVER)
    if leftover:
        conn.receive_data(leftover)
    if eof:
        conn.receive_data(b"")
    head: h11.Request | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            try:
                await stream.send_all(
                    _head(400, [("Content-Length", "0"), ("Connection", "close")], None)
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            return None
        if event is h11.NEED_DATA:
            data = await _receive(stream)
            eof = not data
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        else:  # ConnectionClosed, or PAUSED (cannot happen before EndOfMessage)
            return None
    assert head is not None
    target = head.target.decode("latin-1")
    parts = urlsplit(target)
    headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers)
    version = head.http_version.decode()
    connection = ",".join(v.lower() for k, v in headers if k == "connection")
    keep_alive = version == "1.1" and "close" not in connection
    trailing, closed = conn.trailing_data
    request = Request(
        method=head.method.decode("latin-1"),
        target=target,
        path=parts.path or "/",
        query=parts.query,
        headers=headers,
        body=bytes(body),
        http_version=version,
        seq=seq,
    )
    return _Parsed(request, bytes(trailing), closed or eof, keep_alive)


class HTTPServer:
    """An HTTP/1.1 server for tests that can go down and come back up on the same port."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.accepted = 0
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._stopped is not None and not self._stopped.is_set()

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``started`` with the base URL once listening."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.up()
            task_status.started(self.base_url)
            await trio.sleep_forever()

    async def up(self) -> None:
        """Listen again (on the same port once one was chosen). No-op when already up."""
        if self.is_up:
            return
        if self._nursery is None:
            raise RuntimeError("start the server with nursery.start(server.run) first")
        family = _stdsocket.AF_INET6 if ":" in self.host else _stdsocket.AF_INET
        sock = trio.socket.socket(family, _stdsocket.SOCK_STREAM)
        sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
        try:
            await sock.bind((self.host, self.port))
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        self._nursery.start_soon(self._serve, trio.SocketListener(sock), self._scope, self._stopped)

    async def down(self) -> None:
        """Close the listener and all connections; returns once connects are refused."""
        if self._scope is None or self._stopped is None:
            return
        self._scope.cancel()
        await self._stopped.wait()

    async def _serve(
        self, listener: trio.SocketListener, scope: trio.CancelScope, stopped: trio.Event
    ) -> None:
        # Sockets are closed synchronously: an ``aclose`` checkpoint under cancellation would
        # replace a handler's exception with ``Cancelled`` and hide the bug.
        try:
            with scope:
                try:
                    async with trio.open_nursery() as connections:
                        while True:
                            stream = await listener.accept()
                            self.accepted += 1
                            connections.start_soon(self._connection, stream)
                finally:
                    listener.socket.close()
        finally:
            stopped.set()

    async def _connection(self, stream: trio.SocketStream) -> None:
        leftover, eof = b"", False
        with stream.socket:
            for seq in itertools.count():
                parsed = await _read_request(stream, leftover, eof, seq)
                if parsed is None:
                    return
                gone = trio.Event()
                if parsed.eof:
                    gone.set()
                buffer = bytearray(parsed.leftover)
                ex = Exchange(stream, parsed.request, gone)
                async with trio.open_nursery() as nursery:
                    if not parsed.eof:
                        nursery.start_soon(_watch, stream, buffer, gone)
                    dropped = await self._answer(ex)
                    nursery.cancel_scope.cancel()
                if dropped or ex.closed or ex.close_after or not parsed.keep_alive:
                    return
                if gone.is_set():
                    return
                leftover = bytes(buffer)

    async def _answer(self, ex: Exchange) -> bool:
        """Run the handler; ``True`` when the client left or the answer was incomplete."""
        try:
            await self.handler(ex.request, ex)
            if not ex.head_sent:
                await ex.respond(500, [("Content-Type", "text/plain")], b"fake: no answer")
            elif not ex.finished and not ex.closed:
                await ex.end()
        except ClientDisconnected:
            return True
        return False


async def _watch(stream: trio.SocketStream, buffer: bytearray, gone: trio.Event) -> None:
    """Read while the handler answers: keep pipelined bytes, notice the client leaving."""
    while True:
        data = await _receive(stream)
        if not data:
            gone.set()
            return
        buffer += data


@asynccontextmanager
async def serve_http(
    handler: Handler, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[HTTPServer]:
    """Serve ``handler`` for the duration of the ``async with`` block."""
    server = HTTPServer(handler, host, port)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
