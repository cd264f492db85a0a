"""The egress-checked HTTP client: refusals happen before any packet, addresses are pinned.

DNS is faked with trio's custom hostname resolver (literal IPs never reach it, which is itself
checked); sockets are observed with trio's custom socket factory. Only loopback is used.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio

from routerd.core.config import SecurityConfig
from routerd.core.egress import EgressPolicy, policy_from_config
from routerd.shell.http import EgressRefused, make_http_client, send_with_redirects

DEFAULT = policy_from_config(SecurityConfig())


def policy(hosts: list[str], cidrs: list[str] | None = None) -> EgressPolicy:
    return policy_from_config(SecurityConfig(allowed_hosts=hosts, allowed_cidrs=cidrs or []))


class FakeHTTP:
    """A loopback HTTP/1.1 server: records each request head, answers by path."""

    def __init__(self) -> None:
        self.heads: list[str] = []
        self.port = 0
        self.routes: dict[str, tuple[int, dict[str, str]]] = {}

    async def handle(self, stream: trio.SocketStream) -> None:
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(4096)
                if not data:
                    return
                buf += data
            head = buf.split(b"\r\n\r\n", 1)[0].decode()
            self.heads.append(head)
            path = head.split(" ", 2)[1]
            status, headers = self.routes.get(path, (200, {}))
            body = b"ok " + path.encode()
            lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()


@pytest.fixture
async def server(nursery: trio.Nursery) -> AsyncIterator[FakeHTTP]:
    fake = FakeHTTP()
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, fake.handle, 0, host="127.0.0.1")
    )
    fake.port = listeners[0].socket.getsockname()[1]
    yield fake


class Resolver(trio.abc.HostnameResolver):
    """A fake DNS: name -> list of addresses; each answer may change (rebinding)."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.queries: list[str] = []

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.queries.append(name)
        answers = self.table.get(name)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addrs = answers.pop(0) if len(answers) > 1 else answers[0]
        out: list[Any] = []
        for a in addrs:
            fam = socket.AF_INET6 if ":" in a else socket.AF_INET
            sa: tuple[Any, ...] = (
                (a, int(port or 0)) if fam == socket.AF_INET else (a, int(port or 0), 0, 0)
            )
            out.append((fam, socket.SOCK_STREAM, 6, "", sa))
        return out

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


@pytest.fixture
async def dns() -> AsyncIterator[Resolver]:
    r = Resolver({})
    old = trio.socket.set_custom_hostname_resolver(r)
    try:
        yield r
    finally:
        trio.socket.set_custom_hostname_resolver(old)


class SocketSpy(trio.abc.SocketFactory):
    def __init__(self) -> None:
        self.count = 0

    def socket(
        self, family: int | None = None, type: int | None = None, proto: int | None = None
    ) -> trio.socket.SocketType:
        self.count += 1
        return trio.socket.from_stdlib_socket(
            socket.socket(family or socket.AF_INET, type or socket.SOCK_STREAM, proto or 0)
        )


@pytest.fixture
async def sockets() -> AsyncIterator[SocketSpy]:
    spy = SocketSpy()
    old = trio.socket.set_custom_socket_factory(spy)
    try:
        yield spy
    finally:
        trio.socket.set_custom_socket_factory(old)


def recorder() -> tuple[list[tuple[str, str]], Callable[[str, str], None]]:
    seen: list[tuple[str, str]] = []
    return seen, lambda url, reason: seen.append((url, reason))


async def test_loopback_literal_is_served_without_dns(server: FakeHTTP, dns: Resolver) -> None:
    async with make_http_client(DEFAULT, timeout=5) as client:
        r = await client.get(f"http://127.0.0.1:{server.port}/api/tags")
    assert r.status_code == 200 and r.text == "ok /api/tags"
    assert dns.queries == []


async def test_localhost_maps_to_loopback_without_dns(server: FakeHTTP, dns: Resolver) -> None:
    async with make_http_client(DEFAULT, timeout=5) as client:
        r = await client.get(f"http://localhost:{server.port}/v1/models")
    assert r.status_code == 200
    assert dns.queries == []
    assert f"host: localhost:{server.port}" in server.heads[0].lower()


async def test_refused_literal_sends_nothing(sockets: SocketSpy) -> None:
    seen, on_refused = recorder()
    async with make_http_client(DEFAULT, timeout=5, on_refused=on_refused) as client:
        with pytest.raises(EgressRefused) as info:
            await client.get("http://10.255.255.1:11434/api/tags?x=1")
    assert isinstance(info.value, httpx.TransportError)
    assert not isinstance(info.value, httpx.ConnectError)
    assert info.value.url == "http://10.255.255.1:11434/api/tags"
    assert "not in any allowed network" in info.value.reason
    assert seen == [(info.value.url, info.value.reason)]
    assert sockets.count == 0


async def test_unlisted_name_is_not_resolved(dns: Resolver, sockets: SocketSpy) -> None:
    dns.table["gpu.lan"] = [["127.0.0.1"]]
    async with make_http_client(DEFAULT, timeout=5) as client:
        with pytest.raises(EgressRefused, match=r"not in security\.allowed_hosts"):
            await client.get("http://gpu.lan:8000/")
    assert dns.queries == [] and sockets.count == 0


