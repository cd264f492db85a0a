"""Where the HTTP fronts meet the daemon: routed requests through the routing feature's own
entry point, model listings from its view of the servers, and passthrough requests.

Contract:

* A routed request runs :func:`routerd.shell.routing.methods.run_route`, exactly what the
  socket's ``route`` and ``route.complete`` run: same classification, fallback, sessions,
  Serena context, queue and audit record.
* Who the caller is (``ConnectionInfo``): a bearer token stands for the user routerd runs as
  (its file is that user's, 0600), as does a caller on the Unix socket when the socket is
  0600; anyone else is an unknown user (no sessions, no Serena workspace needing a user). One
  ``ConnectionInfo.id`` per token (negative, apart from the socket's), so the fair queue
  shares a model between tools rather than between HTTP requests.
* Passthrough sends the client's body, its ``model`` replaced by the server's name, to each
  picked service in turn (``routerd.core.fronts.models.pick_passthrough``) through the
  egress-checked client, until one answers with something other than a transport failure or
  a 5xx. Outcomes feed the servers' health like routed requests do.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import httpx
import trio

from routerd.core.audit import AuditEvent
from routerd.core.chat import chat_url
from routerd.core.errors import NotFound, RouterdError, Unavailable
from routerd.core.fronts.guard import Admission
from routerd.core.fronts.models import (
    ModelFacts,
    Purpose,
    facts_of,
    pick_passthrough,
    unique_models,
)
from routerd.core.fronts.wire import json_bytes
from routerd.shell.app import App
from routerd.shell.discovery import outcome_from_exception
from routerd.shell.dispatch import ConnectionInfo, RequestContext
from routerd.shell.osdeps import effective_gid, effective_uid
from routerd.shell.routing import Router, router_of
from routerd.shell.routing.executor import Answer
from routerd.shell.routing.methods import run_route
from routerd_client.protocol import AgentInfo, ClientInfo
from routerd_client.protocol_route import RouteEnd, RouteParams, SelectedEvent

from .asgi import HttpRequest, Reply

__all__ = [
    "CollectSink",
    "EventSink",
    "Passthrough",
    "Renderer",
    "caller",
    "close_quietly",
    "end_headers",
    "model_facts",
    "passthrough",
    "route",
    "routed_headers",
    "stream_route",
]

#: Services whose API has no ``/v1/completions`` or ``/v1/embeddings``.
NO_PASSTHROUGH: Final = frozenset({"openwebui"})
_UNIX_ID: Final = -1_000_000
_ANONYMOUS_ID: Final = -1_000_001
_request_ids = itertools.count(1)

Emit = Callable[[str, Any], Awaitable[None]]


class EventSink:
    """A streaming sink: each event goes to ``emit`` as it comes."""

    __slots__ = ("_emit",)
    streams = True

    def __init__(self, emit: Emit) -> None:
        self._emit = emit

    async def emit(self, event: str, data: Any) -> None:
        await self._emit(event, data)

    def emit_soon(self, event: str, data: Any) -> bool:
        return False  # the front's emit may write: the executor awaits it instead


class CollectSink:
    """A collecting sink: nothing goes out before the end (so any failure may fall back)."""

    __slots__ = ()
    streams = False

    async def emit(self, event: str, data: Any) -> None:
        return None

    def emit_soon(self, event: str, data: Any) -> bool:
        return True


def _agent(req: HttpRequest, known: list[str]) -> AgentInfo | None:
    named = req.header("x-routerd-agent")
    if named:
        return AgentInfo(name=named.strip()[:64], type="http")
    ua = (req.header("user-agent") or "").lower()
    for name in known:
        if name.lower() in ua:
            return AgentInfo(name=name, type="http")
    return None


def caller(app: App, req: HttpRequest, admission: Admission, *, socket_private: bool) -> (
        ConnectionInfo):  # fmt: skip
    """The ``ConnectionInfo`` of one HTTP request (see the module docstring)."""
    uid: int | None = None
    if admission.token is not None:
        cid, uid = -(admission.token + 1), effective_uid()
    elif req.transport == "unix":
        cid, uid = _UNIX_ID, (effective_uid() if socket_private else None)
    else:
        cid = _ANONYMOUS_ID
    ua = req.header("user-agent") or "http"
    name, _, version = ua.partition(" ")[0].partition("/")
    return ConnectionInfo(
        id=cid,
        opened_at=time.time(),
        peer_uid=uid,
        peer_gid=effective_gid() if uid is not None else None,
        client=ClientInfo(name=name[:64] or "http", version=version[:32]),
        agent=_agent(req, list(app.config.agents)),
    )


async def route(app: App, conn: ConnectionInfo, params: RouteParams, sink: EventSink |
                CollectSink, method: str) -> tuple[RouteEnd, Answer]:  # fmt: skip
    """Run one request through routing's own entry point (raises what ``route`` raises)."""
    try:
        router = router_of(app)
    except LookupError:
        raise Unavailable("routing is not part of this daemon") from None
    ctx = RequestContext(app, conn, request_id=next(_request_ids), method=method)
    return await run_route(router, ctx, params, sink)


class Renderer(Protocol):
    """Turns one routed answer's events into an API's body bytes."""

    content_type: str

    def event(self, event: str, data: Any) -> bytes:
        """The bytes for one ``route`` event (``b""``: nothing to send for it)."""
        ...

    def closing(self, end: RouteEnd, answer: Answer) -> bytes:
        """The bytes that end a successful stream."""
        ...

    def failure(self, exc: RouterdError) -> bytes:
        """The bytes that end a stream which failed after it started."""
        ...


