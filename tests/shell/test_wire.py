"""The lean model client (``backends.wire``): what it does beyond the chat tests run over it in
``test_backends.py``: keeping connections, retrying a dead kept one, draining in the
background, the egress policy, content codings."""

from __future__ import annotations

import gzip
import ipaddress
import json
from contextlib import aclosing
from typing import Any

import httpx
import pytest
import trio
from fakes import Exchange, Request, serve_fake

from routerd.core.egress import EgressPolicy
from routerd.core.fallback import Timeouts
from routerd.shell.backends import (
    ChatRequest,
    ChatTarget,
    Chunk,
    Done,
    HttpxTransport,
    StreamEvent,
    WireClient,
    WireTransport,
    run_chat,
)
from routerd.shell.http import EgressRefused

LOOPBACK = EgressPolicy(networks=(ipaddress.ip_network("127.0.0.0/8"),))
FAST = Timeouts(connect=2.0, first_token=3.0, idle=2.0, overall=10.0)
HI = ChatRequest(messages=[{"role": "user", "content": "Say hello."}], max_tokens=16)
SSE = [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")]
ANSWER = {"model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
FINISH = {"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


async def post(wire: WireClient, url: str, **kw: Any) -> tuple[int, bytes]:
    response = await wire.post(url, b"{}", kw, connect_timeout=2.0, write_timeout=2.0)
    body = b"".join([piece async for piece in response])
    response.close()
    return response.status_code, body


async def chat(wire: WireClient, url: str) -> tuple[list[StreamEvent], float]:
    """The events of one chat, and how long ``Done`` took to come."""
    transport = WireTransport(wire, HttpxTransport(httpx.AsyncClient()))
    target = ChatTarget(base_url=url, flavor="openai", model="m")
    start = trio.current_time()
    async with aclosing(run_chat(transport, target, HI, FAST)) as events:
        got = [e async for e in events]
    assert isinstance(got[-1], Done), got[-1]
    return got, trio.current_time() - start


async def test_connections_are_kept_and_a_dead_kept_one_is_retried_once() -> None:
    seen: list[int] = []

    async def handler(request: Request, ex: Exchange) -> None:
        seen.append(request.seq)
        if seen == [0, 1]:
            await ex.abort()  # the server closed the kept connection as it was reused
            return
        await ex.respond(200, [("Content-Type", "application/json")], b'{"ok":1}')

    async with serve_fake(handler) as server, WireClient(LOOPBACK) as wire:
        url = f"{server.base_url}/v1/chat/completions"
        assert await post(wire, url) == (200, b'{"ok":1}')
        assert await post(wire, url) == (200, b'{"ok":1}')
        assert await post(wire, url) == (200, b'{"ok":1}')
    # The second request died on the kept connection and was sent again on a new one,
    # which the third request then reused.
    assert seen == [0, 1, 0, 1]
    assert server.accepted == 2


async def test_no_answer_on_a_new_connection_is_not_retried() -> None:
    calls = 0

    async def handler(request: Request, ex: Exchange) -> None:
        nonlocal calls
        calls += 1
        await ex.abort()

    async with serve_fake(handler) as server, WireClient(LOOPBACK) as wire:
        with pytest.raises(httpx.RemoteProtocolError):
            await post(wire, f"{server.base_url}/x")
    assert calls == 1


@pytest.mark.parametrize(("late", "kept"), [(0.05, True), (0.4, False)])
async def test_the_end_marker_is_awaited_in_the_background(late: float, kept: bool) -> None:
    seqs: list[int] = []

    async def handler(request: Request, ex: Exchange) -> None:
        seqs.append(request.seq)
        await ex.start(200, SSE)
        await ex.write(f"data: {json.dumps(ANSWER)}\n\ndata: {json.dumps(FINISH)}\n\n".encode())
        await ex.write(b"data: [DONE]\n\n")
        await ex.pause(late)  # the chunked body's end comes late
        await ex.end()

    async with serve_fake(handler) as server, WireClient(LOOPBACK, drain_grace=0.2) as wire:
        events, took = await chat(wire, server.base_url)
        assert "".join(e.text for e in events if isinstance(e, Chunk)) == "hi"
        assert took < late  # the answer did not wait for the end of the body
        await trio.sleep(0.5)  # the background drain has kept or closed the connection
        await chat(wire, server.base_url)
    assert seqs == ([0, 1] if kept else [0, 0])


async def test_the_egress_policy_is_checked_on_every_request() -> None:
    refused: list[tuple[str, str]] = []
    policy = [LOOPBACK]

    async def handler(request: Request, ex: Exchange) -> None:
        await ex.respond(200, [], b"ok")

    async with serve_fake(handler) as server:
        wire = WireClient(lambda: policy[0], on_refused=lambda u, r: refused.append((u, r)))
        async with wire:
            url = f"{server.base_url}/v1/chat/completions"
            assert await post(wire, url) == (200, b"ok")
            with pytest.raises(EgressRefused):
                await post(wire, "http://192.0.2.10:11434/api/chat")
            policy[0] = EgressPolicy()  # a reload that allows nothing: applies at once
            with pytest.raises(EgressRefused):
                await post(wire, url)
    assert [u for u, _ in refused] == ["http://192.0.2.10:11434/api/chat", url]
    assert server.accepted == 1


async def test_compressed_answers_are_decoded() -> None:
    async def handler(request: Request, ex: Exchange) -> None:
        assert request.header("accept-encoding") == "identity"
        await ex.respond(200, [("Content-Encoding", "gzip")], gzip.compress(b"x" * 1000))

    async with serve_fake(handler) as server, WireClient(LOOPBACK) as wire:
        assert await post(wire, f"{server.base_url}/x") == (200, b"x" * 1000)


async def test_what_it_sends_and_what_it_leaves_to_httpx() -> None:
    wire = WireClient(LOOPBACK)
    assert wire.handles("http://127.0.0.1:8080/v1/chat/completions")
    assert not wire.handles("https://127.0.0.1:8080/v1/chat/completions")
    assert not wire.handles("http://user:secret@127.0.0.1:8080/v1")
    with pytest.raises(httpx.LocalProtocolError):
        await wire.post(
            "http://127.0.0.1:9/x", b"", {"X-Key": "a\r\nInjected: 1"},
            connect_timeout=1.0, write_timeout=1.0,
        )  # fmt: skip
