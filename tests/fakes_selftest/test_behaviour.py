"""What the fakes do for routing tests: scripts, failures, states, cancellation, Ollama."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from fakes import QUEUE_FULL, Failure, FakeServer, Script, ToolCall, start_fake
from fakes.raw import raw_request
from fakes.wire import GARBAGE_STREAM

MESSAGES = [{"role": "user", "content": "Write <html> & stuff"}]
OPENAI_KINDS = [
    "llamacpp",
    "llama_cpp_python",
    "vllm",
    "lmstudio",
    "localai",
    "koboldcpp",
    "textgen",
    "gpt4all",
    "jan",
    "openai_compat",
    "ollama",
]


def client(fake: FakeServer, timeout: float = 5.0) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {fake.api_key}"} if fake.api_key else {}
    return httpx.AsyncClient(base_url=fake.base_url, timeout=timeout, headers=headers)


def chat_body(fake: FakeServer, **extra: Any) -> dict[str, Any]:
    return {"model": fake.models[0].id, "messages": MESSAGES, "stream": True, **extra}


def events(body: bytes) -> list[Any]:
    """SSE data payloads, ``[DONE]`` kept as the string."""
    out: list[Any] = []
    for block in body.split(b"\n\n"):
        if block.startswith(b"data: "):
            data = block[6:]
            out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return out


def text_of(evs: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or "" for e in evs if e != "[DONE]" and e["choices"]
    )


async def chat(fake: FakeServer, **extra: Any) -> httpx.Response:
    async with client(fake) as c:
        return await c.post("/v1/chat/completions", json=chat_body(fake, **extra))


# --- OpenAI-style generation -----------------------------------------------------------------


@pytest.mark.parametrize("kind", OPENAI_KINDS)
async def test_stream_carries_the_script(nursery: trio.Nursery, kind: str) -> None:
    fake = await start_fake(nursery, kind, script=Script(chunks=["def ", "f", "():"]))
    r = await chat(fake)
    evs = events(r.content)
    assert r.status_code == 200 and evs[-1] == "[DONE]"
    assert text_of(evs) == "def f():"
    finishes = [e["choices"][0]["finish_reason"] for e in evs[:-1] if e["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert fake.completed == 1 and fake.active == 0


@pytest.mark.parametrize(
    ("kind", "usage"),
    [
        ("llamacpp", True),
        ("vllm", True),
        ("lmstudio", True),
        ("ollama", True),
        ("llama_cpp_python", False),
    ],
)
async def test_usage_chunk_only_when_asked_and_honoured(
    nursery: trio.Nursery, kind: str, usage: bool
) -> None:
    fake = await start_fake(nursery, kind, script=Script(prompt_tokens=11, completion_tokens=3))
    plain = events((await chat(fake)).content)
    assert not any(e != "[DONE]" and e.get("usage") for e in plain)
    asked = events((await chat(fake, stream_options={"include_usage": True})).content)
    with_usage = [e for e in asked if e != "[DONE]" and e.get("usage")]
    if usage:
        (chunk,) = with_usage
        assert chunk["choices"] == [] and asked[-2] is chunk
        assert (chunk["usage"]["prompt_tokens"], chunk["usage"]["completion_tokens"]) == (11, 3)
    else:
        assert with_usage == []
    assert fake.last("/v1/chat/completions").json["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("kind", ["llamacpp", "vllm", "lmstudio"])
async def test_reasoning_and_tool_calls(nursery: trio.Nursery, kind: str) -> None:
    script = Script(
        reasoning=["think", "ing"],
        chunks=["ok"],
        tool_calls=[ToolCall("read_file", {"path": "a.py"})],
    )
    fake = await start_fake(nursery, kind, script=script)
    evs = [e for e in events((await chat(fake)).content) if e != "[DONE]" and e["choices"]]
    deltas = [e["choices"][0]["delta"] for e in evs]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "thinking"
    (call,) = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert call["function"] == {"name": "read_file", "arguments": '{"path": "a.py"}'}
    assert evs[-1]["choices"][0]["finish_reason"] == "tool_calls"
    whole = (await chat(fake, stream=False)).json()["choices"][0]
    assert whole["message"]["reasoning_content"] == "thinking"
    assert whole["message"]["tool_calls"][0]["function"]["name"] == "read_file"


@pytest.mark.parametrize("kind", ["llamacpp", "llama_cpp_python", "vllm", "lmstudio", "ollama"])
async def test_fail_before_first_token(nursery: trio.Nursery, kind: str) -> None:
    fake = await start_fake(nursery, kind, script=Script(fail_before_first_token="server_error"))
    r = await chat(fake)
    assert r.status_code == 500 and r.json()
    fake.script = Script(fail_before_first_token=Failure(418, b'{"error":"teapot"}'))
    r = await chat(fake)
    assert (r.status_code, r.content) == (418, b'{"error":"teapot"}')


async def test_hang_before_first_token_sends_head_then_nothing(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "llamacpp", script=Script(hang_before_first_token=True))
    async with (
        client(fake, timeout=0.3) as c,
        c.stream("POST", "/v1/chat/completions", json=chat_body(fake)) as r,
    ):
        assert r.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            await r.aread()
    await fake.wait_until(lambda: fake.disconnects == 1)
    assert fake.active == 0


@pytest.mark.parametrize("kind", ["llamacpp", "ollama"])
async def test_fail_after_chunks_drops_the_connection(nursery: trio.Nursery, kind: str) -> None:
    fake = await start_fake(
        nursery, kind, script=Script(chunks=["a", "b", "c"], fail_after_chunks=2)
    )
    path, body = (
        ("/api/chat", {"model": "llama3.2", "messages": MESSAGES})
        if kind == "ollama"
        else ("/v1/chat/completions", chat_body(fake))
    )
    received = b""
    async with client(fake) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            async with c.stream("POST", path, json=body) as r:
                async for chunk in r.aiter_bytes():
                    received += chunk
    if kind == "ollama":
        lines = [json.loads(x) for x in received.splitlines()]
        assert [x["message"]["content"] for x in lines] == ["a", "b"]
    else:
        assert text_of(events(received)) == "ab" and b"[DONE]" not in received
    assert fake.disconnects == 0  # the server dropped it, the client did not leave


async def test_endings_without_done_or_finish(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "llama_cpp_python")
    fake.script = Script(end_without_done=True)
    evs = events((await chat(fake)).content)
    assert "[DONE]" not in evs and all(e["choices"][0]["finish_reason"] is None for e in evs)
    assert text_of(evs) == "Hello, world!"
    fake.script = Script(finish_reason=None)
    evs = events((await chat(fake)).content)
    assert evs[-1] == "[DONE]" and all(e["choices"][0]["finish_reason"] is None for e in evs[:-1])


async def test_empty_200_and_garbage_stream(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "vllm", script=Script(empty_200=True))
    r = await chat(fake)
    assert (r.status_code, r.content) == (200, b"")
    assert r.headers["content-type"].startswith("text/event-stream")
    fake.script = Script(garbage_stream=True)
    r = await chat(fake)
    assert (r.status_code, r.content) == (200, b"".join(GARBAGE_STREAM))
    assert b"[DONE]" not in r.content


async def test_slow_drip_spaces_the_pieces(nursery: trio.Nursery) -> None:
    fake = await start_fake(
        nursery,
        "llamacpp",
        script=Script(chunks=["a", "b", "c"], chunk_delay=0.05, first_token_delay=0.1),
    )
    stamps: list[float] = []
    start = trio.current_time()
    async with (
        client(fake) as c,
        c.stream("POST", "/v1/chat/completions", json=chat_body(fake)) as r,
    ):
        async for line in r.aiter_lines():
            if '"content":"' in line:
                stamps.append(trio.current_time() - start)
    assert len(stamps) == 3
    assert stamps[0] >= 0.1 and stamps[2] - stamps[0] >= 0.09


@pytest.mark.parametrize("kind", ["llamacpp", "llama_cpp_python", "ollama"])
async def test_cancellation_reaches_the_backend(nursery: trio.Nursery, kind: str) -> None:
    fake = await start_fake(nursery, kind, script=Script(chunks=["x"] * 200, chunk_delay=0.01))
    path, body = (
        ("/api/chat", {"model": "llama3.2", "messages": MESSAGES})
        if kind == "ollama"
        else ("/v1/chat/completions", chat_body(fake))
    )
    async with client(fake) as c:
        with trio.move_on_after(0.1):
            async with c.stream("POST", path, json=body) as r:
                async for _ in r.aiter_bytes():
                    pass
    await fake.wait_until(lambda: fake.disconnects == 1)
    assert (fake.active, fake.completed) == (0, 0)


async def test_llama_cpp_python_interrupts_the_running_stream(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "llama_cpp_python", interrupt_requests=True)
    fake.push_script(Script(chunks=["slow"] * 50, chunk_delay=0.02), Script(chunks=["new"]))
    first: list[bytes] = []

    async def run_first() -> None:
        async with client(fake) as c:
            first.append((await c.post("/v1/chat/completions", json=chat_body(fake))).content)

    async with trio.open_nursery() as inner:
        inner.start_soon(run_first)
        await fake.wait_until(lambda: fake.active == 1)
        await trio.sleep(0.05)
        second = events((await chat(fake)).content)
    interrupted = events(first[0])
    assert interrupted[-1] == "[DONE]"
    assert all(e["choices"][0]["finish_reason"] is None for e in interrupted[:-1])
    assert 0 < text_of(interrupted).count("slow") < 50
    assert text_of(second) == "new"


async def test_push_script_is_used_once(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "vllm", script=Script(chunks=["default"]))
    fake.push_script(Script(fail_before_first_token="rate_limited"))
    assert (await chat(fake)).status_code == 429
    assert text_of(events((await chat(fake)).content)) == "default"


# --- states --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ollama", "llamacpp", "vllm", "openwebui"])
async def test_states(nursery: trio.Nursery, kind: str) -> None:
    fake = await start_fake(nursery, kind)
    health = {
        "ollama": "/api/version",
        "llamacpp": "/health",
        "vllm": "/health",
        "openwebui": "/health",
    }[kind]
    async with client(fake, timeout=0.15) as c:
        assert (await c.get(health)).status_code == 200
        fake.state = "hang"
        with pytest.raises(httpx.ReadTimeout):
            await c.get(health)
        fake.state, fake.delay = "slow", 0.1
        start = trio.current_time()
        assert (await c.get(health)).status_code == 200
        assert trio.current_time() - start >= 0.1
        fake.state = "garbage"
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(health)
        fake.state = "error"
        assert (await c.get(health)).status_code == 500
        fake.state = "ready"
        assert (await c.get(health)).status_code == 200


async def test_loading_holds_generation_until_ready(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "vllm", state="loading")
    answers: list[httpx.Response] = []

    async def ask() -> None:
        answers.append(await chat(fake))

    async with trio.open_nursery() as inner:
        inner.start_soon(ask)
        await fake.wait_until(lambda: fake.active == 1)
        await trio.sleep(0.05)
        assert answers == []
        fake.state = "ready"
    assert answers[0].status_code == 200


async def test_down_and_up_keep_the_port(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "ollama")
    port = fake.port
    await fake.down()
    async with client(fake) as c:
        with pytest.raises(httpx.ConnectError):
            await c.get("/")
        await fake.up()
        assert fake.port == port
        assert (await c.get("/")).text == "Ollama is running"


@pytest.mark.parametrize(
    ("kind", "path", "body"),
    [
        ("openwebui", "/api/models", b'{"detail":"Not authenticated"}'),
        ("vllm", "/v1/models", b'{"error":"Unauthorized"}'),
        ("llama_cpp_python", "/v1/models", b'{"detail":"Invalid API key"}'),
        (
            "llamacpp",
            "/props",
            b'{"error":{"code":401,"message":"Invalid API Key","type":"authentication_error"}}',
        ),
    ],
)
async def test_api_keys(nursery: trio.Nursery, kind: str, path: str, body: bytes) -> None:
    fake = await start_fake(nursery, kind, api_key="k")
    bare = await raw_request(fake.base_url, "GET", path)
    assert (bare.status, bare.body) == (401, body)
    keyed = await raw_request(fake.base_url, "GET", path, headers=[("Authorization", "Bearer k")])
    assert keyed.status == 200


async def test_openwebui_needs_its_key_and_serves_its_app_elsewhere(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "openwebui")
    assert fake.api_key == "sk-openwebui-fake"
    async with httpx.AsyncClient(base_url=fake.base_url) as c:
        assert (await c.get("/api/models")).status_code == 401
        wrong = await c.get("/api/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "token is invalid" in wrong.json()["detail"]
        page = await c.get("/v1/models")
        assert page.status_code == 200 and page.text.startswith("<!doctype html>")
    async with client(fake) as c:
        r = await c.post("/api/chat/completions", json=chat_body(fake))
        assert text_of(events(r.content)) == "Hello, world!"


async def test_lmstudio_answers_200_for_unknown_paths(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "lmstudio")
    got = await raw_request(fake.base_url, "GET", "/props")
    assert (got.status, got.body) == (
        200,
        b'{"error":"Unexpected endpoint or method. (GET /props)"}',
    )


# --- Ollama ----------------------------------------------------------------------------------


async def ollama_lines(fake: FakeServer, path: str, body: Any) -> tuple[httpx.Response, list[Any]]:
    async with client(fake) as c:
        r = await c.post(path, json=body)
    return r, [json.loads(line) for line in r.content.splitlines()]


async def test_ollama_chat_stream(nursery: trio.Nursery) -> None:
    fake = await start_fake(
        nursery,
        "ollama",
        script=Script(
            chunks=["<a>", " & b"],
            reasoning=["hm"],
            prompt_tokens=26,
            tool_calls=[ToolCall("run", {"cmd": "ls"})],
        ),
    )
    body = {"model": "llama3.2", "messages": MESSAGES, "options": {"num_ctx": 8192}}
    r, lines = await ollama_lines(fake, "/api/chat", body)
    assert r.headers["content-type"] == "application/x-ndjson"
    assert b"\\u003ca\\u003e" in r.content and b"<a>" not in r.content  # Go's JSON escaping
    assert lines[0]["message"] == {"role": "assistant", "content": "", "thinking": "hm"}
    assert "".join(x["message"]["content"] for x in lines) == "<a> & b"
    assert lines[-2]["message"]["tool_calls"][0]["function"]["arguments"] == {"cmd": "ls"}
    last = lines[-1]
    assert list(last)[:5] == ["model", "created_at", "message", "done_reason", "done"]
    assert (last["done"], last["done_reason"], last["prompt_eval_count"], last["eval_count"]) == (
        True,
        "stop",
        26,
        4,
    )
    assert all(x["model"] == "llama3.2" for x in lines)
    assert fake.last("/api/chat").json["options"]["num_ctx"] == 8192
    async with client(fake) as c:
        ps = (await c.get("/api/ps")).json()["models"]
    assert {m["name"]: m["context_length"] for m in ps} == {"llama3.2:latest": 8192}


async def test_ollama_whole_answer_warm_up_and_unload(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "ollama")
    qwen = fake.model("qwen2.5-coder:7b")
    assert qwen is not None and not qwen.loaded
    _, (warm,) = await ollama_lines(
        fake, "/api/chat", {"model": "qwen2.5-coder:7b", "messages": []}
    )
    assert (warm["done"], warm["done_reason"], warm["message"]["content"]) == (True, "load", "")
    assert qwen.loaded
    body = {"model": "qwen2.5-coder:7b", "messages": MESSAGES, "stream": False, "keep_alive": 0}
    r, (whole,) = await ollama_lines(fake, "/api/chat", body)
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert whole["message"]["content"] == "Hello, world!" and whole["done"] is True
    assert not qwen.loaded


async def test_ollama_generate(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "ollama", script=Script(chunks=["a", "b"]))
    _, lines = await ollama_lines(fake, "/api/generate", {"model": "llama3.2", "prompt": "x"})
    assert [x["response"] for x in lines] == ["a", "b", ""]
    assert list(lines[-1])[:6] == [
        "model",
        "created_at",
        "response",
        "done",
        "done_reason",
        "context",
    ]


async def test_ollama_errors(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "ollama")
    r, _ = await ollama_lines(fake, "/api/chat", {"model": "nope", "messages": MESSAGES})
    assert (r.status_code, r.json()) == (
        404,
        {"error": 'model "nope" not found, try pulling it first'},
    )
    fake.script = Script(fail_before_first_token="queue_full")
    r, _ = await ollama_lines(fake, "/api/chat", {"model": "llama3.2", "messages": MESSAGES})
    assert (r.status_code, r.content) == (503, b'{"error":"%s"}' % QUEUE_FULL.encode())
    fake.script = Script(fail_before_first_token="rate_limited")
    r, _ = await ollama_lines(fake, "/api/chat", {"model": "llama3.2", "messages": MESSAGES})
    assert r.status_code == 429 and "error" in r.json()
    async with client(fake) as c:
        missing = await c.get("/nope")
    assert (missing.status_code, missing.text) == (404, "404 page not found")


async def test_ollama_hang_before_first_token_sends_nothing(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "ollama", script=Script(hang_before_first_token=True))
    stream = await trio.open_tcp_stream("127.0.0.1", fake.port)
    body = json.dumps({"model": "llama3.2", "messages": MESSAGES}).encode()
    async with stream:
        await stream.send_all(
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        with trio.move_on_after(0.2) as waited:
            await stream.receive_some(100)
        assert waited.cancelled_caught  # not even a status line
    await fake.wait_until(lambda: fake.disconnects == 1)


async def test_ollama_discovery_paths(nursery: trio.Nursery) -> None:
    fake = await start_fake(nursery, "ollama")
    async with client(fake) as c:
        root = await c.get("/")
        tags = (await c.get("/api/tags")).json()["models"]
        show = (await c.post("/api/show", json={"model": "llama3.2"})).json()
        missing = await c.post("/api/show", json={"model": "nope"})
    assert root.headers["content-type"] == "text/plain; charset=utf-8"
    assert list(tags[0]) == ["name", "model", "modified_at", "size", "digest", "details"]
    assert show["model_info"]["llama.context_length"] == 131072
    assert show["capabilities"] == ["completion", "tools"]
    assert missing.status_code == 404
