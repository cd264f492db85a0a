"""The OpenAI-compatible front, driven by the official ``openai`` Python client (which nobody
here wrote) against an in-process daemon routing to an Ollama fake and a llama.cpp fake.

What it shows: the client lists the virtual and real models; chat answers come from the same
engine as the socket's ``route`` (classification, fallback, audit record), whole or streamed
with usage; tool definitions and calls pass through; errors have OpenAI's shape; FIM
completions and embeddings pass through to a fitting model; a client that goes away stops
the upstream generation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import openai
import pytest
import trio
from fakes import FakeModel, Script, ToolCall

T = TypeVar("T")
QUESTION = "Write a Python function that adds two numbers."
WAIT = 10.0


def client_for(d: Any) -> openai.AsyncOpenAI:
    # No retries: a test must see the first answer, not a retried one.
    return openai.AsyncOpenAI(base_url=d.base_url + "/v1", api_key=d.token, max_retries=0)


async def in_thread(d: Any, work: Callable[[openai.OpenAI], T]) -> T:
    """Run ``work`` with the blocking client in a worker thread. Streams use it: the async
    client stops reading at ``[DONE]`` without closing its inner async generators, which
    trio (unlike asyncio) reports as a ResourceWarning."""

    def run() -> T:
        with openai.OpenAI(base_url=d.base_url + "/v1", api_key=d.token, max_retries=0) as c:
            return work(c)

    return await trio.to_thread.run_sync(run)


async def until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT):
        while not predicate():  # noqa: ASYNC110 - the fakes and the audit fake have no event
            await trio.sleep(0.02)


def chats(fake: Any) -> list[Any]:
    return [r for r in fake.requests if r.path in ("/api/chat", "/v1/chat/completions")]


def ollama_models() -> list[FakeModel]:
    return [
        FakeModel("qwen2.5-coder:7b", context_length=8192, max_context_length=32768,
                  family="qwen2", parameter_size="7.6B",
                  capabilities=("completion", "tools", "insert")),
        FakeModel("nomic-embed-text:latest", context_length=2048, family="nomic-bert",
                  parameter_size="137M", capabilities=("embedding",)),
    ]  # fmt: skip


@pytest.fixture
async def d(start_http_daemon: Any) -> Any:
    return await start_http_daemon(ollama_models=ollama_models())


async def test_models_lists_the_virtual_models_then_every_routable_one(d: Any) -> None:
    async with client_for(d) as client:
        page = await client.models.list()
        ids = [m.id for m in page.data]
        auto = await client.models.retrieve("routerd/auto")
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("no-such-model")
    assert ids[:5] == ["routerd/auto", "routerd/coding", "routerd/reasoning", "routerd/analysis",
                       "routerd/documentation"]  # fmt: skip
    llama_id = d.llama.models[0].id
    assert ids[5:] == ["qwen2.5-coder:7b", "nomic-embed-text:latest", llama_id]
    assert {m.id: m.owned_by for m in page.data}[llama_id] == "llamacpp"
    assert auto.owned_by == "routerd"


async def test_a_chat_answer_comes_from_the_routing_engine(d: Any) -> None:
    d.ollama.script = Script(chunks=["def add", "(a, b):", " return a + b"], prompt_tokens=21)
    async with client_for(d) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="routerd/auto", messages=[{"role": "user", "content": QUESTION}],
            temperature=0.2, max_tokens=64,
        )  # fmt: skip
        answer = raw.parse()
    assert answer.choices[0].message.content == "def add(a, b): return a + b"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "qwen2.5-coder:7b"
    assert answer.usage is not None and answer.usage.prompt_tokens == 21
    assert raw.headers["x-routerd-category"] == "coding"  # classified like any route
    assert raw.headers["x-routerd-service"] == "ollama"
    assert raw.headers["x-routerd-instance"] == d.app.instance_id
    sent = chats(d.ollama)[-1].json
    assert sent["options"]["temperature"] == 0.2 and sent["options"]["num_predict"] == 64
    (query,) = [e for e in d.audit.events if e.event_type == "query"]
    assert query.success and query.model == "qwen2.5-coder:7b" and query.query == QUESTION
    assert query.uid is not None  # a token stands for the daemon's user


async def test_a_streamed_answer_ends_with_usage_and_done(d: Any) -> None:
    d.ollama.script = Script(chunks=["one", " two", " three"], prompt_tokens=9)

    def work(client: openai.OpenAI) -> list[Any]:
        stream = client.chat.completions.create(
            model="routerd/coding", messages=[{"role": "user", "content": QUESTION}],
            stream=True, stream_options={"include_usage": True},
        )  # fmt: skip
        return list(stream)

    chunks = await in_thread(d, work)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (9, 3)


async def test_tools_pass_through_and_calls_come_back(d: Any) -> None:
    d.ollama.script = Script(chunks=[], tool_calls=[ToolCall("read_file", {"path": "a.py"})])
    tools = [{"type": "function", "function": {
        "name": "read_file", "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}]  # fmt: skip
    messages: Any = [{"role": "user", "content": "Open a.py"}]

    def work(client: openai.OpenAI) -> tuple[Any, list[Any]]:
        create: Any = client.chat.completions.create
        whole = create(model="qwen2.5-coder:7b", messages=messages, tools=tools)
        stream = create(model="qwen2.5-coder:7b", messages=messages, tools=tools, stream=True)
        return whole, list(stream)

    whole, chunks = await in_thread(d, work)
    (call,) = whole.choices[0].message.tool_calls or []
    assert call.function.name == "read_file" and json.loads(call.function.arguments) == {
        "path": "a.py"
    }
    assert whole.choices[0].finish_reason == "tool_calls"
    assert chats(d.ollama)[-1].json["tools"][0]["function"]["name"] == "read_file"
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert deltas[0].function is not None and deltas[0].function.name == "read_file"
    arguments = "".join(t.function.arguments or "" for t in deltas if t.function)
    assert json.loads(arguments) == {"path": "a.py"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


async def test_errors_have_openais_shape_and_status(d: Any) -> None:
    async with client_for(d) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(
                model="mistral:7b", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="routerd/auto", messages=[])
        with pytest.raises(openai.BadRequestError, match="routerd/auto"):
            await client.chat.completions.create(
                model="routerd/fastest", messages=[{"role": "user", "content": "hi"}]
            )
    assert missing.value.code == "not_found" and "mistral:7b" in missing.value.message
    assert bad.value.code == "bad_request" and "messages is empty" in bad.value.message


async def test_a_failing_server_falls_back_before_the_stream_starts(d: Any) -> None:
    d.ollama.script = Script(fail_before_first_token="server_error")
    d.llama.script = Script(chunks=["from", " llama"])

    def work(client: openai.OpenAI) -> tuple[Any, list[Any]]:
        raw = client.chat.completions.with_raw_response.create(
            model="routerd/auto", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        return raw, list(raw.parse())

    raw, chunks = await in_thread(d, work)
    assert raw.headers["x-routerd-service"] == "llamacpp"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from llama"


async def test_a_client_going_away_stops_the_generation(d: Any) -> None:
    d.ollama.script = Script(chunks=["x"] * 200, chunk_delay=0.05)

    def work(client: openai.OpenAI) -> None:
        stream = client.chat.completions.create(
            model="routerd/auto", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        next(iter(stream))
        stream.close()

    await in_thread(d, work)
    await until(lambda: any(e.event_type == "query" for e in d.audit.events))
    await until(lambda: d.ollama.active == 0)  # the upstream request was closed too
    (query,) = [e for e in d.audit.events if e.event_type == "query"]
    assert query.error == "cancelled" and not query.success
    assert d.ollama.completed == 0


async def test_fim_completions_go_to_a_fill_in_the_middle_model(d: Any) -> None:
    async with client_for(d) as client:
        raw = await client.completions.with_raw_response.create(
            model="routerd/auto", prompt="def add(", suffix="):\n    return a + b", max_tokens=8
        )
        done = raw.parse()
    sent = d.ollama.last("/v1/completions").json
    assert sent["model"] == "qwen2.5-coder:7b" and sent["suffix"].startswith("):")
    assert raw.headers["x-routerd-model"] == "qwen2.5-coder:7b"
    assert done.choices[0].text == "Hello, world!"
    (query,) = [e for e in d.audit.events if e.event_type == "query"]
    assert query.details == {"api": "/v1/completions"} and query.service == "ollama"


async def test_embeddings_go_to_an_embedding_model(d: Any) -> None:
    async with client_for(d) as client:
        chosen = await client.embeddings.create(model="routerd/auto", input=["a", "bb"])
        named = await client.embeddings.create(model="nomic-embed-text:latest", input="c")
        with pytest.raises(openai.NotFoundError):
            await client.embeddings.create(model="no-such-embedder", input="c")
    assert [len(e.embedding) for e in chosen.data] == [8, 8]
    assert d.ollama.last("/v1/embeddings").json["model"] == "nomic-embed-text:latest"
    assert len(named.data) == 1


async def test_the_unix_socket_serves_without_a_token(d: Any) -> None:
    transport = httpx.AsyncHTTPTransport(uds=d.unix)
    async with httpx.AsyncClient(transport=transport, base_url="http://routerd") as http:
        models = await http.get("/v1/models")
    assert models.status_code == 200
    assert models.json()["data"][0]["id"] == "routerd/auto"
    assert models.headers["x-routerd-instance"] == d.app.instance_id


async def test_a_shutdown_lets_an_http_stream_in_flight_finish(d: Any) -> None:
    """The fronts' requests get the shutdown grace period, as the socket's do: a streamed
    answer under way when the daemon is told to stop arrives whole, then the front is shut."""
    d.ollama.script = Script(chunks=["one", " two", " three", " four"], chunk_delay=0.15)
    body = {"model": "routerd/auto", "stream": True,
            "messages": [{"role": "user", "content": QUESTION}]}  # fmt: skip
    lines: list[str] = []
    async with httpx.AsyncClient(base_url=d.base_url, timeout=WAIT) as http:
        headers = {"Authorization": f"Bearer {d.token}"}
        async with http.stream("POST", "/v1/chat/completions", json=body,
                               headers=headers) as response:  # fmt: skip
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line:
                    lines.append(line)
                if len(lines) == 2 and not d.app.shutting_down:
                    d.app.request_shutdown()  # mid-answer
        assert d.app.shutting_down
    async with httpx.AsyncClient(base_url=d.base_url, timeout=WAIT) as fresh:
        with pytest.raises(httpx.ConnectError):  # new connections are refused meanwhile
            await fresh.get("/v1/models", headers=headers)
    pieces = [json.loads(x.removeprefix("data: "))["choices"][0]["delta"].get("content", "")
              for x in lines if x.startswith("data: {") and '"choices":[{' in x.replace(" ", "")]  # fmt: skip
    assert "".join(pieces) == "one two three four"
    assert lines[-1] == "data: [DONE]"
