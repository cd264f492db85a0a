"""Fixtures that run the real llama.cpp-based model servers on loopback.

Both servers and the model are built and cached by ``scripts/llama.sh ensure``; their paths come
from ROUTERD_LLAMA_PYTHON, ROUTERD_LLAMA_SERVER and ROUTERD_SMOLLM2_GGUF or, for any unset, from
``scripts/llama.sh env``. A missing artefact FAILS the test, never skips it: CI must run these.

Contract of every started server: it listens on 127.0.0.1 on a port that was free, it answered
GET /v1/models with 200 before the fixture returned, it runs in its own process group, and that
whole group is killed (SIGTERM, then SIGKILL) when the fixture ends. Thread counts stay at 1:
the machine is shared.

Fixtures:
- ``llama_paths`` (session): LlamaPaths(python, server, model).
- ``llama_cpp_python_server`` / ``llama_server`` (module): a running RealServer, shared by the
  tests of one module; do not stop it in a test.
- ``start_real_server`` (function): ``start_real_server(kind, *extra_args) -> RealServer`` for a
  test that needs its own instance (to kill it, or to pass flags); all are stopped at the end.
- ``routing_daemon`` (function): ``await routing_daemon(endpoint, extra="") -> App``, a daemon
  in this process with discovery and routing in front of the llama.cpp server at ``endpoint``
  (service ``llamacpp``; every other service off, Serena off, ``min_context`` 512,
  ``reserve_for_answer`` ``ROUTING_RESERVE``, generous timeouts; ``extra``: more TOML), once
  that server is online.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import pytest
import trio

from routerd.core.config import parse_config
from routerd.shell import discovery, routing
from routerd.shell.app import App
from routerd.shell.methods import build_registry

REPO_ROOT = Path(__file__).resolve().parents[2]
LLAMA_SH = REPO_ROOT / "scripts" / "llama.sh"
ENV_NAMES = ("ROUTERD_LLAMA_PYTHON", "ROUTERD_LLAMA_SERVER", "ROUTERD_SMOLLM2_GGUF")
READY_DEADLINE = 60.0  # seconds from spawn to the first 200 on /v1/models
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL

Kind = Literal["python", "server"]
StartServer = Callable[..., "RealServer"]


@dataclass(frozen=True)
class LlamaPaths:
    """Where scripts/llama.sh put the interpreter, the llama-server binary and the GGUF model."""

    python: Path
    server: Path
    model: Path


@dataclass
class RealServer:
    """One running server: ``base_url`` has no trailing slash; ``stop()`` is idempotent."""

    kind: Kind
    port: int
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Kill the server's whole process group and reap the server."""
        if self.process.returncode is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                pass
        # SIGKILL the group even after a clean exit: children may linger in it.
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _paths_from_script() -> dict[str, str]:
    try:
        out = subprocess.run(
            ["bash", str(LLAMA_SH), "env"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(
            f"`scripts/llama.sh env` failed ({exc}); run `scripts/llama.sh ensure`", pytrace=False
        )
    found: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, value = line.partition("=")
        if sep and name in ENV_NAMES:
            words = shlex.split(value)
            found[name] = words[0] if words else ""
    return found


def resolve_llama_paths() -> LlamaPaths:
    """Read the three paths from the environment, else from ``scripts/llama.sh env``.

    Fails the calling test (pytest.fail) when a path is unknown or does not exist.
    """
    values = {name: os.environ.get(name, "") for name in ENV_NAMES}
    if not all(values.values()):
        from_script = _paths_from_script()
        values = {name: values[name] or from_script.get(name, "") for name in ENV_NAMES}
    problems = [
        f"{name}={value or '(unset)'} does not exist"
        for name, value in values.items()
        if not value or not Path(value).exists()
    ]
    if problems:
        pytest.fail(
            "real llama.cpp servers are not built: "
            + "; ".join(problems)
            + ". Run `scripts/llama.sh ensure` (builds and caches them, ~10 min once).",
            pytrace=False,
        )
    return LlamaPaths(
        python=Path(values["ROUTERD_LLAMA_PYTHON"]),
        server=Path(values["ROUTERD_LLAMA_SERVER"]),
        model=Path(values["ROUTERD_SMOLLM2_GGUF"]),
    )


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picked it for a bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_command(kind: Kind, paths: LlamaPaths, port: int, extra: tuple[str, ...]) -> list[str]:
    """The argv that runs ``kind`` on 127.0.0.1:``port`` with one thread and a 1024 context."""
    if kind == "python":
        return [
            str(paths.python), "-m", "llama_cpp.server",
            "--model", str(paths.model),
            "--host", "127.0.0.1", "--port", str(port),
            "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", "1024",
            "--chat_format", "chatml",
            *extra,
        ]  # fmt: skip
    return [
        str(paths.server),
        "--model", str(paths.model),
        "--host", "127.0.0.1", "--port", str(port),
        "--threads", "1", "--threads-batch", "1", "--ctx-size", "1024",
        *extra,
    ]  # fmt: skip


def _wait_ready(server: RealServer, deadline: float) -> bool:
    """Poll GET /v1/models until 200 (True) or the process exits / the deadline passes (False)."""
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False
            try:
                if client.get(f"{server.base_url}/v1/models").status_code == 200:
                    return True
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.1)
    return False


def launch(kind: Kind, paths: LlamaPaths, log_dir: Path, extra: tuple[str, ...] = ()) -> RealServer:
    """Start ``kind`` and return it once ready; pytest.fail with the server's log otherwise.

    A port taken between our probe and the server's bind makes the server exit at once, so a
    dead-on-arrival start is retried on a new port (three attempts).
    """
    last: RealServer | None = None
    for attempt in range(3):
        port = free_port()
        log_path = log_dir / f"{kind}-{port}-{attempt}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                server_command(kind, paths, port, extra),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() kills all of it
            )
        server = RealServer(kind, port, f"http://127.0.0.1:{port}", process, log_path)
        deadline = time.monotonic() + READY_DEADLINE
        if _wait_ready(server, deadline):
            return server
        exited = process.poll() is not None
        server.stop()
        last = server
        if not exited:
            break  # alive but never ready: not a port race
    assert last is not None
    pytest.fail(
        f"{kind} server did not become ready (exit code {last.process.returncode}); log tail:\n"
        + last.log_tail(),
        pytrace=False,
    )


