"""sessions.* through an in-process daemon, and routerctl's session commands."""

from __future__ import annotations

import functools
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from fakes.pipes import PipeKernel

from routerd.core.config import DaemonConfig, default_config
from routerd.core.context import Message
from routerd.core.errors import Forbidden
from routerd.shell import sessions
from routerd.shell.app import App
from routerd.shell.dispatch import ConnectionInfo
from routerd.shell.methods import build_registry
from routerd.shell.osdeps import SELF_UID
from routerd.shell.routing.session import NEW_SESSION, open_turn_session
from routerd.shell.server import Server
from routerd.shell.sessions import SessionManager, sessions_of
from routerd.shell.winpipe import PipeListener
from routerd_client import framing
from routerd_client.cli import main as routerctl_main
from routerd_client.trio_pipe import open_pipe_stream

ME = os.getuid()
NOBODY = 65534


@pytest.fixture
async def app(nursery: trio.Nursery, short_tmp: str) -> App:
    config = msgspec.structs.replace(
        default_config(), daemon=DaemonConfig(socket=f"{short_tmp}/d.sock",
                                              state_dir=f"{short_tmp}/state"),
    )
    app = App(config, env={}, registry=build_registry())
    sessions.install(app)
    await nursery.start(functools.partial(app.run, handle_signals=False))
    return app


async def converse(mgr: SessionManager, uid: int, *texts: str) -> str:
    s = mgr.open(None, uid=uid, agent="aider")
    for text in texts:
        await mgr.commit_turn(s, request_messages=[Message("user", text)],
                              answer=Message("assistant", f"re: {text}"), model="qwen2.5-coder:7b",
                              service="ollama", usage=None, partial=False)
    return s.id


async def test_list_show_export_reset(app: App, connect: Any) -> None:
    mgr = sessions_of(app)
    sid = await converse(mgr, ME, "one", "two", "three")
    other = await converse(mgr, NOBODY, "not yours")
    wire = await connect(app)

    listed = (await wire.call(1, "sessions.list"))["result"]["sessions"]
    assert [s["id"] for s in listed] == [sid]  # own sessions only, even for root
    assert listed[0]["turns"] == 3 and listed[0]["messages"] == 6
    assert listed[0]["owner_uid"] == ME and listed[0]["active_model"] == "qwen2.5-coder:7b"
    everyone = (await wire.call(2, "sessions.list", {"all": True}))["result"]["sessions"]
    assert {s["id"] for s in everyone} == {sid, other}  # ME is root or the daemon's user

    shown = (await wire.call(3, "sessions.show", {"id": sid, "messages": 2}))["result"]
    assert [m["content"] for m in shown["messages"]] == ["three", "re: three"]
    assert shown["messages_omitted"] == 4 and len(shown["turns"]) == 3
    assert "aider" in shown["system_prompt"]

    exported = (await wire.call(4, "sessions.export", {"id": sid.upper()}))["result"]
    assert exported["format"] == "routerd-session" and exported["version"] == 1
    assert [m["content"] for m in exported["messages"]][:2] == ["one", "re: one"]

    status = (await wire.call(5, "status"))["result"]["components"]["sessions"]
    assert status["state"] == "ready" and status["sessions"] == 2
    assert status["path"].endswith("/state/sessions.db")

    reset = (await wire.call(6, "sessions.reset", {"id": sid}))["result"]
    assert reset == {"id": sid, "removed_messages": 6}
    gone = await wire.call(7, "sessions.show", {"id": sid})
    assert (gone["type"], gone["code"]) == ("error", "not_found")
    bad = await wire.call(8, "sessions.show", {"id": "nope"})
    assert (bad["type"], bad["code"]) == ("error", "bad_request")
    missing = await wire.call(9, "sessions.reset", {})
    assert (missing["type"], missing["code"]) == ("error", "bad_request")


