"""The Neovim plugin (client/nvim) in Debian's real ``nvim --headless``, against a live
``python -m routerd`` process in front of a fake llama.cpp server.

The plugin speaks the protocol from docs/protocol.md alone, in Lua with Neovim's own libuv
pipes and msgpack; these tests are the proof that the document is enough. Each test writes a
Lua scenario; Neovim runs it and writes what it saw (buffer lines, messages) as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import pytest
import trio
from fakes import FakeModel, FakeServer, Script, start_fake

from routerd_client import AsyncClient, DaemonUnreachable, framing

PLUGIN = Path(__file__).resolve().parents[2] / "client" / "nvim"
NVIM_TIMEOUT = 60.0
START_TIMEOUT = 30.0
QUERY = "Write a Python function that adds two numbers."
OFF = ("ollama", "lmstudio", "jan", "openwebui", "localai", "vllm", "koboldcpp", "gpt4all",
       "textgen")  # fmt: skip
CATEGORIES = ("coding", "reasoning", "analysis", "documentation")


@pytest.fixture(scope="module")
def nvim() -> str:
    path = shutil.which("nvim")
    if path is None:
        pytest.fail("nvim is not installed: apt-get install neovim (scripts/setup.sh does)",
                    pytrace=False)  # fmt: skip
    return path


HARNESS = Path(__file__).resolve().parents[1] / "data" / "nvim" / "harness.lua"


def write(path: str, data: str | bytes) -> None:
    if isinstance(data, bytes):
        Path(path).write_bytes(data)
    else:
        Path(path).write_text(data)


def read_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def read_json(path: str) -> Any:
    """The JSON in ``path``, or None when there is no such file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


async def run_nvim(nvim: str, tmp: str, body: str, **args: Any) -> dict[str, Any]:
    """Run the Lua scenario ``body`` in headless Neovim with the plugin on its runtime path
    (tests/data/nvim/harness.lua: ``OUT`` holds ``args``); return the ``out`` table it wrote."""
    args["out"] = f"{tmp}/out.json"
    write(f"{tmp}/scenario.lua", body)
    env = dict(os.environ, ROUTERD_NVIM_ARGS=json.dumps(args),
               ROUTERD_NVIM_SCENARIO=f"{tmp}/scenario.lua")  # fmt: skip
    argv = [nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n",
            "--cmd", f"set rtp+={PLUGIN}", "-c", "runtime plugin/routerd.lua",
            "-c", f"luafile {HARNESS}"]  # fmt: skip
    with trio.fail_after(NVIM_TIMEOUT):
        done = await trio.run_process(argv, stdin=subprocess.DEVNULL, capture_stdout=True,
                                      capture_stderr=True, check=False, cwd=tmp, env=env)  # fmt: skip
    out: dict[str, Any] | None = read_json(args["out"])
    assert out is not None, done.stderr.decode(errors="replace")
    assert "error" not in out, out["error"]
    return out


# --- a live daemon --------------------------------------------------------------------------


def daemon_config(tmp: str, endpoint: str) -> str:
    off = "\n".join(f"[services.{k}]\nenabled = false" for k in OFF)
    routes = "\n".join(f"[task_routing.{c}]\nmin_context = 1024" for c in CATEGORIES)
    return f"""
[daemon]
socket = "{tmp}/d.sock"
state_dir = "{tmp}/state"
{off}
[services.llamacpp]
endpoint = "{endpoint}"
{routes}
[serena]
enabled = false
[discovery]
interval = 30.0
[routing]
reserve_for_answer = 256
[routing.timeouts]
first_token = 30.0
idle = 30.0
overall = 60.0
"""


def log_file(path: str) -> BinaryIO:
    return open(path, "wb")


