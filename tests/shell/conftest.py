"""Fixtures for daemon tests: an in-process daemon on a short socket path, and a raw client.

- ``short_tmp``: a fresh directory under /tmp (AF_UNIX paths are limited to 107 bytes, so
  pytest's long ``tmp_path`` will not do); removed afterwards.
- ``probe``: a :class:`Probe` the test methods report to (started/ended/cancelled requests).
- ``test_registry``: the core methods plus the ``test.*`` methods below, bound to ``probe``.
- ``start_daemon``: ``await start_daemon(**daemon_settings) -> App`` runs an :class:`App`
  in the test's nursery with the given ``daemon`` config fields; the app is cancelled when the
  test ends.
- ``connect``: ``await connect(app) -> Wire``, a raw framed msgpack connection (no client
  library: the tests check the bytes the daemon sends).
- ``start_http_daemon``: ``await start_http_daemon(...) -> HttpDaemon``, a daemon with the HTTP
  fronts on 127.0.0.1 (any port) and a Unix socket, routing to an Ollama and a llama.cpp fake.

Test methods (all take a map; every field optional):
``test.sleep {seconds}`` -> ``{"slept": seconds}``;
``test.stream {count, size, interval}`` streams ``tick`` events ``{"n", "pad"}`` then returns
``{"sent": n}`` (count ``None``: forever);
``test.big {size}`` -> a ``size``-byte string; ``test.fail`` raises ValueError;
``test.error {code, message}`` raises ``RouterdError`` with that code;
``test.group`` raises an ExceptionGroup of NotFound; ``test.unencodable`` returns an object;
``test.whoami`` -> the connection's client and agent as ``hello`` left them.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
import trio

from routerd.core.config import Config, default_config
from routerd.core.errors import NotFound, RouterdError
from routerd.shell.app import App
from routerd.shell.dispatch import Registry, RequestContext, Stream
from routerd.shell.methods import build_registry
from routerd_client import framing

RECV_TIMEOUT = 5.0


# --- the raw client ---------------------------------------------------------------------------


class Wire:
    """A raw connection: send maps or bytes, receive decoded frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.parser = framing.FrameParser(64 * 1024 * 1024)
        self.pending: list[bytes] = []
        self.eof = False

    async def send(self, message: Any) -> None:
        await self.stream.send_all(framing.frame(msgspec.msgpack.encode(message)))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def request(self, rid: int, method: str, params: Any = None) -> None:
        msg: dict[str, Any] = {"type": "request", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        await self.send(msg)

    async def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """The next frame, decoded. Fails on EOF or after ``timeout`` seconds."""
        with trio.fail_after(timeout):
            while not self.pending:
                data = await self.stream.receive_some(65536)
                if not data:
                    self.eof = True
                    raise EOFError("the daemon closed the connection")
                self.parser.feed(data)
                self.pending.extend(self.parser.frames())
        msg = msgspec.msgpack.decode(self.pending.pop(0))
        assert isinstance(msg, dict)
        return msg

    async def call(self, rid: int, method: str, params: Any = None) -> dict[str, Any]:
        """Send a request and return its final frame (no other request may be in flight)."""
        await self.request(rid, method, params)
        while True:
            msg = await self.recv()
            if is_final(msg) and msg.get("id") == rid:
                return msg

    async def expect_eof(self, timeout: float = RECV_TIMEOUT) -> list[dict[str, Any]]:
        """Read until the daemon closes the connection; return the frames read first."""
        frames: list[dict[str, Any]] = []
        try:
            while True:
                frames.append(await self.recv(timeout))
        except (EOFError, trio.BrokenResourceError):
            return frames

    async def aclose(self) -> None:
        await self.stream.aclose()


def is_final(msg: dict[str, Any]) -> bool:
    t = msg.get("type")
    return t in ("result", "error") or (t == "event" and msg.get("event") == "end")


# --- test methods -----------------------------------------------------------------------------


@dataclass
class Probe:
    """What the test methods saw. ``ended[id]`` is set when a handler exits in any way."""

    started: dict[int, trio.Event] = field(default_factory=dict)
    ended: dict[int, trio.Event] = field(default_factory=dict)
    cancelled: list[int] = field(default_factory=list)
    emitted: dict[int, int] = field(default_factory=dict)

    def start(self, rid: int) -> None:
        self.started.setdefault(rid, trio.Event()).set()
        self.ended.setdefault(rid, trio.Event())

    def end(self, rid: int) -> None:
        self.ended.setdefault(rid, trio.Event()).set()

    async def wait_started(self, rid: int, timeout: float = RECV_TIMEOUT) -> None:
        with trio.fail_after(timeout):
            await self.started.setdefault(rid, trio.Event()).wait()

    async def wait_ended(self, rid: int, timeout: float = RECV_TIMEOUT) -> None:
        with trio.fail_after(timeout):
            await self.ended.setdefault(rid, trio.Event()).wait()


class SleepParams(msgspec.Struct):
    seconds: float = 0.0


class StreamParams(msgspec.Struct):
    count: int | None = None
    size: int = 16
    interval: float = 0.0


class BigParams(msgspec.Struct):
    size: int = 1024


class ErrorParams(msgspec.Struct):
    code: str = "not_found"
    message: str = "no such thing"


def make_test_registry(probe: Probe) -> Registry:
    registry = build_registry()

    async def sleep(ctx: RequestContext, params: SleepParams) -> dict[str, Any]:
        probe.start(ctx.request_id)
        try:
            await trio.sleep(params.seconds)
        except trio.Cancelled:
            probe.cancelled.append(ctx.request_id)
            raise
        finally:
            probe.end(ctx.request_id)
        return {"slept": params.seconds}

    async def stream(ctx: RequestContext, params: StreamParams, out: Stream) -> dict[str, Any]:
        probe.start(ctx.request_id)
        n = 0
        try:
            while params.count is None or n < params.count:
                await out.emit("tick", {"n": n, "pad": "x" * params.size})
                n += 1
                probe.emitted[ctx.request_id] = n
                if params.interval:
                    await trio.sleep(params.interval)
        except trio.Cancelled:
            probe.cancelled.append(ctx.request_id)
            raise
        finally:
            probe.end(ctx.request_id)
        return {"sent": n}

    async def big(ctx: RequestContext, params: BigParams) -> str:
        return "b" * params.size

    async def fail(ctx: RequestContext, params: Any) -> None:
        raise ValueError("secret internal detail")

    async def error(ctx: RequestContext, params: ErrorParams) -> None:
        raise RouterdError(params.message, code=params.code, data={"why": "test"})

    async def group(ctx: RequestContext, params: Any) -> None:
        async def boom() -> None:
            raise NotFound("model 'x' is not known")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(boom)

    async def unencodable(ctx: RequestContext, params: Any) -> object:
        return object()

    async def whoami(ctx: RequestContext, params: Any) -> dict[str, Any]:
        return {"client": ctx.conn.client, "agent": ctx.conn.agent, "conn": ctx.conn.id}

    registry.add("test.sleep", sleep, params=SleepParams)
    registry.add_stream("test.stream", stream, params=StreamParams)
    registry.add("test.big", big, params=BigParams)
    registry.add("test.fail", fail)
    registry.add("test.error", error, params=ErrorParams)
    registry.add("test.group", group)
    registry.add("test.unencodable", unencodable)
    registry.add("test.whoami", whoami)
    return registry


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def short_tmp() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="rd-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def test_registry(probe: Probe) -> Registry:
    return make_test_registry(probe)


def config_with(**daemon: Any) -> Config:
    base = default_config()
    return msgspec.structs.replace(base, daemon=msgspec.structs.replace(base.daemon, **daemon))


StartDaemon = Callable[..., Awaitable[App]]


@pytest.fixture
def start_daemon(
    nursery: trio.Nursery, short_tmp: str, test_registry: Registry
) -> StartDaemon:
    async def start(
        *, high_water: int | None = None, app_kwargs: dict[str, Any] | None = None, **daemon: Any
    ) -> App:
        daemon.setdefault("socket", f"{short_tmp}/d.sock")
        kwargs: dict[str, Any] = {"env": {}, "registry": test_registry}
        if high_water is not None:
            kwargs["high_water"] = high_water
        kwargs.update(app_kwargs or {})
        app = App(config_with(**daemon), **kwargs)
        await nursery.start(functools.partial(app.run, handle_signals=False))
        return app

    return start


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[App], Awaitable[Wire]]]:
    opened: list[Wire] = []

    async def open_wire(app: App) -> Wire:
        assert app.socket_path is not None
        wire = Wire(await trio.open_unix_socket(app.socket_path))
        opened.append(wire)
        return wire

    yield open_wire
    for wire in opened:
        await wire.aclose()


