"""routerd-mcp as coding agents meet it: the ``mcp`` SDK's own stdio client starts
``python -m routerd.mcp_bridge`` as a subprocess, and the bridge talks to a live daemon (in
this process, on a real socket) in front of the fake model servers and a fake Serena.

Nothing here is routerd's code on the client side: the MCP client is the SDK's.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import pytest
import trio
from fakes import Script
from fakes.serena import FakeSerena
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp_types import CallToolResult, Implementation, TextContent

AGENT = Implementation(name="test-agent", version="1.2.3")
#: Spawning the bridge (a Python start with the SDK imported) and a call through it.
CALL_TIMEOUT = 30.0


def log_file(path: str) -> TextIO:
    return open(path, "a")


@asynccontextmanager
async def bridge(
    socket: str, workspace: str, log_dir: str, *args: str
) -> AsyncIterator[ClientSession]:
    """An initialized MCP session with a ``routerd-mcp`` subprocess (its log: mcp.log)."""
    argv = ["-m", "routerd.mcp_bridge", "--socket", socket, "--workspace", workspace, "-v"]
    params = StdioServerParameters(command=sys.executable, args=[*argv, *args], cwd=workspace)
    with log_file(os.path.join(log_dir, "mcp.log")) as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, client_info=AGENT) as session,
        ):
            with trio.fail_after(CALL_TIMEOUT):
                await session.initialize()
            yield session


async def call(client: ClientSession, name: str, /, **arguments: Any) -> CallToolResult:
    with trio.fail_after(CALL_TIMEOUT):
        result = await client.call_tool(name, arguments)
    assert isinstance(result, CallToolResult)
    return result


def texts(result: CallToolResult) -> list[str]:
    return [c.text for c in result.content if isinstance(c, TextContent)]


def error_of(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, texts(result)
    assert isinstance(result.structured_content, dict)
    error: dict[str, Any] = result.structured_content["error"]
    assert texts(result)[0].startswith(f"routerd error {error['code']}: ")
    return error


async def test_tools_are_listed_with_schemas_and_answer(
    start_routing: Any, short_tmp: str, rk: Any
) -> None:
    serena = FakeSerena()
    setup = await start_routing(serena_fake=serena)
    proj = f"{short_tmp}/proj"
    async with bridge(setup.socket, proj, short_tmp) as session:
        with trio.fail_after(CALL_TIMEOUT):
            listed = await session.list_tools()
        tools = {t.name: t for t in listed.tools}
        for name in ("ask", "classify", "status", "models", "serena_tools", "serena_call"):
            assert name in tools
        ask = tools["ask"].input_schema
        assert ask["type"] == "object" and ask["required"] == ["query"]
        assert set(ask["properties"]["category"]["enum"]) == set(rk.CATEGORIES)
        assert ask["additionalProperties"] is False
        # Serena's own tools, with Serena's schemas, for the bridge's workspace.
        find = tools["serena_find_symbol"]
        assert "name_path_pattern" in find.input_schema["properties"]
        assert find.annotations is not None and find.annotations.read_only_hint is True
        assert proj in (find.description or "")

        status = await call(session, "status")
        assert not status.is_error
        assert isinstance(status.structured_content, dict)
        assert status.structured_content["pid"] == os.getpid()  # this very daemon
        assert status.structured_content["components"]["services"]["online"] == 2
        assert json.loads(texts(status)[0]) == status.structured_content

        classified = await call(session, "classify", text="Fix the TypeError in this function")
        assert classified.structured_content is not None
        assert classified.structured_content["category"] == "coding"

        models = await call(session, "models")
        assert models.structured_content is not None
        ids = {(m["service"], m["id"]) for m in models.structured_content["models"]}
        assert ids == {("ollama", "qwen2.5-coder:7b"), ("llamacpp", "qwen2.5-coder-7b-instruct")}
        one = await call(session, "models", service="llamacpp", available=None)
        assert one.structured_content is not None
        assert [m["id"] for m in one.structured_content["models"]] == ["qwen2.5-coder-7b-instruct"]

        found = await call(session, "serena_find_symbol", name_path_pattern="Circle")
        assert not found.is_error, texts(found)
        assert json.loads(texts(found)[0])[0]["name_path"] == "Circle"
        assert serena.calls[-1] == ("find_symbol", {"name_path_pattern": "Circle",
                                                    "relative_path": ""})  # fmt: skip
        # The generic tool, and Serena's own failure (the tool ran, the file is not there).
        missing = await call(session, "serena_call", tool="find_symbol",
                             arguments={"name_path_pattern": "x", "relative_path": "nope.py"})  # fmt: skip
        assert missing.is_error and "nope.py" in texts(missing)[0]
        # An ask about a file (relative to the bridge's workspace) gets Serena's context.
        about = await call(session, "ask", query="Rename area to surface everywhere.",
                           file="geometry/shapes.py", line=11, character=8)  # fmt: skip
        assert about.structured_content is not None, texts(about)
        context = about.structured_content["serena"]
        assert context["used"] is True and context["workspace"] == proj
        sent = setup.first.last("/api/chat").json["messages"][-1]["content"]
        assert sent.startswith("Rename area to surface everywhere.\n\n") and "area" in sent[40:]
        listing = await call(session, "serena_tools")
        assert listing.structured_content is not None
        assert listing.structured_content["workspace"] == proj
        assert "find_symbol" in {t["name"] for t in listing.structured_content["tools"]}


async def test_ask_streams_progress_and_continues_its_session(
    start_routing: Any, short_tmp: str, rk: Any
) -> None:
    setup = await start_routing(with_sessions=True)
    setup.first.script = Script(chunks=["def add", "(a, b):", " return a + b"])
    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    async with bridge(setup.socket, short_tmp, short_tmp) as session:
        with trio.fail_after(CALL_TIMEOUT):
            first = await session.call_tool("ask", {"query": rk.QUERY},
                                            progress_callback=on_progress)  # fmt: skip
        assert isinstance(first, CallToolResult) and not first.is_error, texts(first)
        answer, footer = texts(first)
        assert answer == "def add(a, b): return a + b"
        record = first.structured_content
        assert record is not None
        assert (record["model"], record["service"]) == ("qwen2.5-coder:7b", "ollama")
        assert record["finish_reason"] == "stop" and record["category"] == "coding"
        sid = record["session_id"]
        assert isinstance(sid, str) and len(sid) == 32
        assert footer == f"[answered by qwen2.5-coder:7b on ollama, category coding, session {sid}]"
        # Progress: the model chosen, then each chunk as it came.
        assert progress[0][1] == "asking qwen2.5-coder:7b on ollama (coding)"
        assert [m for _, m in progress[1:]] == ["def add", "(a, b):", " return a + b"]

        second = await call(session, "ask", query="Now make it add three numbers.")
        assert second.structured_content is not None
        assert second.structured_content["session_id"] == sid
        # The model saw the first turn: the session's history went with the second ask.
        sent = setup.first.last("/api/chat").json["messages"]
        assert [m["content"] for m in sent if m["role"] != "system"] == [
            rk.QUERY, "def add(a, b): return a + b", "Now make it add three numbers."
        ]  # fmt: skip
        # "none": a question on its own; "new": a fresh session that later asks continue.
        alone = await call(session, "ask", query="What is a closure?", session="none")
        assert alone.structured_content is not None
        assert alone.structured_content["session_id"] is None
        fresh = await call(session, "ask", query="Explain decorators.", session="new")
        assert fresh.structured_content is not None
        new_sid = fresh.structured_content["session_id"]
        assert new_sid not in (None, sid)
        again = await call(session, "ask", query="Show an example.")
        assert again.structured_content is not None
        assert again.structured_content["session_id"] == new_sid

        # The daemon knew the agent by the name the MCP client gave.
        listed = await call(session, "status")
        assert not listed.is_error
    agents = {e.agent for e in setup.audit.events}
    assert agents == {"test-agent"}


async def test_daemon_errors_and_bad_arguments_are_tool_errors(
    start_routing: Any, short_tmp: str, rk: Any
) -> None:
    setup = await start_routing()
    async with bridge(setup.socket, short_tmp, short_tmp, "--session", "none") as session:
        missing = await call(session, "ask", query=rk.QUERY, model="no-such-model:70b")
        error = error_of(missing)
        assert error["code"] == "not_found"
        assert "no-such-model:70b" in error["message"]
        assert error["data"]["explain"]  # why: what is available instead
        assert len(texts(missing)[0].splitlines()) > 1

        bad = error_of(await call(session, "ask", query=rk.QUERY, categroy="coding"))
        assert bad["code"] == "bad_arguments" and "categroy" in bad["message"]
        bad = error_of(await call(session, "classify", text="x", min_confidence=3))
        assert bad["code"] == "bad_arguments" and "min_confidence" in bad["message"]
        # This daemon runs without Serena: the daemon's own answer, passed on.
        off = error_of(await call(session, "serena_call", tool="find_symbol"))
        assert off["code"] == "unknown_method" and "serena.call" in off["message"]

        with pytest.raises(MCPError, match="unknown tool 'nope'"):
            await call(session, "nope")
        # Still serving after all that.
        assert not (await call(session, "status")).is_error


async def test_a_cancelled_ask_cancels_the_model_request(
    start_routing: Any, short_tmp: str, rk: Any
) -> None:
    setup = await start_routing()
    setup.first.script = Script(chunks=["a"] * 50, chunk_delay=0.1)
    async with bridge(setup.socket, short_tmp, short_tmp) as session:
        async with trio.open_nursery() as nursery:

            async def ask() -> None:
                await session.call_tool("ask", {"query": rk.QUERY})
                pytest.fail("the slow answer finished")

            nursery.start_soon(ask)
            await setup.first.wait_until(lambda: setup.first.active == 1, timeout=10)
            nursery.cancel_scope.cancel()  # the agent gives up: MCP's notifications/cancelled
        await setup.first.wait_until(lambda: setup.first.disconnects == 1, timeout=10)
        assert not (await call(session, "status")).is_error


async def test_unreachable_daemon_is_a_tool_error_until_it_is_up(
    start_routing: Any, short_tmp: str
) -> None:
    socket = f"{short_tmp}/d.sock"  # where start_routing will put it
    async with bridge(socket, short_tmp, short_tmp, "--serena-wait", "0.5") as session:
        with trio.fail_after(CALL_TIMEOUT):
            listed = await session.list_tools()
        assert "ask" in {t.name for t in listed.tools}  # listing needs no daemon
        down = error_of(await call(session, "status"))
        assert down["code"] == "unreachable"
        assert socket in down["message"] and "Start routerd" in down["message"]
        await start_routing()
        up = await call(session, "status")
        assert not up.is_error and up.structured_content is not None
        assert up.structured_content["socket"] == socket


def test_console_script_help() -> None:
    """``--help`` names every option an agent configuration may need."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "routerd.mcp_bridge", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
        cwd=Path(__file__).parent,
    ).stdout  # fmt: skip
    for option in ("--socket", "--workspace", "--session", "--no-serena", "--serena-wait"):
        assert option in out
