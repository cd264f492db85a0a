"""The probing loops and the registry over httpx.MockTransport, in virtual time.

Every wait here is on trio's own primitives (the transport is in-process), so the autojump
clock runs intervals, timeouts and backoff without real waiting.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing

from routerd.core.config import SERVICE_KINDS, Config, parse_config
from routerd.core.egress import EgressPolicy
from routerd.core.hostenv import HostEnvironment
from routerd.core.identify import ROUTERD_INSTANCE_HEADER
from routerd.shell.discovery import Discovery, ServiceRegistry, outcome_from_exception
from routerd.shell.http import EgressRefused

DATA = pathlib.Path(__file__).parent.parent / "data" / "servers"
DOC = DATA / "documented"

App = Callable[[httpx.Request], "httpx.Response | Awaitable[httpx.Response]"]

# Only the kinds a test enables are probed: fewer addresses, clearer counts.
_ALL_OFF = "\n".join(f"[services.{k}]\nenabled = false" for k in SERVICE_KINDS)


def make_config(extra: str = "", *, env: dict[str, str] | None = None, **enable: bool) -> Config:
    """All built-in kinds off except those given ``name=True``; ``extra`` is more TOML."""
    lines: list[str] = []
    keep = True
    for line in _ALL_OFF.splitlines():
        if line.startswith("[services."):
            keep = line.removeprefix("[services.").removesuffix("]") not in enable
        if keep:
            lines.append(line)
    text = "\n".join(lines)
    text += "\n[discovery]\ninterval = 5.0\nprobe_timeout = 2.0\nbackoff_cap = 40.0\n"
    text += "cooldown = 10.0\nmodels_refresh = 60.0\n" + extra
    return parse_config(text, fmt="toml", env=env or {})


def doc(name: str) -> bytes:
    return (DOC / name).read_bytes()


def real(*parts: str) -> bytes:
    return DATA.joinpath(*parts).read_bytes()


def json_response(body: bytes, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, content=body, headers={"Content-Type": "application/json", **headers}
    )


def routes(table: dict[str, bytes | httpx.Response], **headers: str) -> App:
    """A server answering ``table``'s paths (bytes: 200 JSON), 404 elsewhere."""

    def app(request: httpx.Request) -> httpx.Response:
        found = table.get(request.url.path)
        if found is None:
            return json_response(b'{"error":"not found"}', 404, **headers)
        if isinstance(found, httpx.Response):
            return found
        return json_response(found, **headers)

    return app


def ollama_app(show: bytes | None = None) -> App:
    table: dict[str, bytes | httpx.Response] = {
        "/": httpx.Response(200, text="Ollama is running"),
        "/api/version": doc("ollama_version.json"),
        "/api/tags": doc("ollama_tags.json"),
        "/api/ps": doc("ollama_ps.json"),
        "/api/show": show or doc("ollama_show.json"),
    }
    return routes(table)


def llama_server_app() -> App:
    return routes(
        {
            "/health": real("llama-server", "health.body"),
            "/props": real("llama-server", "props.body"),
            "/v1/models": real("llama-server", "models.body"),
            "/slots": b'[{"id":0,"n_ctx":1024,"is_processing":false}]',
        },
        Server="llama.cpp",
    )


class FakeNet:
    """Hosts by ``host:port``; an address with no app refuses connections."""

    def __init__(self) -> None:
        self.apps: dict[str, App] = {}
        self.requests: list[httpx.Request] = []
        self.refuse: dict[str, str] = {}  # address -> egress reason

    def at(self, port: int, app: App | None, host: str = "127.0.0.1") -> None:
        if app is None:
            self.apps.pop(f"{host}:{port}", None)
        else:
            self.apps[f"{host}:{port}"] = app

    def hits(self, port: int, path: str | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if r.url.port == port and (path is None or r.url.path == path)
        )

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        host = "127.0.0.1" if request.url.host == "localhost" else request.url.host
        where = f"{host}:{request.url.port}"
        if where in self.refuse:
            raise EgressRefused(str(request.url), self.refuse[where])
        app = self.apps.get(where)
        if app is None:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        result = app(request)
        if inspect.isawaitable(result):
            result = await result
        return result

    def client(self, policy: Callable[[], EgressPolicy]) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


