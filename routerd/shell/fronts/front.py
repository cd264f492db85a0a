"""The HTTP fronts' server: hypercorn serving one ASGI app on loopback TCP and/or a Unix
socket, the guard in front of every route, and the routes table.

Lifecycle (:meth:`HttpFront.run`, a before-READY service): with ``http.enabled`` off it only
waits. Otherwise it reads the token file (creating it 0600 at first start), binds every
``http.listen`` address and ``http.unix_socket`` (taken over like the daemon's own socket:
a live one is never replaced), then serves with hypercorn until cancelled. A front that
cannot listen logs why, shows it in ``status`` (component ``http``) and leaves the rest of
the daemon running.

Per request: the guard (``routerd.core.fronts.guard``) decides before the body is read;
a refusal is answered 401/403 in the API's error shape and recorded as a
``security:http_refused`` event (at most one per kind every 10 s, with the count of those
left out). Then the route's handler runs while a watcher cancels it if the client goes away.
Errors reach the client in the API's shape, never as a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from routerd import __version__
from routerd.core.config import Config, HttpConfig
from routerd.core.egress import EgressPolicy, policy_from_config
from routerd.core.errors import RouterdError
from routerd.core.fronts.guard import (
    Admission,
    Guard,
    ListenAddress,
    Transport,
    admit_request,
    guard_from,
    parse_listen,
)
from routerd.core.fronts.openai_api import error_body
from routerd.core.fronts.wire import status_for
from routerd.shell.app import App
from routerd.shell.dispatch import ConnectionInfo
from routerd.shell.http import make_http_client
from routerd.shell.listener import Listener, StartupError, open_listener
from routerd.shell.osdeps import set_reuse_address
from routerd.shell.requests import INTERNAL_MESSAGE
from routerd.shell.routing import router_of
from routerd.shell.security import egress_reporter
from routerd_client.protocol import ErrorCode

from .asgi import (
    BodyTooLarge,
    HttpRequest,
    Receive,
    Reply,
    Scope,
    Send,
    read_request,
    serve_lifespan,
    watch_disconnect,
)
from .engine import caller
from .tokens import TokenFile, load_tokens, token_path

__all__ = ["HttpFront", "Api", "Handler"]

log = logging.getLogger("routerd.http")

Api = Literal["openai", "ollama", "metrics", "root"]
Handler = Callable[["HttpFront", HttpRequest, Reply, ConnectionInfo], Awaitable[None]]

#: Seconds between two audit records of refused requests of one kind.
REFUSAL_AUDIT_INTERVAL: Final = 10.0


def api_of(path: str) -> Api:
    if path.startswith("/api/"):
        return "ollama"
    if path == "/metrics":
        return "metrics"
    return "openai" if path.startswith("/v1") else "root"


async def send_error(reply: Reply, api: Api, status: int, message: str, code: str | None = None,
                     headers: list[tuple[str, str]] | None = None) -> None:  # fmt: skip
    """An error answer in the API's shape (OpenAI's object, else Ollama's ``{"error"}``)."""
    if reply.started:
        return
    body = error_body(message, status, code) if api == "openai" else {"error": message}
    await reply.json(status, body, headers or [])


