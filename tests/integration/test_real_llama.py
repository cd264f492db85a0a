"""The real llama.cpp-based servers start, serve SmolLM2 and go away when killed.

These run the binaries cached by ``scripts/llama.sh ensure`` (fixtures in conftest.py). They pin
down the facts routerd's backends rely on: readiness is GET /v1/models, only llama-server has
/health and /props, model ids are the model path, and a killed server refuses connections.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

KINDS = ["python", "server"]
PROMPT = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
MAX_TOKENS = 16


@pytest.fixture(params=KINDS)
def real_server(request: pytest.FixtureRequest) -> Any:
    name = "llama_cpp_python_server" if request.param == "python" else "llama_server"
    return request.getfixturevalue(name)


def test_models_lists_the_smollm2_model(real_server: Any, llama_paths: Any) -> None:
    reply = httpx.get(f"{real_server.base_url}/v1/models", timeout=10)
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    # Without an alias both servers name the model by the path they loaded.
    assert ids == [str(llama_paths.model)]
    assert Path(ids[0]).name == "SmolLM2-135M-Instruct-Q4_1.gguf"


async def test_chat_completion_returns_text(real_server: Any) -> None:
    async with httpx.AsyncClient(base_url=real_server.base_url, timeout=60) as client:
        reply = await client.post(
            "/v1/chat/completions",
            json={"messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0},
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "chat.completion"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert isinstance(content, str)
    assert content.strip()
    assert choice["finish_reason"] in ("stop", "length")
    assert 0 < body["usage"]["completion_tokens"] <= MAX_TOKENS


async def test_streamed_chat_ends_with_done(real_server: Any) -> None:
    request = {"messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    data: list[str] = []
    async with (
        httpx.AsyncClient(base_url=real_server.base_url, timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json=request) as reply,
    ):
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        async for line in reply.aiter_lines():
            if line.startswith("data: "):
                data.append(line.removeprefix("data: "))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()


def test_llama_server_health_and_props(llama_server: Any, llama_paths: Any) -> None:
    with httpx.Client(base_url=llama_server.base_url, timeout=10) as client:
        health = client.get("/health")
        props = client.get("/props")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert props.status_code == 200
    body = props.json()
    assert body["model_path"] == str(llama_paths.model)
    assert body["total_slots"] >= 1
    assert body["default_generation_settings"]["n_ctx"] == 1024
    assert "im_start" in body["chat_template"]  # SmolLM2's ChatML template came from the GGUF


def test_llama_cpp_python_has_no_health(llama_cpp_python_server: Any) -> None:
    # Why readiness must be GET /v1/models: this server has no /health at all.
    reply = httpx.get(f"{llama_cpp_python_server.base_url}/health", timeout=10)
    assert reply.status_code == 404


@pytest.mark.parametrize("kind", KINDS)
def test_killed_server_refuses_the_port(kind: str, start_real_server: Any) -> None:
    server = start_real_server(kind)
    url = f"{server.base_url}/v1/models"
    assert httpx.get(url, timeout=10).status_code == 200
    server.stop()
    assert server.process.returncode is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)
