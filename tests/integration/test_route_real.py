"""Routing end to end against the real llama.cpp-based servers with SmolLM2 (fixtures in
conftest.py): ``routerctl ask`` streams a real answer, and falls back to a second real server
when the first is killed before answering."""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from routerd.core.config import parse_config
from routerd.shell import discovery, routing
from routerd.shell.app import App
from routerd.shell.methods import build_registry
from routerd_client.cli import main as routerctl

pytestmark = pytest.mark.slow

BUILTIN = (
    "ollama", "lmstudio", "jan", "openwebui", "localai",
    "vllm", "llamacpp", "koboldcpp", "gpt4all", "textgen",
)  # fmt: skip
QUESTION = "Write a Python function that adds two numbers."


@pytest.fixture
def socket_dir() -> Any:
    path = tempfile.mkdtemp(prefix="rd-", dir="/tmp")  # AF_UNIX paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def config_text(socket: str, first: str, second: str | None) -> str:
    off = "\n".join(f"[services.{k}]\nenabled = false" for k in BUILTIN if k != "llamacpp")
    routes = "\n".join(
        f"[task_routing.{c}]\nmin_context = 512"
        for c in ("coding", "reasoning", "analysis", "documentation")
    )
    text = f"""
[daemon]
socket = "{socket}"
{off}
[services.llamacpp]
endpoint = "{first}"
priority = 1
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
"""
    if second is not None:
        text += f"""
[[services.custom_endpoints]]
name = "second"
endpoint = "{second}"
api_style = "openai"
priority = 2
"""
    return text


@pytest.fixture
async def daemon(nursery: trio.Nursery, socket_dir: str) -> AsyncIterator[Any]:
    async def start(first: str, second: str | None = None) -> App:
        text = config_text(f"{socket_dir}/d.sock", first, second)
        app = App(parse_config(text, fmt="toml", env={}), env={}, registry=build_registry())
        discovery.install(app)
        routing.install(app)
        await nursery.start(functools.partial(app.run, handle_signals=False))
        registry = discovery.registry_of(app)
        names = ["llamacpp"] + (["second"] if second else [])

        def online() -> bool:
            infos = [registry.service(n) for n in names]
            return all(i is not None and i.state == "online" and i.models for i in infos)

        with trio.fail_after(60):
            await registry.wait_until(online)
        return app

    yield start


async def ask(app: App, *argv: str) -> int:
    assert app.socket_path is not None
    argv = ("--socket", app.socket_path, "ask", "--max-tokens", "16", *argv)
    code: int = await trio.to_thread.run_sync(routerctl, list(argv))
    return code


async def test_routerctl_ask_streams_a_real_answer(
    daemon: Any, llama_server: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    app = await daemon(llama_server.base_url)
    assert await ask(app, QUESTION) == 0
    out, err = capfd.readouterr()
    assert out.strip(), err
    assert "answered by " in err and " on llamacpp (coding" in err
    assert await ask(app, "--json", QUESTION) == 0
    record = json.loads(capfd.readouterr()[0])
    assert record["text"].strip() and record["finish_reason"] in ("stop", "length")
    assert record["completion_tokens"] is not None and 0 < record["completion_tokens"] <= 16


async def test_routerctl_ask_falls_back_when_the_first_server_is_killed(
    daemon: Any, start_real_server: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    first = start_real_server("server")
    second = start_real_server("python")
    app = await daemon(first.base_url, second.base_url)
    first.stop()  # killed before answering: discovery has not noticed yet
    assert await ask(app, QUESTION) == 0
    out, err = capfd.readouterr()
    assert out.strip(), err
    assert "refused" in err and "trying " in err
    assert " on second (" in err and "after 1 failed attempt" in err