async def test_routerctl_session_commands(
    app: App, short_tmp: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = await converse(sessions_of(app), ME, "fix src/app.py", "and the tests")
    assert app.socket_path is not None

    async def routerctl(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = await trio.to_thread.run_sync(routerctl_main,
                                             ["--socket", app.socket_path, *argv])
        return code, capsys.readouterr().out

    code, out = await routerctl("sessions")
    assert code == 0 and sid in out and "qwen2.5-coder:7b" in out and "aider" in out
    code, out = await routerctl("sessions", "--json")
    assert code == 0 and json.loads(out)["sessions"][0]["id"] == sid
    code, out = await routerctl("session", "show", sid, "-n", "1")
    assert code == 0 and "[assistant]" in out and "re: and the tests" in out
    assert "3 earlier messages" in out
    code, out = await routerctl("session", "show", sid, "--json")
    assert code == 0 and json.loads(out)["info"]["id"] == sid
    code, out = await routerctl("session", "export", sid)
    assert code == 0 and json.loads(out)["messages"][0]["content"] == "fix src/app.py"
    target = Path(short_tmp) / "export.json"
    code, out = await routerctl("session", "export", sid, "-o", str(target))
    assert code == 0 and (target.stat().st_mode & 0o777) == 0o600
    assert json.loads(target.read_text())["session"]["id"] == sid
    code, _ = await routerctl("session", "export", sid, "-o", str(target))
    assert code == 2  # never overwrites
    code, out = await routerctl("session", "reset", sid, "--json")
    assert code == 0 and json.loads(out) == {"id": sid, "removed_messages": 4}
    code, out = await routerctl("session", "show", sid, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "not_found"
    code, out = await routerctl("session", "show", "xyz")
    assert code == 1
    code, out = await routerctl("sessions")
    assert code == 0 and out.strip() == "no sessions"


# --- another user on the same socket ---------------------------------------------------------


def _call_as(uid: int, path: str, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Connect as ``uid`` in a forked child, send ``requests``, return one reply to each."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(path)
            data = b""
            for req in requests:
                s.sendall(framing.frame(msgspec.msgpack.encode(req)))
                while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                size = struct.unpack(">I", data[:4])[0]
                os.write(w, data[: 4 + size])
                data = data[4 + size :]
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    parser = framing.FrameParser(1 << 24)
    parser.feed(out)
    return [msgspec.msgpack.decode(f) for f in parser.frames()]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
async def test_another_user_cannot_read_or_reset_a_session(app: App) -> None:
    mgr = sessions_of(app)
    mine = await converse(mgr, ME, "private")
    theirs = await converse(mgr, NOBODY, "their own")
    assert app.socket_path is not None
    os.chmod(os.path.dirname(app.socket_path), 0o755)
    os.chmod(app.socket_path, 0o666)

    def req(rid: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"type": "request", "id": rid, "method": method, "params": params or {}}

    replies = await trio.to_thread.run_sync(_call_as, NOBODY, app.socket_path, [
        req(1, "sessions.list"),
        req(2, "sessions.list", {"all": True}),
        req(3, "sessions.show", {"id": mine}),
        req(4, "sessions.export", {"id": mine}),
        req(5, "sessions.reset", {"id": mine}),
        req(6, "sessions.show", {"id": theirs}),
    ])  # fmt: skip
    by_id = {r["id"]: r for r in replies}
    assert [s["id"] for s in by_id[1]["result"]["sessions"]] == [theirs]
    for rid in (2, 3, 4, 5):
        assert by_id[rid]["code"] == "forbidden", by_id[rid]
    assert by_id[6]["result"]["info"]["id"] == theirs
    assert "private" in [m.content for m in mgr.readable(mine, ME).messages]


# --- Windows: a named-pipe peer is the daemon's own user --------------------------------------


async def test_a_pipe_peer_owns_its_sessions_and_operates(
    nursery: trio.Nursery, short_tmp: str, kit: Any
) -> None:
    # On Windows the daemon's uid is the stand-in SELF_UID (osdeps.effective_uid), which is
    # also what every pipe peer gets: daemon_uid plays that here.
    config = msgspec.structs.replace(
        default_config(), daemon=DaemonConfig(socket=f"{short_tmp}/d.sock",
                                              state_dir=f"{short_tmp}/state"),
    )
    app = App(config, env={}, registry=build_registry())
    sessions.install(app, daemon_uid=SELF_UID)
    await nursery.start(functools.partial(app.run, handle_signals=False))
    kernel = PipeKernel(pid=4321)
    server = Server(app, PipeListener(r"\\.\pipe\routerd-sessions", kernel), app.registry)
    await nursery.start(server.run)
    wire = kit.Wire(await open_pipe_stream(r"\\.\pipe\routerd-sessions", ops=kernel))
    assert (await wire.call(1, "ping"))["type"] == "result"
    (conn,) = server.connections
    assert conn.info.peer_uid == SELF_UID

    # A routed request opens a new session for it, and continues it.
    turn, context, info = open_turn_session(app, conn.info, NEW_SESSION,
                                            [Message("user", "hello")], replace=False,
                                            agent="aider")
    assert turn is not None and info["new"] and context[-1].content == "hello"
    await turn.commit("hi", model="qwen2.5-coder:7b", service="ollama", usage=None,
                      partial=False)
    again, _, info = open_turn_session(app, conn.info, turn.id, [Message("user", "more")],
                                       replace=False, agent="aider")
    assert again is not None and not info["new"] and info["history"] == 2
    other = await converse(sessions_of(app), NOBODY, "someone else's")

    listed = (await wire.call(2, "sessions.list"))["result"]["sessions"]
    assert [(s["id"], s["owner_uid"]) for s in listed] == [(turn.id, SELF_UID)]
    everyone = (await wire.call(3, "sessions.list", {"all": True}))["result"]["sessions"]
    assert {s["id"] for s in everyone} == {turn.id, other}  # an operator
    shown = (await wire.call(4, "sessions.show", {"id": turn.id}))["result"]
    assert [m["content"] for m in shown["messages"]] == ["hello", "hi"]
    reset = (await wire.call(5, "sessions.reset", {"id": turn.id}))["result"]
    assert reset == {"id": turn.id, "removed_messages": 2}

    # Unchanged on POSIX: a peer whose uid is unknown (no SO_PEERCRED) has no sessions.
    unknown = ConnectionInfo(id=99, opened_at=0.0, peer_uid=None)
    with pytest.raises(Forbidden, match="cannot tell"):
        open_turn_session(app, unknown, NEW_SESSION, [Message("user", "x")], replace=False,
                          agent=None)
    assert sessions_of(app).visible(None) == []
