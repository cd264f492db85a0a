"""The daemon process: configuration, counters, the listener, signals and shutdown.

Lifecycle of :meth:`App.run`:

1. take the socket over (or inherit it), or on Windows create the named pipe
   (``routerd.shell.transport``) — :class:`~routerd.shell.transport.StartupError` if not;
2. open the signal receiver (SIGTERM/SIGINT: shut down; SIGHUP: reload; on Windows
   SIGINT/SIGBREAK shut down and only the ``config.reload`` request reloads);
3. start the services registered with ``before_ready=True`` (``nursery.start`` each);
4. start the server with ``nursery.start``: it returns once the socket accepts work;
5. send ``READY=1`` and report started; then start the ``before_ready=False`` services (slow
   warm-ups), each on its own (a slow one holds up no other), which show their progress in
   ``status`` through components;
6. on shutdown: ``STOPPING=1``, stop accepting, answer new requests ``unavailable``, give
   requests in flight ``daemon.shutdown_grace`` seconds (the socket's, and those of the other
   ways in registered with :meth:`add_drain`, such as the HTTP fronts), cancel the rest with
   ``unavailable``, write what is queued, close connections, remove the socket file if we
   created it.

Invariants: a failed reload changes nothing but ``last_reload``; the generation grows by one per
successful reload; the socket path and group never change while running.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import trio

from routerd.core.audit import AuditSink, NullAudit
from routerd.core.config import Config, ConfigError, default_config
from routerd.core.errors import BadConfig
from routerd.core.stats import Counters
from routerd_client.protocol import ErrorCode, ReloadResult

from .config_file import find_default_config, load_config_file
from .dispatch import AccessHook, Registry
from .logs import event
from .methods import build_registry
from .notify import monotonic_usec, notify
from .outbound import DEFAULT_HIGH_WATER
from .server import Server
from .transport import Endpoint, open_endpoint, serve_address, signal_names

__all__ = ["App", "FINAL_FLUSH_TIMEOUT", "SHUTDOWN_MESSAGE"]

log = logging.getLogger(__name__)

#: Seconds allowed, after the grace period, for cancelled requests to send their final frames.
FINAL_FLUSH_TIMEOUT = 2.0

SHUTDOWN_MESSAGE = "routerd is shutting down"

# Settings the running daemon cannot change: they keep their start-up values on reload.
_FROZEN_DAEMON_FIELDS = ("socket", "socket_group", "state_dir")

ComponentStatus = Callable[[], Any]
#: A long-lived task: ``async def run(*, task_status=trio.TASK_STATUS_IGNORED) -> None`` that
#: calls ``task_status.started()`` once it can serve, then runs until cancelled.
Service = Callable[..., Awaitable[None]]

#: Called as ``hook(old_config, new_config)`` after a successful reload.
ReloadHook = Callable[[Config, Config], None]


class App:
    """One daemon: holds the configuration in force, counters and the method registry.

    ``config_option`` is the ``--config`` path (``None``: the default locations, re-searched on
    every reload); ``config_path`` is the file ``config`` came from (``None``: defaults).
    ``env`` is the process environment (tests pass their own).
    """

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        config_option: Path | None = None,
        socket_option: str | None = None,
        env: Mapping[str, str] | None = None,
        registry: Registry | None = None,
        high_water: int = DEFAULT_HIGH_WATER,
        on_log_level: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self._config_option = config_option
        self._socket_option = socket_option
        self._env: Mapping[str, str] = os.environ if env is None else env
        self.registry = registry if registry is not None else build_registry()
        self._high_water = high_water
        self._on_log_level = on_log_level
        self.counters = Counters()
        self.instance_id = secrets.token_hex(16)
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
        self.generation = 1
        self.last_reload: dict[str, Any] | None = None
        self.socket_path: str | None = None
        #: Where the daemon listens (the Unix socket, or the named pipe on Windows).
        self.endpoint: Endpoint | None = None
        self.server: Server | None = None
        self._components: dict[str, ComponentStatus] = {}
        self._services: list[tuple[str, Service, bool]] = []
        self._reload_hooks: list[ReloadHook] = []
        self._drains: list[Callable[[], Awaitable[None]]] = []
        self._reload_lock: trio.Lock | None = None
        self._shutdown: trio.Event | None = None
        self._grace_scope: trio.CancelScope | None = None
        #: The audit trail (``routerd.shell.audit``): ``record``/``record_nowait`` an
        #: ``AuditEvent``, ``security(kind, reason, **details)``. A no-op until installed.
        self.audit: AuditSink = NullAudit()
        #: Peer admission and method capabilities (``routerd.shell.access``); None admits
        #: whoever the socket's file mode lets connect.
        self.access: AccessHook | None = None

    @property
    def env(self) -> Mapping[str, str]:
        """The daemon's environment (``os.environ`` unless the caller gave another)."""
        return self._env

    # --- status components --------------------------------------------------------------------

    def add_component(self, name: str, provider: ComponentStatus) -> None:
        """Show ``provider()`` (a msgpack-encodable map) under ``status.components[name]``.

        The provider is called on every ``status`` request; it must be cheap and must not
        block (report cached state). An exception in it is logged and reported as an error
        entry, never as a failed ``status``.
        """
        self._components[name] = provider

    def remove_component(self, name: str) -> None:
        self._components.pop(name, None)

    def component_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, provider in list(self._components.items()):
            try:
                value = provider()
                msgspec.msgpack.encode(value)  # a bad value must not break status for all
            except Exception:
                log.exception("status of component %r failed", name)
                value = {"error": "status unavailable; the daemon log has the details"}
            out[name] = value
        return out

    # --- services -----------------------------------------------------------------------------

    def add_service(self, name: str, run: Service, *, before_ready: bool = True) -> None:
        """Run ``run`` for the daemon's lifetime, started with ``nursery.start``.

        ``before_ready=True``: started before the socket accepts work (READY waits for its
        ``started()``). ``False``: started after READY; use it for slow warm-ups, which should
        report their progress through :meth:`add_component`. Services are cancelled after the
        shutdown grace period, once no request needs them. Register before :meth:`run`.
        """
        self._services.append((name, run, before_ready))

    def add_drain(self, drain: Callable[[], Awaitable[None]]) -> None:
        """Await ``drain()`` when a shutdown begins, alongside the socket's requests in flight:
        it should stop taking new work and return once its work in flight is done. What is
        still running after ``daemon.shutdown_grace`` seconds is cancelled with the services."""
        self._drains.append(drain)

    async def _start_services(self, nursery: trio.Nursery, before_ready: bool) -> None:
        for name, run, early in self._services:
            if early is not before_ready:
                continue
            if before_ready:  # in order: READY waits for each
                log.debug("starting service %s", name)
                await nursery.start(run)
            else:
                nursery.start_soon(self._start_late, nursery, name, run)

    @staticmethod
    async def _start_late(nursery: trio.Nursery, name: str, run: Service) -> None:
        log.debug("starting service %s", name)
        await nursery.start(run)

    # --- reload hooks -------------------------------------------------------------------------

    def add_reload_hook(self, hook: ReloadHook) -> None:
        """Call ``hook(old, new)`` after each successful reload, once ``new`` is in force.

        Hooks run in registration order inside the reload; they must be quick and must not
        raise (an exception is logged and the remaining hooks still run).
        """
        self._reload_hooks.append(hook)

    # --- running ------------------------------------------------------------------------------

    async def run(
        self,
        *,
        handle_signals: bool = True,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until :meth:`request_shutdown` (or SIGTERM/SIGINT), then shut down cleanly.

        ``task_status.started()`` is called once the socket accepts work. Raises
        :class:`~routerd.shell.transport.StartupError` (before starting) if the socket cannot be
        served, e.g. another live daemon holds it.
        """
        self._shutdown = trio.Event()
        self._reload_lock = trio.Lock()
        daemon = self.config.daemon
        address = serve_address(self._socket_option, self._env, daemon.socket)
        self.endpoint = endpoint = open_endpoint(daemon, address, self._env)
        self.socket_path = endpoint.address
        try:
            async with trio.open_nursery() as nursery:
                if handle_signals:
                    await nursery.start(self._handle_signals)
                await self._start_services(nursery, before_ready=True)
                self.server = Server(
                    self, endpoint.listener, self.registry, high_water=self._high_water
                )
                await nursery.start(self.server.run)
                self.started_at = time.time()
                self.started_monotonic = time.monotonic()
                log.info(
                    "routerd serving on %s (pid %d, config %s)",
                    self.socket_path, os.getpid(), self.config_path or "built-in defaults",
                    extra=event("ready", socket=self.socket_path),
                )
                notify("READY=1", f"STATUS=serving on {self.socket_path}", env=self._env)
                task_status.started()
                await self._start_services(nursery, before_ready=False)
                await self._shutdown.wait()
                await self._drain(self.server)
                nursery.cancel_scope.cancel()
        finally:
            endpoint.close()
            log.info("routerd stopped", extra=event("stopped"))

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown; a second call skips what is left of the grace period."""
        if self._shutdown is None:
            raise RuntimeError("the app is not running")
        if self._shutdown.is_set():
            if self._grace_scope is not None:
                log.info("second stop request: cancelling requests in flight now")
                self._grace_scope.cancel()
            return
        self._shutdown.set()

    @property
    def shutting_down(self) -> bool:
        return self._shutdown is not None and self._shutdown.is_set()

    async def _drain(self, server: Server) -> None:
        notify("STOPPING=1", env=self._env)
        server.stop_accepting()
        server.draining = True
        grace = self.config.daemon.shutdown_grace
        if server.in_flight:
            log.info("shutting down: %d requests in flight get %g s", server.in_flight, grace)
        with trio.move_on_after(grace) as self._grace_scope:
            async with trio.open_nursery() as drains:
                for drain in self._drains:
                    drains.start_soon(drain)
                await server.wait_idle()
        if server.in_flight:
            log.warning("cancelling %d requests still in flight", server.in_flight)
            server.cancel_requests(ErrorCode.UNAVAILABLE, SHUTDOWN_MESSAGE)
        with trio.move_on_after(FINAL_FLUSH_TIMEOUT):
            await server.wait_idle()
            await server.flush()

    async def _handle_signals(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        stop, reload = signal_names()
        wanted = [signal.Signals[name] for name in stop + reload]
        with trio.open_signal_receiver(*wanted) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if name in reload:
                    try:
                        await self.reload(reason=name)
                    except BadConfig:
                        pass  # logged by reload; the old configuration stays in force
                    except Exception:
                        log.exception("configuration reload on %s failed", name)
                else:
                    log.info("received %s", name, extra=event("stopping", signal=name))
                    self.request_shutdown()

    # --- configuration ------------------------------------------------------------------------

    def _load(self) -> tuple[Config, Path | None]:
        path = self._config_option or find_default_config(self._env)
        if path is None:
            return default_config(), None
        return load_config_file(path, self._env), path

    async def reload(self, *, reason: str = "request") -> ReloadResult:
        """Re-read the configuration file and apply it.

        Raises :class:`~routerd.core.errors.BadConfig` (and logs it) if the new configuration
        is invalid; the configuration in force is then unchanged.
        """
        lock = self._reload_lock
        if lock is None:
            raise RuntimeError("the app is not running")
        async with lock:
            notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", env=self._env)
            try:
                new, path = await trio.to_thread.run_sync(self._load)
            except ConfigError as exc:
                self.last_reload = {"at": time.time(), "ok": False, "error": str(exc)}
                log.error(
                    "configuration reload (%s) failed; keeping generation %d: %s",
                    reason, self.generation, exc,
                    extra=event("reload_failed", generation=self.generation),
                )
                self.audit.security("config_rejected", str(exc), path=exc.path, trigger=reason)
                raise BadConfig(f"configuration not reloaded: {exc}") from None
            finally:
                notify("READY=1", env=self._env)
            new = self._keep_frozen(new)
            changed = new != self.config or path != self.config_path
            old = self.config
            old_level = old.daemon.log_level
            self.config = new
            self.config_path = path
            self.generation += 1
            self.last_reload = {"at": time.time(), "ok": True, "error": None}
            if new.daemon.log_level != old_level and self._on_log_level is not None:
                self._on_log_level(new.daemon.log_level)
            for hook in list(self._reload_hooks):
                try:
                    hook(old, new)
                except Exception:
                    log.exception("a reload hook failed; the new configuration stays in force")
            log.info(
                "configuration reloaded (%s): generation %d from %s%s",
                reason, self.generation, path or "built-in defaults",
                "" if changed else " (unchanged)",
                extra=event("reloaded", generation=self.generation),
            )
            return ReloadResult(
                generation=self.generation,
                config_path=str(path) if path is not None else None,
                changed=changed,
            )

    def _keep_frozen(self, new: Config) -> Config:
        old_d, new_d = self.config.daemon, new.daemon
        frozen = {f: getattr(old_d, f) for f in _FROZEN_DAEMON_FIELDS}
        moved = [f for f, value in frozen.items() if getattr(new_d, f) != value]
        if not moved:
            return new
        log.warning(
            "%s cannot change while routerd runs; restart it to apply",
            ", ".join(f"daemon.{f}" for f in moved),
        )
        return msgspec.structs.replace(new, daemon=msgspec.structs.replace(new_d, **frozen))
