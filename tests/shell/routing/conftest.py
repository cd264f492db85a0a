"""Fixtures for the routing tests: a daemon with discovery and routing in front of two fakes.

Two model servers: an Ollama fake (service ``ollama``, priority 1) and a llama.cpp fake
(service ``llamacpp``, priority 2), both offering Qwen2.5-Coder 7B under their own names.
Discovery finds them as the daemon would; a test then makes one misbehave and watches what
the client receives: the ``selected`` events, the chunks, the ``end`` record.

- ``setup``: that daemon (a :class:`Setup`: ``app``, ``first``, ``second``, ``audit``,
  ``registry``, ``socket``).
- ``start_routing(**options)``: another one (``first_models``, ``second_models``,
  ``with_sessions``, ``with_stats``, ``serena_fake``, ``extra`` configuration text).
- ``rk``: helpers (test modules cannot import a conftest): ``rk.route(wire, id, params)`` ->
  (events, final frame), ``rk.named``, ``rk.text_of``, ``rk.chat_requests``, ``rk.qwen``,
  ``rk.QUERY``, ``rk.CATEGORIES``.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from fakes import FakeModel, FakeServer, start_fake
from fakes.serena import FakeLauncher, FakeSerena

from routerd.core.audit import AuditEvent
from routerd.core.config import Config, parse_config
from routerd.shell import discovery, routing, serena, sessions, stats
from routerd.shell.app import App
from routerd.shell.methods import build_registry

BUILTIN = (
    "ollama", "lmstudio", "jan", "openwebui", "localai",
    "vllm", "llamacpp", "koboldcpp", "gpt4all", "textgen",
)  # fmt: skip
WAIT = 10.0
QUERY = "Write a Python function that adds two numbers."
CATEGORIES = ("coding", "reasoning", "analysis", "documentation")
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "serena_project"


def routing_config(
    socket: str, endpoints: dict[str, str], extra: str = "", serena: str = "enabled = false"
) -> Config:
    off = [f"[services.{k}]\nenabled = false" for k in BUILTIN if k not in endpoints]
    on = [
        f'[services.{name}]\nendpoint = "{url}"\npriority = {i}'
        for i, (name, url) in enumerate(endpoints.items(), 1)
    ]
    routes = [f"[task_routing.{c}]\nmin_context = 1024" for c in CATEGORIES]
    text = "\n".join(
        [
            f'[daemon]\nsocket = "{socket}"',
            *off,
            *on,
            *routes,
            f"[serena]\n{serena}",
            "[discovery]\ninterval = 30.0\nprobe_timeout = 1.0\n",
            "[routing]\nreserve_for_answer = 256",
            "[routing.timeouts]\nconnect = 1.0\nfirst_token = 1.5\nidle = 1.0\noverall = 8.0",
            extra,
        ]
    )
    return parse_config(text, fmt="toml", env={})


class RecordingAudit:
    """An ``AuditSink`` that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record_nowait(self, event: AuditEvent) -> None:
        self.events.append(event)

    async def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def security(self, kind: str, reason: str, **details: Any) -> None:
        pass


def qwen(name: str, ctx: int = 8192) -> FakeModel:
    return FakeModel(name, context_length=ctx, max_context_length=32768, family="qwen2",
                     parameter_size="7.6B")  # fmt: skip


class Setup:
    def __init__(self, app: App, first: FakeServer, second: FakeServer, audit: RecordingAudit):
        self.app = app
        self.first = first
        self.second = second
        self.audit = audit
        self.registry = discovery.registry_of(app)

    @property
    def socket(self) -> str:
        assert self.app.socket_path is not None
        return self.app.socket_path

    async def until_online(self, *names: str) -> None:
        def there() -> bool:
            infos = [self.registry.service(n) for n in names]
            return all(i is not None and i.state == "online" and i.models for i in infos)

        with trio.fail_after(WAIT):
            await self.registry.wait_until(there)


async def start_setup(
    nursery: trio.Nursery,
    short_tmp: str,
    extra: str = "",
    second_kind: str = "llamacpp",
    first_models: list[FakeModel] | None = None,
    second_models: list[FakeModel] | None = None,
    with_sessions: bool = False,
    serena_fake: FakeSerena | None = None,
    with_stats: bool = False,
) -> Setup:
    models = first_models or [qwen("qwen2.5-coder:7b")]
    first = await start_fake(nursery, "ollama", models=models)
    models = second_models or [qwen("qwen2.5-coder-7b-instruct")]
    second = await start_fake(nursery, second_kind, models=models)
    endpoints = {"ollama": first.base_url, second_kind: second.base_url}
    serena_cfg = "enabled = false"
    if serena_fake is not None:
        shutil.copytree(SAMPLE, f"{short_tmp}/proj")
        serena_cfg = f'workspaces = ["{short_tmp}/proj"]'
    config = routing_config(f"{short_tmp}/d.sock", endpoints, extra, serena_cfg)
    app = App(config, env={}, registry=build_registry())
    audit = RecordingAudit()
    app.audit = audit
    discovery.install(app)
    if with_sessions:
        sessions.install(app, state_dir=Path(short_tmp) / "state")
    if serena_fake is not None:
        serena.install(app, launcher=FakeLauncher(serena_fake), home=Path(short_tmp) / "home")
    if with_stats:
        stats.install(app)
    routing.install(app)
    await nursery.start(functools.partial(app.run, handle_signals=False))
    s = Setup(app, first, second, audit)
    await s.until_online("ollama", second_kind)
    return s


@pytest.fixture
async def setup(nursery: trio.Nursery, short_tmp: str) -> Setup:
    return await start_setup(nursery, short_tmp)


Events = list[tuple[str, Any]]


async def route(wire: Any, rid: int, params: dict[str, Any]) -> tuple[Events, dict[str, Any]]:
    """Send ``route``; return its non-final events and its final frame."""
    await wire.request(rid, "route", params)
    events: Events = []
    while True:
        msg = await wire.recv(timeout=WAIT)
        assert msg.get("id") == rid, msg
        if msg["type"] == "event" and msg["event"] != "end":
            events.append((msg["event"], msg.get("data")))
            continue
        return events, msg


def named(events: Events, name: str) -> list[Any]:
    return [data for event, data in events if event == name]


def text_of(events: Events) -> str:
    return "".join(d["text"] for d in named(events, "chunk"))


def chat_requests(fake: FakeServer) -> list[Any]:
    return [r for r in fake.requests if r.path in ("/api/chat", "/v1/chat/completions")]


StartRouting = Callable[..., Awaitable[Setup]]


@pytest.fixture
def start_routing(nursery: trio.Nursery, short_tmp: str) -> StartRouting:
    async def start(**options: Any) -> Setup:
        return await start_setup(nursery, short_tmp, **options)

    return start


class RoutingKit:
    """The helpers above, for test modules (see the module docstring)."""

    QUERY = QUERY
    CATEGORIES = CATEGORIES
    route = staticmethod(route)
    named = staticmethod(named)
    text_of = staticmethod(text_of)
    chat_requests = staticmethod(chat_requests)
    qwen = staticmethod(qwen)


@pytest.fixture
def rk() -> type[RoutingKit]:
    return RoutingKit