@asynccontextmanager
async def live_daemon(tmp: str, endpoint: str) -> AsyncIterator[str]:
    """``python -m routerd`` serving ``{tmp}/d.sock`` with ``endpoint`` its only model
    server; yields the socket once the server is online there."""
    config = f"{tmp}/routerd.toml"
    write(config, daemon_config(tmp, endpoint))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTERD_", "NOTIFY_"))}
    env.update(XDG_RUNTIME_DIR=f"{tmp}/run", XDG_CONFIG_HOME=f"{tmp}/xdg")
    log = log_file(f"{tmp}/daemon.log")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "routerd", "--config", config],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    socket = f"{tmp}/d.sock"
    try:
        with trio.fail_after(START_TIMEOUT):
            await until_online(socket, proc)
        yield socket
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(15):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
        await proc.wait()
        log.close()


async def until_online(socket: str, proc: trio.Process) -> None:
    while True:
        assert proc.returncode is None, "the daemon exited; see daemon.log"
        try:
            async with AsyncClient(socket, timeout=2.0) as client:
                services = await client.call("services.list")
                if any(s["state"] == "online" and s.get("models") for s in services["services"]):
                    return
        except DaemonUnreachable:
            pass
        await trio.sleep(0.1)


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeServer:
    model = FakeModel("qwen2.5-coder-7b-instruct", context_length=8192, family="qwen2")
    return await start_fake(nursery, "llamacpp", models=[model])


def chat_bodies(fake: FakeServer) -> list[Any]:
    return [r.json for r in fake.requests if r.path.endswith("/chat/completions")]


# --- the wire, without a daemon ---------------------------------------------------------------


async def test_lua_framing_matches_the_python_client(nvim: str, short_tmp: str) -> None:
    """Frames written by the Python client's framing, fed to the Lua push parser one byte at a
    time, decode to the same maps; a frame the Lua side encodes decodes in Python."""
    messages = [
        {"type": "result", "id": 1, "result": {}},
        {"type": "event", "id": 7, "event": "chunk", "data": {"text": "ü\n" * 40}},
        {"type": "error", "id": None, "code": "bad_frame", "message": "not msgpack"},
        {"type": "result", "id": 2**52, "result": {"big": "x" * 70000, "list": [1, 2.5, True]}},
    ]
    stream = b"".join(framing.frame(msgspec.msgpack.encode(m)) for m in messages)
    write(f"{short_tmp}/frames.bin", stream)
    body = r"""
local wire = require("routerd.wire")
local f = assert(io.open(OUT.frames, "rb")); local data = f:read("*a"); f:close()
local p = wire.parser()
out.decoded = {}
for i = 1, #data do
  local bodies, err = p:feed(data:sub(i, i))
  assert(err == nil, err)
  for _, b in ipairs(bodies) do
    local m = assert(wire.decode(b))
    m.id = wire.value(m.id) or "nil"
    table.insert(out.decoded, m)
  end
end
local bad = wire.parser(1024)
local _, err = bad:feed(string.char(0, 0, 4, 1) .. "xx")
out.oversize = err
local g = assert(io.open(OUT.encoded, "wb"))
g:write(wire.frame({ type = "request", id = 3, method = "route",
                     params = { query = "hi", max_tokens = 16, temperature = 0.25 } }))
g:write(wire.frame({ type = "request", id = 4, method = "status", params = vim.empty_dict() }))
g:close()
"""
    out = await run_nvim(nvim, short_tmp, body, frames=f"{short_tmp}/frames.bin",
                         encoded=f"{short_tmp}/encoded.bin")  # fmt: skip
    expected = [dict(m, id=m["id"] if m["id"] is not None else "nil") for m in messages]
    expected[2].pop("id")
    decoded = out["decoded"]
    decoded[2].pop("id")
    assert decoded == expected
    assert out["oversize"] == "a frame of 1025 bytes, over the limit"
    parser = framing.FrameParser(1 << 20)
    parser.feed(read_bytes(f"{short_tmp}/encoded.bin"))
    route, status = (msgspec.msgpack.decode(b) for b in parser.frames())
    assert route == {"type": "request", "id": 3, "method": "route",
                     "params": {"query": "hi", "max_tokens": 16, "temperature": 0.25}}  # fmt: skip
    assert isinstance(route["id"], int) and isinstance(route["params"]["max_tokens"], int)
    assert status == {"type": "request", "id": 4, "method": "status", "params": {}}


