"""Execution adapters against the protocol-faithful fakes: success, every failure, timeouts,
and cancellation reaching the server."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx
import pytest
import trio
from fakes import Exchange, FakeServer, Request, Script, ToolCall, serve_fake, start_fake

from routerd.core.egress import EgressPolicy
from routerd.shell.backends import (
    ChatRequest,
    ChatTarget,
    Chunk,
    Done,
    Finish,
    HttpChatBackend,
    HttpxTransport,
    ModelReported,
    Reasoning,
    StreamError,
    StreamEvent,
    Timeouts,
    ToolCallDelta,
    Usage,
    WireClient,
    WireTransport,
    run_chat,
)
from routerd.shell.http import make_http_client

FAST = Timeouts(connect=2.0, first_token=3.0, idle=2.0, overall=10.0)
HI = ChatRequest(messages=[{"role": "user", "content": "Say hello."}], max_tokens=16)
TOOL = {
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
}


LOOPBACK = EgressPolicy(networks=(ipaddress.ip_network("127.0.0.0/8"),))


@pytest.fixture(params=["httpx", "wire"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Each test runs over httpx and over the daemon's lean client (``backends.wire``)."""
    async with httpx.AsyncClient(trust_env=False) as c:
        if request.param == "httpx":
            yield c
            return
        async with WireClient(LOOPBACK) as wire:
            yield WireTransport(wire, HttpxTransport(c))


async def collect(
    client: httpx.AsyncClient,
    target: ChatTarget,
    request: ChatRequest = HI,
    timeouts: Timeouts = FAST,
) -> list[StreamEvent]:
    async with aclosing(run_chat(client, target, request, timeouts)) as events:
        return [event async for event in events]


def text(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Chunk))


def last_error(events: list[StreamEvent]) -> StreamError:
    assert events, "no events"
    assert isinstance(events[-1], StreamError), events[-1]
    assert not any(isinstance(e, StreamError | Done) for e in events[:-1])
    return events[-1]


def done(events: list[StreamEvent]) -> Done:
    assert isinstance(events[-1], Done), events[-1]
    assert not any(isinstance(e, StreamError) for e in events)
    return events[-1]


def target_for(fake: FakeServer, flavor: Any, model: str | None = None, **kw: Any) -> ChatTarget:
    name = model if model is not None else fake.models[0].id
    return ChatTarget(base_url=fake.base_url, flavor=flavor, model=name, **kw)


# --- Success on each flavour -----------------------------------------------------------------


