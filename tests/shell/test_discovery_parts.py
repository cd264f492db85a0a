"""The small I/O pieces of discovery: API keys, the container host, the event hub, one fetch."""

from __future__ import annotations

import pathlib

import httpx
import pytest
import trio
import trio.testing

from routerd.core.config import ServiceConfig, parse_config
from routerd.core.egress import policy_from_config
from routerd.core.hostenv import HostEnvironment
from routerd.shell.discovery.credentials import load_credentials
from routerd.shell.discovery.events import EventHub, SubscriberDropped
from routerd.shell.discovery.fetch import Failure, fetch
from routerd.shell.discovery.hostenv import find_container_host

SECRET = "sk-from-a-file-0123456789"


async def test_key_from_a_file_becomes_a_bearer_header_and_is_masked(
    tmp_path: pathlib.Path,
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(f"  {SECRET}\n")
    cred = await load_credentials(
        ServiceConfig(api_key_file=str(key_file), headers={"X-Team": "a"}), {}
    )
    assert cred.headers() == {"X-Team": "a", "Authorization": f"Bearer {SECRET}"}
    assert cred.has_key and cred.problem is None
    assert SECRET not in repr(cred) and "Authorization" in repr(cred)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read"), ("", "is empty"), ("a\nb", "more than one line")],
)
async def test_key_file_problems_are_said_without_the_key(
    tmp_path: pathlib.Path, content: str | None, problem: str
) -> None:
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_text(content)
    cred = await load_credentials(ServiceConfig(api_key_file=str(key_file)), {})
    assert cred.problem is not None and problem in cred.problem
    assert "Authorization" not in cred.headers()


async def test_key_from_env_and_a_configured_authorization_header_wins() -> None:
    cred = await load_credentials(ServiceConfig(api_key_env="K"), {"K": "abc"})
    assert cred.headers() == {"Authorization": "Bearer abc"}
    missing = await load_credentials(ServiceConfig(api_key_env="K"), {})
    assert missing.problem == "the API key variable $K is not set"
    own = await load_credentials(
        ServiceConfig(api_key_env="K", headers={"authorization": "Basic xyz"}), {"K": "abc"}
    )
    assert own.headers() == {"authorization": "Basic xyz"}


async def test_container_host_only_when_allowed_and_resolving() -> None:
    inside = HostEnvironment(container=True, reason="/.dockerenv exists")
    default = policy_from_config(parse_config("", fmt="toml", env={}).security)
    # Not in a container: never.
    assert await find_container_host(HostEnvironment(), default, name="localhost") is None
    # A name the policy does not list is not even looked up.
    assert await find_container_host(inside, default) is None
    # An allowed name that resolves to allowed addresses is used.
    assert await find_container_host(inside, default, name="localhost") == "localhost"
    # One that does not resolve is not.
    lenient = policy_from_config(
        parse_config(
            'environment = "connected"\n[security]\nallow_external = true', fmt="toml", env={}
        ).security
    )
    assert await find_container_host(inside, lenient, name="no-such-host.invalid") is None


async def test_hub_drops_a_full_subscriber_after_what_it_received() -> None:
    hub = EventHub(queue_size=2)
    slow = hub.subscribe()
    fast = hub.subscribe(queue_size=10)
    for i in range(3):
        hub.publish("e", i)
    assert hub.subscribers == 1
    got = []
    with pytest.raises(SubscriberDropped):
        async for item in slow:
            got.append(item)
    assert got == [("e", 0), ("e", 1)]
    fast.close()
    assert hub.subscribers == 0
    hub.publish("e", 4)  # nobody: nothing happens


async def test_fetch_caps_the_body_and_bounds_a_trickle(autojump_clock: object) -> None:
    async def trickle() -> object:
        for _ in range(100):
            await trio.sleep(1)
            yield b"x"

    def app(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/big":
            return httpx.Response(200, content=b"y" * 1000)
        return httpx.Response(200, content=trickle())  # type: ignore[arg-type]

    async with httpx.AsyncClient(transport=httpx.MockTransport(app)) as client:
        big = await fetch(client, "http://h/big", timeout=5, limit=100)
        assert not isinstance(big.answer, Failure) and len(big.answer.body) == 100
        slow = await fetch(client, "http://h/slow", timeout=5)
        assert slow.answer == Failure("timeout", "no answer within 5 s")
        assert 5 <= slow.elapsed < 6
