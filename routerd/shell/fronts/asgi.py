"""ASGI plumbing for the HTTP fronts: one request in, one reply out, the lifespan protocol.

Contract:

* :func:`read_request` reads the whole body (up to a limit: :class:`BodyTooLarge` beyond it)
  and returns an :class:`HttpRequest` with lower-cased header names.
* :class:`Reply` is the sending side: every response it starts carries ``X-Routerd-Instance``
  (so no routerd takes another, or itself, for a model server) and the CORS headers of an
  allowed cross-origin request. A write that the client does not take within the
  slow-consumer timeout raises :class:`~routerd.core.errors.SlowConsumer` and breaks the reply
  (later writes are dropped), so a stalled client cannot hold a model slot for ever.
* :func:`watch_disconnect` returns when the client goes away; the caller cancels the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from routerd.core.errors import SlowConsumer
from routerd.core.fronts.guard import Transport
from routerd.core.fronts.wire import json_bytes

__all__ = [
    "BodyTooLarge",
    "HttpRequest",
    "Receive",
    "Reply",
    "Scope",
    "Send",
    "read_request",
    "serve_lifespan",
    "watch_disconnect",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_CORS_METHODS: Final = b"GET, POST, OPTIONS"
_CORS_HEADERS: Final = b"authorization, content-type"


class BodyTooLarge(Exception):
    """The request body is over the limit."""


@dataclass
class HttpRequest:
    """One HTTP request, its body read."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    transport: Transport
    peer: str | None  # "host:port" of a TCP client

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        if name not in out:  # the first of repeated headers (Host, Authorization) counts
            out[name] = raw_value.decode("latin-1")
    return out


async def read_request(
    scope: Scope, receive: Receive, transport: Transport, limit: int
) -> HttpRequest | None:
    """The request of ``scope`` with its body, or None when the client left first. Raises
    :class:`BodyTooLarge` past ``limit`` bytes (declared or sent)."""
    headers = _headers(scope)
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        data = message.get("body", b"")
        size += len(data)
        if size > limit:
            raise BodyTooLarge
        chunks.append(data)
        more = bool(message.get("more_body", False))
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else None
    return HttpRequest(
        method=scope["method"].upper(),
        path=scope.get("path", "/") or "/",
        headers=headers,
        body=b"".join(chunks),
        transport=transport,
        peer=peer,
    )


async def watch_disconnect(receive: Receive) -> None:
    """Return once the client has gone away (call after the body was read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


@dataclass
class Reply:
    """The sending side of one response (see the module docstring)."""

    send: Send
    instance_id: str
    slow_timeout: float
    cors: str | None = None
    started: bool = False
    finished: bool = False
    broken: bool = False
    status: int = 0
    extra: list[tuple[bytes, bytes]] = field(default_factory=list)

    def _base(self) -> list[tuple[bytes, bytes]]:
        out = [(b"x-routerd-instance", self.instance_id.encode())]
        if self.cors is not None:
            out += [
                (b"access-control-allow-origin", self.cors.encode()),
                (b"vary", b"Origin"),
            ]
        return out

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        if self.broken:
            return
        with trio.move_on_after(self.slow_timeout) as scope:
            await self.send(message)
        if scope.cancelled_caught:
            self.broken = True
            raise SlowConsumer(f"the client read nothing for {self.slow_timeout:g} s")

    async def start(
        self, status: int, content_type: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Send the status line and headers (once)."""
        if self.started:
            return
        self.started = True
        self.status = status
        out = [(b"content-type", content_type.encode()), *self._base(), *self.extra]
        out += [(k.lower().encode(), v.encode("latin-1", "replace")) for k, v in headers]
        await self._send({"type": "http.response.start", "status": status, "headers": out})

    async def write(self, data: bytes) -> None:
        """Send part of the body (after :meth:`start`)."""
        if data and not self.finished:
            await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self, data: bytes = b"") -> None:
        """Send the last of the body."""
        if not self.finished:
            self.finished = True
            await self._send({"type": "http.response.body", "body": data, "more_body": False})

    async def whole(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """A complete response in one go."""
        await self.start(status, content_type, headers)
        await self.finish(body)

    async def json(self, status: int, value: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        await self.whole(status, json_bytes(value), "application/json", headers)

    async def preflight(self) -> None:
        """The answer to a CORS preflight (``OPTIONS``) of an allowed origin."""
        self.extra += [
            (b"access-control-allow-methods", _CORS_METHODS),
            (b"access-control-allow-headers", _CORS_HEADERS),
            (b"access-control-max-age", b"600"),
        ]
        await self.whole(204, b"", "text/plain")


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Answer the ASGI lifespan protocol: nothing to set up or tear down."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
