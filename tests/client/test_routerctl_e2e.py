"""routerctl as a subprocess against a real routerd subprocess, both through their entry points."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from routerd_client import Client, DaemonUnreachable

pytestmark = pytest.mark.slow


class Daemon(NamedTuple):
    socket: str
    config: str
    proc: subprocess.Popen[bytes]


def _env(home: str) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("ROUTERD_SOCKET", "ROUTERD_CONFIG", "ROUTERD_AGENT"):
        env.pop(var, None)
    env["XDG_CONFIG_HOME"] = os.path.join(home, "xdg-config")
    env["HOME"] = home
    return env


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    home = tempfile.mkdtemp(prefix="rde-", dir="/tmp")
    sock = os.path.join(home, "routerd.sock")
    config = os.path.join(home, "config.toml")
    with open(config, "w") as f:
        f.write("")
    log = open(os.path.join(home, "routerd.log"), "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "routerd", "--socket", sock, "--config", config],
        stdout=log, stderr=subprocess.STDOUT, env=_env(home),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                Client(sock, timeout=2, hello=False).close()
                break
            except DaemonUnreachable:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    with open(log.name, "rb") as f:
                        pytest.fail(f"routerd did not start: {f.read().decode()[-2000:]}")
                time.sleep(0.05)
        yield Daemon(sock, config, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def routerctl(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "routerd_client.cli", *argv],
        capture_output=True, text=True, timeout=60, env=env,
    )


def test_status(daemon: Daemon) -> None:
    proc = routerctl("--socket", daemon.socket, "status")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert f"pid          {daemon.proc.pid}" in proc.stdout
    assert f"socket       {daemon.socket}" in proc.stdout
    assert f"config       {daemon.config}" in proc.stdout


def test_status_json(daemon: Daemon) -> None:
    proc = routerctl("--socket", daemon.socket, "--json", "status")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["pid"] == daemon.proc.pid
    assert data["socket"] == daemon.socket
    assert data["connections"]["open"] >= 1
    assert data["methods"]["status"] >= 1


def test_ping(daemon: Daemon) -> None:
    proc = routerctl("--socket", daemon.socket, "ping", "-c", "3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"3 pongs from routerd at {daemon.socket}")
    proc = routerctl("--socket", daemon.socket, "--json", "ping")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["count"] == 1


def test_version(daemon: Daemon) -> None:
    proc = routerctl("--socket", daemon.socket, "--json", "version")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["daemon"]["name"] == "routerd"
    assert data["daemon"]["protocol"][0] == 1


def test_reload_then_a_bad_config_exits_1(daemon: Daemon) -> None:
    proc = routerctl("--socket", daemon.socket, "--json", "reload")
    assert proc.returncode == 0, proc.stderr
    generation = json.loads(proc.stdout)["generation"]
    with open(daemon.config, "w") as f:
        f.write("[daemon]\nno_such_setting = 1\n")
    try:
        proc = routerctl("--socket", daemon.socket, "reload")
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("routerctl: bad_config: ")
        assert "no_such_setting" in lines[0]
        # the old configuration stays in force, and status says the reload failed
        status = json.loads(routerctl("--socket", daemon.socket, "--json", "status").stdout)
        assert status["config_generation"] == generation
        assert status["last_reload"]["ok"] is False
    finally:
        with open(daemon.config, "w") as f:
            f.write("")
    assert routerctl("--socket", daemon.socket, "reload").returncode == 0


def test_exit_3_when_nothing_listens() -> None:
    home = tempfile.mkdtemp(prefix="rde-", dir="/tmp")
    try:
        path = os.path.join(home, "nobody.sock")
        proc = routerctl("--socket", path, "status")
        assert proc.returncode == 3
        assert proc.stdout == ""
        assert proc.stderr.strip() == (
            f"routerctl: cannot reach routerd at {path}: no such file. "
            "Start it with `routerd` or `systemctl --user start routerd`."
        )
        env = _env(home)
        env["ROUTERD_SOCKET"] = path
        proc = routerctl("--json", "ping", env=env)
        assert proc.returncode == 3
        assert json.loads(proc.stdout)["error"]["code"] == "unreachable"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_unknown_method_through_the_library(daemon: Daemon) -> None:
    from routerd_client import UnknownMethod

    with Client(daemon.socket) as client, pytest.raises(UnknownMethod):
        client.call("no.such.method")
