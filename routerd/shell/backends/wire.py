"""A lean HTTP/1.1 client for model calls over trio sockets: egress-checked, kept alive.

Why a second client: on a routed request httpx's layers (URL and header models, the
connection pool, the response wrapper and its chain of body generators) cost about half a
millisecond of CPU, which was most of what routing added (``bench/route.py``). This client does
one thing, a POST over plain ``http://`` with the answer read as it comes, in about a tenth of
that; the bytes rules are the sans-IO ``routerd.core.http1``. Everything else (discovery, probes, ``https://`` servers, URLs with credentials in them)
keeps going through ``routerd.shell.http.make_http_client``.

Contract:

* The egress guarantees of ``routerd.shell.http`` hold: every request's URL is checked
  against the policy in force (``check_url``); a new connection resolves through
  :meth:`~routerd.shell.http.EgressBackend.resolve` (the host checked, every resolved address
  checked) and connects to those literal addresses only; ``on_refused`` is told of each
  refusal. No proxies, no redirects, no Unix sockets.
* Failures raise httpx's exception types (``EgressRefused``, ``httpx.ConnectError``,
  ``ConnectTimeout``, ``WriteTimeout``, ``WriteError``, ``RemoteProtocolError``, ``ReadError``,
  ``LocalProtocolError``, ``DecodingError``), so ``backends.errors`` reads both clients alike.
* The request asks for no content coding (``Accept-Encoding: identity``); a server that
  compresses anyway with gzip or deflate is decoded.
* There are no read timeouts here: the caller keeps them (``chat.py``, with trio).
* A connection goes back to the pool only when its answer was read to the end (the server
  keeping it open); otherwise it is closed at once, which is how the server learns that the
  caller went away. :meth:`WireResponse.close` never waits: with ``drain`` it hands a
  connection whose end marker has not arrived yet to a background task that reads it for at
  most ``drain_grace`` seconds, so the caller's answer is not held up by it.
* A request waits up to ``REUSE_WAIT`` for a connection to its server being drained, rather
  than open another.
* At most ``max_idle`` idle connections per server, none kept past ``keepalive_expiry``; an
  idle connection that became readable (the server closed it) is dropped. A request that
  fails on a reused connection before a byte of the answer came is sent once more on a new
  one (the server closed the idle connection as we reused it).
* Concurrency is the fair queue's business (``routing.concurrency``): no limit here.
"""

from __future__ import annotations

import os
import select
import socket
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httpcore
import httpx
import trio

from routerd.core.egress import EgressPolicy, check_url
from routerd.core.http1 import END, NEED_DATA, Head, HttpError, NoResponse, ResponseParser
from routerd.core.http1 import request_head as build_head
from routerd.shell.http import EgressBackend, EgressRefused, OnRefused, PolicySource, report_refusal

__all__ = ["WireClient", "WireResponse", "DRAIN_GRACE", "DRAIN_MAX"]

#: Seconds a background task reads what follows the end of a good answer (to keep the
#: connection) before closing it.
DRAIN_GRACE: Final = 0.25
#: The most bytes read while draining.
DRAIN_MAX: Final = 64 * 1024
#: Seconds a request waits for a connection to the same server that is being drained, rather
#: than open another (its end marker is usually a moment behind the answer).
REUSE_WAIT: Final = 0.01
_RECEIVE: Final = 64 * 1024
_CACHE_MAX: Final = 256


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL this client can send to: the origin, the Host header and the request target."""

    host: str
    port: int
    host_header: str
    path: str


def _parse(url: str) -> _Target | None:
    """The target of an ``http://`` URL without credentials; None for anything else."""
    try:
        u = urlsplit(url)
        port = u.port or 80
    except ValueError:
        return None
    if u.scheme.lower() != "http" or not u.hostname or "@" in u.netloc:
        return None
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return _Target(u.hostname, port, u.netloc, path)


class _Conn:
    """One connection: the stream, the parser of the answer in progress, when it went idle."""

    __slots__ = ("idle_since", "parser", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.parser = ResponseParser()
        self.idle_since = 0.0

    def close(self) -> None:
        """Close the socket now (never waits)."""
        self.stream.socket.close()

    def looks_closed(self) -> bool:
        """An idle connection with something to read: the server closed it (EOF) or sent
        bytes nobody asked for; either way it is not reusable."""
        fd = self.stream.socket.fileno()
        if fd < 0:
            return True
        if _poll is None:
            return bool(select.select([fd], [], [], 0)[0])
        poller = _poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))

    async def receive(self) -> None:
        """Read what the server sent into the parser (EOF included)."""
        try:
            data = await self.stream.receive_some(_RECEIVE)
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
            data = os.read(self.stream.socket.fileno(), _RECEIVE)
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