async def test_unreachable_daemon_is_reported_in_the_buffer(nvim: str, short_tmp: str) -> None:
    body = r"""
vim.g.routerd_socket = OUT.socket
local done = count("RouterdAskDone")
local status = count("RouterdStatus")
vim.cmd("RouterAsk hello?")
local buf = vim.api.nvim_get_current_buf()
out.ok = wait(function() return done.value == 1 end)
out.lines = lines(buf)
out.done = vim.api.nvim_buf_get_var(buf, "routerd_done")
vim.cmd("RouterStatus")
out.status_ok = wait(function() return status.value == 1 end)
vim.cmd("RouterAsk")
"""
    socket = f"{short_tmp}/nobody.sock"
    out = await run_nvim(nvim, short_tmp, body, socket=socket)
    assert out["ok"] and out["status_ok"]
    assert out["lines"][:3] == ["# hello?", "model: (choosing)", ""]
    assert out["lines"][-1].startswith(f"-- error unreachable: cannot reach routerd at {socket}: ")
    assert "ENOENT" in out["lines"][-1]
    assert out["done"]["error"] == "unreachable"
    assert out["messages"][0].startswith("unreachable: cannot reach routerd at")
    assert out["messages"][1].startswith("usage: :RouterAsk")


# --- against the daemon -----------------------------------------------------------------------


async def test_ask_streams_into_a_buffer_and_status_floats(
    nvim: str, short_tmp: str, fake: FakeServer
) -> None:
    fake.script = Script(chunks=["def add(a, b):\n", "    return", " a + b\n"], chunk_delay=0.02)
    write(f"{short_tmp}/calc.py", "x = 1\ny = 2\nz = 3\n")
    body = r"""
vim.g.routerd_socket = OUT.socket
local done = count("RouterdAskDone")
local status = count("RouterdStatus")
vim.cmd("RouterAsk " .. OUT.query)
local first = vim.api.nvim_get_current_buf()
out.ok1 = wait(function() return done.value == 1 end)
out.lines1 = lines(first)
out.done1 = vim.api.nvim_buf_get_var(first, "routerd_done")
out.name1 = vim.api.nvim_buf_get_name(first)
-- A follow-up about two lines of a file continues the conversation.
vim.cmd("filetype on")
vim.cmd("edit " .. OUT.file)
vim.cmd("1,2RouterAsk What do these lines do?")
local second = vim.api.nvim_get_current_buf()
out.ok2 = wait(function() return done.value == 2 end)
out.done2 = vim.api.nvim_buf_get_var(second, "routerd_done")
vim.cmd("RouterStatus")
out.status_ok = wait(function() return status.value == 1 end)
local win = vim.api.nvim_get_current_win()
out.float = vim.api.nvim_win_get_config(win).relative
out.status = lines(vim.api.nvim_win_get_buf(win))
"""
    async with live_daemon(short_tmp, fake.base_url) as socket:
        out = await run_nvim(nvim, short_tmp, body, socket=socket, query=QUERY,
                             file=f"{short_tmp}/calc.py")  # fmt: skip
    assert out["ok1"] and out["ok2"] and out["status_ok"], out
    lines = out["lines1"]
    assert lines[:3] == [f"# {QUERY}", "model: qwen2.5-coder-7b-instruct on llamacpp (coding)", ""]
    assert lines[3:6] == ["def add(a, b):", "    return a + b", ""]
    sid = out["done1"]["session_id"]
    assert len(sid) == 32
    assert lines[6] == ""
    assert lines[7].startswith("-- end: stop, 3 tokens, ") and lines[7].endswith(f"session {sid}")
    assert out["done1"] == {"finish_reason": "stop", "model": "qwen2.5-coder-7b-instruct",
                            "session_id": sid}  # fmt: skip
    assert out["name1"] == "routerd://ask/1"
    assert out["done2"]["session_id"] == sid  # the same conversation
    first, second = chat_bodies(fake)
    assert first["messages"][-1] == {"role": "user", "content": QUERY}
    history = [m["content"] for m in second["messages"] if m["role"] != "system"]
    assert history[:2] == [QUERY, "def add(a, b):\n    return a + b\n"]
    assert history[2] == "What do these lines do?\n\n```python\nx = 1\ny = 2\n```"
    assert out["float"] == "editor"
    status = out["status"]
    assert status[0].startswith("routerd 0.1.0 (pid ") and ", up " in status[0]
    assert status[1] == f"socket: {socket}"
    assert "services: 1/1 online, 1 models" in status
    assert "requests: " in status[-2] and status[-1].startswith("connections: ")


