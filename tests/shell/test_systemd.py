"""sd_notify on a real notify socket: READY, STATUS, WATCHDOG and STOPPING, and the watchdog's
dependence on a live trio loop.

systemd-python's ``notify`` reads ``NOTIFY_SOCKET`` from the process environment, so in-process
tests set it there; the daemon-process tests pass it to a real ``python -m routerd``.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import trio

from routerd.core.config import default_config
from routerd.shell import systemd
from routerd.shell.app import App
from routerd_client import framing

START_TIMEOUT = 20.0


def _drain(sock: socket.socket) -> list[str]:
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def _next(sock: trio.socket.SocketType, timeout: float = 5.0) -> str:
    with trio.fail_after(timeout):
        return (await sock.recv(4096)).decode()


@pytest.fixture
def notify_socket(short_tmp: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = f"{short_tmp}/notify"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    try:
        yield rx
    finally:
        rx.close()


async def test_watchdog_pings_come_from_the_trio_loop(notify_socket):
    rx = trio.socket.from_stdlib_socket(notify_socket)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(systemd.run_watchdog, 0.02, os.environ))
        for _ in range(3):
            assert await _next(rx) == "WATCHDOG=1"

        _drain(notify_socket)
        # Wedge the loop: a blocking call in a task. Fifteen intervals pass with no checkpoint.
        time.sleep(0.3)  # noqa: ASYNC251 - the point of the test
        assert _drain(notify_socket) == [], "a wedged loop must not ping"

        # Once the loop runs again, so do the pings.
        assert await _next(rx, timeout=1.0) == "WATCHDOG=1"
        nursery.cancel_scope.cancel()


async def test_status_line_follows_the_components(notify_socket, start_daemon):
    rx = trio.socket.from_stdlib_socket(notify_socket)
    app = await start_daemon(app_kwargs={"env": os.environ})
    assert await _next(rx) == f"READY=1\nSTATUS=serving on {app.socket_path}"
    state: dict[str, Any] = {"summary": "0/10 online"}
    app.add_component("test-services", lambda: dict(state))
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(systemd.run_status, app, os.environ, interval=0.01)
        )
        assert await _next(rx) == "STATUS=test-services: 0/10 online"
        app.add_component("test-serena", lambda: {"state": "warm"})
        state["summary"] = "3/10 online"
        assert await _next(rx) == "STATUS=test-services: 3/10 online, test-serena: warm"
        await trio.sleep(0.1)  # ten refreshes with nothing new...
        assert _drain(notify_socket) == []  # ...send nothing
        nursery.cancel_scope.cancel()


def _services(env: dict[str, str]) -> list[tuple[str, bool]]:
    app = App(default_config(), env=env)
    systemd.install(app)
    return [(name, early) for name, _, early in app._services]


def test_install_adds_nothing_outside_systemd():
    assert _services({}) == []
    assert _services({"WATCHDOG_USEC": "1000000"}) == []  # nobody to tell


def test_install_adds_the_watchdog_before_ready_and_the_status_after():
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1000000"}
    assert _services(env) == [("watchdog", True), ("systemd-status", False)]
    env["WATCHDOG_PID"] = str(os.getpid() + 1)  # the watchdog is someone else's
    assert _services(env) == [("systemd-status", False)]


# --- a real daemon process ------------------------------------------------------------------

# Adds two components, as the services and Serena features do, then runs the real main().
_LAUNCHER = """
import sys
from routerd.shell import features
def components(app):
    app.add_component("test-services", lambda: {"summary": "3/10 online"})
    app.add_component("test-serena", lambda: {"state": "warm"})
features.FEATURES.append(components)
from routerd.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def _clean_env(short_tmp: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("LISTEN_", "ROUTERD_", "NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG"))
    }
    env["XDG_CONFIG_HOME"] = f"{short_tmp}/xdg"
    return env


