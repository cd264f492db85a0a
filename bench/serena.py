"""Serena benchmark: the first code-context lookup through a warm routerd versus a cold
``serena start-mcp-server`` on the same project, and warm call latency.

Run: ``.venv/bin/python bench/serena.py [--calls N] [--serena PATH]``. Needs the real Serena:
``scripts/serena.sh ensure`` (the path comes from ``--serena``, ``$ROUTERD_SERENA`` or
``scripts/serena.sh env``). Works on a copy of ``tests/data/serena_project``. Prints:

* cold: from spawning Serena to the answer of the first context lookup (the three calls routerd
  makes for a refactor request: the symbol with its signature, its references, the file's
  overview), over MCP on stdio with routerd's own client code and no daemon;
* warm: the same lookup through ``routerd`` (``python -m routerd`` on a temporary socket),
  sent right after ``routerctl serena status`` first says ``ready``; also how long after READY
  that was (the warm-up routerd pays before users arrive);
* warm call latency: p50 / p95 of N ``find_symbol`` calls through the daemon.

Target, printed beside the figures: the first lookup through routerd at least 10x faster than
cold. Takes about a minute. Loopback and local files only; Serena runs offline.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _figures import record

from routerd.core.serena import global_config, project_config, serena_args, serena_environment
from routerd.core.serena_access import READ_TOOLS, WorkspaceSpec, serena_exclusions
from routerd.shell.serena_types import LaunchSpec
from routerd_client import Client, DaemonUnreachable

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "serena_project"
TARGET = 10.0
FILE = "geometry/shapes.py"
#: The lookup: what routerd asks Serena for a "rename total_area" request on shapes.py.
LOOKUP = [
    ("find_symbol", {"name_path_pattern": "total_area", "relative_path": FILE,
                     "include_info": True}),
    ("find_referencing_symbols", {"name_path": "total_area", "relative_path": FILE}),
    ("get_symbols_overview", {"relative_path": FILE, "depth": 1}),
]


def find_serena(option: str | None) -> str:
    path = option or os.environ.get("ROUTERD_SERENA", "")
    if not path:
        out = subprocess.run(["bash", str(REPO / "scripts" / "serena.sh"), "env"],
                             capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            name, _, value = line.partition("=")
            if name == "ROUTERD_SERENA":
                path = (shlex.split(value) or [""])[0]
    if not path or not Path(path).exists():
        sys.exit("bench/serena.py: Serena is not installed: run scripts/serena.sh ensure")
    return path


# --- cold: Serena on its own ---------------------------------------------------------------------

def cold_lookup(serena: str, project: Path, work: Path) -> float:
    """Seconds from spawning Serena to the last answer of LOOKUP (no routerd involved)."""
    import trio

    from routerd.shell.serena_mcp import ProcessLauncher, open_session

    home, data = work / "cold-home", work / "cold-data"
    home.mkdir()
    data.mkdir()
    excluded = serena_exclusions(WorkspaceSpec(path=str(project)), read_tools=READ_TOOLS,
                                 write_tools=())
    (home / "serena_config.yml").write_text(json.dumps(global_config(
        data_dir=str(data), excluded_tools=excluded, ls_settings={}, tool_timeout=60,
        auth_secret=secrets.token_hex(8))))
    (data / "project.yml").write_text(json.dumps(project_config(
        name="bench", languages=["python_jedi"], read_only=True, excluded_tools=excluded)))
    spec = LaunchSpec(argv=serena_args([serena, "start-mcp-server"], str(project)),
                      env=serena_environment(os.environ, home=str(home), program=serena),
                      cwd=str(project))

    async def run() -> float:
        t0 = time.perf_counter()
        async with ProcessLauncher().launch(spec) as link, \
                open_session(link, timeout=120, version="bench") as session:
            for tool, args in LOOKUP:
                answer = await session.call_tool(tool, args, 60)
                assert not answer.is_error, answer.text
            return time.perf_counter() - t0

    return trio.run(run)


# --- warm: through routerd -------------------------------------------------------------------------

def start_daemon(serena: str, project: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = str(work / "d.sock")
    config = work / "config.yaml"
    config.write_text(json.dumps({"serena": {"command": [serena, "start-mcp-server"],
                                             "workspaces": [str(project)]}}))  # JSON is YAML
    env = {**os.environ, "HOME": str(work), "XDG_STATE_HOME": str(work / "state")}
    for var in ("ROUTERD_SOCKET", "ROUTERD_CONFIG", "STATE_DIRECTORY"):
        env.pop(var, None)
    proc = subprocess.Popen([sys.executable, "-m", "routerd", "--socket", sock, "--config",
                             str(config)], env=env, stdout=subprocess.DEVNULL,
                            stderr=(work / "routerd.log").open("wb"))
    return proc, sock


def wait_for(predicate: Any, within: float, what: str) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    sys.exit(f"bench/serena.py: timed out waiting for {what}")


def reachable(sock: str) -> bool:
    try:
        Client(sock, timeout=1).close()
    except (DaemonUnreachable, OSError):
        return False
    return True


def serena_ready(client: Client) -> bool:
    st = client.call("serena.status")
    return bool(st["workspaces"]) and st["workspaces"][0]["state"] == "ready"


def lookup_via(client: Client, project: Path) -> float:
    t0 = time.perf_counter()
    for tool, args in LOOKUP:
        res = client.call("serena.call", {"workspace": str(project), "tool": tool,
                                          "arguments": args})
        assert not res["is_error"], res["text"]
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=50, help="warm find_symbol calls (default 50)")
    ap.add_argument("--serena", help="the serena program (default: scripts/serena.sh env)")
    args = ap.parse_args(argv)
    serena = find_serena(args.serena)
    work = Path(tempfile.mkdtemp(prefix="rd-bench-serena-", dir="/tmp"))
    try:
        shutil.copytree(SAMPLE, work / "cold-proj")
        shutil.copytree(SAMPLE, work / "proj")
        cold = cold_lookup(serena, work / "cold-proj", work)

        t_spawn = time.perf_counter()
        proc, sock = start_daemon(serena, work / "proj", work)
        try:
            wait_for(lambda: reachable(sock), 30, "routerd to report READY")
            t_ready = time.perf_counter()
            with Client(sock, timeout=120) as client:
                wait_for(lambda: serena_ready(client), 180, "Serena to be warm")
                t_warm = time.perf_counter()
                first = lookup_via(client, work / "proj")
                lat = []
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    client.call("serena.call", {"workspace": str(work / "proj"),
                                                "tool": "find_symbol",
                                                "arguments": {"name_path_pattern": "Circle"}})
                    lat.append((time.perf_counter() - t0) * 1000)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lat.sort()
    speedup = cold / first
    print(f"cold Serena, spawn to first lookup:   {cold * 1000:8.0f} ms")
    print(f"routerd, first lookup when warm:      {first * 1000:8.0f} ms   "
          f"({speedup:.1f}x faster; target >= {TARGET:g}x: {'met' if speedup >= TARGET else 'MISSED'})")
    print(f"  routerd READY after spawn:          {(t_ready - t_spawn) * 1000:8.0f} ms")
    print(f"  Serena warm after READY:            {(t_warm - t_ready) * 1000:8.0f} ms "
          "(paid in the background)")
    print(f"warm find_symbol through routerd:     p50 {statistics.median(lat):.0f} ms, "
          f"p95 {lat[int(0.95 * (len(lat) - 1))]:.0f} ms over {len(lat)} calls")
    record("first lookup, cold Serena", cold * 1000, "ms")
    record("first lookup, warm routerd", first * 1000, "ms", target=cold * 1000 / TARGET,
           latency=True)
    record("speed-up over cold", speedup, "x", target=TARGET, better="higher")
    record("warm find_symbol p50", statistics.median(lat), "ms", latency=True)
    return 0 if speedup >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