async def test_ollama_stream_with_thinking_usage_stable_num_ctx_and_keep_alive(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    fake = await start_fake(nursery, "ollama")
    fake.script = Script(reasoning=["Let me ", "think."], chunks=["Hel", "lo", "!"])
    target = target_for(fake, "ollama", num_ctx=8192, keep_alive="10m")
    first = await collect(client, target)
    second = await collect(
        client, target, ChatRequest(messages=[{"role": "user", "content": "again"}])
    )
    for events in (first, second):
        assert text(events) == "Hello!"
        assert [e.text for e in events if isinstance(e, Reasoning)] == ["Let me ", "think."]
        assert ModelReported(target.model) in events
        assert Finish("stop") in events
        summary = done(events)
        assert summary.completion_tokens == 5
        assert summary.first_token_s is not None and summary.first_token_s < 2
    sent = [r.json for r in fake.requests if r.path == "/api/chat"]
    assert [b["options"]["num_ctx"] for b in sent] == [8192, 8192]
    assert [b["keep_alive"] for b in sent] == ["10m", "10m"]
    assert all(b["stream"] is True for b in sent)


async def test_openai_sends_include_usage_and_records_usage(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    fake = await start_fake(nursery, "llamacpp")
    fake.script = Script(chunks=["a", "b", "c"], prompt_tokens=12)
    events = await collect(client, target_for(fake, "openai"))
    body = fake.last("/v1/chat/completions").json
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 16
    assert text(events) == "abc"
    assert Usage(12, 3) in events
    summary = done(events)
    assert (summary.prompt_tokens, summary.completion_tokens) == (12, 3)
    assert summary.finish_reason == "stop"


async def test_reported_model_is_what_the_server_says(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_fake(nursery, "llamacpp")
    python = await start_fake(nursery, "llama_cpp_python")
    from_server = done(await collect(client, target_for(server, "openai", "does-not-exist")))
    from_python = done(await collect(client, target_for(python, "openai", "does-not-exist")))
    assert from_server.model is not None and from_server.model != "does-not-exist"
    assert from_server.model == server.models[0].id
    assert from_python.model == "does-not-exist"  # llama-cpp-python echoes what was asked


async def test_tool_definitions_and_calls_pass_through(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    call = ToolCall("read_file", {"path": "a.py"}, id="call_7")
    request = ChatRequest(messages=[{"role": "user", "content": "read a.py"}], tools=[TOOL])
    for kind, flavor, path in (
        ("ollama", "ollama", "/api/chat"),
        ("vllm", "openai", "/v1/chat/completions"),
    ):
        fake = await start_fake(nursery, kind)
        fake.script = Script(chunks=[], tool_calls=[call])
        events = await collect(client, target_for(fake, flavor), request)
        assert fake.last(path).json["tools"] == [TOOL]
        deltas = [e for e in events if isinstance(e, ToolCallDelta)]
        assert deltas, events
        assert deltas[0].name == "read_file" and deltas[0].id == "call_7"
        assert json.loads("".join(d.arguments_delta for d in deltas)) == {"path": "a.py"}
        assert done(events).finish_reason == "tool_calls"


async def test_openwebui_textgen_and_kobold_flavours(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    webui = await start_fake(nursery, "openwebui")
    events = await collect(client, target_for(webui, "openwebui", api_key=webui.api_key))
    assert text(events) == "Hello, world!"
    assert webui.last("/api/chat/completions").header("authorization") == f"Bearer {webui.api_key}"
    done(events)
    denied = await collect(client, target_for(webui, "openwebui", api_key="wrong"))
    assert last_error(denied).kind == "unauthorized"
    assert last_error(denied).status == 401

    textgen = await start_fake(nursery, "textgen")
    assert text(await collect(client, target_for(textgen, "textgen"))) == "Hello, world!"
    assert textgen.paths("POST") == ["/v1/chat/completions"]

    kobold = await start_fake(nursery, "koboldcpp")
    whole = ChatRequest(messages=HI.messages, stream=False, max_tokens=20)
    events = await collect(client, target_for(kobold, "kobold", num_ctx=4096), whole)
    assert text(events) == "Hello, world!"
    sent = kobold.last("/api/v1/generate").json
    assert sent["prompt"].endswith("<|im_start|>assistant\n")
    assert sent["max_length"] == 20 and sent["max_context_length"] == 4096
    done(events)


async def test_kobold_native_stream(nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
    seen: list[Any] = []

    async def handler(request: Request, ex: Exchange) -> None:
        seen.append((request.path, request.json()))
        await ex.start(200, [("Content-Type", "text/event-stream")])
        for token, finish in (("Hel", None), ("lo", None), ("", "stop")):
            event = json.dumps({"token": token, "finish_reason": finish})
            await ex.write(f"event: message\ndata: {event}\n\n".encode())
        await ex.end()

    async with serve_fake(handler) as server:
        target = ChatTarget(base_url=server.base_url, flavor="kobold", model="any")
        events = await collect(client, target)
    assert seen[0][0] == "/api/extra/generate/stream"
    assert text(events) == "Hello"
    assert done(events).finish_reason == "stop"


async def test_non_streaming_request(nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
    fake = await start_fake(nursery, "lmstudio")
    whole = ChatRequest(messages=HI.messages, stream=False)
    events = await collect(client, target_for(fake, "openai"), whole)
    assert fake.last("/v1/chat/completions").json["stream"] is False
    assert text(events) == "Hello, world!"
    assert done(events).finish_reason == "stop"


async def test_backend_object_and_egress_checked_client(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "ollama")
    async with make_http_client(LOOPBACK, timeout=5.0) as egress_client:
        backend = HttpChatBackend(egress_client)
        async with aclosing(backend.run_chat(target_for(fake, "ollama"), HI, FAST)) as events:
            got = [e async for e in events]
        assert text(got) == "Hello, world!"
        outside = ChatTarget(base_url="http://192.0.2.10:11434", flavor="ollama", model="m")
        async with aclosing(backend.run_chat(outside, HI, FAST)) as events:
            refused = [e async for e in events]
    assert last_error(refused).kind == "egress_refused"


# --- Failures ---------------------------------------------------------------------------------


async def test_connection_refused(nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
    fake = await start_fake(nursery, "ollama")
    await fake.down()
    error = last_error(await collect(client, target_for(fake, "ollama")))
    assert error.kind == "refused"
    assert error.status is None


@pytest.mark.parametrize(("kind", "flavor"), [("ollama", "ollama"), ("llamacpp", "openai")])
async def test_server_error_500(
    nursery: trio.Nursery, client: httpx.AsyncClient, kind: str, flavor: str
) -> None:
    fake = await start_fake(nursery, kind)
    fake.script = Script(fail_before_first_token="server_error")
    error = last_error(await collect(client, target_for(fake, flavor)))
    assert (error.kind, error.status) == ("http_5xx", 500)
    fake.state = "error"
    assert last_error(await collect(client, target_for(fake, flavor))).kind == "http_5xx"


async def test_busy_and_context_overflow_answers(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    ollama = await start_fake(nursery, "ollama")
    ollama.push_script(
        Script(fail_before_first_token="queue_full"), Script(fail_before_first_token="rate_limited")
    )
    assert last_error(await collect(client, target_for(ollama, "ollama"))).kind == "busy"
    assert last_error(await collect(client, target_for(ollama, "ollama"))).kind == "busy"

    server = await start_fake(nursery, "llamacpp")
    server.script = Script(fail_before_first_token="context_overflow")
    error = last_error(await collect(client, target_for(server, "openai")))
    assert (error.kind, error.status) == ("context_overflow", 400)

    python = await start_fake(nursery, "llama_cpp_python")
    python.script = Script(fail_before_first_token="context_overflow")
    # Streaming, llama-cpp-python answers a prompt that is too long with an empty 200.
    assert last_error(await collect(client, target_for(python, "openai"))).kind == "empty_stream"


async def test_garbage(nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
    fake = await start_fake(nursery, "vllm")
    fake.state = "garbage"  # not even HTTP
    assert last_error(await collect(client, target_for(fake, "openai"))).kind == "bad_response"
    fake.state = "ready"
    fake.script = Script(garbage_stream=True)  # a 200 stream of junk
    assert last_error(await collect(client, target_for(fake, "openai"))).kind == "bad_response"


@pytest.mark.parametrize(
    ("script", "kind", "fakes"),
    [
        (Script(end_without_done=True), "truncated", ("llamacpp", "ollama")),
        (Script(empty_200=True), "empty_stream", ("llamacpp", "ollama")),
        # [DONE] with no finish reason (Ollama's done:true is its finish, with or without a
        # done_reason, so this one is OpenAI-style only).
        (Script(finish_reason=None), "truncated", ("llamacpp", "vllm")),
    ],
)
async def test_streams_that_end_badly(
    nursery: trio.Nursery,
    client: httpx.AsyncClient,
    script: Script,
    kind: str,
    fakes: tuple[str, ...],
) -> None:
    for fake_kind in fakes:
        fake = await start_fake(nursery, fake_kind)
        fake.script = script
        flavor = "ollama" if fake_kind == "ollama" else "openai"
        assert last_error(await collect(client, target_for(fake, flavor))).kind == kind


async def test_failure_mid_stream(nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
    for fake_kind, flavor in (("llamacpp", "openai"), ("ollama", "ollama")):
        fake = await start_fake(nursery, fake_kind)
        fake.script = Script(chunks=["a", "b", "c", "d"], fail_after_chunks=2)
        events = await collect(client, target_for(fake, flavor))
        assert text(events) == "ab"
        error = last_error(events)
        assert error.kind == "truncated"


# --- Timeouts ---------------------------------------------------------------------------------


async def test_hang_before_first_token_times_out_and_disconnects(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    for fake_kind, flavor in (("llamacpp", "openai"), ("ollama", "ollama")):
        fake = await start_fake(nursery, fake_kind)
        fake.script = Script(hang_before_first_token=True)
        quick = Timeouts(connect=2.0, first_token=0.3, idle=5.0, overall=10.0)
        start = trio.current_time()
        error = last_error(await collect(client, target_for(fake, flavor), timeouts=quick))
        assert error.kind == "timeout_first_token"
        assert 0.25 < trio.current_time() - start < 2.0
        await fake.wait_until(lambda f=fake: f.disconnects == 1)


async def test_first_token_deadline_can_come_earlier(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    fake = await start_fake(nursery, "llamacpp")
    fake.script = Script(first_token_delay=5.0)
    start = trio.current_time()
    events = run_chat(
        client, target_for(fake, "openai"), HI, FAST, first_token_deadline=start + 0.2
    )
    async with aclosing(events):
        got = [e async for e in events]
    assert last_error(got).kind == "timeout_first_token"
    assert trio.current_time() - start < 1.0


async def test_slow_steady_drip_is_not_idle_but_a_stall_is(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    fake = await start_fake(nursery, "llamacpp")
    drip = Timeouts(connect=2.0, first_token=3.0, idle=0.4, overall=10.0)
    # Eight pieces 0.15 s apart: 1.2 s in all, far beyond the idle timeout, yet never idle.
    fake.script = Script(chunks=[str(i) for i in range(8)], chunk_delay=0.15)
    slow = await collect(client, target_for(fake, "openai"), timeouts=drip)
    assert text(slow) == "01234567"
    summary = done(slow)
    assert summary.tokens_per_second is not None and 3 < summary.tokens_per_second < 12
    # The same with a 1.5 s stall after the first piece: an idle timeout, and a disconnect.
    fake.script = Script(chunks=["a", "b"], chunk_delay=1.5)
    stalled = await collect(client, target_for(fake, "openai"), timeouts=drip)
    assert text(stalled) == "a"
    assert last_error(stalled).kind == "timeout_idle"
    await fake.wait_until(lambda: fake.disconnects == 1)


async def test_slow_first_token_within_the_budget(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    # A model load: the first token takes longer than ``idle`` but less than ``first_token``.
    fake = await start_fake(nursery, "ollama")
    fake.script = Script(first_token_delay=0.6)
    patient = Timeouts(connect=2.0, first_token=3.0, idle=0.3, overall=10.0)
    summary = done(await collect(client, target_for(fake, "ollama"), timeouts=patient))
    assert summary.first_token_s is not None and summary.first_token_s >= 0.55


# --- Cancellation -----------------------------------------------------------------------------


async def test_cancelling_the_consumer_closes_the_upstream_request(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    for fake_kind, flavor in (("llamacpp", "openai"), ("ollama", "ollama")):
        fake = await start_fake(nursery, fake_kind)
        fake.script = Script(chunks=["x"] * 50, chunk_delay=0.1)
        got: list[StreamEvent] = []
        with trio.move_on_after(0.35):
            async with aclosing(run_chat(client, target_for(fake, flavor), HI, FAST)) as events:
                async for event in events:
                    got.append(event)
        assert 0 < len([e for e in got if isinstance(e, Chunk)]) < 50
        await fake.wait_until(lambda f=fake: f.disconnects == 1 and f.active == 0, timeout=2.0)
        assert fake.completed == 0


async def test_breaking_out_of_the_loop_closes_the_upstream_request(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    fake = await start_fake(nursery, "vllm")
    fake.script = Script(chunks=["x"] * 50, chunk_delay=0.1)
    async with aclosing(run_chat(client, target_for(fake, "openai"), HI, FAST)) as events:
        async for event in events:
            if isinstance(event, Chunk):
                break
    await fake.wait_until(lambda: fake.disconnects == 1, timeout=2.0)
    assert fake.completed == 0


async def test_a_good_answer_leaves_the_connection_reusable(client: httpx.AsyncClient) -> None:
    seqs: list[int] = []

    async def handler(request: Request, ex: Exchange) -> None:
        seqs.append(request.seq)
        sse = [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")]
        await ex.start(200, sse)
        finish = {"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await ex.write(f"data: {json.dumps(finish)}\n\n".encode())
        await ex.write(b"data: [DONE]\n\n")
        await ex.end()

    async with serve_fake(handler) as server:
        target = ChatTarget(base_url=server.base_url, flavor="openai", model="m")
        for _ in range(2):
            done(await collect(client, target))
    assert seqs == [0, 1]  # the second request came on the first one's connection
