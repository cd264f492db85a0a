"""The HTTP fronts end to end with the real llama-server and SmolLM2 behind routerd (fixtures in
conftest.py), driven by the official ``openai`` and ``ollama`` clients: a real answer,
streamed and whole, through routerd's routing engine."""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import ollama
import openai
import pytest
import trio

from routerd.core.config import parse_config
from routerd.shell import discovery, fronts, routing
from routerd.shell.app import App
from routerd.shell.methods import build_registry

pytestmark = pytest.mark.slow

BUILTIN = (
    "ollama", "lmstudio", "jan", "openwebui", "localai",
    "vllm", "llamacpp", "koboldcpp", "gpt4all", "textgen",
)  # fmt: skip
QUESTION = "Write a Python function that adds two numbers."


@pytest.fixture
def state_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="rd-", dir="/tmp")  # AF_UNIX paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def front(nursery: trio.Nursery, state_dir: str, llama_server: Any) -> AsyncIterator[Any]:
    off = "\n".join(f"[services.{k}]\nenabled = false" for k in BUILTIN if k != "llamacpp")
    routes = "\n".join(f"[task_routing.{c}]\nmin_context = 512"
                       for c in ("coding", "reasoning", "analysis", "documentation"))  # fmt: skip
    text = f"""
[daemon]
socket = "{state_dir}/d.sock"
{off}
[services.llamacpp]
endpoint = "{llama_server.base_url}"
{routes}
[serena]
enabled = false
[discovery]
interval = 30.0
[routing]
reserve_for_answer = 128
[routing.timeouts]
first_token = 60.0
idle = 30.0
overall = 120.0
[http]
enabled = true
listen = ["127.0.0.1:0"]
token_file = "{state_dir}/tokens"
"""
    app = App(parse_config(text, fmt="toml", env={}), env={}, registry=build_registry())
    discovery.install(app)
    routing.install(app)
    fronts.install(app)
    await nursery.start(functools.partial(app.run, handle_signals=False))
    registry = discovery.registry_of(app)

    def online() -> bool:
        info = registry.service("llamacpp")
        return info is not None and info.state == "online" and bool(info.models)

    with trio.fail_after(60):
        await registry.wait_until(online)
    f = fronts.front_of(app)
    assert f.tokens is not None
    yield f.listening[0], f.tokens.tokens[0], app


async def test_the_openai_client_gets_a_real_answer_whole_and_streamed(front: Any) -> None:
    base_url, token, app = front

    def work() -> tuple[Any, list[Any]]:
        with openai.OpenAI(base_url=base_url + "/v1", api_key=token, max_retries=0) as client:
            ids = [m.id for m in client.models.list().data]
            assert ids[0] == "routerd/auto" and len(ids) == 6, ids
            messages: Any = [{"role": "user", "content": QUESTION}]
            whole = client.chat.completions.create(
                model="routerd/auto", messages=messages, max_tokens=16
            )
            stream = client.chat.completions.create(
                model=ids[-1], messages=messages, max_tokens=16, stream=True,
                stream_options={"include_usage": True},
            )  # fmt: skip
            return whole, list(stream)

    whole, chunks = await trio.to_thread.run_sync(work)
    assert (whole.choices[0].message.content or "").strip()
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage is not None and 0 < whole.usage.completion_tokens <= 16
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    assert app.component_status()["http"]["requests"] >= 3


async def test_the_ollama_client_gets_a_real_answer(front: Any) -> None:
    base_url, token, _ = front
    client = ollama.AsyncClient(host=base_url, headers={"Authorization": f"Bearer {token}"})
    try:
        listed = await client.list()
        answer = await client.chat(
            model="routerd/coding", messages=[{"role": "user", "content": QUESTION}],
            options={"num_predict": 16},
        )  # fmt: skip
        parts = [p async for p in await client.chat(
            model="routerd/auto", messages=[{"role": "user", "content": QUESTION}],
            options={"num_predict": 16}, stream=True,
        )]  # fmt: skip
    finally:
        await client.close()
    assert len(listed.models) == 6
    assert (answer.message.content or "").strip() and answer.done
    assert 0 < (answer.eval_count or 0) <= 16
    assert "".join(p.message.content or "" for p in parts).strip() and parts[-1].done
