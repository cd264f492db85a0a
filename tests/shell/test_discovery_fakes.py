"""Discovery against protocol-faithful fake servers of every kind, over real loopback sockets.

These use the real egress-checked HTTP client and real (short) intervals and timeouts: the
fakes are real sockets, so virtual time would jump while a request is on the wire.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from fakes import KIND_NAMES, FakeServer, start_fake

from routerd.core.config import SERVICE_KINDS, Config, parse_config
from routerd.core.hostenv import HostEnvironment
from routerd.shell.discovery import Discovery, ServiceRegistry

BUILTIN = SERVICE_KINDS
FAST = (
    "[discovery]\ninterval = 0.2\nprobe_timeout = 0.5\nbackoff_cap = 0.4\ncooldown = 0.5\n"
    "models_refresh = 5.0\n"
)
WAIT = 10.0  # real seconds a state change may take (a loaded shared machine is slow)


def config_for(kind: str, url: str, extra: str = "") -> tuple[Config, str]:
    """A configuration probing only ``url``, as ``kind`` (its service name is returned)."""
    lines = [f"[services.{k}]\nenabled = false" for k in BUILTIN if k != kind]
    if kind in BUILTIN:
        lines.append(f'[services.{kind}]\nendpoint = "{url}"\n{extra}')
        name = kind
    elif kind == "llama_cpp_python":  # follows services.vllm
        lines = [f"[services.{k}]\nenabled = false" for k in BUILTIN if k != "vllm"]
        lines.append(f'[services.vllm]\nendpoint = "{url}"\n{extra}')
        name = "vllm"
    else:
        lines.append(f'[[services.custom_endpoints]]\nname = "box"\nendpoint = "{url}"\n{extra}')
        name = "box"
    return parse_config("\n".join([*lines, FAST]), fmt="toml", env={}), name


class Running:
    def __init__(self, registry: ServiceRegistry, name: str) -> None:
        self.registry = registry
        self.name = name

    @property
    def info(self) -> Any:
        info = self.registry.service(self.name)
        assert info is not None
        return info

    async def until(self, state: str, timeout: float = WAIT) -> None:
        with trio.fail_after(timeout):
            await self.registry.wait_until(lambda: self.info.state == state)


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
def run_discovery(nursery: trio.Nursery) -> Start:
    async def start(
        kind: str, fake: FakeServer, extra: str = "", env: dict[str, str] | None = None
    ) -> Running:
        config, name = config_for(kind, fake.base_url, extra)
        registry = ServiceRegistry(config, instance_id="this-routerd")
        discovery = Discovery(
            registry, config=lambda: config, env=env or {}, host_environment=HostEnvironment()
        )
        await nursery.start(discovery.run)
        return Running(registry, name)

    return start


KINDS = [k for k in KIND_NAMES if k not in ("foreign", "routerd")]
KEYS = {"jan": "jan-fake-key", "openwebui": "sk-openwebui-fake"}


@pytest.mark.parametrize("kind", KINDS)
async def test_every_kind_is_identified_with_its_models(
    kind: str, nursery: trio.Nursery, run_discovery: Start
) -> None:
    fake = await start_fake(nursery, kind)
    extra = 'api_key_env = "KEY"' if kind in KEYS else ""
    env = {"KEY": KEYS[kind]} if kind in KEYS else {}
    svc = await run_discovery(kind, fake, extra, env)
    await svc.until("online")
    assert svc.info.kind == kind
    # KoboldCpp names its model "koboldcpp/<name>" (/api/v1/model): that is the id it reports.
    models = {m.id.removeprefix("koboldcpp/"): m for m in svc.registry.models(svc.name)}
    assert set(models) == {m.id for m in fake.models}
    for fm in fake.models:
        got = models[fm.id]
        # The server's own figure, never a guess, wherever the kind reports one.
        if got.context_length is not None:
            assert got.context_source == "server", (kind, got)
            assert got.context_length in (fm.context_length, fm.max_context_length), (kind, got)
    if kind in KEYS:
        assert any(r.header("authorization") == f"Bearer {KEYS[kind]}" for r in fake.requests)


@pytest.mark.parametrize("kind", ["ollama", "llamacpp", "vllm", "lmstudio", "koboldcpp"])
async def test_server_reported_context_lengths(
    kind: str, nursery: trio.Nursery, run_discovery: Start
) -> None:
    fake = await start_fake(nursery, kind)
    svc = await run_discovery(kind, fake)
    await svc.until("online")
    for m in svc.registry.models(svc.name):
        assert m.context_length is not None and m.context_source == "server", (kind, m)


@pytest.mark.parametrize("kind", ["openwebui", "jan"])
async def test_a_server_wanting_a_key_is_unauthorized_not_offline(
    kind: str, nursery: trio.Nursery, run_discovery: Start
) -> None:
    fake = await start_fake(nursery, kind)
    svc = await run_discovery(kind, fake)
    await svc.until("unauthorized")
    assert svc.info.kind == kind
    assert "api_key_env" in svc.info.last_error
    assert svc.registry.models(svc.name) == []


async def test_a_wrong_key_says_it_was_refused(nursery: trio.Nursery, run_discovery: Start) -> None:
    fake = await start_fake(nursery, "openwebui")
    svc = await run_discovery("openwebui", fake, 'api_key_env = "KEY"', {"KEY": "wrong"})
    await svc.until("unauthorized")
    assert "refused" in svc.info.last_error
    assert "wrong" not in svc.info.last_error


async def test_foreign_web_server_is_foreign(nursery: trio.Nursery, run_discovery: Start) -> None:
    fake = await start_fake(nursery, "foreign")
    svc = await run_discovery("textgen", fake)
    await svc.until("foreign")
    assert svc.registry.models() == []


async def test_another_routerd_is_refused(nursery: trio.Nursery, run_discovery: Start) -> None:
    fake = await start_fake(nursery, "routerd", instance_id="this-routerd")
    svc = await run_discovery("openai_compat", fake)
    await svc.until("foreign")
    assert "this routerd" in svc.info.reason and "loop" in svc.info.reason


async def test_down_up_hang_garbage_loading_error(
    nursery: trio.Nursery, run_discovery: Start
) -> None:
    fake = await start_fake(nursery, "llamacpp")
    svc = await run_discovery("llamacpp", fake)
    await svc.until("online")
    await fake.down()
    await svc.until("offline")
    assert svc.registry.available_models() == []
    assert svc.info.last_error == "connection refused"
    await fake.up()
    await svc.until("online")  # backoff is capped at 0.4 s here
    assert svc.registry.available_models()
    fake.state = "loading"
    await svc.until("loading")
    fake.state = "hang"
    await svc.until("offline")  # three probe timeouts
    assert "probes in a row" in svc.info.reason
    fake.state = "error"
    await svc.until("degraded")
    fake.state = "ready"
    await svc.until("online")
    fake.state = "garbage"
    await svc.until("foreign")
    fake.state = "ready"
    await svc.until("online")


async def test_a_slow_server_stays_online_with_its_latency(
    nursery: trio.Nursery, run_discovery: Start
) -> None:
    fake = await start_fake(nursery, "vllm")
    fake.state, fake.delay = "slow", 0.15
    svc = await run_discovery("vllm", fake)
    await svc.until("online")
    assert svc.info.latency_ms >= 100


async def test_models_follow_the_server(nursery: trio.Nursery, run_discovery: Start) -> None:
    fake = await start_fake(nursery, "ollama")
    svc = await run_discovery("ollama", fake)
    await svc.until("online")
    gone = fake.models.pop()
    with trio.fail_after(WAIT):
        await svc.registry.wait_until(
            lambda: all(m.model.id != gone.id for m in svc.registry.available_models())
        )
    assert svc.registry.available_models()
