"""The fakes' HTTP layer: keep-alive, chunked pieces, down/up, hang, garbage, disconnects."""

from __future__ import annotations

from contextlib import aclosing

import httpx
import pytest
import trio
from fakes import ClientDisconnected, Exchange, HTTPServer, Request, serve_fake
from fakes.raw import raw_request

JSON = [("Content-Type", "application/json")]


async def hello(request: Request, ex: Exchange) -> None:
    await ex.respond(200, JSON, b'{"path":"%s"}' % request.path.encode())


async def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    async with serve_fake(hello) as server, httpx.AsyncClient(base_url=server.base_url) as c:
        for path in ("/a", "/b", "/c"):
            r = await c.get(path)
            assert r.json() == {"path": path}
        assert server.accepted == 1


async def test_request_fields_and_exact_head() -> None:
    seen: list[Request] = []

    async def record(request: Request, ex: Exchange) -> None:
        seen.append(request)
        await ex.respond(201, [("X-Thing", ""), ("content-type", "text/plain")], b"ok")

    async with serve_fake(record) as server:
        got = await raw_request(
            server.base_url, "POST", "/p?q=1", b'{"a":1}', [("Authorization", "Bearer k")]
        )
    assert (
        got.head
        == b"HTTP/1.1 201 Created\r\nX-Thing: \r\ncontent-type: text/plain\r\nContent-Length: 2"
    )
    assert got.body == b"ok"
    (request,) = seen
    assert (request.method, request.path, request.query) == ("POST", "/p", "q=1")
    assert request.json() == {"a": 1} and request.bearer == "k"
    assert request.params() == {"q": ["1"]}


async def test_streamed_pieces_arrive_one_chunk_each_with_delays() -> None:
    async def drip(request: Request, ex: Exchange) -> None:
        await ex.start(200, [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
        for piece in (b"one ", b"two ", b"three"):
            await ex.write(piece)
            await ex.pause(0.05)
        await ex.end()

    async with serve_fake(drip) as server:
        got = await raw_request(server.base_url, "GET", "/")
        assert got.chunks == [b"one ", b"two ", b"three"]
        async with httpx.AsyncClient(base_url=server.base_url) as c:
            start = trio.current_time()
            async with c.stream("GET", "/") as r:
                stamps = [trio.current_time() - start async for _ in r.aiter_raw()]
    assert len(stamps) == 3 and stamps[-1] >= 0.09


async def test_down_refuses_connects_and_up_returns_on_the_same_port() -> None:
    async with serve_fake(hello) as server, httpx.AsyncClient(base_url=server.base_url) as c:
        port = server.port
        assert (await c.get("/x")).status_code == 200
        await server.down()
        assert not server.is_up
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)
        with pytest.raises(httpx.ConnectError):
            await c.get("/x")
        await server.up()
        assert server.port == port
        assert (await c.get("/x")).json() == {"path": "/x"}


async def test_down_drops_open_streams() -> None:
    async def forever(request: Request, ex: Exchange) -> None:
        await ex.start(200, [("Transfer-Encoding", "chunked")])
        await ex.write(b"first")
        await ex.hang()

    async with (
        serve_fake(forever) as server,
        httpx.AsyncClient(base_url=server.base_url) as c,
        c.stream("GET", "/") as r,
        aclosing(r.aiter_raw()) as chunks,
    ):
        assert await anext(chunks) == b"first"
        await server.down()
        with pytest.raises(httpx.RemoteProtocolError):
            await anext(chunks)


async def test_hang_never_answers_and_sees_the_client_leave() -> None:
    left = trio.Event()

    async def hang(request: Request, ex: Exchange) -> None:
        try:
            await ex.hang()
        except ClientDisconnected:
            left.set()
            raise

    async with serve_fake(hang) as server, httpx.AsyncClient(base_url=server.base_url) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get("/", timeout=0.2)
        with trio.fail_after(2):
            await left.wait()


async def test_garbage_is_not_http() -> None:
    async def garbage(request: Request, ex: Exchange) -> None:
        await ex.send_raw(b"\x00\xffnot http\r\n\r\n")

    async with serve_fake(garbage) as server, httpx.AsyncClient(base_url=server.base_url) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get("/")


async def test_abort_mid_stream_is_an_incomplete_body() -> None:
    async def drop(request: Request, ex: Exchange) -> None:
        await ex.start(200, [("Transfer-Encoding", "chunked")])
        await ex.write(b"partial")
        await ex.abort()

    async with serve_fake(drop) as server, httpx.AsyncClient(base_url=server.base_url) as c:
        received = []
        with pytest.raises(httpx.RemoteProtocolError):
            async with c.stream("GET", "/") as r:
                async for chunk in r.aiter_raw():
                    received.append(chunk)
        assert received == [b"partial"]


async def test_client_leaving_mid_stream_raises_in_the_handler() -> None:
    outcome: list[str] = []
    done = trio.Event()

    async def slow(request: Request, ex: Exchange) -> None:
        await ex.start(200, [("Transfer-Encoding", "chunked")])
        try:
            for _ in range(100):
                await ex.write(b"tick\n")
                await ex.pause(0.02)
        except ClientDisconnected:
            outcome.append("gone")
            raise
        finally:
            done.set()
        outcome.append("finished")

    async with serve_fake(slow) as server:
        client = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with client:
            await client.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while b"tick" not in received:
                received += await client.receive_some(4096)
        with trio.fail_after(2):
            await done.wait()
    assert outcome == ["gone"]


async def test_handler_without_answer_gets_500_and_errors_propagate() -> None:
    async def silent(request: Request, ex: Exchange) -> None:
        return None

    async with serve_fake(silent) as server, httpx.AsyncClient(base_url=server.base_url) as c:
        assert (await c.get("/")).status_code == 500

    async def broken(request: Request, ex: Exchange) -> None:
        raise ValueError("a bug in a fake")

    with pytest.raises(BaseExceptionGroup) as info:
        async with serve_fake(broken) as server, httpx.AsyncClient(base_url=server.base_url) as c:
            await c.get("/")
    assert info.group_contains(ValueError, depth=None)


async def test_nursery_start_returns_the_base_url(nursery: trio.Nursery) -> None:
    server = HTTPServer(hello)
    url = await nursery.start(server.run)
    assert url == server.base_url == f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient() as c:
        assert (await c.get(url + "/z")).json() == {"path": "/z"}
