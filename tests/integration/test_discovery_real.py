"""Discovery of the real llama.cpp-based servers: found, identified, its model and context
length reported; offline when the process is killed; online again when it is restarted.

The servers run SmolLM2 with a 1024-token context (``conftest.server_command``). The restart
reuses the killed process's own command line, so it listens on the same port.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from routerd.core.config import SERVICE_KINDS, parse_config
from routerd.core.hostenv import HostEnvironment
from routerd.shell.discovery import Discovery, ServiceRegistry

pytestmark = pytest.mark.slow

BUILTIN = SERVICE_KINDS
WAIT = 60.0  # real seconds: model loading on a shared 2-core machine
# kind -> (the services section its address goes in, the kind discovery must find)
SECTIONS = {"server": ("llamacpp", "llamacpp"), "python": ("vllm", "llama_cpp_python")}


def spawn(argv: list[str], log_path: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group (the fixture kills the whole group)."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture
def restarted() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


@pytest.mark.parametrize("kind", ["server", "python"])
async def test_real_server_discovered_lost_and_found_again(
    kind: str,
    start_real_server: Any,
    llama_paths: Any,
    restarted: list[subprocess.Popen[bytes]],
    tmp_path: Any,
) -> None:
    server = start_real_server(kind)
    section, expected_kind = SECTIONS[kind]
    off = [f"[services.{k}]\nenabled = false" for k in BUILTIN if k != section]
    config = parse_config(
        "\n".join(
            [
                *off,
                f'[services.{section}]\nendpoint = "{server.base_url}"',
                "[discovery]\ninterval = 0.5\nprobe_timeout = 2.0\nbackoff_cap = 1.0\n",
            ]
        ),
        fmt="toml",
        env={},
    )
    registry = ServiceRegistry(config, instance_id="integration")
    discovery = Discovery(
        registry, config=lambda: config, env={}, host_environment=HostEnvironment()
    )

    def state() -> str:
        info = registry.service(section)
        return info.state if info is not None else "missing"

    async with trio.open_nursery() as nursery:
        await nursery.start(discovery.run)
        with trio.fail_after(WAIT):
            await registry.wait_until(lambda: state() == "online")
        info = registry.service(section)
        assert info is not None and info.kind == expected_kind
        (model,) = registry.models(section)
        assert model.id == str(llama_paths.model)
        if kind == "server":
            # llama-server says its runtime window (/v1/models meta.n_ctx, /slots n_ctx).
            assert (model.context_length, model.context_source) == (1024, "server")
            assert info.total_slots is not None and info.total_slots >= 1
        else:
            # llama-cpp-python's /v1/models says nothing of the window, and nothing is made up.
            assert model.context_length is None
        assert [m.model.id for m in registry.available_models()] == [model.id]

        argv = list(server.process.args)
        started = trio.current_time()
        await trio.to_thread.run_sync(server.stop)
        with trio.fail_after(WAIT):
            await registry.wait_until(lambda: state() == "offline")
        assert trio.current_time() - started < 10.0
        assert registry.available_models() == []

        restarted.append(await trio.to_thread.run_sync(spawn, argv, tmp_path / "restart.log"))
        with trio.fail_after(WAIT):
            await registry.wait_until(lambda: state() == "online")
        (again,) = registry.models(section)
        assert again.id == model.id and again.context_length == model.context_length
        nursery.cancel_scope.cancel()
