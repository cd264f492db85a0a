"""The pool: who may use which workspace, files written for Serena, LRU and idle stops,
reloads, and Serena-first context, against the fake Serena (real time: the pool does file work
in threads, which trio's autojump clock would race)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from fakes.serena import FakeLauncher, FakeSerena

from routerd.core.config import parse_config
from routerd.core.errors import BadRequest, Busy, Forbidden, NotFound
from routerd.core.serena import SerenaState
from routerd.core.serena_access import WorkspaceSpec
from routerd.core.serena_context import ContextResult, ContextUnavailable
from routerd.shell.osdeps import SELF_UID
from routerd.shell.serena_pool import Budget, Client, Resolved, SerenaPool

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "serena_project"
ME = Client(uid=os.getuid(), gid=os.getgid())
NOBODY = Client(uid=65534, gid=65534, groups=(65534,))


@pytest.fixture
def tree() -> Iterator[Path]:
    """Two projects (a configured one and a git checkout) and a private directory, in a
    directory every uid may pass (pytest's own temporary directories are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="serena-pool-", dir="/tmp"))
    try:
        yield _make_tree(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _make_tree(tmp_path: Path) -> Path:
    for name in ("conf", "other"):
        shutil.copytree(SAMPLE, tmp_path / name)
    (tmp_path / "other" / ".git").mkdir()
    (tmp_path / "other" / "geometry" / "deep").mkdir()
    private = tmp_path / "private"
    shutil.copytree(SAMPLE, private)
    private.chmod(0o700)
    secret = tmp_path / "conf" / "geometry" / "secret.py"
    secret.write_text("KEY = 1\n")
    secret.chmod(0o600)
    tmp_path.chmod(0o755)
    return tmp_path


def config(tree: Path, **settings: Any) -> Any:
    serena = {"workspaces": [f"{tree}/conf"], "max_running": 2, "call_timeout": 5,
              "start_timeout": 10, **settings}
    return parse_config(json.dumps({"serena": serena}), fmt="yaml", env={}).serena


@pytest.fixture
def fake() -> FakeSerena:
    return FakeSerena()


async def start_pool(nursery: trio.Nursery, tree: Path, fake: FakeSerena,
                     **settings: Any) -> SerenaPool:
    pool = SerenaPool(config(tree, **settings), home=tree / "home", env={"PATH": "/usr/bin"},
                      launcher=FakeLauncher(fake), version="test")
    await nursery.start(pool.run)
    return pool


@pytest.fixture
async def pool(nursery: trio.Nursery, tree: Path, fake: FakeSerena) -> AsyncIterator[SerenaPool]:
    p = await start_pool(nursery, tree, fake)
    yield p
    await p.stop_all()


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``predicate`` (the pool's state has no event for every case a test waits for)."""
    with trio.fail_after(within):
        for _ in itertools.count():
            if predicate():
                return
            await trio.sleep(0.01)


async def until_ready(pool: SerenaPool, path: Path) -> None:
    def ready() -> bool:
        sup = pool.get(str(path))
        return sup is not None and sup.ready

    await eventually(ready)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_configured_workspaces_start_with_the_pool(pool: SerenaPool, tree: Path,
                                                         fake: FakeSerena) -> None:
    await until_ready(pool, tree / "conf")
    spec = fake.specs[0]
    assert spec.cwd == str(tree / "conf")
    assert spec.argv[:4] == ["serena", "start-mcp-server", "--project", str(tree / "conf")]
    assert spec.env["SERENA_USAGE_REPORTING"] == "false"
    home = Path(spec.env["SERENA_HOME"])
    assert home.is_relative_to(tree / "home") and mode_of(home) == 0o700
    cfg = read_json(home / "serena_config.yml")
    assert cfg["projects"] == [] and "execute_shell_command" in cfg["excluded_tools"]
    assert "find_symbol" not in cfg["excluded_tools"]
    data = Path(cfg["project_serena_folder_location"])
    proj = read_json(data / "project.yml")
    assert proj["language_servers"] == ["python_jedi"] and proj["read_only"] is True
    assert ".serena" not in os.listdir(tree / "conf")  # nothing written into the project
    st = pool.status()
    assert st["running"] == 1 and st["workspaces"][0]["state"] == "ready"


async def test_resolve_finds_the_workspace_and_checks_access(pool: SerenaPool,
                                                             tree: Path) -> None:
    r = await pool.resolve(ME, workspace=str(tree / "conf" / "geometry"), file=None)
    assert r.spec.path == str(tree / "conf") and r.spec.configured and r.file is None
    r = await pool.resolve(ME, workspace=None, file=str(tree / "conf/geometry/shapes.py"))
    assert (r.spec.path, r.file) == (str(tree / "conf"), "geometry/shapes.py")
    r = await pool.resolve(ME, workspace=str(tree / "other/geometry/deep"), file=None)
    assert r.spec.path == str(tree / "other") and not r.spec.configured  # up to .git
    r = await pool.resolve(ME, workspace=None, file="geometry/shapes.py")  # the only one
    assert r.spec.path == str(tree / "conf")
    with pytest.raises(Forbidden, match="not a file inside"):
        await pool.resolve(ME, workspace=str(tree / "conf"), file="../other/geometry/shapes.py")
    with pytest.raises(NotFound):
        await pool.resolve(ME, workspace=str(tree / "conf"), file="geometry/missing.py")
    with pytest.raises(Forbidden, match="not a project"):
        await pool.resolve(ME, workspace="/", file=None)
    with pytest.raises(BadRequest, match="absolute"):
        await pool.resolve(ME, workspace="conf", file=None)
    with pytest.raises(Forbidden, match="peer credentials"):
        await pool.resolve(Client(uid=None), workspace=str(tree / "conf"), file=None)


async def test_no_confused_deputy(pool: SerenaPool, tree: Path) -> None:
    with pytest.raises(Forbidden, match="cannot read"):
        await pool.resolve(NOBODY, workspace=str(tree / "private"), file=None)
    r = await pool.resolve(NOBODY, workspace=str(tree / "conf"), file="geometry/shapes.py")
    assert not r.writer
    with pytest.raises(Forbidden, match="cannot read"):
        await pool.resolve(NOBODY, workspace=str(tree / "conf"), file="geometry/secret.py")
    with pytest.raises(Forbidden):
        await pool.call(r, "read_file", {"relative_path": "/etc/passwd"})
    ctx = await pool.gather_context(NOBODY, workspace=str(tree / "private"),
                                    file="geometry/shapes.py", position=None, symbol=None,
                                    category="coding")
    assert isinstance(ctx, ContextUnavailable) and "cannot read" in ctx.reason


async def test_only_allowed_tools_are_called(pool: SerenaPool, tree: Path,
                                             fake: FakeSerena) -> None:
    r = await pool.resolve(ME, workspace=str(tree / "conf"), file=None)
    answer = await pool.call(r, "find_symbol", {"name_path_pattern": "Circle"})
    assert '"Circle"' in answer.text
    for tool in ("execute_shell_command", "replace_symbol_body"):
        with pytest.raises(Forbidden, match="not allowed"):
            await pool.call(r, tool, {"command": "id"})
    assert all(name != "execute_shell_command" for name, _ in fake.calls)


async def test_unlisted_workspaces_start_on_first_use_and_lru_makes_room(
        pool: SerenaPool, tree: Path, fake: FakeSerena) -> None:
    await until_ready(pool, tree / "conf")
    others = []
    for i in range(2):
        d = tree / f"extra{i}"
        shutil.copytree(SAMPLE, d)
        others.append(d)
    r0 = await pool.resolve(ME, workspace=str(others[0]), file=None)
    await pool.call(r0, "find_symbol", {"name_path_pattern": "Circle"})
    assert {s.spec.path for s in pool.supervisors()} == {str(tree / "conf"), str(others[0])}
    r1 = await pool.resolve(ME, workspace=str(others[1]), file=None)
    await pool.call(r1, "find_symbol", {"name_path_pattern": "Circle"})
    # max_running 2: the least recently used unlisted one made room; the configured one stays
    assert {s.spec.path for s in pool.supervisors()} == {str(tree / "conf"), str(others[1])}


async def test_when_nothing_can_make_room_the_caller_hears_busy(
        nursery: trio.Nursery, tree: Path, fake: FakeSerena) -> None:
    pool = await start_pool(nursery, tree, fake, workspace=f"{tree}/other", max_running=1)
    try:
        r = await pool.resolve(ME, workspace=str(tree / "conf"), file=None)
        await until_ready(pool, tree / "other")  # the first configured one only
        assert pool.get(str(tree / "conf")) is None
        fake.tool_delay = 1.0
        async with trio.open_nursery() as n:
            other = await pool.resolve(ME, workspace=str(tree / "other"), file=None)
            n.start_soon(pool.call, other, "find_symbol", {"name_path_pattern": "Circle"})
            await trio.sleep(0.2)
            with pytest.raises(Busy, match="max_running"):
                await pool.call(r, "find_symbol", {"name_path_pattern": "Circle"})
    finally:
        await pool.stop_all()


async def test_idle_unlisted_serenas_stop(nursery: trio.Nursery, tree: Path,
                                          fake: FakeSerena, monkeypatch: Any) -> None:
    monkeypatch.setattr("routerd.shell.serena_pool.HOUSEKEEPING_INTERVAL", 0.05)
    pool = await start_pool(nursery, tree, fake, idle_timeout=0.3)
    try:
        r = await pool.resolve(ME, workspace=str(tree / "other"), file=None)
        await pool.call(r, "find_symbol", {"name_path_pattern": "Circle"})
        assert pool.get(str(tree / "other")) is not None
        await eventually(lambda: pool.get(str(tree / "other")) is None, within=5)
        assert pool.get(str(tree / "conf")) is not None  # configured: never idle-stopped
    finally:
        await pool.stop_all()


async def test_context_for_a_routed_request(pool: SerenaPool, tree: Path,
                                            fake: FakeSerena) -> None:
    await until_ready(pool, tree / "conf")
    fake.calls.clear()
    fake.diagnostics = [{"message": "Undefined name 'x'", "range": {"start": {"line": 27}}}]
    ctx = await pool.gather_context(
        ME, workspace=str(tree / "conf"), file=str(tree / "conf/geometry/shapes.py"),
        position=(11, 9), symbol=None, category="analysis",
        query="rename area to surface and check for errors")
    assert isinstance(ctx, ContextResult), ctx
    assert [c for c, _ in fake.calls] == ["read_file", "find_symbol", "find_referencing_symbols",
                                          "get_symbols_overview", "get_diagnostics_for_file"]
    parts = ctx.parts
    assert parts.symbol is not None and parts.symbol.name_path == "Circle/area"
    assert len(parts.references) == 3 and parts.diagnostics[0].line == 27
    assert "## Type Information" in ctx.text and "## Current Issues (1)" in ctx.text
    assert ctx.tokens <= 1500 and ctx.workspace == str(tree / "conf")


async def test_context_respects_the_time_budget_and_says_when_serena_is_down(
        pool: SerenaPool, tree: Path, fake: FakeSerena) -> None:
    await until_ready(pool, tree / "conf")
    fake.tool_delay = 0.3
    t0 = trio.current_time()
    ctx = await pool.gather_context(
        ME, workspace=None, file="geometry/shapes.py", position=None, symbol="Circle",
        category="analysis", budget=Budget(tokens=500, seconds=0.5))
    assert trio.current_time() - t0 < 0.9
    assert isinstance(ctx, ContextResult) and ctx.parts.symbol is not None
    assert any("out of time" in n or "answer" in n for n in ctx.parts.notes)
    fake.tool_delay = 0.0
    fake.fail_starts = 100
    fake.crash()
    await trio.sleep(0.1)
    ctx = await pool.gather_context(
        ME, workspace=None, file="geometry/shapes.py", position=None, symbol="Circle",
        category="coding", budget=Budget(tokens=500, seconds=0.3))
    assert isinstance(ctx, ContextUnavailable) and "is down" in ctx.reason
    assert "fake Serena" in ctx.reason
    nothing = await pool.gather_context(ME, workspace=None, file=None, position=None,
                                        symbol=None, category="coding")
    assert isinstance(nothing, ContextUnavailable)


async def test_reload_restarts_on_new_start_inputs_and_stops_removed(
        pool: SerenaPool, tree: Path, fake: FakeSerena) -> None:
    await until_ready(pool, tree / "conf")
    r = await pool.resolve(ME, workspace=str(tree / "other"), file=None)
    await pool.call(r, "find_symbol", {"name_path_pattern": "Circle"})
    launches = fake.launches
    new = config(tree, languages=["python"], call_timeout=7)
    pool.apply_config(new)
    await until_ready(pool, tree / "conf")
    await fake.wait_launches(launches + 2)
    assert fake.specs[-1].argv  # restarted with the new files
    sup = pool.get(str(tree / "conf"))
    assert sup is not None and sup.settings.call_timeout == 7
    pool.apply_config(msgspec.structs.replace(new, workspaces=[]))
    await trio.sleep(0.05)
    assert pool.get(str(tree / "conf")) is None  # no longer configured
    pool.apply_config(msgspec.structs.replace(new, enabled=False))
    with pytest.raises(Exception, match="disabled"):
        await pool.call(r, "find_symbol", {"name_path_pattern": "Circle"})


async def test_writable_workspaces_offer_write_tools_to_allowed_uids(
        nursery: trio.Nursery, tree: Path, fake: FakeSerena) -> None:
    pool = await start_pool(nursery, tree, fake, workspaces=[
        {"path": f"{tree}/conf", "writable": True, "write_uids": [os.getuid()]}])
    try:
        mine = await pool.resolve(ME, workspace=str(tree / "conf"), file=None)
        theirs = await pool.resolve(NOBODY, workspace=str(tree / "conf"), file=None)
        assert mine.writer and not theirs.writer
        assert "replace_symbol_body" in pool.allowed_tools(mine)
        assert "replace_symbol_body" not in pool.allowed_tools(theirs)
        assert "execute_shell_command" not in pool.allowed_tools(mine)
        await until_ready(pool, tree / "conf")
        cfg = read_json(Path(fake.specs[0].env["SERENA_HOME"]) / "serena_config.yml")
        assert "replace_symbol_body" not in cfg["excluded_tools"]
        answer = await pool.call(mine, "replace_symbol_body", {
            "name_path": "Circle/area", "relative_path": "geometry/shapes.py", "body": "x"})
        assert answer.text == "OK"
    finally:
        await pool.stop_all()


async def test_leftovers_of_a_killed_daemon_are_reaped(tree: Path, fake: FakeSerena,
                                                       nursery: trio.Nursery) -> None:
    proc = await trio.lowlevel.open_process(["sleep", "60"], start_new_session=True)
    try:
        from routerd.shell.serena_procs import PidBook

        PidBook(tree / "home" / "pids").record("old", proc.pid)
        pool = await start_pool(nursery, tree, fake)
        with trio.fail_after(5):
            await proc.wait()
        assert proc.returncode == -9 and pool.leftovers_killed == 1
        assert not list((tree / "home" / "pids").glob("old.json"))
        await pool.stop_all()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_state_names_are_the_wire_strings() -> None:
    assert {s.value for s in SerenaState} == {
        "stopped", "starting", "warming", "ready", "backoff", "stopping"}


_SDK_PROBE = """
import sys, json, trio
from pathlib import Path
from routerd.core.config import parse_config
from routerd.shell.serena_pool import SerenaPool

def serena(enabled):
    text = json.dumps({"serena": {"enabled": enabled}})
    return parse_config(text, fmt="yaml", env={}).serena

async def main():
    pool = SerenaPool(serena(False), home=Path(sys.argv[1]), env={"PATH": "/usr/bin"})
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):  # started at once: later services must not wait for it
            await nursery.start(pool.run)
        await trio.sleep(0.5)
        print("mcp" in sys.modules, flush=True)
        pool.apply_config(serena(True))
        with trio.fail_after(30):
            await pool._running.wait()
        print("mcp" in sys.modules, flush=True)
        nursery.cancel_scope.cancel()

trio.run(main)
"""


def test_the_mcp_sdk_is_not_loaded_while_serena_is_disabled(tmp_path: Path) -> None:
    """Loading the SDK holds the GIL for about half a second: a daemon with Serena disabled
    never pays it (and reports started at once: the services started after it must not
    wait), and one enabled by a reload loads it then."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _SDK_PROBE, str(tmp_path)], capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    assert out.stdout.split() == ["False", "True"], out.stderr


# --- Windows: every client is the daemon's own user --------------------------------------------

SELF = Client(uid=SELF_UID)  # what a named-pipe peer is (routerd.shell.connection)


async def test_on_windows_the_daemons_own_user_may_use_what_the_daemon_reads(
        nursery: trio.Nursery, tree: Path, fake: FakeSerena) -> None:
    settings = config(tree, workspaces=[{"path": f"{tree}/conf", "writable": True,
                                         "start": False}])
    pool = SerenaPool(settings, home=tree / "home", env={"PATH": "/usr/bin"},
                      launcher=FakeLauncher(fake), version="test", platform="win32")
    posix = SerenaPool(settings, home=tree / "home2", env={}, launcher=FakeLauncher(fake))
    await nursery.start(pool.run)
    await nursery.start(posix.run)
    r = await pool.resolve(SELF, workspace=None, file=str(tree / "conf/geometry/shapes.py"))
    # Windows path rules: the file relative to the workspace with \, as Serena's own there.
    assert (r.spec.path, r.file, r.writer) == (str(tree / "conf"), "geometry\\shapes.py", True)
    assert "replace_symbol_body" in pool.allowed_tools(r)
    # Mode bits are not asked there: the daemon (root or not) reads this 0600 file.
    r = await pool.resolve(SELF, workspace=str(tree / "conf"), file="geometry/secret.py")
    assert r.file == "geometry\\secret.py"
    unlisted = await pool.resolve(SELF, workspace=str(tree / "other/geometry"), file=None)
    assert unlisted.spec.path == str(tree / "other") and not unlisted.writer
    private = await pool.resolve(SELF, workspace=str(tree / "private"), file=None)
    assert private.spec.path == str(tree / "private")  # 0700, but the daemon's
    # POSIX rules for the same stand-in uid (it is no one's there): the mode bits refuse it.
    with pytest.raises(Forbidden, match="uid -1 cannot read"):
        await posix.resolve(SELF, workspace=str(tree / "private"), file=None)
    assert not (await posix.resolve(SELF, workspace=str(tree / "conf"), file=None)).writer
    # A file the daemon cannot open is refused (an ACL on Windows; a socket here, even for root).
    with trio.socket.socket(trio.socket.AF_UNIX) as sock:
        await sock.bind(str(tree / "conf" / "geometry" / "s.sock"))
        with pytest.raises(Forbidden, match="routerd cannot read"):
            await pool.resolve(SELF, workspace=str(tree / "conf"), file="geometry/s.sock")
    # Unknown credentials are refused whatever the platform.
    with pytest.raises(Forbidden, match="peer credentials"):
        await pool.resolve(Client(uid=None), workspace=str(tree / "conf"), file=None)


async def test_on_windows_paths_follow_windows_rules(
        nursery: trio.Nursery, tree: Path, fake: FakeSerena,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = config(tree, workspaces=[{"path": f"{tree}/conf", "start": False}],
                      command=["C:\\venv\\Scripts\\serena.exe", "start-mcp-server"])
    env = {"PATH": "C:\\Windows;C:\\venv\\Scripts", "SYSTEMROOT": "C:\\Windows", "X": "1"}
    pool = SerenaPool(settings, home=tree / "home", env=env, launcher=FakeLauncher(fake),
                      version="test", platform="win32")
    posix = SerenaPool(settings, home=tree / "home2", env={}, launcher=FakeLauncher(fake))
    assert (pool.path_flavor, posix.path_flavor) == ("windows", "posix")
    await nursery.start(pool.run)
    # The home an unlisted workspace may not be is the daemon's own, compared without case.
    monkeypatch.setenv("HOME", str(tree / "other").upper())
    with pytest.raises(Forbidden, match="is a home directory"):
        await pool.resolve(SELF, workspace=str(tree / "other" / "geometry"), file=None)
    monkeypatch.setenv("HOME", str(tree / "elsewhere"))
    r = await pool.resolve(SELF, workspace=str(tree / "other" / "geometry"), file=None)
    assert r.spec.path == str(tree / "other")
    # Serena starts with the Windows environment and the project's base name.
    await pool.ensure(r.spec)
    await fake.wait_launches(1)
    launch = fake.specs[-1]
    assert launch.env["PATH"] == "C:\\venv\\Scripts;C:\\Windows"
    assert launch.env["SYSTEMROOT"] == "C:\\Windows" and "X" not in launch.env
    proj = read_json(Path(read_json(Path(launch.env["SERENA_HOME"]) / "serena_config.yml")[
        "project_serena_folder_location"]) / "project.yml")
    assert proj["project_name"] == "other"
    await pool.stop_all()


def test_tool_arguments_stay_inside_by_the_platforms_rules(tree: Path) -> None:
    settings = config(tree)
    win = SerenaPool(settings, home=tree / "home", env={}, platform="win32")
    posix = SerenaPool(settings, home=tree / "home", env={}, platform="linux")
    resolved = Resolved(spec=WorkspaceSpec(path="C:\\Users\\me\\proj"), file=None,
                        writer=False)
    for inside in ("src\\a.py", "c:/users/ME/proj/src", ".", "\\Users\\me\\proj\\a.py"):
        win.check_arguments(resolved, {"relative_path": inside, "cwd": "src"})
    for outside in ("..\\x", "src\\..\\..\\x", "C:foo", "D:\\proj", "\\\\srv\\share\\x",
                    "C:\\Users\\me\\projx", "src\\.. "):
        with pytest.raises(Forbidden, match="leads outside the workspace"):
            win.check_arguments(resolved, {"relative_path": outside})
        with pytest.raises(Forbidden, match="cwd"):
            win.check_arguments(resolved, {"cwd": outside})
    # POSIX rules for a POSIX workspace: a backslash is part of a name there.
    here = Resolved(spec=WorkspaceSpec(path="/w"), file=None, writer=False)
    posix.check_arguments(here, {"relative_path": "..\\x"})
    with pytest.raises(Forbidden):
        posix.check_arguments(here, {"relative_path": "../x"})
