"""The only way routerd makes outbound HTTP: a client that enforces the egress policy.

:func:`make_http_client` returns an ``httpx.AsyncClient`` whose every connection goes through
:class:`EgressBackend`, which, before a single packet leaves:

1. refuses a host the policy does not name (``check_host``; no DNS query for it);
2. resolves an allowed name (``localhost`` maps to loopback without DNS, a literal IP is not
   resolved at all) and checks *every* address it resolves to (``check_resolved``);
3. connects to those checked addresses only, one after another, by literal IP: nothing is
   resolved again between the check and the connect (no DNS rebinding window). The request's
   ``Host`` header and TLS SNI still carry the name, because httpcore takes them from the URL.

Other guarantees: ``trust_env=False`` (``HTTP_PROXY``, ``ALL_PROXY``, ``SSL_CERT_FILE``, netrc
never apply), ``follow_redirects=False`` (use :func:`send_with_redirects`, which checks each
hop), Unix-socket connections are refused.

Errors: a refusal raises :class:`EgressRefused`, a subclass of ``httpx.TransportError``, so code
that treats transport errors as "service unreachable" keeps working, while code that must tell
a refusal from a network failure catches ``EgressRefused`` first (``httpx.ConnectError`` is a
sibling, never a parent). ``on_refused(url, reason)`` is called once per refusal, before the
exception propagates: the place to record a security event.

The transport is httpx's own ``AsyncHTTPTransport`` with its connection pool rebuilt around our
network backend (httpx 0.28 keeps the pool in ``_pool``; ``tests/shell/test_http_egress.py``
fails if that ever stops being ours). trio only: the backend resolves with trio.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpcore
import httpx
import trio

from routerd.core.egress import (
    Decision,
    EgressPolicy,
    check_host,
    check_resolved,
    check_url,
    is_loopback_name,
    literal_address,
    loopback_candidates,
    normalize_host,
)

__all__ = [
    "EgressBackend",
    "EgressRefused",
    "OnRefused",
    "PolicySource",
    "make_http_client",
    "report_refusal",
    "send_with_redirects",
]

log = logging.getLogger(__name__)

#: ``on_refused(url, reason)``: told of each refused connection, before the exception.
OnRefused = Callable[[str, str], None]
#: A fixed policy, or a function returning the policy in force (so a reload applies at once).
PolicySource = EgressPolicy | Callable[[], EgressPolicy]

#: Limits fit for talking to a handful of local model servers.
DEFAULT_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=8, keepalive_expiry=30)


class EgressRefused(httpx.TransportError):
    """A connection the egress policy forbids; nothing was sent. Not a network failure.

    ``url`` is what was asked for (a URL, or ``host:port`` if raised below the transport);
    ``reason`` is one line saying which rule refused it.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"connection to {url} refused by the egress policy: {reason}")
        self.url = url
        self.reason = reason


def _current(policy: PolicySource) -> EgressPolicy:
    return policy if isinstance(policy, EgressPolicy) else policy()


class EgressBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only where the policy allows."""

    def __init__(self, policy: PolicySource) -> None:
        self._policy = policy
        self._trio = httpcore.TrioBackend()

    async def resolve(self, host: str, port: int) -> list[str]:
        """The checked addresses to connect to for ``host``, in order; raises EgressRefused.

        Raises ``httpcore.ConnectError`` if an allowed name does not resolve.
        """
        policy = _current(self._policy)
        where = f"{host}:{port}"
        verdict = check_host(policy, host)
        if not verdict.allowed:
            raise EgressRefused(where, verdict.reason)
        literal = literal_address(host)
        if literal is not None:
            return [normalize_host(host)]
        if is_loopback_name(host) and not policy.allow_external:
            return list(loopback_candidates(policy))
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(_address_of(info[4]) for info in infos))
        verdict = check_resolved(policy, host, addresses)
        if not verdict.allowed:
            raise EgressRefused(where, verdict.reason)
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = trio.current_time() + (math.inf if timeout is None else timeout)
        with trio.move_on_at(deadline) as scope:
            addresses = await self.resolve(host, port)
        if scope.cancelled_caught:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out")
        last: Exception | None = None
        for addr in addresses:
            # A literal IP: trio's resolver answers it without a query, so what connects is
            # exactly what was checked.
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out")
            try:
                return await self._trio.connect_tcp(
                    addr,
                    port,
                    timeout=None if math.isinf(remaining) else remaining,
                    local_address=local_address,
                    socket_options=list(socket_options or ()),
                )
            except httpcore.ConnectTimeout:
                raise
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused(f"unix:{path}", "routerd makes no HTTP requests over Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


def _address_of(sockaddr: Any) -> str:
    host = str(sockaddr[0])
    # An IPv6 link-local address needs its zone to be reachable; keep it.
    if len(sockaddr) == 4 and sockaddr[3] and "%" not in host:
        return f"{host}%{sockaddr[3]}"
    return host


class _EgressTransport(httpx.AsyncHTTPTransport):
    def __init__(
        self, policy: PolicySource, on_refused: OnRefused | None, limits: httpx.Limits
    ) -> None:
        ssl_context = httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        self._policy = policy
        self._on_refused = on_refused
        # Replace the pool httpx built with the same pool around our network backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=EgressBackend(policy),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url.copy_with(query=None, fragment=None))
        # Checked here too, so a kept-alive connection is not reused after a reload
        # removed its host; the backend checks resolved addresses on each new connection.
        verdict = check_url(_current(self._policy), url)
        try:
            if not verdict.allowed:
                raise EgressRefused(url, verdict.reason)
            return await super().handle_async_request(request)
        except EgressRefused as exc:
            refused = EgressRefused(url, exc.reason)
            self._report(url, exc.reason)
            raise refused from None

    def _report(self, url: str, reason: str) -> None:
        report_refusal(self._on_refused, url, reason)


def report_refusal(on_refused: OnRefused | None, url: str, reason: str) -> None:
    """Tell ``on_refused`` of a refused connection (or log it when there is no callback)."""
    if on_refused is None:
        log.warning("egress refused: %s: %s", url, reason)
        return
    try:
        on_refused(url, reason)  # records the security event (which logs it)
    except Exception:
        log.exception("on_refused callback failed")


def make_http_client(
    policy: PolicySource,
    *,
    timeout: httpx.Timeout | float,
    headers: Mapping[str, str] | None = None,
    on_refused: OnRefused | None = None,
    limits: httpx.Limits = DEFAULT_LIMITS,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that connects only where ``policy`` allows (module docstring).

    ``policy`` is an :class:`EgressPolicy`, or a zero-argument function returning the policy in
    force (checked on every request and every new connection). The caller owns the client and
    must close it (``async with`` or ``aclose``). Raises :class:`EgressRefused` from any
    request the policy forbids.
    """
    return httpx.AsyncClient(
        transport=_EgressTransport(policy, on_refused, limits),
        timeout=timeout,
        headers=dict(headers) if headers else None,
        trust_env=False,
        follow_redirects=False,
    )


async def send_with_redirects(
    client: httpx.AsyncClient,
    request: httpx.Request,
    policy: PolicySource,
    *,
    max_redirects: int = 5,
    on_refused: OnRefused | None = None,
) -> httpx.Response:
    """Send ``request``, following redirects only to hosts ``policy`` allows.

    A redirect to a refused host closes the redirect response and raises
    :class:`EgressRefused` (after ``on_refused``); more than ``max_redirects`` hops raise
    ``httpx.TooManyRedirects``. The final response is read (not streamed).
    """
    for _ in range(max_redirects + 1):
        response = await client.send(request)
        nxt = response.next_request
        if nxt is None:
            return response
        await response.aclose()
        target = str(nxt.url.copy_with(query=None, fragment=None))
        verdict: Decision = check_url(_current(policy), target)
        if not verdict.allowed:
            reason = f"redirect from {request.url.host} refused: {verdict.reason}"
            report_refusal(on_refused, target, reason)
            raise EgressRefused(target, reason)
        request = nxt
    raise httpx.TooManyRedirects(f"more than {max_redirects} redirects", request=request)