_poll = getattr(select, "poll", None)


def _decoder(encoding: bytes) -> Any:
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

    def __init__(self, client: WireClient, key: tuple[str, int], conn: _Conn, head: Head) -> None:
        self._client = client
        self._key = key
        self._conn: _Conn | None = conn
        self.status_code = head.status
        self.headers = head.headers
        self._done = False
        self._decode = _decoder(self.header("content-encoding").strip().lower().encode())

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

    def _buffered_end(self, conn: _Conn) -> bool:
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
            self._client._release(self._key, conn)
        elif not (drain and self._client._drain(conn, self)):
            conn.close()

    async def _drain(self, conn: _Conn) -> None:
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
                self._client._release(self._key, conn)
            else:
                conn.close()
            self._client._drained(self._key)


async def _open_socket(addr: str, port: int) -> trio.SocketStream:
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


class _Retry(Exception):
    """A reused connection failed before the answer began: try a new one."""


class WireClient:
    """The client (module docstring). ``async with`` it: it owns the background drains and
    closes every connection on the way out."""

    def __init__(
        self,
        policy: PolicySource,
        *,
        headers: Mapping[str, str] | None = None,
        on_refused: OnRefused | None = None,
        max_idle: int = 32,
        keepalive_expiry: float = 30.0,
        drain_grace: float = DRAIN_GRACE,
    ) -> None:
        self._policy = policy
        self._backend = EgressBackend(policy)
        self._headers = [("Accept-Encoding", "identity"), *(headers or {}).items()]
        self._on_refused = on_refused
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self.drain_grace = drain_grace
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        # Background drains in progress by server, and the event set when one ends.
        self._draining: dict[tuple[str, int], tuple[int, trio.Event]] = {}
        self._targets: dict[str, _Target | None] = {}
        # Verdicts of the policy in force, by URL (emptied when another policy is in force).
        self._verdicts_of: EgressPolicy | None = None
        self._verdicts: dict[str, str | None] = {}
        # Request heads without their Content-Length, by (URL, headers): checked once.
        self._heads: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}
        self._nursery: trio.Nursery | None = None
        self._cm: Any = None
        self._closed = False

    async def __aenter__(self) -> WireClient:
        self._cm = trio.open_nursery()
        self._nursery = await self._cm.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._nursery is not None
        self._closed = True
        self._nursery.cancel_scope.cancel()
        try:
            return bool(await self._cm.__aexit__(*exc))
        finally:
            self._nursery = None
            for conns in self._idle.values():
                for conn in conns:
                    conn.close()
            self._idle.clear()

    def handles(self, url: str) -> bool:
        """True if this client can send to ``url`` (plain ``http://``, no credentials)."""
        return self._target(url) is not None

    def _target(self, url: str) -> _Target | None:
        try:
            return self._targets[url]
        except KeyError:
            if len(self._targets) >= _CACHE_MAX:
                self._targets.clear()
            t = self._targets[url] = _parse(url)
            return t

    def _check(self, url: str) -> None:
        """Raise EgressRefused (after telling ``on_refused``) if the policy forbids ``url``."""
        policy = self._policy if isinstance(self._policy, EgressPolicy) else self._policy()
        if policy is not self._verdicts_of or len(self._verdicts) >= _CACHE_MAX:
            self._verdicts_of, self._verdicts = policy, {}
        try:
            reason = self._verdicts[url]
        except KeyError:
            verdict = check_url(policy, url)
            reason = self._verdicts[url] = None if verdict.allowed else verdict.reason
        if reason is not None:
            report_refusal(self._on_refused, url, reason)
            raise EgressRefused(url, reason)

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_timeout: float,
        write_timeout: float,
    ) -> WireResponse:
        """Send a POST and return once the answer's status and headers are in (raises as
        the module docstring says). The caller reads the body and must :meth:`close` it."""
        target = self._target(url)
        if target is None:
            raise httpx.UnsupportedProtocol(f"this client sends to http:// URLs only: {url}")
        self._check(url)
        head = self._head(url, target, headers) + b"%d\r\n\r\n" % len(body)
        request = head + body if len(body) <= _RECEIVE else None
        key = (target.host, target.port)
        conn = self._reuse(key)
        if conn is None and key in self._draining:
            with trio.move_on_after(REUSE_WAIT):
                await self._draining[key][1].wait()
            conn = self._reuse(key)
        if conn is not None:
            try:
                return await self._exchange(key, conn, request, head, body, write_timeout, True)
            except _Retry:
                pass
        try:
            conn = await self._connect(target, connect_timeout)
        except EgressRefused as exc:
            report_refusal(self._on_refused, url, exc.reason)
            raise EgressRefused(url, exc.reason) from None
        return await self._exchange(key, conn, request, head, body, write_timeout, False)

    def _head(self, url: str, target: _Target, headers: Mapping[str, str]) -> bytes:
        """The request head up to the Content-Length value (raises LocalProtocolError)."""
        key = (url, tuple(headers.items()))
        try:
            return self._heads[key]
        except KeyError:
            pass
        fields = [("Host", target.host_header), *self._headers, *headers.items()]
        try:
            head = build_head("POST", target.path, fields)
        except HttpError as exc:
            raise httpx.LocalProtocolError(str(exc)) from None
        if len(self._heads) >= _CACHE_MAX:
            self._heads.clear()
        head = self._heads[key] = head[:-2] + b"Content-Length: "
        return head

    def _reuse(self, key: tuple[str, int]) -> _Conn | None:
        conns = self._idle.get(key)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if now - conn.idle_since < self.keepalive_expiry and not conn.looks_closed():
                return conn
            conn.close()
        return None

    def _release(self, key: tuple[str, int], conn: _Conn) -> None:
        if self._closed or not conn.parser.reusable:
            conn.close()
            return
        conns = self._idle.setdefault(key, [])
        if len(conns) >= self.max_idle:
            conns.pop(0).close()
        conn.idle_since = time.monotonic()
        conns.append(conn)

    def _drain(self, conn: _Conn, response: WireResponse) -> bool:
        """Start a background drain of ``conn``; False if no drain can run (closing)."""
        if self._nursery is None or self._closed:
            return False
        key = response._key
        count, ended = self._draining.get(key, (0, trio.Event()))
        self._draining[key] = (count + 1, ended)
        self._nursery.start_soon(response._drain, conn)
        return True

    def _drained(self, key: tuple[str, int]) -> None:
        """A background drain of a connection to ``key`` ended (the connection kept or not)."""
        count, ended = self._draining.pop(key)
        ended.set()
        if count > 1:
            self._draining[key] = (count - 1, trio.Event())

    async def _connect(self, target: _Target, timeout: float) -> _Conn:
        host, port = target.host, target.port
        deadline = trio.current_time() + timeout
        with trio.move_on_at(deadline) as scope:
            try:
                addresses = await self._backend.resolve(host, port)
            except httpcore.ConnectError as exc:
                raise httpx.ConnectError(str(exc)) from None
        if scope.cancelled_caught:
            raise httpx.ConnectTimeout(f"resolving {host} timed out")
        last: Exception | None = None
        for addr in addresses:
            # Literal, checked addresses: nothing is resolved again between check and connect.
            with trio.move_on_at(deadline) as scope:
                try:
                    return _Conn(await _open_socket(addr, port))
                except OSError as exc:
                    last = exc
                    continue
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out")
        if last is None:
            raise httpx.ConnectError(f"no address to connect to for {host}")
        raise httpx.ConnectError(f"cannot connect to {host}:{port}: {last}") from None

    async def _exchange(
        self,
        key: tuple[str, int],
        conn: _Conn,
        request: bytes | None,
        head: bytes,
        body: bytes,
        write_timeout: float,
        reused: bool,
    ) -> WireResponse:
        """Send the request on ``conn`` and read the status and headers. Raises _Retry when
        a reused connection turns out dead before any answer."""
        ok = False
        conn.parser = parser = ResponseParser()
        try:
            with trio.move_on_after(write_timeout) as scope:
                try:
                    if request is not None:
                        await conn.stream.send_all(request)
                    else:
                        await conn.stream.send_all(head)
                        await conn.stream.send_all(body)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    if reused:
                        raise _Retry from None
                    raise httpx.WriteError(str(exc) or type(exc).__name__) from None
            if scope.cancelled_caught:
                raise httpx.WriteTimeout("the server did not read the request in time")
            while True:
                try:
                    event = parser.next_event()
                except NoResponse:
                    if reused:
                        raise _Retry from None
                    raise httpx.RemoteProtocolError("the server closed the connection") from None
                except HttpError as exc:
                    raise httpx.RemoteProtocolError(str(exc)) from None
                if event is NEED_DATA:
                    try:
                        await conn.receive()
                    except httpx.ReadError:
                        if reused and not parser.started:
                            raise _Retry from None
                        raise
                else:
                    assert isinstance(event, Head)
                    ok = True
                    return WireResponse(self, key, conn, event)
        finally:
            if not ok:
                conn.close()
