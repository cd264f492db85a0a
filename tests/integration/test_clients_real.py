"""Clients nobody here wrote, against routerd in front of the real llama-server with SmolLM2
(fixtures in conftest.py): the ``mcp`` SDK's stdio client through ``routerd-mcp``, and
Debian's ``nvim --headless`` running the plugin in client/nvim."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest
import trio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp_types import CallToolResult, TextContent

from routerd.core.config import parse_config
from routerd.shell import discovery, routing
from routerd.shell.app import App
from routerd.shell.methods import build_registry

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "tests" / "data" / "nvim" / "harness.lua"
QUESTION = "Write a Python function that adds two numbers."
OFF = ("ollama", "lmstudio", "jan", "openwebui", "localai", "vllm", "koboldcpp", "gpt4all",
       "textgen")  # fmt: skip


def log_file(path: str) -> TextIO:
    return open(path, "w")


def write(path: str, text: str) -> None:
    Path(path).write_text(text)


def read_json(path: str) -> Any:
    """The JSON in ``path``, or None when there is no such file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


@pytest.fixture
def socket_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="rd-", dir="/tmp")  # AF_UNIX paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def daemon(nursery: trio.Nursery, socket_dir: str, llama_server: Any) -> AsyncIterator[
        str]:  # fmt: skip
    """A daemon routing to the real llama-server; yields its socket once the server is
    online."""
    off = "\n".join(f"[services.{k}]\nenabled = false" for k in OFF)
    routes = "\n".join(f"[task_routing.{c}]\nmin_context = 512"
                       for c in ("coding", "reasoning", "analysis", "documentation"))  # fmt: skip
    text = f"""
[daemon]
socket = "{socket_dir}/d.sock"
{off}
[services.llamacpp]
endpoint = "{llama_server.base_url}"
{routes}
[serena]
enabled = false
[routing]
reserve_for_answer = 128
[routing.timeouts]
first_token = 60.0
idle = 30.0
overall = 120.0
"""
    app = App(parse_config(text, fmt="toml", env={}), env={}, registry=build_registry())
    discovery.install(app)
    routing.install(app)
    await nursery.start(functools.partial(app.run, handle_signals=False))
    registry = discovery.registry_of(app)

    def online() -> bool:
        info = registry.service("llamacpp")
        return info is not None and info.state == "online" and bool(info.models)

    with trio.fail_after(60):
        await registry.wait_until(online)
    assert app.socket_path is not None
    yield app.socket_path


async def test_mcp_sdk_client_asks_the_real_model(daemon: str, socket_dir: str) -> None:
    argv = ["-m", "routerd.mcp_bridge", "--socket", daemon, "--no-serena", "--session", "none"]
    params = StdioServerParameters(command=sys.executable, args=argv, cwd=socket_dir)
    progress: list[str | None] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    with log_file(f"{socket_dir}/mcp.log") as errlog, trio.fail_after(180):
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool(
                "ask", {"query": QUESTION, "max_tokens": 16}, progress_callback=on_progress
            )
            models = await session.call_tool("models", {})
    assert isinstance(result, CallToolResult) and not result.is_error, result
    text = [c.text for c in result.content if isinstance(c, TextContent)]
    record = result.structured_content
    assert record is not None
    assert text[0].strip() and text[0] == record["text"]
    assert record["service"] == "llamacpp" and record["finish_reason"] in ("stop", "length")
    assert "SmolLM2" in record["model"]
    assert 0 < record["completion_tokens"] <= 16
    assert progress[0] is not None and progress[0].startswith("asking ")
    assert "".join(m or "" for m in progress[1:]) == record["text"]  # streamed as it came
    assert isinstance(models, CallToolResult) and models.structured_content is not None
    assert [m["service"] for m in models.structured_content["models"]] == ["llamacpp"]


async def test_nvim_plugin_streams_the_real_answer(daemon: str, socket_dir: str) -> None:
    nvim = shutil.which("nvim")
    assert nvim is not None, "nvim is not installed: apt-get install neovim (scripts/setup.sh)"
    write(
        f"{socket_dir}/scenario.lua",
        r"""
vim.g.routerd_socket = OUT.socket
local done = count("RouterdAskDone")
local buf = require("routerd").ask(OUT.query, { max_tokens = 16, session = false })
out.ok = wait(function() return done.value == 1 end, 120000)
out.lines = lines(buf)
out.done = vim.api.nvim_buf_get_var(buf, "routerd_done")
""",
    )
    args = {"out": f"{socket_dir}/out.json", "socket": daemon, "query": QUESTION}
    env = dict(os.environ, ROUTERD_NVIM_ARGS=json.dumps(args),
               ROUTERD_NVIM_SCENARIO=f"{socket_dir}/scenario.lua")  # fmt: skip
    argv = [nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n",
            "--cmd", f"set rtp+={ROOT / 'client' / 'nvim'}",
            "-c", "runtime plugin/routerd.lua", "-c", f"luafile {HARNESS}"]  # fmt: skip
    with trio.fail_after(180):
        done = await trio.run_process(argv, stdin=subprocess.DEVNULL, capture_stdout=True,
                                      capture_stderr=True, check=False, env=env)  # fmt: skip
    out = read_json(args["out"])
    assert out is not None, done.stderr.decode(errors="replace")
    assert "error" not in out and out["ok"], out
    lines = out["lines"]
    assert lines[0] == f"# {QUESTION}"
    assert lines[1].startswith("model: ") and " on llamacpp (" in lines[1]
    assert "".join(lines[3:-2]).strip()  # the answer
    assert lines[-1].startswith("-- end: ")
    assert out["done"]["finish_reason"] in ("stop", "length")