class HttpFront:
    """One daemon's HTTP fronts (see the module docstring)."""

    def __init__(self, app: App, routes: dict[tuple[str, str], Handler],
                 prefixes: dict[tuple[str, str], Handler] | None = None) -> None:  # fmt: skip
        self.app = app
        self.routes = routes
        self.prefixes = prefixes or {}
        self.guard: Guard = guard_from(app.config.http, ())
        self.tokens: TokenFile | None = None
        self.client: httpx.AsyncClient | None = None
        self.listening: list[str] = []
        self.error: str | None = None
        self.requests = 0
        self.refused = 0
        self.socket_private = app.config.daemon.socket_group is None
        self._last_refusal: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._stopping = trio.Event()  # a shutdown began: hypercorn stops taking connections
        self._stopped = trio.Event()  # ... and has let its requests in flight finish
        self._serving = False
        self._closers: list[Callable[[], None]] = []  # our listening sockets (hypercorn's own
        # are duplicates: the kernel keeps listening until both are closed)

    # --- configuration ---------------------------------------------------------------------

    def _load_tokens(self, config: Config, *, create: bool) -> TokenFile:
        """Read (or make) the token file; blocking, so a worker thread's job at start."""
        path = token_path(config, self.app.env)
        try:
            return load_tokens(path, create=create)
        except OSError as exc:
            log.error("cannot read the HTTP token file %s: %s", path, exc.strerror or exc)
            return TokenFile(path, (), False, False)

    def _use_tokens(self, config: Config, tokens: TokenFile) -> None:
        self.tokens = tokens
        if tokens.exposed:
            self.app.audit.security(
                "http_tokens_exposed",
                f"{tokens.path} can be read by other users: chmod 600 it and replace its tokens",
                path=str(tokens.path),
            )
        self.guard = guard_from(config.http, tokens.tokens)

    def on_reload(self, old: Config, new: Config) -> None:
        """Reload hook: re-read the tokens and the guard's settings."""
        moved = [k for k in ("enabled", "listen", "unix_socket")
                 if getattr(old.http, k) != getattr(new.http, k)]  # fmt: skip
        if moved:
            log.warning("http.%s cannot change while routerd runs; restart it to apply",
                        ", http.".join(moved))  # fmt: skip
        if new.http.enabled and self.listening:
            self._use_tokens(new, self._load_tokens(new, create=False))  # a few bytes

    def status(self) -> dict[str, Any]:
        http = self.app.config.http
        out: dict[str, Any] = {
            "enabled": http.enabled,
            "listening": list(self.listening),
            "openai": http.openai,
            "ollama": http.ollama,
            "metrics": http.metrics,
            "require_token": http.require_token,
            "tokens": len(self.tokens.tokens) if self.tokens else 0,
            "token_file": str(self.tokens.path) if self.tokens else None,
            "requests": self.requests,
            "refused": self.refused,
        }
        if self.error:
            out["error"] = self.error
        where = ", ".join(self.listening) or "nothing"
        out["summary"] = "off" if not http.enabled else self.error or f"serving on {where}"
        return out

    # --- serving ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the fronts (module docstring) until cancelled."""
        config = self.app.config
        if not config.http.enabled:
            task_status.started()
            await trio.sleep_forever()
        load = functools.partial(self._load_tokens, config, create=True)
        self._use_tokens(config, await trio.to_thread.run_sync(load))
        try:
            tcp, unix = self._bind(config)
        except StartupError as exc:
            self.error = f"not serving: {exc}"
            log.error("the HTTP front is not serving: %s", exc)
            task_status.started()
            await trio.sleep_forever()
        client = make_http_client(
            self._egress,
            timeout=self.app.config.routing.timeouts.connect,
            headers={"User-Agent": f"routerd/{__version__}"},
            on_refused=egress_reporter(self.app),
        )
        self._closers = [functools.partial(_stop_listening, s, s.close) for s in tcp]
        if unix is not None:
            self._closers.append(functools.partial(_stop_listening, unix.sock, unix.close))
        try:
            async with client, trio.open_nursery() as nursery:
                self.client = client
                for sockets, transport in ((tcp, "tcp"), ([unix.sock] if unix else [], "unix")):
                    if sockets:
                        binds = await nursery.start(self._serve, sockets, transport)
                        self.listening += binds
                log.info("HTTP front serving on %s", ", ".join(self.listening))
                self._serving = True
                task_status.started()
        finally:
            self._serving = False
            self._stopped.set()
            self.client = None
            self._close_listeners()

    async def drain(self) -> None:
        """The daemon shuts down (``App.add_drain``): stop taking connections, and return once
        the requests in flight are answered (hypercorn cancels what is left after
        ``daemon.shutdown_grace``)."""
        if not self._serving:
            return
        self._stopping.set()
        self._close_listeners()  # new connections are refused at once, not left in the backlog
        await self._stopped.wait()

    def _close_listeners(self) -> None:
        closers, self._closers = self._closers, []
        for close in closers:
            close()

    def _egress(self) -> EgressPolicy:
        """The egress policy in force (routing's, which follows reloads)."""
        try:
            return router_of(self.app).egress
        except LookupError:  # no routing: passthrough finds no model anyway
            return policy_from_config(self.app.config.security)

    def _bind(self, config: Config) -> tuple[list[socket.socket], Listener | None]:
        tcp: list[socket.socket] = []
        try:
            for entry in config.http.listen:
                parsed = parse_listen(entry)
                assert isinstance(parsed, ListenAddress)  # validated with the configuration
                tcp.append(_tcp_socket(parsed))
            unix = None
            if config.http.unix_socket:
                unix = open_listener(
                    config.http.unix_socket, group=config.daemon.socket_group, env={}
                )
        except BaseException:
            for s in tcp:
                s.close()
            raise
        return tcp, unix

    async def _serve(self, sockets: list[socket.socket], transport: Transport, *,
                     task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:  # fmt: skip
        hc = HypercornConfig()
        # hypercorn owns duplicates (and closes them); we keep and close the originals.
        # (socket.dup, not os.dup: on Windows a socket is not a C runtime descriptor.)
        hc.bind = [f"fd://{s.dup().detach()}" for s in sockets]
        hc.errorlog = logging.getLogger("routerd.http.server")
        hc.accesslog = None
        hc.include_server_header = False
        hc.graceful_timeout = self.app.config.daemon.shutdown_grace

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            await self.handle(scope, receive, send, transport)

        def where(bind: str) -> str:
            return bind if transport == "tcp" else f"unix:{self.app.config.http.unix_socket}"

        async with trio.open_nursery() as nursery:
            binds = await nursery.start(functools.partial(
                serve, asgi, hc, shutdown_trigger=self._stopping.wait))  # type: ignore[arg-type]
            task_status.started([where(b) for b in binds])

    # --- one request -----------------------------------------------------------------------

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, transport: Transport
    ) -> None:
        """The ASGI entry point for one connection scope."""
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1003})
            return
        config = self.app.config
        http = config.http
        path = scope.get("path") or "/"
        api = api_of(path)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in reversed(scope.get("headers", []))}  # fmt: skip
        admission = admit_request(
            self.guard,
            transport=transport,
            host=headers.get("host"),
            origin=headers.get("origin"),
            authorization=headers.get("authorization"),
        )
        reply = Reply(send, self.app.instance_id, config.daemon.slow_consumer_timeout,
                      cors=admission.cors)  # fmt: skip
        if not admission.allowed:
            self._refused(admission, path, scope, headers)
            extra = (
                [("www-authenticate", 'Bearer realm="routerd"')] if admission.status == 401 else []
            )
            await send_error(reply, api, admission.status, admission.reason, admission.kind, extra)
            return
        self.requests += 1
        method = scope["method"].upper()
        if method == "OPTIONS":
            await reply.preflight()
            return
        try:
            req = await read_request(scope, receive, transport, http.max_body_bytes)
        except BodyTooLarge:
            await send_error(reply, api, 413, f"the body is over {http.max_body_bytes} bytes "
                             "(http.max_body_bytes)", "body_too_large")  # fmt: skip
            return
        if req is None:
            return
        handler = self._handler(method, path, http)
        if handler is None:
            await self._not_found(reply, api, method, path, http)
            return
        conn = caller(self.app, req, admission, socket_private=self.socket_private)
        await self._run(handler, req, reply, conn, api, receive)

    def _enabled(self, api: Api, http: HttpConfig) -> bool:
        return {"openai": http.openai, "ollama": http.ollama, "metrics": http.metrics}.get(
            api, True
        )

    def _handler(self, method: str, path: str, http: HttpConfig) -> Handler | None:
        if not self._enabled(api_of(path), http):
            return None
        found = self.routes.get((method, path.rstrip("/") or "/"))
        if found is None:
            for (m, prefix), h in self.prefixes.items():
                if m == method and path.startswith(prefix) and len(path) > len(prefix):
                    return h
        return found

    async def _not_found(self, reply: Reply, api: Api, method: str, path: str,
                         http: HttpConfig) -> None:  # fmt: skip
        key = path.rstrip("/") or "/"
        other = [m for (m, p) in self.routes if p == key] if self._enabled(api, http) else []
        if other:
            await send_error(reply, api, 405, f"{method} is not allowed on {path}",
                             "method_not_allowed", [("allow", ", ".join(sorted(other)))])  # fmt: skip
            return
        await send_error(reply, api, 404, f"no such endpoint: {method} {path}", "not_found")

    async def _run(self, handler: Handler, req: HttpRequest, reply: Reply, conn: ConnectionInfo,
                   api: Api, receive: Receive) -> None:  # fmt: skip
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await watch_disconnect(receive)
                nursery.cancel_scope.cancel()  # the client left: stop working for it

            nursery.start_soon(watch)
            try:
                await self._call(handler, req, reply, conn, api)
            finally:
                nursery.cancel_scope.cancel()

    async def _call(self, handler: Handler, req: HttpRequest, reply: Reply, conn: ConnectionInfo,
                    api: Api) -> None:  # fmt: skip
        """Run ``handler``; answer its error in the API's shape (cancellation propagates)."""
        try:
            await handler(self, req, reply, conn)
        except BaseException as exc:
            error = _routerd_error(exc)
            if error is None:
                raise
            if error.code == ErrorCode.INTERNAL and not isinstance(exc, RouterdError):
                log.error("HTTP %s %s failed", req.method, req.path, exc_info=exc)
            await send_error(reply, api, status_for(error.code), error.message, error.code)
        if reply.started and not reply.finished and not reply.broken:
            with trio.move_on_after(1.0):
                await reply.finish()

    def _refused(self, admission: Admission, path: str, scope: Scope,
                 headers: dict[str, str]) -> None:  # fmt: skip
        self.refused += 1
        kind = admission.kind
        now = trio.current_time()
        last = self._last_refusal.get(kind)
        if last is not None and now - last < REFUSAL_AUDIT_INTERVAL:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last_refusal[kind] = now
        client = scope.get("client")
        details: dict[str, Any] = {
            "refusal": kind,
            "path": path[:200],
            "peer": f"{client[0]}:{client[1]}" if client else "unix",
            "host": headers.get("host", "")[:200],
        }
        if "origin" in headers:
            details["origin"] = headers["origin"][:200]
        if "user-agent" in headers:
            details["user_agent"] = headers["user-agent"][:200]
        left_out = self._suppressed.pop(kind, 0)
        if left_out:
            details["not_recorded_before"] = left_out
        self.app.audit.security("http_refused", admission.reason, **details)