def routed_headers(model: str, service: str, category: str,
                   session: str | None) -> list[tuple[str, str]]:  # fmt: skip
    """The ``X-Routerd-*`` headers of a routed answer."""
    out = [("x-routerd-model", model), ("x-routerd-service", service),
           ("x-routerd-category", category)]  # fmt: skip
    if session:
        out.append(("x-routerd-session", session))
    return out


def end_headers(end: RouteEnd) -> list[tuple[str, str]]:
    return routed_headers(end.model, end.service, end.category, end.session_id)


def _selected_headers(ev: SelectedEvent | None) -> list[tuple[str, str]]:
    if ev is None:
        return []
    session = ev.session.get("id") if ev.session and ev.session.get("kept") else None
    return routed_headers(ev.model, ev.service, ev.category, session)


async def stream_route(app: App, conn: ConnectionInfo, params: RouteParams, reply: Reply,
                       renderer: Renderer, method: str) -> None:  # fmt: skip
    """Route ``params`` and stream the answer through ``renderer``. The response starts with
    the first bytes to send, so a request failing before raises (for an error status)."""
    last: list[SelectedEvent] = []

    async def begin() -> None:
        if not reply.started:
            headers = [
                ("cache-control", "no-cache"),
                *_selected_headers(last[-1] if last else None),
            ]
            await reply.start(200, renderer.content_type, headers)

    async def emit(event: str, data: Any) -> None:
        if event == "selected":
            last.append(data)
        out = renderer.event(event, data)
        if out:
            await begin()
            await reply.write(out)

    try:
        end, answer = await route(app, conn, params, EventSink(emit), method)
    except RouterdError as exc:
        if not reply.started:
            raise
        await reply.write(renderer.failure(exc))
        await reply.finish()
        return
    await begin()
    await reply.write(renderer.closing(end, answer))
    await reply.finish()


def model_facts(app: App) -> list[ModelFacts]:
    """Every routable model now, each id once, in the order routing would try services
    (a model blocked by its checksum is not routable: left out)."""
    try:
        router = router_of(app)
    except LookupError:
        return []
    view = router.view()
    reports = {(am.service, am.model.id): am.model for am in router.registry.available_models()}
    out = []
    for c in view.candidates:
        if c.blocked:
            continue
        m = reports.get((c.service, c.model))
        if m is None:
            out.append(facts_of(c))
            continue
        out.append(
            facts_of(
                c, size=m.size_bytes, size_vram=m.size_vram, digest=m.digest,
                quantization=m.quantization, parameter_size=m.parameter_size, family=m.family,
                expires_at=m.expires_at,
            )
        )  # fmt: skip
    return unique_models(out)


@dataclass(frozen=True)
class Passthrough:
    """A passthrough answer, opened (its body not read yet): close ``response``."""

    service: str
    model: str
    response: httpx.Response  # streaming


async def passthrough(
    app: App,
    client: httpx.AsyncClient,
    conn: ConnectionInfo,
    *,
    path: str,
    body: dict[str, Any],
    purpose: Purpose,
    needs_fim: bool = False,
    audit_text: str = "",
) -> Passthrough:
    """Send ``body`` to the first service that takes it (module docstring); the caller reads
    and closes the response. Raises NotFound when no model fits, Unavailable when every
    service failed."""
    router: Router = router_of(app)
    view = router.view()
    excluded = frozenset(
        name for name, b in view.backends.items() if (b.kind or "") in NO_PASSTHROUGH
    )
    picked = pick_passthrough(
        view.candidates, body.get("model"), purpose, router.catalog,
        needs_fim=needs_fim, excluded=excluded,
    )  # fmt: skip
    if isinstance(picked, str):
        raise NotFound(picked)
    t = router.timeouts
    timeout = httpx.Timeout(connect=t.connect, read=t.first_token, write=t.idle, pool=t.connect)
    failures: list[str] = []
    for c in picked:
        backend = view.backends.get(c.service)
        if backend is None or router.registry.admit(c.service) == "refuse":
            continue
        request = client.build_request(
            "POST",
            chat_url(backend.base_url, path),
            content=json_bytes({**body, "model": c.model}),
            headers={"content-type": "application/json", **backend.credentials.headers()},
            timeout=timeout,
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            health = outcome_from_exception(exc)
            if health is not None:
                router.registry.report_outcome(c.service, health, detail=str(exc))
            failures.append(f"{c.label}: {exc.__class__.__name__}")
            continue
        if response.status_code >= 500:
            await response.aclose()
            router.registry.report_outcome(c.service, "request_5xx",
                                           detail=f"HTTP {response.status_code}")  # fmt: skip
            failures.append(f"{c.label}: HTTP {response.status_code}")
            continue
        router.registry.report_outcome(c.service, "request_ok")
        await _audit(app, conn, c.service, c.model, path, audit_text, response.status_code)
        return Passthrough(c.service, c.model, response)
    await _audit(app, conn, None, None, path, audit_text, None)
    raise Unavailable("no model server took the request: " + "; ".join(failures or ["none"]))


async def _audit(app: App, conn: ConnectionInfo, service: str | None, model: str | None,
                 path: str, text: str, status: int | None) -> None:  # fmt: skip
    ok = status is not None and status < 400
    await app.audit.record(
        AuditEvent(
            event_type="query",
            model=model,
            service=service,
            query=text,
            success=ok,
            error=None if ok else (f"HTTP {status}" if status else "no server answered"),
            uid=conn.peer_uid,
            agent=conn.agent.name if conn.agent is not None else None,
            details={"api": path},
        )
    )


async def close_quietly(response: httpx.Response) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(2.0):
        await response.aclose()