@pytest.mark.slow
@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_daemon_notifies_ready_status_watchdog_stopping_in_order(short_tmp, abstract):
    sock = f"{short_tmp}/d.sock"
    if abstract:
        name = f"routerd-test-{os.getpid()}-{time.monotonic_ns()}"
        bind_to, notify_env = "\0" + name, "@" + name
    else:
        bind_to = notify_env = f"{short_tmp}/notify"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(bind_to)
    rx.settimeout(START_TIMEOUT)
    env = _clean_env(short_tmp)
    env.update(NOTIFY_SOCKET=notify_env, WATCHDOG_USEC="200000")  # a ping every 0.1 s
    log = open(f"{short_tmp}/daemon.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, "--socket", sock],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    log.close()
    try:
        seen: list[str] = []
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            seen.append(rx.recv(4096).decode())
            after_ready = seen[next((i for i, m in enumerate(seen) if "READY=1" in m), len(seen)):]
            if "WATCHDOG=1" in after_ready and any(map(_ours, after_ready)):
                break
        proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in seen:
            seen.append(rx.recv(4096).decode())
        assert proc.wait(START_TIMEOUT) == 0
        seen.extend(_drain_blocking(rx))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        rx.close()

    ready = _index(seen, lambda m: m.startswith("READY=1\nSTATUS=serving on "))
    status = _index(seen, _ours)
    watchdog_after_ready = _index(seen[ready:], lambda m: m == "WATCHDOG=1") + ready
    stopping = _index(seen, lambda m: m == "STOPPING=1")
    assert ready < status < stopping, seen
    assert ready < watchdog_after_ready < stopping, seen
    assert seen[0] == "WATCHDOG=1", "the watchdog starts pinging before READY"
    assert not any("READY=1" in m for m in seen[ready + 1:]), seen


def _ours(message: str) -> bool:
    """The STATUS= line with the launcher's components (real features add theirs too)."""
    return message.startswith("STATUS=") and (
        "test-services: 3/10 online, test-serena: warm" in message
    )


def _index(messages: list[str], match: Any) -> int:
    for i, m in enumerate(messages):
        if match(m):
            return i
    pytest.fail(f"no such message in {messages}")


def _drain_blocking(rx: socket.socket) -> list[str]:
    rx.setblocking(False)
    return _drain(rx)


# --- real socket activation -------------------------------------------------------------------


def _ping(path: str, timeout: float) -> dict[str, Any]:
    """Connect (the socket already exists), ask ``status``, return the result."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(framing.frame(msgspec.msgpack.encode(
            {"type": "request", "id": 1, "method": "status"}
        )))
        parser = framing.FrameParser(1 << 24)
        while True:
            data = s.recv(65536)
            assert data, "the daemon closed the connection"
            parser.feed(data)
            for body in parser.frames():
                reply = msgspec.msgpack.decode(body)
                assert reply["type"] == "result", reply
                return dict(reply["result"])


@pytest.mark.slow
def test_socket_activation_by_systemd_socket_activate(short_tmp):
    """systemd's own launcher listens, waits for the first client, then execs the daemon with
    LISTEN_FDS: the client that woke it is served, and the socket file is left to its owner."""
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.fail("systemd-socket-activate is missing: install Debian's systemd package")
    sock = f"{short_tmp}/activated.sock"
    unused = f"{short_tmp}/unused.sock"
    notify_path = f"{short_tmp}/notify"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(notify_path)
    rx.settimeout(START_TIMEOUT)
    log = open(f"{short_tmp}/daemon.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            tool, "--listen", sock,
            "-E", f"XDG_CONFIG_HOME={short_tmp}/xdg", "-E", f"NOTIFY_SOCKET={notify_path}",
            sys.executable, "-m", "routerd", "--socket", unused,
        ],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=_clean_env(short_tmp),
    )
    log.close()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(sock):
            assert proc.poll() is None and time.monotonic() < deadline, _log(short_tmp)
            time.sleep(0.02)
        status = _ping(sock, START_TIMEOUT)  # starts the daemon, then is answered by it
        assert status["pid"] == proc.pid  # the launcher exec'd the daemon in its place
        assert status["socket"] == sock
        assert rx.recv(4096).decode().startswith("READY=1\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(START_TIMEOUT) == 0, _log(short_tmp)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        rx.close()
    assert "using the listening socket passed by systemd" in _log(short_tmp)
    assert not os.path.exists(unused)
    assert os.path.exists(sock)  # the launcher's (systemd's) file: never unlinked by routerd


def _log(short_tmp: str) -> str:
    with open(f"{short_tmp}/daemon.log", errors="replace") as f:
        return f.read()