@pytest.fixture(scope="session")
def llama_paths() -> LlamaPaths:
    return resolve_llama_paths()


@pytest.fixture(scope="module")
def llama_cpp_python_server(
    llama_paths: LlamaPaths, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealServer]:
    server = launch("python", llama_paths, tmp_path_factory.mktemp("llama-cpp-python"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def llama_server(
    llama_paths: LlamaPaths, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealServer]:
    server = launch("server", llama_paths, tmp_path_factory.mktemp("llama-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_real_server(llama_paths: LlamaPaths, tmp_path: Path) -> Iterator[StartServer]:
    started: list[RealServer] = []

    def start(kind: Kind, *extra_args: str) -> RealServer:
        server = launch(kind, llama_paths, tmp_path, tuple(extra_args))
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


ROUTING_RESERVE = 128  # routing.reserve_for_answer of ``routing_daemon``
_OTHER_SERVICES = ("ollama", "lmstudio", "jan", "openwebui", "localai", "vllm", "koboldcpp",
                   "gpt4all", "textgen")  # fmt: skip
RoutingDaemon = Callable[..., Awaitable[App]]


def routing_config_text(socket_path: str, endpoint: str, extra: str = "") -> str:
    """The configuration ``routing_daemon`` runs with."""
    off = "\n".join(f"[services.{k}]\nenabled = false" for k in _OTHER_SERVICES)
    routes = "\n".join(f"[task_routing.{c}]\nmin_context = 512"
                       for c in ("coding", "reasoning", "analysis", "documentation"))  # fmt: skip
    return f"""
[daemon]
socket = "{socket_path}"
{off}
[services.llamacpp]
endpoint = "{endpoint}"
{routes}
[serena]
enabled = false
[routing]
reserve_for_answer = {ROUTING_RESERVE}
[routing.timeouts]
first_token = 60.0
idle = 30.0
overall = 120.0
{extra}
"""


@pytest.fixture
async def routing_daemon(nursery: trio.Nursery) -> AsyncIterator[RoutingDaemon]:
    socket_dir = tempfile.mkdtemp(prefix="rd-", dir="/tmp")  # AF_UNIX paths are short

    async def start(endpoint: str, extra: str = "") -> App:
        text = routing_config_text(f"{socket_dir}/d.sock", endpoint, extra)
        app = App(parse_config(text, fmt="toml", env={}), env={}, registry=build_registry())
        discovery.install(app)
        routing.install(app)
        await nursery.start(functools.partial(app.run, handle_signals=False))
        registry = discovery.registry_of(app)

        def online() -> bool:
            info = registry.service("llamacpp")
            return info is not None and info.state == "online" and bool(info.models)

        with trio.fail_after(60):
            await registry.wait_until(online)
        return app

    try:
        yield start
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