async def test_listed_name_resolving_outside_is_refused(dns: Resolver, sockets: SocketSpy) -> None:
    dns.table["gpu.lan"] = [["127.0.0.1", "8.8.8.8"]]
    seen, on_refused = recorder()
    p = policy(["gpu.lan"], ["127.0.0.0/8"])
    async with make_http_client(p, timeout=5, on_refused=on_refused) as client:
        with pytest.raises(EgressRefused, match=r"resolved to 8\.8\.8\.8"):
            await client.get("http://gpu.lan:8000/")
    assert dns.queries == ["gpu.lan"]
    assert sockets.count == 0
    assert seen and seen[0][0] == "http://gpu.lan:8000/"


async def test_listed_name_connects_to_the_checked_address_once(
    server: FakeHTTP, dns: Resolver
) -> None:
    # The second answer would point outside: a re-resolution between check and connect
    # would be caught by this test, as would connecting to anything but 127.0.0.1.
    dns.table["gpu.lan"] = [["127.0.0.1"], ["8.8.8.8"]]
    p = policy(["gpu.lan"], ["127.0.0.0/8"])
    async with make_http_client(p, timeout=5) as client:
        r = await client.get(f"http://gpu.lan:{server.port}/x")
    assert r.status_code == 200
    assert dns.queries == ["gpu.lan"]
    assert f"host: gpu.lan:{server.port}" in server.heads[0].lower()


async def test_next_address_is_tried_when_the_first_refuses(
    server: FakeHTTP, dns: Resolver
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.2", 0))
        dead = closed.getsockname()[1]
    dns.table["gpu.lan"] = [["127.0.0.2", "127.0.0.1"]]
    p = policy(["gpu.lan"], ["127.0.0.0/8"])
    async with make_http_client(p, timeout=5) as client:
        # Same port on both: only 127.0.0.1 has the server.
        r = await client.get(f"http://gpu.lan:{server.port}/y")
        assert r.status_code == 200
        with pytest.raises(httpx.ConnectError) as info:
            await client.get(f"http://127.0.0.2:{dead}/")
    assert not isinstance(info.value, EgressRefused)


async def test_proxy_environment_never_applies(
    server: FakeHTTP, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = FakeHTTP()
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1")
    )
    proxy_url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, proxy_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with make_http_client(DEFAULT, timeout=5) as client:
        r = await client.get(f"http://127.0.0.1:{server.port}/direct")
    assert r.text == "ok /direct"
    assert proxy.heads == []
    assert len(server.heads) == 1


async def test_redirects_are_not_followed_by_default(server: FakeHTTP) -> None:
    server.routes["/a"] = (302, {"Location": "/b"})
    async with make_http_client(DEFAULT, timeout=5) as client:
        r = await client.get(f"http://127.0.0.1:{server.port}/a")
    assert r.status_code == 302


async def test_redirect_inside_the_list_is_followed(server: FakeHTTP) -> None:
    server.routes["/a"] = (302, {"Location": f"http://localhost:{server.port}/b"})
    async with make_http_client(DEFAULT, timeout=5) as client:
        req = client.build_request("GET", f"http://127.0.0.1:{server.port}/a")
        r = await send_with_redirects(client, req, DEFAULT)
    assert r.status_code == 200 and r.text == "ok /b"


async def test_redirect_outside_the_list_is_refused(server: FakeHTTP, dns: Resolver) -> None:
    server.routes["/a"] = (307, {"Location": "http://exfil.example:80/steal"})
    seen, on_refused = recorder()
    async with make_http_client(DEFAULT, timeout=5) as client:
        req = client.build_request("GET", f"http://127.0.0.1:{server.port}/a")
        with pytest.raises(EgressRefused, match=r"redirect from 127\.0\.0\.1 refused") as info:
            await send_with_redirects(client, req, DEFAULT, on_refused=on_refused)
    assert info.value.url == "http://exfil.example/steal"
    assert seen == [(info.value.url, info.value.reason)]
    assert dns.queries == []
    assert len(server.heads) == 1


async def test_too_many_redirects(server: FakeHTTP) -> None:
    server.routes["/loop"] = (302, {"Location": "/loop"})
    async with make_http_client(DEFAULT, timeout=5) as client:
        req = client.build_request("GET", f"http://127.0.0.1:{server.port}/loop")
        with pytest.raises(httpx.TooManyRedirects):
            await send_with_redirects(client, req, DEFAULT, max_redirects=2)
    assert len(server.heads) == 3


async def test_policy_source_applies_on_every_request(server: FakeHTTP) -> None:
    current = [DEFAULT]
    async with make_http_client(lambda: current[0], timeout=5) as client:
        assert (await client.get(f"http://127.0.0.1:{server.port}/1")).status_code == 200
        current[0] = policy(["gpu.lan"], ["10.0.0.0/8"])
        with pytest.raises(EgressRefused):
            await client.get(f"http://127.0.0.1:{server.port}/2")
    assert len(server.heads) == 1


async def test_pool_uses_the_egress_backend() -> None:
    # Guards the one httpx internal we rely on (the transport's ``_pool``).
    from routerd.shell.http import EgressBackend

    client = make_http_client(DEFAULT, timeout=1)
    try:
        transport: Any = client._transport
        assert isinstance(transport._pool._network_backend, EgressBackend)
        assert client.trust_env is False and client.follow_redirects is False
    finally:
        await client.aclose()
