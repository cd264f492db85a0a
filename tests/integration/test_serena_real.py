"""The real Serena (serena-agent 2.1.0 with jedi-language-server, offline), kept warm by routerd
on tests/data/serena_project: warm-up, a symbol, its references, context for a request, a kill
and the way back, and what a daemon killed with SIGKILL leaves behind.

``scripts/serena.sh ensure`` installs it in a cached virtual environment of its own; its path
comes from ROUTERD_SERENA or ``scripts/serena.sh env``. A missing install FAILS these tests,
never skips them: CI must run them.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from routerd.core.config import parse_config
from routerd.core.serena_context import ContextResult
from routerd.shell import serena
from routerd.shell.app import App
from routerd.shell.serena_pool import Client, SerenaPool
from routerd.shell.serena_procs import child_groups
from routerd_client import AsyncClient, RemoteError

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "tests" / "data" / "serena_project"
READY_WITHIN = 90.0  # seconds: spawn, initialize, warm up (jedi's first lookups are slow)


@pytest.fixture(scope="session")
def serena_program() -> str:
    path = os.environ.get("ROUTERD_SERENA", "")
    if not path:
        try:
            out = subprocess.run(["bash", str(REPO / "scripts" / "serena.sh"), "env"], cwd=REPO,
                                 capture_output=True, text=True, check=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.fail(f"`scripts/serena.sh env` failed ({exc})", pytrace=False)
        for line in out.splitlines():
            name, _, value = line.partition("=")
            if name == "ROUTERD_SERENA":
                path = (shlex.split(value) or [""])[0]
    if not path or not Path(path).exists():
        pytest.fail(f"Serena is not installed ({path or 'ROUTERD_SERENA unset'}): run "
                    "`scripts/serena.sh ensure`", pytrace=False)
    return path


@pytest.fixture
def workdir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="rd-serena-", dir="/tmp"))
    try:
        shutil.copytree(SAMPLE, base / "proj")
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def poll(predicate: Any, within: float, step: float = 0.1) -> None:
    with trio.fail_after(within):
        for _ in itertools.count():
            if predicate():
                return
            await trio.sleep(step)


@pytest.fixture
async def daemon(nursery: trio.Nursery, workdir: Path, serena_program: str) -> AsyncIterator[
        tuple[App, SerenaPool]]:
    config = parse_config(json.dumps({
        "daemon": {"socket": str(workdir / "d.sock"), "state_dir": str(workdir / "state")},
        "serena": {"command": [serena_program, "start-mcp-server"],
                   "workspaces": [str(workdir / "proj")], "call_timeout": 30},
    }), fmt="yaml", env={})
    app = App(config, env=dict(os.environ))
    serena.install(app)
    await nursery.start(functools.partial(app.run, handle_signals=False))
    pool = serena.get_serena(app)
    assert pool is not None
    yield app, pool
    app.request_shutdown()


def the_one(pool: SerenaPool) -> Any:
    (sup,) = pool.supervisors()
    return sup


async def test_warm_up_lookups_context_and_recovery(daemon: tuple[App, SerenaPool],
                                                    workdir: Path) -> None:
    app, pool = daemon
    proj = str(workdir / "proj")
    await poll(lambda: pool.supervisors() and the_one(pool).ready, READY_WITHIN)
    sup = the_one(pool)
    pid = sup.status.pid
    assert pid is not None and alive(pid)
    language_servers = [g for g, _ in child_groups(pid)]
    assert language_servers, "jedi-language-server runs in a session of its own"
    names = {t.name for t in sup.tools}
    assert {"find_symbol", "find_referencing_symbols"} <= names
    assert not names & {"execute_shell_command", "replace_symbol_body", "activate_project"}
    assert ".serena" not in os.listdir(proj)

    assert app.socket_path is not None
    async with AsyncClient(app.socket_path, timeout=60) as client:
        await _lookups_context_and_recovery(client, pool, proj, pid, language_servers)


async def _lookups_context_and_recovery(client: AsyncClient, pool: SerenaPool, proj: str,
                                        pid: int, language_servers: list[int]) -> None:
    t0 = trio.current_time()
    found = await client.call("serena.call", {
        "workspace": proj, "tool": "find_symbol",
        "arguments": {"name_path_pattern": "Circle", "relative_path": "geometry/shapes.py"}})
    assert trio.current_time() - t0 < 1.0  # warm
    assert found["data"][0]["body_location"] == {"start_line": 5, "end_line": 12}
    refs = await client.call("serena.call", {
        "workspace": proj, "tool": "find_referencing_symbols",
        "arguments": {"name_path": "total_area", "relative_path": "geometry/shapes.py"}})
    assert "geometry/report.py" in refs["data"]

    me = Client(uid=os.getuid(), gid=os.getgid())
    ctx = await pool.gather_context(me, workspace=proj, file="geometry/report.py",
                                    position=(6, 16), symbol=None, category="coding",
                                    query="rename Circle to Disc")
    assert isinstance(ctx, ContextResult), ctx
    assert ctx.parts.symbol is not None and ctx.parts.symbol.name_path == "Circle"
    assert any(r.file == "geometry/shapes.py" for r in ctx.parts.references)
    assert "## References" in ctx.text and ctx.elapsed_ms < 3000

    os.kill(pid, signal.SIGKILL)
    t0 = trio.current_time()
    # Two answers are right, by who notices first: the call meets the dead session and fails
    # at once (unavailable), or the supervisor saw the death first and restarted Serena, and
    # the call waited for it within its timeout and was answered by the new one.
    try:
        during = await client.call("serena.call", {
            "workspace": proj, "tool": "find_symbol",
            "arguments": {"name_path_pattern": "Circle"}})
    except RemoteError as failed:
        assert failed.code == "unavailable"
        assert trio.current_time() - t0 < 2.0
    else:
        assert not during["is_error"] and the_one(pool).status.pid != pid
    await poll(lambda: the_one(pool).ready and the_one(pool).status.pid != pid, READY_WITHIN)
    assert the_one(pool).status.restarts == 1
    assert "signal 9" in (the_one(pool).status.last_error or "")
    await poll(lambda: not any(alive(g) for g in language_servers), 10)  # no orphans
    again = await client.call("serena.call", {
        "workspace": proj, "tool": "find_symbol", "arguments": {"name_path_pattern": "Circle"}})
    assert not again["is_error"]


async def test_a_clean_stop_leaves_nothing(daemon: tuple[App, SerenaPool]) -> None:
    _, pool = daemon
    await poll(lambda: pool.supervisors() and the_one(pool).ready, READY_WITHIN)
    pid = the_one(pool).status.pid
    assert pid is not None
    groups = [g for g, _ in child_groups(pid)]
    await pool.stop_all()
    await poll(lambda: not alive(pid) and not any(alive(g) for g in groups), 10)


def test_leftovers_of_a_sigkilled_daemon_are_gone_after_the_next_start(
        workdir: Path, serena_program: str) -> None:
    config = workdir / "config.yaml"  # JSON is YAML
    config.write_text(json.dumps({"serena": {"command": [serena_program, "start-mcp-server"],
                                             "workspaces": [str(workdir / "proj")]}}))
    sock = str(workdir / "d.sock")
    env = {**os.environ, "HOME": str(workdir), "XDG_STATE_HOME": str(workdir / "state")}
    for var in ("ROUTERD_SOCKET", "ROUTERD_CONFIG", "STATE_DIRECTORY"):
        env.pop(var, None)

    log = (workdir / "routerd.log").open("ab")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "routerd", "--socket", sock, "--config",
                                 str(config)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)

    def serena_status() -> dict[str, Any] | None:
        out = subprocess.run([str(Path(sys.executable).parent / "routerctl"), "--socket", sock,
                              "--json", "serena", "status"], capture_output=True, text=True,
                             env=env)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def wait_ready(within: float) -> dict[str, Any]:
        end = time.monotonic() + within
        while time.monotonic() < end:
            st = serena_status()
            if st and st["workspaces"] and st["workspaces"][0]["state"] == "ready":
                return st
            time.sleep(0.5)
        log.flush()
        pytest.fail("Serena did not become ready under routerd: "
                    + (workdir / "routerd.log").read_text()[-3000:])

    first = start()
    try:
        st = wait_ready(READY_WITHIN)
        pid = st["workspaces"][0]["pid"]
        groups = [pid, *(g for g, _ in child_groups(pid))]
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = start()
        try:
            st = wait_ready(READY_WITHIN)
            assert st["workspaces"][0]["pid"] != pid
            assert not any(alive(g) for g in groups)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        log.close()