def _stop_listening(sock: socket.socket, close: Callable[[], None]) -> None:
    """Stop ``sock`` listening, then ``close`` it. hypercorn serves a duplicate of it, which
    it leaves to the garbage collector: closing ours alone would keep the kernel queueing
    connections nobody accepts. ``shutdown`` stops the socket itself, duplicates included
    (Linux; elsewhere it may refuse, and closing is what is left)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    close()


def _tcp_socket(address: ListenAddress) -> socket.socket:
    family = socket.AF_INET6 if address.family_v6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        set_reuse_address(sock)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address.bind_host, address.port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen on {address.bind_host}:{address.port}: {exc.strerror or exc} "
            "(http.listen)"
        ) from None
    return sock


def _routerd_error(exc: BaseException) -> RouterdError | None:
    """The error to answer ``exc`` with; None when it must propagate (cancellation). A group
    of RouterdErrors answers with its first; anything else is internal."""
    if isinstance(exc, RouterdError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        if exc.subgroup(trio.Cancelled) is not None:
            return None
        ours, others = exc.split(RouterdError)
        if ours is None or others is not None:
            return RouterdError(INTERNAL_MESSAGE)
        first: BaseException = ours
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        assert isinstance(first, RouterdError)
        return first
    if isinstance(exc, Exception):
        return RouterdError(INTERNAL_MESSAGE)
    return None