async def test_interleaved_streams_and_cancel(nvim: str, short_tmp: str, fake: FakeServer) -> None:
    """Two answers stream at once on one connection, each into its own buffer: the short
    second one ends while the long first one goes on; then the first is cancelled from its
    buffer, which reaches the model server."""
    fake.push_script(
        Script(chunks=[f"a{i} " for i in range(200)], chunk_delay=0.05),
        Script(chunks=[f"b{i} " for i in range(12)], chunk_delay=0.05),
    )
    body = r"""
vim.g.routerd_socket = OUT.socket
require("routerd").setup({ session = false })
local done = count("RouterdAskDone")
vim.cmd("RouterAsk first")
local a = vim.api.nvim_get_current_buf()
-- The second starts once the first streams, so the fake gives each its own script.
out.a_started = wait(function() return lines(a)[4]:find("a0 ", 1, true) ~= nil end)
vim.cmd("RouterAsk second")
local b = vim.api.nvim_get_current_buf()
out.b_ok = wait(function() return done.value == 1 end)
out.a_when_b_ended = lines(a)
vim.cmd("buffer " .. a)
vim.cmd("RouterCancel")
out.a_ok = wait(function() return done.value == 2 end)
out.a = lines(a)
out.b = lines(b)
out.a_done = vim.api.nvim_buf_get_var(a, "routerd_done")
vim.cmd("RouterCancel")
"""
    async with live_daemon(short_tmp, fake.base_url) as socket:
        out = await run_nvim(nvim, short_tmp, body, socket=socket)
        await fake.wait_until(lambda: fake.disconnects == 1, timeout=10)
    assert out["a_started"] and out["b_ok"] and out["a_ok"], out
    assert out["b"][3] == "".join(f"b{i} " for i in range(12))
    assert out["b"][-1].startswith("-- end: stop, 12 tokens")
    # When the second ended, the first was under way: their frames interleaved.
    during = out["a_when_b_ended"]
    assert during[3].startswith("a0 a1 ") and len(during) == 4
    assert out["a"][3].startswith(during[3]) and len(out["a"][3]) < len("a0 ") * 200
    assert out["a"][-1] == "-- error cancelled: request cancelled by the client"
    assert out["a_done"]["error"] == "cancelled"
    assert out["messages"] == ["no routerd request in flight"]


async def test_a_daemon_error_shows_its_explanation(
    nvim: str, short_tmp: str, fake: FakeServer
) -> None:
    body = r"""
vim.g.routerd_socket = OUT.socket
local done = count("RouterdAskDone")
local buf = require("routerd").ask("hi", { model = "no-such-model:70b", session = false })
out.ok = wait(function() return done.value == 1 end)
out.lines = lines(buf)
"""
    async with live_daemon(short_tmp, fake.base_url) as socket:
        out = await run_nvim(nvim, short_tmp, body, socket=socket)
    assert out["ok"]
    error_at = next(i for i, line in enumerate(out["lines"]) if line.startswith("-- error "))
    assert out["lines"][error_at].startswith("-- error not_found: ")
    assert "no-such-model:70b" in out["lines"][error_at]
    assert out["lines"][error_at + 1].startswith("--   ")  # the daemon's explain lines