async def assert_serves(app: App) -> None:
    """A fresh connection still gets a ping answered."""
    assert app.socket_path is not None
    wire = Wire(await trio.open_unix_socket(app.socket_path))
    try:
        reply = await wire.call(1, "ping")
        assert reply == {"type": "result", "id": 1, "result": {}}
    finally:
        await wire.aclose()


@pytest.fixture
def serves() -> Callable[[App], Awaitable[None]]:
    return assert_serves


class Kit:
    """Helpers for tests that need more than the fixtures (test modules cannot import this
    conftest under --import-mode=importlib)."""

    Wire = Wire
    is_final = staticmethod(is_final)
    config_with = staticmethod(config_with)
    make_test_registry = staticmethod(make_test_registry)

    @staticmethod
    async def open(path: str) -> Wire:
        return Wire(await trio.open_unix_socket(path))


@pytest.fixture
def kit() -> type[Kit]:
    return Kit


# --- a daemon with the HTTP fronts (tests/shell/test_fronts_*.py) --------------------------

_BUILTIN = (
    "ollama", "lmstudio", "jan", "openwebui", "localai",
    "vllm", "llamacpp", "koboldcpp", "gpt4all", "textgen",
)  # fmt: skip


class RecordingAudit:
    """An ``AuditSink`` that keeps what it is given (``security`` as ``(kind, reason, details)``)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.security_events: list[tuple[str, str, dict[str, Any]]] = []

    def record_nowait(self, event: Any) -> None:
        self.events.append(event)

    async def record(self, event: Any) -> None:
        self.events.append(event)

    def security(self, kind: str, reason: str, **details: Any) -> None:
        self.security_events.append((kind, reason, details))


@dataclass
class HttpDaemon:
    """A daemon serving the HTTP fronts in front of an Ollama fake (priority 1) and a
    llama.cpp fake (priority 2). ``base_url`` is the TCP front; ``unix`` its Unix socket."""

    app: App
    ollama: Any
    llama: Any
    audit: RecordingAudit
    base_url: str
    unix: str
    token: str


StartHttp = Callable[..., Awaitable[HttpDaemon]]


@pytest.fixture
def start_http_daemon(nursery: trio.Nursery, short_tmp: str) -> StartHttp:
    """``await start_http_daemon(http="...", ollama_models=[...], llama_models=[...])``:
    ``http`` is extra TOML for the ``[http]`` table, ``listen`` its ``listen`` value."""

    async def start(
        http: str = "",
        ollama_models: list[Any] | None = None,
        llama_models: list[Any] | None = None,
        extra: str = "",
        listen: str = '["127.0.0.1:0"]',
    ) -> HttpDaemon:
        from fakes import start_fake

        from routerd.core.config import parse_config
        from routerd.shell import discovery, fronts, routing, stats

        first = await start_fake(nursery, "ollama", models=ollama_models)
        second = await start_fake(nursery, "llamacpp", models=llama_models)
        endpoints = {"ollama": first.base_url, "llamacpp": second.base_url}
        lines = [f'[daemon]\nsocket = "{short_tmp}/d.sock"']
        lines += [f"[services.{k}]\nenabled = false" for k in _BUILTIN if k not in endpoints]
        lines += [
            f'[services.{name}]\nendpoint = "{url}"\npriority = {i}'
            for i, (name, url) in enumerate(endpoints.items(), 1)
        ]
        lines += [f"[task_routing.{c}]\nmin_context = 1024"
                  for c in ("coding", "reasoning", "analysis", "documentation")]  # fmt: skip
        lines += [
            "[serena]\nenabled = false",
            "[discovery]\ninterval = 30.0\nprobe_timeout = 1.0",
            "[routing]\nreserve_for_answer = 256",
            "[routing.timeouts]\nconnect = 1.0\nfirst_token = 3.0\nidle = 2.0\noverall = 8.0",
            f'[http]\nenabled = true\nlisten = {listen}\nunix_socket = "{short_tmp}/h.sock"'
            f'\ntoken_file = "{short_tmp}/tokens"\n{http}',
            extra,
        ]
        config = parse_config("\n".join(lines), fmt="toml", env={})
        app = App(config, env={}, registry=build_registry())
        audit = RecordingAudit()
        app.audit = audit
        discovery.install(app)
        stats.install(app)
        routing.install(app)
        fronts.install(app)
        await nursery.start(functools.partial(app.run, handle_signals=False))
        registry = discovery.registry_of(app)

        def online() -> bool:
            infos = [registry.service(n) for n in endpoints]
            return all(i is not None and i.state == "online" and i.models for i in infos)

        with trio.fail_after(10.0):
            await registry.wait_until(online)
        front = fronts.front_of(app)
        tcp = next((b for b in front.listening if b.startswith("http://")), "")
        assert front.tokens is not None and front.tokens.created, "a fresh token file"
        token = front.tokens.tokens[0]
        return HttpDaemon(app, first, second, audit, tcp, f"{short_tmp}/h.sock", token)

    return start
