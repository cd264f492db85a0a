"""The real ``python -m routerd`` process: socket ownership, signals, sd_notify, exit codes."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from routerd import __version__
from routerd_client import framing

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


class Daemons:
    """Spawns daemons with a clean environment; kills any still running at the end."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("LISTEN_", "ROUTERD_", "NOTIFY_SOCKET", "JOURNAL_STREAM"))
        }
        self.env["XDG_CONFIG_HOME"] = f"{root}/xdg"
        self.env["XDG_RUNTIME_DIR"] = f"{root}/run"
        self._n = 0

    def spawn(
        self, *args: str, env: dict[str, str] | None = None, argv: list[str] | None = None,
        **popen: Any,
    ) -> subprocess.Popen[bytes]:
        self._n += 1
        log = open(f"{self.root}/daemon{self._n}.log", "wb")  # noqa: SIM115 - closed below
        cmd = argv if argv is not None else [sys.executable, "-m", "routerd", *args]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**self.env, **(env or {})}, **popen,
        )
        log.close()
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = START_TIMEOUT) -> tuple[int, str]:
        proc = self.spawn(*args)
        rc = proc.wait(timeout)
        return rc, log_of(proc)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def log_of(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


@pytest.fixture
def daemons(short_tmp: str) -> Iterator[Daemons]:
    d = Daemons(short_tmp)
    try:
        yield d
    finally:
        d.close()


def call(path: str, method: str, params: Any = None, rid: int = 1) -> dict[str, Any]:
    """One request on a fresh blocking connection; returns the final frame."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        msg: dict[str, Any] = {"type": "request", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        s.sendall(framing.frame(msgspec.msgpack.encode(msg)))
        parser = framing.FrameParser(1 << 24)
        while True:
            data = s.recv(65536)
            if not data:
                raise EOFError("daemon closed the connection")
            parser.feed(data)
            for body in parser.frames():
                reply = msgspec.msgpack.decode(body)
                if reply.get("id") == rid and reply["type"] != "event":
                    return reply


def wait_ready(path: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"daemon exited with {proc.returncode}:\n{log_of(proc)}")
        try:
            if call(path, "ping")["type"] == "result":
                return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"daemon did not become ready:\n{log_of(proc)}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(STOP_TIMEOUT)


def write_config(path: str, text: str) -> str:
    Path(path).write_text(text, encoding="utf-8")
    return path


def test_sigterm_removes_the_socket_and_exits_0(daemons, short_tmp):
    sock = f"{short_tmp}/a/b/d.sock"
    proc = daemons.spawn("--socket", sock)
    wait_ready(sock, proc)
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f"{short_tmp}/a/b").st_mode) == 0o700
    assert call(sock, "status")["result"]["pid"] == proc.pid
    assert stop(proc) == 0
    assert not os.path.exists(sock) and not os.path.exists(sock + ".lock")
    assert "received SIGTERM" in log_of(proc)


def test_sigint_is_a_clean_stop_too(daemons, short_tmp):
    sock = f"{short_tmp}/d.sock"
    proc = daemons.spawn("--socket", sock)
    wait_ready(sock, proc)
    assert stop(proc, signal.SIGINT) == 0
    assert not os.path.exists(sock)
    assert "Traceback" not in log_of(proc)


def test_socket_from_the_environment(daemons, short_tmp):
    sock = f"{short_tmp}/env.sock"
    proc = daemons.spawn(env={"ROUTERD_SOCKET": sock})
    wait_ready(sock, proc)
    assert stop(proc) == 0


def test_a_second_daemon_on_a_live_socket_is_refused(daemons, short_tmp):
    sock = f"{short_tmp}/d.sock"
    first = daemons.spawn("--socket", sock)
    wait_ready(sock, first)
    rc, out = daemons.run("--socket", sock)
    assert rc == 1
    assert f"already serving {sock}" in out and f"pid {first.pid}" in out
    assert "Traceback" not in out
    assert call(sock, "ping")["type"] == "result"  # the first one is untouched
    assert stop(first) == 0


def test_a_stale_socket_file_is_replaced(daemons, short_tmp):
    sock = f"{short_tmp}/d.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(sock)
    dead.close()
    proc = daemons.spawn("--socket", sock)
    wait_ready(sock, proc)
    assert "stale socket" in log_of(proc)
    assert stop(proc) == 0


def test_two_daemons_starting_at_once_do_not_both_serve(daemons, short_tmp):
    sock = f"{short_tmp}/d.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(sock)
    dead.close()
    a = daemons.spawn("--socket", sock)
    b = daemons.spawn("--socket", sock)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and a.poll() is None and b.poll() is None:
        time.sleep(0.05)
    loser, winner = (a, b) if a.poll() is not None else (b, a)
    assert loser.wait(STOP_TIMEOUT) == 1, log_of(loser)
    wait_ready(sock, winner)
    assert call(sock, "status")["result"]["pid"] == winner.pid
    assert stop(winner) == 0


def test_a_path_that_is_not_a_socket_is_refused(daemons, short_tmp):
    path = f"{short_tmp}/d.sock"
    Path(path).write_text("data")
    rc, out = daemons.run("--socket", path)
    assert rc == 1 and "not a socket" in out
    assert Path(path).read_text() == "data"


def test_too_long_socket_path(daemons, short_tmp):
    rc, out = daemons.run("--socket", short_tmp + "/" + "x" * 120)
    assert rc == 1 and "AF_UNIX allows at most 107" in out


def test_bad_config_at_start_exits_2_with_one_line(daemons, short_tmp):
    cfg = write_config(f"{short_tmp}/c.toml", "[daemon]\nmax_conections = 3\n")
    rc, out = daemons.run("--config", cfg, "--socket", f"{short_tmp}/d.sock")
    assert rc == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1 and cfg in lines[0] and "$.daemon.max_conections" in lines[0]


def test_version_option(daemons):
    rc, out = daemons.run("--version")
    assert rc == 0 and out.strip() == f"routerd {__version__}"


def test_sighup_with_a_bad_config_keeps_the_old_one(daemons, short_tmp):
    sock = f"{short_tmp}/d.sock"
    cfg = write_config(f"{short_tmp}/c.toml", f'[daemon]\nsocket = "{sock}"\nmax_in_flight = 3\n')
    proc = daemons.spawn("--config", cfg)  # the socket path comes from the config
    wait_ready(sock, proc)
    status = call(sock, "status")["result"]
    assert status["config_path"] == cfg and status["config_generation"] == 1

    write_config(cfg, f'[daemon]\nsocket = "{sock}"\nmax_in_flight = -1\n')
    proc.send_signal(signal.SIGHUP)
    status = _wait_reload(sock)
    assert status["config_generation"] == 1
    assert status["last_reload"]["ok"] is False
    assert "$.daemon.max_in_flight" in status["last_reload"]["error"]
    log = log_of(proc)
    assert "configuration reload (SIGHUP) failed; keeping generation 1" in log
    assert cfg in log

    write_config(cfg, f'[daemon]\nsocket = "{sock}"\nmax_in_flight = 4\n')
    proc.send_signal(signal.SIGHUP)
    status = _wait_reload(sock, ok=True)
    assert status["config_generation"] == 2
    assert stop(proc) == 0


def _wait_reload(sock: str, ok: bool = False) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        status = call(sock, "status")["result"]
        if status["last_reload"] is not None and status["last_reload"]["ok"] is ok:
            return status
        time.sleep(0.05)
    pytest.fail("the reload did not happen")


def test_sd_notify_ready_only_once_the_socket_accepts(daemons, short_tmp):
    sock = f"{short_tmp}/d.sock"
    notify_path = f"{short_tmp}/notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(notify_path)
        listener.settimeout(START_TIMEOUT)
        proc = daemons.spawn("--socket", sock, env={"NOTIFY_SOCKET": notify_path})
        message = listener.recv(4096).decode()
        assert "READY=1" in message.splitlines()
        # READY means "accepting": the very first attempt must work, no retry.
        assert call(sock, "ping")["type"] == "result"

        proc.send_signal(signal.SIGHUP)
        assert _next_state(listener).startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert _next_state(listener) == "READY=1"

        proc.send_signal(signal.SIGTERM)
        assert _next_state(listener) == "STOPPING=1"
        assert proc.wait(STOP_TIMEOUT) == 0


def _next_state(listener: socket.socket) -> str:
    """The next notification other than a STATUS= line (those come whenever status changes;
    tests/shell/test_systemd.py checks them)."""
    while True:
        message = listener.recv(4096).decode()
        if not message.startswith("STATUS="):
            return message


def test_an_inherited_socket_is_used_and_left_in_place(daemons, short_tmp):
    sock = f"{short_tmp}/inherited.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock)
    listener.listen(16)
    fd = listener.fileno()
    # A tiny launcher does what systemd does: fd 3, LISTEN_PID = its own pid, LISTEN_FDS = 1.
    launcher = (
        "import os, sys\n"
        f"os.dup2({fd}, 3)\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.environ['LISTEN_FDS'] = '1'\n"
        "from routerd.__main__ import main\n"
        f"sys.exit(main(['--socket', {short_tmp + '/unused.sock'!r}]))\n"
    )
    proc = daemons.spawn(argv=[sys.executable, "-c", launcher], pass_fds=(fd,))
    listener.close()  # only the daemon holds it now
    wait_ready(sock, proc)
    assert call(sock, "status")["result"]["socket"] == sock
    assert not os.path.exists(f"{short_tmp}/unused.sock")
    assert stop(proc) == 0
    assert os.path.exists(sock)  # systemd owns it: never unlinked
