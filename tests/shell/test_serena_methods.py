"""``serena.*`` through the daemon's socket, and routerctl's ``serena`` commands, with the
fake Serena behind the feature (the client is root here: the uid checks are in
test_serena_pool.py)."""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from fakes.serena import FakeLauncher, FakeSerena

from routerd.core.config import Config, parse_config
from routerd.shell import serena
from routerd.shell.app import App
from routerd_client.cli import main as routerctl

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "serena_project"


@pytest.fixture
def fake() -> FakeSerena:
    return FakeSerena()


def make_config(short_tmp: str, **settings: Any) -> Config:
    doc = {"daemon": {"socket": f"{short_tmp}/d.sock"},
           "serena": {"workspaces": [f"{short_tmp}/proj"], **settings}}
    return parse_config(json.dumps(doc), fmt="yaml", env={})


Start = Callable[..., Any]


@pytest.fixture
async def start(nursery: trio.Nursery, short_tmp: str, fake: FakeSerena) -> AsyncIterator[Start]:
    shutil.copytree(SAMPLE, f"{short_tmp}/proj")
    apps: list[App] = []

    async def go(audit: Any = None, **settings: Any) -> App:
        app = App(make_config(short_tmp, **settings), env={})
        if audit is not None:
            app.audit = audit
        serena.install(app, launcher=FakeLauncher(fake), home=Path(short_tmp) / "home")
        await nursery.start(functools.partial(app.run, handle_signals=False))
        apps.append(app)
        pool = serena.get_serena(app)
        assert pool is not None
        with trio.fail_after(10):
            while not any(s.ready for s in pool.supervisors()):  # noqa: ASYNC110
                await trio.sleep(0.01)
        return app

    yield go
    for app in apps:
        app.request_shutdown()


async def test_status_tools_and_calls(start: Start, connect: Any, short_tmp: str,
                                      fake: FakeSerena) -> None:
    app = await start()
    wire = await connect(app)
    proj = f"{short_tmp}/proj"
    st = (await wire.call(1, "serena.status"))["result"]
    assert st["enabled"] and st["running"] == 1 and st["max_running"] == 4
    (ws,) = st["workspaces"]
    assert ws["workspace"] == proj and ws["state"] == "ready" and ws["configured"]
    assert ws["restarts"] == 0 and ws["tools"] == 8
    comp = (await wire.call(2, "status"))["result"]["components"]["serena"]
    assert comp["running"] == 1 and comp["workspaces"][0]["state"] == "ready"

    tools = (await wire.call(3, "serena.tools", {"workspace": proj}))["result"]
    names = [t["name"] for t in tools["tools"]]
    assert "find_symbol" in names and tools["writable"] is False
    assert "execute_shell_command" not in names and "replace_symbol_body" not in names
    schema = next(t for t in tools["tools"] if t["name"] == "find_symbol")["input_schema"]
    assert "name_path_pattern" in schema["properties"]

    res = (await wire.call(4, "serena.call", {
        "tool": "find_symbol", "arguments": {"name_path_pattern": "Circle"},
        "file": f"{proj}/geometry/shapes.py"}))["result"]
    assert res["workspace"] == proj and not res["is_error"]
    assert res["data"][0]["name_path"] == "Circle" and res["elapsed_ms"] >= 0

    err = await wire.call(5, "serena.call", {"tool": "execute_shell_command",
                                             "arguments": {"command": "id"},
                                             "workspace": proj})
    assert err["type"] == "error" and err["code"] == "forbidden"
    assert all(c != "execute_shell_command" for c, _ in fake.calls)

    bad = await wire.call(6, "serena.call", {"tool": "find_symbol", "workspace": proj,
                                             "timeout": -1})
    assert bad["code"] == "bad_request"
    edit = {"kind": "replace_symbol_body", "file": "geometry/shapes.py",
            "symbol": "Circle/area", "body": "def area(self): return 0"}
    no = await wire.call(7, "serena.apply_edit", {"workspace": proj, "edit": edit})
    assert no["code"] == "forbidden" and "writable" in no["message"]


async def test_apply_edit_in_a_writable_workspace(start: Start, connect: Any, short_tmp: str,
                                                  fake: FakeSerena) -> None:
    app = await start(workspaces=[{"path": f"{short_tmp}/proj", "writable": True}])
    wire = await connect(app)
    edit = {"kind": "replace_symbol_body", "file": f"{short_tmp}/proj/geometry/shapes.py",
            "symbol": "Circle/area", "body": "def area(self): return 0"}
    res = await wire.call(1, "serena.apply_edit", {"edit": edit})
    assert res["type"] == "result" and res["result"]["text"] == "OK"
    assert fake.calls[-1] == ("replace_symbol_body", {
        "name_path": "Circle/area", "relative_path": "geometry/shapes.py",
        "body": "def area(self): return 0"})
    bad = await wire.call(2, "serena.apply_edit", {"edit": {**edit, "file": "/etc/passwd"}})
    assert bad["code"] == "forbidden"
    incomplete = await wire.call(3, "serena.apply_edit", {"edit": {**edit, "body": None}})
    assert incomplete["code"] == "bad_request" and "body" in incomplete["message"]
    tools = (await wire.call(4, "serena.tools", {}))["result"]
    assert tools["writable"] is True
    assert any(t["name"] == "replace_symbol_body" and t["writes"] for t in tools["tools"])


