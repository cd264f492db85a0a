"""The Ollama-compatible front, driven by the official ``ollama`` Python client against an
in-process daemon routing to an Ollama fake and a llama.cpp fake: a tool that speaks only
Ollama reaches every server behind routerd, through the routing engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ollama
import pytest
import trio
from fakes import FakeModel, Script, ToolCall

QUESTION = "Write a Python function that adds two numbers."


@pytest.fixture
async def d(start_http_daemon: Any) -> Any:
    models = [
        FakeModel("qwen2.5-coder:7b", context_length=8192, max_context_length=32768,
                  family="qwen2", parameter_size="7.6B", loaded=True,
                  capabilities=("completion", "tools", "insert")),
        FakeModel("llama3.2:latest", context_length=4096, max_context_length=131072,
                  family="llama", parameter_size="3.2B", loaded=False,
                  capabilities=("completion", "tools")),
    ]  # fmt: skip
    return await start_http_daemon(ollama_models=models)


@pytest.fixture
async def client(d: Any) -> AsyncIterator[ollama.AsyncClient]:
    c = ollama.AsyncClient(host=d.base_url, headers={"Authorization": f"Bearer {d.token}"})
    yield c
    await c.close()


async def test_list_shows_virtual_models_and_every_server_s_models(
    d: Any, client: ollama.AsyncClient
) -> None:
    listed = await client.list()
    running = await client.ps()
    version = await client._request_raw("GET", "/api/version")
    names = [m.model for m in listed.models]
    assert names[:2] == ["routerd/auto:latest", "routerd/coding:latest"]
    assert names[5:] == ["qwen2.5-coder:7b", "llama3.2:latest", d.llama.models[0].id]
    qwen = listed.models[5]
    assert qwen.details is not None and qwen.details.parameter_size == "7.6B"
    assert qwen.size == d.ollama.models[0].size
    # The Ollama fake has qwen loaded; llama.cpp serves its one model, always resident.
    assert [m.model for m in running.models][:1] == ["qwen2.5-coder:7b"]
    assert "llama3.2:latest" not in [m.model for m in running.models]
    assert version.json()["version"] and version.headers["x-routerd-instance"]


async def test_show_gives_the_window_discovery_found(d: Any, client: ollama.AsyncClient) -> None:
    shown = await client.show("qwen2.5-coder:7b")
    auto = await client.show("routerd/auto")
    with pytest.raises(ollama.ResponseError) as missing:
        await client.show("mistral:7b")
    info = shown.modelinfo or {}
    assert info[f"{info['general.architecture']}.context_length"] == 32768
    assert shown.capabilities is not None and "insert" in shown.capabilities
    assert auto.details is not None and auto.details.family == "routerd"
    assert missing.value.status_code == 404


async def test_chat_is_routed_like_any_request(d: Any, client: ollama.AsyncClient) -> None:
    d.ollama.script = Script(chunks=["def add", "(a, b):", " return a + b"], prompt_tokens=17)
    answer = await client.chat(
        model="routerd/auto",
        messages=[{"role": "user", "content": QUESTION}],
        options={"temperature": 0.3, "num_predict": 32},
    )
    assert answer.message.content == "def add(a, b): return a + b"
    assert answer.done and answer.done_reason == "stop" and answer.prompt_eval_count == 17
    assert answer.model == "routerd/auto"
    sent = d.ollama.last("/api/chat").json
    assert sent["model"] == "qwen2.5-coder:7b" and sent["options"]["temperature"] == 0.3
    (query,) = [e for e in d.audit.events if e.event_type == "query"]
    assert query.success and query.query == QUESTION


async def test_chat_streams_ndjson_to_the_end(d: Any, client: ollama.AsyncClient) -> None:
    d.ollama.script = Script(chunks=["a", "b", "c"], reasoning=["thinking..."])
    parts = [
        p
        async for p in await client.chat(
            model="qwen2.5-coder:7b", messages=[{"role": "user", "content": QUESTION}],
            stream=True,
        )
    ]  # fmt: skip
    assert "".join(p.message.content or "" for p in parts) == "abc"
    assert parts[0].message.thinking == "thinking..."
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].eval_count == 4  # the fake counts the thinking piece too


async def test_a_model_on_the_other_server_is_reached_through_ollama(
    d: Any, client: ollama.AsyncClient
) -> None:
    d.llama.script = Script(chunks=["hello from llama.cpp"])
    answer = await client.chat(
        model=d.llama.models[0].id, messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.message.content == "hello from llama.cpp"
    assert d.llama.last("/v1/chat/completions").json["messages"][-1]["content"] == "hi"


async def test_tool_calls_come_back_whole(d: Any, client: ollama.AsyncClient) -> None:
    d.ollama.script = Script(chunks=[], tool_calls=[ToolCall("read_file", {"path": "a.py"})])
    tools = [{"type": "function", "function": {"name": "read_file", "description": "Read",
              "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}]  # fmt: skip
    answer = await client.chat(
        model="qwen2.5-coder:7b", messages=[{"role": "user", "content": "Open a.py"}],
        tools=tools,
    )  # fmt: skip
    (call,) = answer.message.tool_calls or []
    assert call.function.name == "read_file" and call.function.arguments == {"path": "a.py"}
    assert d.ollama.last("/api/chat").json["tools"][0]["function"]["name"] == "read_file"


async def test_generate_streams_and_an_empty_one_only_loads(
    d: Any, client: ollama.AsyncClient
) -> None:
    d.ollama.script = Script(chunks=["x = ", "1"])
    parts = [p async for p in await client.generate(model="routerd/coding", prompt="Set x to 1",
                                                     stream=True)]  # fmt: skip
    loaded = await client.generate(model="routerd/auto", prompt="")
    assert "".join(p.response or "" for p in parts) == "x = 1" and parts[-1].done
    assert loaded.done_reason == "load"
    assert len([r for r in d.ollama.requests if r.path == "/api/chat"]) == 1


async def test_generate_with_a_suffix_fills_in_the_middle(
    d: Any, client: ollama.AsyncClient
) -> None:
    answer = await client.generate(model="routerd/auto", prompt="def add(", suffix="):")
    sent = d.ollama.last("/v1/completions").json
    assert sent["model"] == "qwen2.5-coder:7b" and sent["suffix"] == "):"
    assert answer.response == "Hello, world!" and answer.done


async def test_errors_come_back_in_ollamas_shape(d: Any, client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        await client.chat(model="mistral:7b", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404 and "mistral:7b" in missing.value.error
    d.ollama.script = Script(chunks=["a"] * 3, fail_after_chunks=1)
    d.llama.script = Script(chunks=["never"])

    def broken_stream() -> list[Any]:
        # The blocking client: the async one leaves its line iterator open when it raises
        # mid-stream, which trio (unlike asyncio) reports as a ResourceWarning.
        with ollama.Client(host=d.base_url, headers={"Authorization": f"Bearer {d.token}"}) as c:
            messages = [{"role": "user", "content": "hi"}]
            return list(c.chat(model="qwen2.5-coder:7b", messages=messages, stream=True))

    with pytest.raises(ollama.ResponseError, match="broke off"):
        await trio.to_thread.run_sync(broken_stream)


async def test_embed_reaches_an_embedding_model_in_ollamas_shape(start_http_daemon: Any) -> None:
    """``/api/embed`` and the older ``/api/embeddings``, asked with the ``ollama`` client, go
    to an embedding model behind routerd (here through the Ollama server's /v1/embeddings) and
    come back as Ollama answers them: one vector per input, in order."""
    models = [
        FakeModel("qwen2.5-coder:7b", context_length=8192, family="qwen2",
                  parameter_size="7.6B", capabilities=("completion", "tools")),
        FakeModel("nomic-embed-text:latest", context_length=2048, family="nomic-bert",
                  parameter_size="137M", capabilities=("embedding",)),
    ]  # fmt: skip
    d = await start_http_daemon(ollama_models=models)
    headers = {"Authorization": f"Bearer {d.token}"}
    async with ollama.AsyncClient(host=d.base_url, headers=headers) as client:
        many = await client.embed(model="routerd/auto", input=["a", "bb", "ccc"])
        one = await client.embed(model="nomic-embed-text:latest", input="x")
        legacy = await client.embeddings(model="nomic-embed-text", prompt="y")
        with pytest.raises(ollama.ResponseError) as missing:
            await client.embed(model="no-such-embedder", input="z")
    assert many.model == "routerd/auto" and len(many.embeddings) == 3
    assert len({len(v) for v in many.embeddings}) == 1 and len(many.embeddings[0]) > 0
    assert len(one.embeddings) == 1
    assert len(legacy.embedding) == len(one.embeddings[0])
    sent = d.ollama.last("/v1/embeddings").json
    assert sent["model"] == "nomic-embed-text:latest" and sent["input"] == ["y"]
    assert missing.value.status_code == 404