class Harness:
    def __init__(self, net: FakeNet, config: Config, env: dict[str, str]) -> None:
        self.net = net
        self.config = config
        self.registry = ServiceRegistry(config, instance_id="me-123")
        self.discovery = Discovery(
            self.registry,
            config=lambda: self.config,
            env=env,
            client_factory=net.client,
            host_environment=HostEnvironment(),
        )
        self.events: list[tuple[str, Any]] = []

    def state(self, name: str) -> str:
        info = self.registry.service(name)
        assert info is not None, name
        return info.state

    async def until(self, check: Callable[[], bool], timeout: float = 120.0) -> float:
        """Wait (virtual time) until ``check()``; return the virtual seconds it took."""
        start = trio.current_time()
        with trio.fail_after(timeout):
            await self.registry.wait_until(check)
        return trio.current_time() - start

    async def settle(self) -> None:
        """Let the event collector catch up (every task blocked)."""
        await trio.testing.wait_all_tasks_blocked()

    def reload(self, config: Config) -> None:
        old, self.config = self.config, config
        self.discovery.on_reload(old, config)


@pytest.fixture
async def start(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    """Starts discovery in the test's nursery. Tests take ``autojump_clock`` themselves:
    pytest-trio uses a clock only when the test function asks for it."""
    async def go(net: FakeNet, config: Config, env: dict[str, str] | None = None) -> Harness:
        h = Harness(net, config, env or {})
        sub = h.registry.subscribe()

        async def collect() -> None:
            async for item in sub:
                h.events.append(item)

        nursery.start_soon(collect)
        await nursery.start(h.discovery.run)
        return h

    yield go


# --- discovery of what answers ---------------------------------------------------------------


async def test_ollama_is_discovered_with_models_and_context(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    net.at(11434, ollama_app())
    h = await start(net, make_config(ollama=True))
    await h.until(lambda: h.state("ollama") == "online")
    info = h.registry.service("ollama")
    assert info is not None
    assert (info.kind, info.version, info.models) == ("ollama", "0.5.1", 2)
    assert info.loaded_models == ["llama3:latest"]
    models = {m.id: m for m in h.registry.models()}
    assert models["llama3:latest"].context_length == 4096  # runtime window, from /api/ps
    assert models["llama3:latest"].context_source == "server"
    assert models["llama3:latest"].max_context_length == 8192  # /api/show model_info
    assert {m.model.id for m in h.registry.available_models()} == set(models)
    # /api/show was asked once per model, not again on later cycles (same digests).
    shows = net.hits(11434, "/api/show")
    await trio.sleep(30)
    assert net.hits(11434, "/api/show") == shows == 2


async def test_shared_port_is_shown_once_as_what_answers(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    net.at(8080, llama_server_app())
    h = await start(net, make_config(openwebui=True, localai=True, llamacpp=True))
    await h.until(lambda: h.state("local:8080") == "online")
    names = [s.name for s in h.registry.services()]
    assert names.count("local:8080") == 1 and not any(n.endswith(":8080@host") for n in names)
    info = h.registry.service("local:8080")
    assert info is not None and info.kind == "llamacpp"
    assert info.candidates == ["openwebui", "localai", "llamacpp"]
    (model,) = h.registry.models("local:8080")
    assert model.context_length == 2048  # meta.n_ctx in /v1/models: the runtime window
    assert info.total_slots == 1 and info.busy_slots == 0


async def test_a_web_page_is_foreign_not_online(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    page = httpx.Response(200, text="<html>dev server</html>", headers={"Content-Type": "text/html"})
    net.at(5000, lambda r: page)
    h = await start(net, make_config(textgen=True))
    await h.until(lambda: h.state("textgen") == "foreign")
    assert h.registry.models() == []
    assert "web pages" in (h.registry.service("textgen").reason or "")  # type: ignore[union-attr]


async def test_routerd_itself_is_refused_as_a_loop(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    net.at(11434, routes({"/api/version": doc("ollama_version.json")},
                         **{ROUTERD_INSTANCE_HEADER: "me-123"}))  # fmt: skip
    h = await start(net, make_config(ollama=True))
    await h.until(lambda: h.state("ollama") == "foreign")
    info = h.registry.service("ollama")
    assert info is not None and "this routerd" in info.reason and "loop" in info.reason


async def test_open_webui_without_key_says_a_key_is_needed(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    webui = routes(
        {
            "/health": doc("openwebui_health.json"),
            "/api/version": doc("openwebui_version.json"),
            "/api/models": json_response(doc("openwebui_401.json"), 401),
        }
    )
    net.at(3000, webui)
    h = await start(net, make_config(openwebui=True))
    await h.until(lambda: h.state("openwebui") == "unauthorized")
    info = h.registry.service("openwebui")
    assert info is not None and info.kind == "openwebui"
    assert info.last_error is not None and "services.openwebui" in info.last_error
    assert "api_key_env" in info.last_error


async def test_open_webui_with_key_from_env_is_online_and_key_never_logged(
    autojump_clock: Any, start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="routerd")
    secret = "sk-very-secret-value"
    seen: list[str | None] = []

    def webui(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if request.url.path == "/api/models":
            if request.headers.get("authorization") != f"Bearer {secret}":
                return json_response(doc("openwebui_401.json"), 401)
            return json_response(doc("openwebui_models.json"))
        return routes(
            {"/health": doc("openwebui_health.json"), "/api/version": doc("openwebui_version.json")}
        )(request)  # type: ignore[return-value]

    net = FakeNet()
    net.at(3000, webui)
    cfg = make_config('[services.openwebui]\napi_key_env = "WEBUI_KEY"\n', openwebui=True)
    h = await start(net, cfg, {"WEBUI_KEY": secret})
    await h.until(lambda: h.state("openwebui") == "online")
    assert h.registry.models("openwebui")
    assert f"Bearer {secret}" in seen
    assert secret not in caplog.text
    assert secret not in repr(h.registry.backend("openwebui"))


async def test_a_reload_gives_routing_the_new_api_key(autojump_clock: Any, start: Any) -> None:
    """The backend routing sends chats with is kept between requests: a reload that changes
    the key must renew it."""
    net = FakeNet()
    net.at(3000, routes({"/health": doc("openwebui_health.json"),
                         "/api/version": doc("openwebui_version.json"),
                         "/api/models": doc("openwebui_models.json")}))  # fmt: skip
    cfg = make_config('[services.openwebui]\napi_key_env = "WEBUI_KEY"\n', openwebui=True)
    h = await start(net, cfg, {"WEBUI_KEY": "first-key", "OTHER_KEY": "second-key"})
    await h.until(lambda: h.state("openwebui") == "online")
    before = h.registry.backend("openwebui")
    assert before is not None and before is h.registry.backend("openwebui")  # kept
    assert before.credentials.headers()["Authorization"] == "Bearer first-key"
    h.reload(make_config('[services.openwebui]\napi_key_env = "OTHER_KEY"\n', openwebui=True))
    await h.until(lambda: (i := h.registry.service("openwebui")) is not None
                  and i.kind == "openwebui" and h.state("openwebui") == "online")
    await h.settle()
    after = h.registry.backend("openwebui")
    assert after is not None and after.kind == "openwebui"
    assert after.credentials.headers()["Authorization"] == "Bearer second-key"


async def test_custom_endpoint_finds_the_real_kind_behind_it(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    net.at(9100, llama_server_app(), host="10.1.2.3")
    cfg = make_config(
        '[security]\nallowed_hosts = ["localhost", "127.0.0.1", "::1", "10.1.2.3"]\n'
        '[[services.custom_endpoints]]\nname = "gpu"\nendpoint = "http://10.1.2.3:9100"\n'
    )
    h = await start(net, cfg)
    await h.until(lambda: h.state("gpu") == "online")
    info = h.registry.service("gpu")
    assert info is not None and info.kind == "llamacpp" and info.candidates == ["custom"]
    # Identified as llama.cpp, so its own plan (/props, /slots) was fetched too.
    assert net.hits(9100, "/props") >= 1 and net.hits(9100, "/slots") >= 1
    backend = h.registry.backend("gpu")
    assert backend is not None and backend.chat_path == "/v1/chat/completions"


async def test_one_server_reached_two_ways_is_one_group(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    net.at(11434, ollama_app())
    cfg = make_config(
        '[[services.custom_endpoints]]\nname = "again"\nendpoint = "http://localhost:11434"\n'
        'api_style = "ollama"\n',
        ollama=True,
    )
    h = await start(net, cfg)
    await h.until(lambda: h.state("ollama") == "online" and h.state("again") == "online")
    groups = {m.group for m in h.registry.available_models()}
    assert groups == {"again"}  # the smallest name of the group
    assert h.registry.service("ollama").group == "again"  # type: ignore[union-attr]


# --- going away and coming back --------------------------------------------------------------


async def test_death_is_logged_once_and_models_leave_at_once(
    autojump_clock: Any, start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="routerd")
    net = FakeNet()
    net.at(11434, ollama_app())
    h = await start(net, make_config(ollama=True))
    await h.until(lambda: h.state("ollama") == "online")
    await h.settle()
    caplog.clear()
    h.events.clear()
    net.at(11434, None)
    took = await h.until(lambda: h.state("ollama") == "offline")
    assert took <= 5.0 + 0.1  # within one probe interval
    assert h.registry.available_models() == [] and h.registry.models() == []
    await trio.sleep(300)  # many backed-off probes later
    await h.settle()
    changes = [r for r in caplog.records if "online -> offline" in r.getMessage()]
    assert len(changes) == 1 and "connection refused" in changes[0].getMessage()
    assert [r.getMessage() for r in caplog.records if "ollama" in r.getMessage()] == [
        changes[0].getMessage(),
        "service ollama: models -codellama:13b -llama3:latest",
    ]
    kinds = [name for name, _ in h.events]
    assert kinds.count("service") == 1 and kinds.count("models") == 1


async def test_offline_backs_off_with_jitter_up_to_the_cap(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    h = await start(net, make_config(ollama=True))
    await h.until(lambda: h.state("ollama") == "offline")
    base = net.hits(11434)
    times: list[float] = []
    for n in range(1, 9):
        await h.until(lambda n=n: net.hits(11434) >= base + n, timeout=100)  # type: ignore[misc]
        times.append(trio.current_time())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # interval 5 s doubling (10, 20, then the 40 s cap), each less up to 20 % jitter.
    for gap, base in zip(gaps, [10.0, 20.0, 40.0, 40.0, 40.0, 40.0, 40.0], strict=True):
        assert base * 0.8 - 0.05 <= gap <= base + 0.05, (gaps, base)
    assert len({round(g, 1) for g in gaps[2:]}) > 1  # jittered, not in lockstep
    # An offline address is asked one path per probe, not the whole plan.
    assert net.hits(11434) == len({(r.url.path, i) for i, r in enumerate(net.requests)})


async def test_a_passive_success_reprobes_an_offline_service_at_once(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    h = await start(net, make_config(ollama=True))
    await h.until(lambda: h.state("ollama") == "offline")
    await trio.sleep(200)  # deep in backoff
    net.at(11434, ollama_app())
    h.registry.report_outcome("ollama", "request_ok", latency=0.1)
    took = await h.until(lambda: h.state("ollama") == "online")
    assert took < 1.0


async def test_a_refused_request_makes_it_offline_at_once(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    net.at(11434, ollama_app())
    h = await start(net, make_config(ollama=True))
    await h.until(lambda: h.state("ollama") == "online")
    assert h.registry.admit("ollama") == "admit"
    net.at(11434, None)
    exc = httpx.ConnectError("refused")
    h.registry.report_outcome("ollama", outcome_from_exception(exc) or "request_5xx")
    assert h.state("ollama") == "offline"
    assert h.registry.available_models() == []
    assert h.registry.admit("ollama") == "refuse"


async def test_request_failures_open_the_breaker_and_a_trial_closes_it(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    net.at(11434, ollama_app())
    h = await start(net, make_config(ollama=True))
    await h.until(lambda: h.state("ollama") == "online")
    for _ in range(5):
        h.registry.report_outcome("ollama", "request_5xx")
    assert h.state("ollama") == "degraded"
    assert h.registry.admit("ollama") == "refuse"
    await trio.sleep(10.5)  # the cool-down
    assert h.registry.admit("ollama") == "trial"
    assert h.registry.admit("ollama") == "refuse"  # one trial at a time
    h.registry.report_outcome("ollama", "request_ok", latency=0.2)
    assert h.state("ollama") == "online"


async def test_hanging_server_times_out_into_offline(autojump_clock: Any, start: Any) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    net = FakeNet()
    net.at(11434, ollama_app())
    h = await start(net, make_config(ollama=True))
    await h.until(lambda: h.state("ollama") == "online")
    net.at(11434, hang)
    took = await h.until(lambda: h.state("ollama") == "offline")
    # Three probe timeouts in a row (each 2 s, every 5 s).
    assert 10.0 <= took <= 3 * (5.0 + 2.0) + 0.1
    assert "3 probes in a row" in h.registry.service("ollama").reason  # type: ignore[union-attr]


async def test_loading_server_is_loading_then_online(autojump_clock: Any, start: Any) -> None:
    loading = json_response(
        b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}', 503
    )
    net = FakeNet()
    net.at(8080, lambda r: loading)
    h = await start(net, make_config(llamacpp=True))  # alone on 8080: named after its kind
    await h.until(lambda: h.state("llamacpp") == "loading")
    net.at(8080, llama_server_app())
    await h.until(lambda: h.state("llamacpp") == "online")
    assert h.registry.models("llamacpp")


# --- models changing -------------------------------------------------------------------------


async def test_a_model_that_disappears_leaves_routing_on_the_next_cycle(autojump_clock: Any, start: Any) -> None:
    tags = msgspec.json.decode(doc("ollama_tags.json"))
    table: dict[str, bytes | httpx.Response] = {
        "/": httpx.Response(200, text="Ollama is running"),
        "/api/version": doc("ollama_version.json"),
        "/api/tags": msgspec.json.encode(tags),
        "/api/ps": b'{"models":[]}',
        "/api/show": doc("ollama_show.json"),
    }
    net = FakeNet()
    net.at(11434, routes(table))
    h = await start(net, make_config(ollama=True))
    await h.until(lambda: len(h.registry.available_models()) == 2)
    await h.settle()
    h.events.clear()
    tags["models"] = tags["models"][1:]
    table["/api/tags"] = msgspec.json.encode(tags)
    took = await h.until(lambda: len(h.registry.available_models()) == 1)
    assert took <= 5.0 + 0.1
    await h.settle()
    (change,) = [data for name, data in h.events if name == "models"]
    assert change.removed == ["codellama:13b"] and change.added == []


# --- egress policy ---------------------------------------------------------------------------


async def test_egress_refusal_is_blocked_and_not_probed_until_reload(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    net.refuse["127.0.0.1:11434"] = "127.0.0.1 is not in any allowed network"
    h = await start(net, make_config(ollama=True))
    await h.until(lambda: h.state("ollama") == "blocked")
    info = h.registry.service("ollama")
    assert info is not None and info.last_error is not None
    assert "refused by the egress policy" in info.last_error
    count = net.hits(11434)
    await trio.sleep(600)
    assert net.hits(11434) == count  # never again...
    del net.refuse["127.0.0.1:11434"]
    net.at(11434, ollama_app())
    h.reload(h.config)  # ...until a reload
    await h.until(lambda: h.state("ollama") == "online")


# --- reload ----------------------------------------------------------------------------------


async def test_reload_adds_and_removes_services_with_events(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    net.at(11434, ollama_app())
    h = await start(net, make_config(ollama=True))
    await h.until(lambda: h.state("ollama") == "online")
    await h.settle()
    h.events.clear()
    net.at(1234, routes({"/v1/models": doc("lmstudio_openai_models.json"),
                         "/api/v0/models": doc("lmstudio_v0_models.json")}))  # fmt: skip
    h.reload(make_config(lmstudio=True))
    await h.until(lambda: h.registry.get("lmstudio") is not None and h.state("lmstudio") == "online")
    assert h.registry.get("ollama") is None
    await h.settle()
    names = [name for name, _ in h.events]
    assert "service.removed" in names
    removed = [d for n, d in h.events if n == "models" and d.service == "ollama"]
    assert removed and removed[0].models == []


# --- events ----------------------------------------------------------------------------------


async def test_a_slow_subscriber_is_dropped_and_never_blocks_probing(autojump_clock: Any, start: Any) -> None:
    net = FakeNet()
    net.at(11434, ollama_app())
    h = await start(net, make_config(ollama=True))
    slow = h.registry.hub.subscribe(queue_size=2)
    for _ in range(3):
        net.at(11434, None)
        await h.until(lambda: h.state("ollama") == "offline")
        net.at(11434, ollama_app())
        h.registry.hint("ollama")
        await h.until(lambda: h.state("ollama") == "online")
    received: list[str] = []
    with pytest.raises(Exception, match="dropped") as info:
        async for name, _ in slow:
            received.append(name)
    assert type(info.value).__name__ == "SubscriberDropped"
    assert len(received) == 2
    assert h.registry.hub.subscribers == 1  # the harness's own collector remains


def test_outcome_from_exception() -> None:
    request = httpx.Request("GET", "http://127.0.0.1:1/")
    assert outcome_from_exception(httpx.ConnectError("x", request=request)) == "request_refused"
    assert outcome_from_exception(httpx.ReadTimeout("x", request=request)) == "request_timeout"
    assert outcome_from_exception(httpx.RemoteProtocolError("x", request=request)) == "request_5xx"
    assert outcome_from_exception(EgressRefused("u", "no")) is None
    assert outcome_from_exception(ValueError()) is None