class SecurityEvents:
    """An ``AuditSink`` that keeps the security events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def record_nowait(self, event: Any) -> None:
        pass

    async def record(self, event: Any) -> None:
        pass

    def security(self, kind: str, reason: str, **details: Any) -> None:
        self.events.append((kind, reason, details))


async def test_every_start_records_that_usage_reporting_is_off(
    start: Start, connect: Any, short_tmp: str, fake: FakeSerena
) -> None:
    audit = SecurityEvents()
    app = await start(audit=audit)
    proj = str(await trio.Path(f"{short_tmp}/proj").resolve())
    assert fake.specs[0].env["SERENA_USAGE_REPORTING"] == "false"
    assert audit.events == [(
        "serena_usage_reporting_disabled",
        f"Serena for {proj} starts with SERENA_USAGE_REPORTING=false",
        {"workspace": proj},
    )]  # fmt: skip
    wire = await connect(app)
    await wire.call(1, "serena.restart", {"workspace": proj})
    pool = serena.get_serena(app)
    assert pool is not None
    with trio.fail_after(10):
        while fake.launches < 2 or not pool.supervisors()[0].ready:  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert [kind for kind, _, _ in audit.events] == ["serena_usage_reporting_disabled"] * 2


async def test_restart_and_disabled(start: Start, connect: Any, short_tmp: str,
                                    fake: FakeSerena) -> None:
    app = await start()
    wire = await connect(app)
    res = (await wire.call(1, "serena.restart", {"workspace": f"{short_tmp}/proj"}))["result"]
    assert res == {"restarted": [f"{short_tmp}/proj"]}
    pool = serena.get_serena(app)
    assert pool is not None
    with trio.fail_after(10):
        while fake.launches < 2 or not pool.supervisors()[0].ready:  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert pool.status()["workspaces"][0]["restarts"] == 1
    everything = (await wire.call(2, "serena.restart", {}))["result"]  # root may
    assert everything == {"restarted": [f"{short_tmp}/proj"]}
    pool.apply_config(msgspec.structs.replace(pool.config, enabled=False))
    off = await wire.call(3, "serena.call", {"tool": "find_symbol", "workspace":
                                             f"{short_tmp}/proj"})
    assert off["code"] == "unavailable" and "disabled" in off["message"]


async def test_routerctl_serena_commands(start: Start, short_tmp: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    app = await start()
    sock = app.socket_path
    assert sock is not None
    proj = f"{short_tmp}/proj"

    async def ctl(*argv: str) -> tuple[int, str, str]:
        code = await trio.to_thread.run_sync(routerctl, ["--socket", sock, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await ctl("serena", "status")
    assert code == 0 and "1 running (at most 4)" in out and proj in out
    assert "state       ready" in out and "restarts    0" in out
    code, out, _ = await ctl("serena", "status", "--json")
    assert code == 0 and json.loads(out)["workspaces"][0]["state"] == "ready"
    code, out, _ = await ctl("serena", "tools", "-w", proj)
    assert code == 0 and "find_symbol" in out and "(read-only)" in out
    code, out, _ = await ctl("serena", "call", "find_symbol", '{"name_path_pattern": "Circle"}',
                             "-w", proj)
    assert code == 0 and json.loads(out)[0]["name_path"] == "Circle"
    code, out, _ = await ctl("serena", "call", "find_symbol",
                             '{"name_path_pattern": "X", "relative_path": "nope"}', "-w", proj)
    assert code == 1 and "not found" in out  # Serena's tool error: its text, exit 1
    code, _, err = await ctl("serena", "call", "execute_shell_command", '{"command": "id"}',
                             "-w", proj)
    assert code == 1 and "forbidden" in err
    code, _, err = await ctl("serena", "call", "find_symbol", "[1]", "-w", proj)
    assert code == 2 and "JSON object" in err
    code, out, _ = await ctl("serena", "restart", "-w", proj)
    assert code == 0 and out.strip() == f"restarting Serena for {proj}"
    code, _, err = await ctl("serena", "restart", "--all", "-w", proj)
    assert code == 2


def test_the_feature_is_installed_by_default() -> None:
    from routerd.shell.features import FEATURES

    assert serena.install in FEATURES
    assert os.path.basename(serena.__file__) == "serena.py"
