"""The discovery methods through a running daemon, and routerctl's services/models/watch.

A real in-process daemon (discovery installed as the daemon installs it) probes real fake
servers on loopback; routerctl runs in a worker thread (services, models) or as a process
(watch, which ends with Ctrl-C).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

import msgspec
import pytest
import trio
from fakes import FakeServer, start_fake

from routerd.core.config import SERVICE_KINDS, Config, parse_config
from routerd.shell import discovery
from routerd.shell.app import App
from routerd.shell.methods import build_registry
from routerd_client.cli import main as routerctl_main

BUILTIN = SERVICE_KINDS
WAIT = 10.0


def config(socket: str, ollama: str, llamacpp: str) -> Config:
    off = [f"[services.{k}]\nenabled = false" for k in BUILTIN if k not in ("ollama", "llamacpp")]
    text = "\n".join(
        [
            f'[daemon]\nsocket = "{socket}"',
            *off,
            f'[services.ollama]\nendpoint = "{ollama}"',
            f'[services.llamacpp]\nendpoint = "{llamacpp}"',
            "[discovery]\ninterval = 0.2\nprobe_timeout = 0.5\nbackoff_cap = 0.4\n",
        ]
    )
    return parse_config(text, fmt="toml", env={})


class Setup:
    def __init__(self, app: App, ollama: FakeServer, llama: FakeServer) -> None:
        self.app = app
        self.ollama = ollama
        self.llama = llama
        self.registry = discovery.registry_of(app)

    @property
    def socket(self) -> str:
        assert self.app.socket_path is not None
        return self.app.socket_path

    async def until(self, name: str, state: str) -> None:
        def there() -> bool:
            info = self.registry.service(name)
            return info is not None and info.state == state

        with trio.fail_after(WAIT):
            await self.registry.wait_until(there)

    async def routerctl(self, *argv: str) -> int:
        code: int = await trio.to_thread.run_sync(
            routerctl_main, ["--socket", self.socket, *argv]
        )
        return code


@pytest.fixture
async def setup(nursery: trio.Nursery, short_tmp: str) -> Setup:
    ollama = await start_fake(nursery, "ollama")
    llama = await start_fake(nursery, "llamacpp")
    app = App(
        config(f"{short_tmp}/d.sock", ollama.base_url, llama.base_url),
        env={},
        registry=build_registry(),
    )
    discovery.install(app)
    await nursery.start(functools.partial(app.run, handle_signals=False))
    s = Setup(app, ollama, llama)
    await s.until("ollama", "online")
    await s.until("llamacpp", "online")
    return s


async def test_services_list_models_list_and_status(setup: Setup, connect: Any) -> None:
    wire = await connect(setup.app)
    reply = await wire.call(1, "services.list")
    result = reply["result"]
    assert result["summary"] == "2/2 online"
    by_name = {s["name"]: s for s in result["services"]}
    assert by_name["ollama"]["kind"] == "ollama" and by_name["ollama"]["state"] == "online"
    assert by_name["ollama"]["loaded_models"] == ["llama3.2:latest"]
    assert by_name["llamacpp"]["models"] == 1
    assert by_name["llamacpp"]["latency_ms"] >= 0
    reply = await wire.call(2, "models.list", {"service": "ollama"})
    models = {m["id"]: m for m in reply["result"]["models"]}
    assert set(models) == {"llama3.2:latest", "qwen2.5-coder:7b"}
    assert models["llama3.2:latest"]["context_length"] == 4096
    assert models["llama3.2:latest"]["loaded"] is True
    reply = await wire.call(3, "models.list", {"service": "nope"})
    assert reply["type"] == "error" and reply["code"] == "not_found"
    reply = await wire.call(4, "status")
    services = reply["result"]["components"]["services"]
    assert services["summary"] == "2/2 online" and services["models"] == 3


async def test_subscription_streams_changes_until_cancelled(setup: Setup, connect: Any) -> None:
    wire = await connect(setup.app)
    await wire.request(7, "events.subscribe")
    snap = await wire.recv()
    assert snap["event"] == "snapshot"
    assert {s["name"] for s in snap["data"]["services"]} == {"ollama", "llamacpp"}
    await setup.llama.down()
    seen: list[dict[str, Any]] = []
    with trio.fail_after(WAIT):
        while not any(e["event"] == "service" for e in seen):
            seen.append(await wire.recv())
    change = next(e for e in seen if e["event"] == "service")["data"]
    assert change["previous"] == "online" and change["service"]["state"] == "offline"
    assert change["service"]["name"] == "llamacpp"
    await wire.send({"type": "cancel", "id": 7})
    with trio.fail_after(WAIT):
        while True:
            msg = await wire.recv()
            if msg["type"] == "error":
                assert msg["id"] == 7 and msg["code"] == "cancelled"
                break
    assert setup.registry.hub.subscribers == 0


async def test_routerctl_services_and_models(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await setup.routerctl("services") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "NAME", "KIND", "ENDPOINT", "STATE", "LATENCY", "MODELS", "LOADED", "LAST", "ERROR"
    ]  # fmt: skip
    ollama = next(line for line in lines if line.startswith("ollama "))
    assert "online" in ollama and setup.ollama.base_url in ollama and "llama3.2:latest" in ollama
    assert lines[-1] == "2/2 online"
    assert await setup.routerctl("--json", "services") == 0
    data = json.loads(capsys.readouterr().out)
    assert {s["name"] for s in data["services"]} == {"ollama", "llamacpp"}
    assert await setup.routerctl("models", "--service", "llamacpp") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["ID", "SERVICE", "CONTEXT", "LOADED", "AVAILABLE"]
    assert "/models/SmolLM2-135M-Instruct.Q4_1.gguf  llamacpp  2048" in out
    await setup.llama.down()
    await setup.until("llamacpp", "offline")
    assert await setup.routerctl("services") == 0
    out = capsys.readouterr().out
    llama = next(line for line in out.splitlines() if line.startswith("llamacpp "))
    assert "offline" in llama and "connection refused" in llama
    assert await setup.routerctl("status") == 0
    assert "services  summary=1/2 online" in capsys.readouterr().out


async def test_routerctl_watch_prints_changes_until_ctrl_c(setup: Setup) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The installed script: ``python -m routerd_client.cli`` would not load command modules.
    routerctl = str(pathlib.Path(sys.executable).with_name("routerctl"))
    proc = await trio.lowlevel.open_process(
        [routerctl, "--socket", setup.socket, "watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    buf = b""

    async def line_with(text: str) -> str:
        nonlocal buf
        assert proc.stdout is not None
        with trio.fail_after(WAIT * 2):
            while True:
                for line in buf.decode(errors="replace").splitlines():
                    if text in line:
                        return line
                chunk = await proc.stdout.receive_some(4096)
                if not chunk:
                    assert proc.stderr is not None
                    err = await proc.stderr.receive_some(65536)
                    raise AssertionError(f"watch ended early: {buf!r} {err!r}")
                buf += chunk

    try:
        assert "now: ollama (ollama at" in await line_with("now: ollama")
        await setup.ollama.down()
        line = await line_with("online -> offline")
        assert "ollama" in line and "connection refused" in line
        models = await line_with("ollama models")
        assert "-llama3.2:latest" in models
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(WAIT):
            code = await proc.wait()
        assert code == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                await pipe.aclose()


def test_watch_formats_events_it_does_not_know() -> None:
    from routerd_client.cli_services import format_event

    assert format_event("future.thing", {"a": 1}) == ['future.thing {"a":1}']
    assert format_event("service.removed", {"name": "x"}) == ["x removed by a configuration reload"]
    snap = msgspec.to_builtins({"services": [], "models": []})
    assert format_event("snapshot", snap) == ["now: no services configured"]


