"""A lean HTTP/1.1 client for model calls over trio sockets: egress-checked, kept alive.

Why a second client: on a routed request httpx's layers (URL and header models, the
connection pool, the response wrapper and its chain of body generators) cost about half a
millisecond of CPU, which was most of what routing added (``bench/route.py``). This client does
one thing, a POST over plain ``http://`` with the answer read as it comes, in about a tenth of
that; the bytes rules are the sans-IO ``routerd.core.http1``, a connection and its answer
are ``wire_conn``. Everything else (discovery, probes, ``https://`` servers, URLs with
credentials in them) keeps going through ``routerd.shell.http.make_http_client``.

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

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httpcore
import httpx
import trio

from routerd.core.egress import EgressPolicy, check_url
from routerd.core.http1 import NEED_DATA, Head, HttpError, NoResponse, ResponseParser
from routerd.core.http1 import request_head as build_head
from routerd.shell.http import EgressBackend, EgressRefused, OnRefused, PolicySource, report_refusal

from .wire_conn import DRAIN_MAX, RECEIVE, Conn, WireResponse, open_socket

__all__ = ["WireClient", "WireResponse", "DRAIN_GRACE", "DRAIN_MAX"]

#: Seconds a background task reads what follows the end of a good answer (to keep the
#: connection) before closing it.
DRAIN_GRACE: Final = 0.25
#: Seconds a request waits for a connection to the same server that is being drained, rather
#: than open another (its end marker is usually a moment behind the answer).
REUSE_WAIT: Final = 0.01
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
        self._idle: dict[tuple[str, int], list[Conn]] = {}
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
        on_sent: Callable[[], None] | None = None,
    ) -> WireResponse:
        """Send a POST and return once the answer's status and headers are in (raises as
        the module docstring says). The caller reads the body and must :meth:`close` it.
        ``on_sent`` is called once the request is written (again if it is sent again on a
        new connection), before the wait for the answer."""
        target = self._target(url)
        if target is None:
            raise httpx.UnsupportedProtocol(f"this client sends to http:// URLs only: {url}")
        self._check(url)
        head = self._head(url, target, headers) + b"%d\r\n\r\n" % len(body)
        request = head + body if len(body) <= RECEIVE else None
        key = (target.host, target.port)
        conn = self._reuse(key)
        if conn is None and key in self._draining:
            with trio.move_on_after(REUSE_WAIT):
                await self._draining[key][1].wait()
            conn = self._reuse(key)
        if conn is not None:
            try:
                return await self._exchange(key, conn, request, head, body, write_timeout, True,
                                            on_sent)  # fmt: skip
            except _Retry:
                pass
        try:
            conn = await self._connect(target, connect_timeout)
        except EgressRefused as exc:
            report_refusal(self._on_refused, url, exc.reason)
            raise EgressRefused(url, exc.reason) from None
        return await self._exchange(key, conn, request, head, body, write_timeout, False, on_sent)

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

    def _reuse(self, key: tuple[str, int]) -> Conn | None:
        conns = self._idle.get(key)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if now - conn.idle_since < self.keepalive_expiry and not conn.looks_closed():
                return conn
            conn.close()
        return None

    def release(self, key: tuple[str, int], conn: Conn) -> None:
        """Keep ``conn`` for the next request to ``key``, if it may be kept."""
        if self._closed or not conn.parser.reusable:
            conn.close()
            return
        conns = self._idle.setdefault(key, [])
        if len(conns) >= self.max_idle:
            conns.pop(0).close()
        conn.idle_since = time.monotonic()
        conns.append(conn)

    def drain(self, conn: Conn, response: WireResponse) -> bool:
        """Start a background drain of ``conn``; False if no drain can run (closing)."""
        if self._nursery is None or self._closed:
            return False
        key = response._key
        count, ended = self._draining.get(key, (0, trio.Event()))
        self._draining[key] = (count + 1, ended)
        self._nursery.start_soon(response.run_drain, conn)
        return True

    def drained(self, key: tuple[str, int]) -> None:
        """A background drain of a connection to ``key`` ended (the connection kept or not)."""
        count, ended = self._draining.pop(key)
        ended.set()
        if count > 1:
            self._draining[key] = (count - 1, trio.Event())

    async def _connect(self, target: _Target, timeout: float) -> Conn:
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
                    return Conn(await open_socket(addr, port))
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
        conn: Conn,
        request: bytes | None,
        head: bytes,
        body: bytes,
        write_timeout: float,
        reused: bool,
        on_sent: Callable[[], None] | None = None,
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
            if on_sent is not None:
                on_sent()
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
                    response = WireResponse(self, key, conn, event)
                    ok = True
                    return response
        finally:
            if not ok:
                conn.close()
