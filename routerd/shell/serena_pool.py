"""The pool of warm Serenas: one supervisor per workspace, who may use which, and Serena-first
context for routed requests.

* Configured workspaces (``serena.workspace`` and ``serena.workspaces`` with ``start``, up to
  ``max_running``) start when the pool starts, which the daemon does after READY. Any other
  readable directory a client names starts on first use (``serena.unlisted_workspaces``).
  When ``max_running`` Serenas run, the least recently used unlisted one is stopped to make
  room; one unused for ``idle_timeout`` is stopped anyway. Configured ones are never stopped
  to make room.
* Before any start, leftovers of an earlier daemon that died without stopping its Serenas are
  killed (``serena_procs.PidBook``).
* Every request is checked first: the client's uid must be able to read the workspace root
  and the named file (``serena_workspaces``; on Windows, where every client is the daemon's
  own user, the daemon must), and the tool must be on its allow-list
  (``routerd.core.serena_access``).
* Each Serena gets routerd's own files under ``<home>/<workspace key>/``: ``home/`` is its
  ``SERENA_HOME`` (``serena_config.yml``), ``data/`` its project folder (``project.yml`` and
  caches), so nothing is written into the user's project.
* Every start of a Serena runs with ``SERENA_USAGE_REPORTING=false`` and is recorded as the
  security event ``serena_usage_reporting_disabled`` (``security``: the audit's reporter).
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import random
import secrets
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import trio

from routerd.core.config import SerenaConfig, SerenaWorkspaceConfig
from routerd.core.errors import (
    Busy,
    Forbidden,
    RouterdError,
    Timeout,
    Unavailable,
)
from routerd.core.serena import (
    BackoffPolicy,
    WorkspaceUsage,
    base_name,
    global_config,
    plan_evictions,
    project_config,
    serena_args,
    serena_environment,
    workspace_key,
)
from routerd.core.serena_access import (
    PathFlavor,
    WorkspaceSpec,
    path_flavor,
    relative_path,
    serena_exclusions,
    tools_for,
)
from routerd.core.serena_context import (
    ContextPlanner,
    ContextResult,
    ContextUnavailable,
    Step,
    StepOutcome,
    context_request,
    render_context,
)

from .serena_procs import PidBook, child_groups
from .serena_supervisor import Settings, Supervisor, run_plan
from .serena_types import (
    Launcher,
    LaunchSpec,
    SerenaBusy,
    SerenaError,
    SerenaGone,
    SerenaTimeout,
    ToolAnswer,
)
from .serena_workspaces import Client, Resolved, resolve_workspace

__all__ = ["Budget", "Client", "Resolved", "SerenaPool", "translate_error"]

log = logging.getLogger(__name__)

#: Seconds between looks for idle Serenas.
HOUSEKEEPING_INTERVAL = 30.0
_STATE_WORDS = {"starting": "still starting", "warming": "still warming up", "backoff": "down",
                "stopping": "stopping", "stopped": "stopped"}


class Budget(msgspec.Struct, frozen=True):
    """How much context to gather: ``tokens`` in the prompt, ``seconds`` to gather it."""

    tokens: int
    seconds: float


def translate_error(exc: SerenaError) -> RouterdError:
    """The error reply for a Serena failure."""
    if isinstance(exc, SerenaBusy):
        return Busy(str(exc))
    if isinstance(exc, SerenaTimeout):
        return Timeout(str(exc))
    return Unavailable(str(exc))


def settings_of(config: SerenaConfig) -> Settings:
    return Settings(
        start_timeout=config.start_timeout, call_timeout=config.call_timeout,
        ping_interval=config.ping_interval, ping_timeout=config.ping_timeout,
        policy=BackoffPolicy(initial=config.backoff_initial, maximum=config.backoff_max))


def _launch_inputs(config: SerenaConfig) -> tuple[Any, ...]:
    """What a running Serena was started with; a change means it must restart."""
    return (config.command, config.languages, config.ls_settings, config.read_tools,
            config.write_tools, config.call_timeout)


class SerenaPool:
    """Supervisors by workspace path. Run :meth:`run` in a nursery (the daemon's service)."""

    def __init__(
        self,
        config: SerenaConfig,
        *,
        home: Path,
        env: Mapping[str, str],
        launcher: Launcher | None = None,
        version: str = "",
        rng: random.Random | None = None,
        warm_up: bool = True,
        security: Callable[..., None] | None = None,
        platform: str = sys.platform,
    ) -> None:
        self.config = config
        self._platform = platform  # whose rules resolve() applies (tests pass "win32")
        #: Whose path rules Serena's paths follow (routerd.core.serena_access).
        self.path_flavor: PathFlavor = path_flavor(platform)
        self._security = security  # (kind, reason, **details), as AuditSink.security
        self.home = home
        self._env = env
        self._launcher: Launcher | None = launcher
        self._version = version
        self._rng = rng or random.Random()
        self._warm_up = warm_up
        self._sups: dict[str, Supervisor] = {}
        self._configured: dict[str, WorkspaceSpec] = {}
        self._pidbook = PidBook(home / "pids")
        self._nursery: trio.Nursery | None = None
        self._running = trio.Event()
        self._enabled = trio.Event()
        if config.enabled:
            self._enabled.set()
        self._start_lock = trio.Lock()
        self.leftovers_killed = 0

    # --- running ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Kill leftovers, start the configured workspaces, stop idle ones, until cancelled."""
        killed = await trio.to_thread.run_sync(self._pidbook.reap)
        self.leftovers_killed = len(killed)
        if self._launcher is None:
            # Loading the SDK takes about half a second of CPU, most of it holding the GIL:
            # in a thread, after READY, and not at all while Serena is disabled (it would
            # stall the requests in flight for nothing). Started meanwhile: the services
            # started after this one must not wait for a reload.
            if not self._enabled.is_set():
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
                await self._enabled.wait()
            mcp_edge = await trio.to_thread.run_sync(importlib.import_module,
                                                     "routerd.shell.serena_mcp")
            self._launcher = mcp_edge.ProcessLauncher()
        self._configured = await trio.to_thread.run_sync(self._configured_specs, self.config)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._running.set()
            task_status.started()
            self._start_configured()
            while True:
                await trio.sleep(HOUSEKEEPING_INTERVAL)
                self._evict(incoming=None)

    def _start_configured(self) -> None:
        if not self.config.enabled or self._nursery is None:
            return
        pinned = [s for s in self._configured.values() if s.start][: self.config.max_running]
        for spec in pinned:
            if spec.path not in self._sups:
                self._spawn(spec)

    def _configured_specs(self, config: SerenaConfig) -> dict[str, WorkspaceSpec]:
        out: dict[str, WorkspaceSpec] = {}
        for entry in config.workspace_entries():
            spec = self._spec_of(entry, config)
            out.setdefault(spec.path, spec)
        return out

    @staticmethod
    def _spec_of(entry: SerenaWorkspaceConfig, config: SerenaConfig) -> WorkspaceSpec:
        return WorkspaceSpec(
            path=os.path.realpath(entry.path), configured=True, start=entry.start,
            writable=entry.writable, write_uids=tuple(entry.write_uids), uids=tuple(entry.uids),
            languages=tuple(entry.languages or config.languages))

    def _pinned(self) -> set[str]:
        starting = [p for p, s in self._configured.items() if s.start]
        return set(starting[: self.config.max_running])

    def _spawn(self, spec: WorkspaceSpec) -> Supervisor:
        assert self._nursery is not None and self._launcher is not None
        key = workspace_key(spec.path, flavor=self.path_flavor)

        async def prepare() -> LaunchSpec:
            launch = await trio.to_thread.run_sync(self._prepare_files, spec, key)
            self._starting(spec, launch)
            return launch

        recorded: list[Any] = [None]  # what the pid book holds for this workspace

        def on_pid(pid: int | None) -> None:
            # Called at spawn, when warm, after every ping, and at exit: write only changes.
            if pid is None:
                if recorded[0] is not None:
                    self._pidbook.forget(key, recorded[0][0])
                recorded[0] = None
                return
            now = (pid, child_groups(pid))
            if now != recorded[0]:
                self._pidbook.record(key, pid, now[1])
                recorded[0] = now

        sup = Supervisor(spec, settings=msgspec.structs.replace(
            settings_of(self.config), warm_up=self._warm_up), launcher=self._launcher,
            prepare=prepare, version=self._version, rng=self._rng, on_pid=on_pid)
        self._sups[spec.path] = sup
        self._nursery.start_soon(self._supervise, sup)
        return sup

    async def _supervise(self, sup: Supervisor) -> None:
        try:
            await sup.run()
        finally:
            if self._sups.get(sup.spec.path) is sup:
                del self._sups[sup.spec.path]

    def _starting(self, spec: WorkspaceSpec, launch: LaunchSpec) -> None:
        """Record that this start keeps Serena's usage reporting off (once per start)."""
        if self._security is not None and launch.env.get("SERENA_USAGE_REPORTING") == "false":
            self._security(
                "serena_usage_reporting_disabled",
                f"Serena for {spec.path} starts with SERENA_USAGE_REPORTING=false",
                workspace=spec.path,
            )

    def _prepare_files(self, spec: WorkspaceSpec, key: str) -> LaunchSpec:
        config = self.config
        base = self.home / key
        serena_home, data = base / "home", base / "data"
        for d in (self.home, base, serena_home, data):
            d.mkdir(mode=0o700, exist_ok=True)
        excluded = serena_exclusions(spec, read_tools=config.read_tools,
                                     write_tools=config.write_tools)
        # JSON is YAML: Serena reads these with its YAML loader.
        (serena_home / "serena_config.yml").write_text(json.dumps(global_config(
            data_dir=str(data), excluded_tools=excluded, ls_settings=config.ls_settings,
            tool_timeout=config.call_timeout, auth_secret=secrets.token_hex(16)), indent=1))
        (data / "project.yml").write_text(json.dumps(project_config(
            name=base_name(spec.path, flavor=self.path_flavor) or "root",
            languages=spec.languages,
            read_only=not spec.writable, excluded_tools=excluded), indent=1))
        return LaunchSpec(
            argv=serena_args(config.command, spec.path),
            env=serena_environment(self._env, home=str(serena_home), program=config.command[0],
                                   flavor=self.path_flavor),
            cwd=spec.path)

    def _evict(self, incoming: str | None) -> bool:
        now = trio.current_time()
        pinned = self._pinned()
        usage = {p: WorkspaceUsage(last_used=s.last_used, pinned=p in pinned, busy=s.busy)
                 for p, s in self._sups.items()}
        plan = plan_evictions(usage, max_running=self.config.max_running,
                              idle_timeout=self.config.idle_timeout, now=now, incoming=incoming)
        for path in plan.stop:
            log.info("stopping Serena for %s (%s)", path,
                     "idle" if now - usage[path].last_used >= self.config.idle_timeout > 0
                     else "making room")
            self._sups.pop(path).request_stop()
        return plan.fits

    async def ensure(self, spec: WorkspaceSpec) -> Supervisor:
        """The supervisor for ``spec``, started if need be (making room first)."""
        if not self.config.enabled:
            raise Unavailable("Serena is disabled (serena.enabled = false)")
        with trio.move_on_after(self.config.call_timeout):
            await self._running.wait()
        if self._nursery is None:
            raise Unavailable("Serena support is still starting")
        async with self._start_lock:
            sup = self._sups.get(spec.path)
            if sup is not None:
                return sup
            if not self._evict(incoming=spec.path):
                raise Busy(f"{len(self._sups)} Serenas already run (serena.max_running) and "
                           "none of them can be stopped now")
            return self._spawn(spec)

    async def stop_all(self) -> None:
        sups = list(self._sups.values())
        for sup in sups:
            sup.request_stop()
        for sup in sups:
            await sup.stopped.wait()

    # --- configuration ----------------------------------------------------------------------

    def apply_config(self, new: SerenaConfig) -> None:
        """A reload: new settings apply to running Serenas; those whose start inputs (command,
        languages, tools, ...) changed restart; unlisted ones stop if they may not run now."""
        old, self.config = self.config, new
        if new.enabled:
            self._enabled.set()
        else:
            for sup in list(self._sups.values()):
                sup.request_stop()
            return
        self._configured = self._configured_specs(new)
        restart = _launch_inputs(old) != _launch_inputs(new)
        for path, sup in list(self._sups.items()):
            spec = self._configured.get(path)
            if spec is None and (sup.spec.configured or not new.unlisted_workspaces):
                self._sups.pop(path).request_stop()
                continue
            sup.settings = msgspec.structs.replace(settings_of(new), warm_up=self._warm_up)
            if spec is not None and spec != sup.spec:
                self._sups.pop(path).request_stop()  # a new supervisor with the new spec
            elif restart:
                sup.request_restart()
        if self._nursery is not None:
            for path, spec in self._configured.items():
                if path not in self._sups and path in self._pinned():
                    self._spawn(spec)

    # --- who may use what -------------------------------------------------------------------

    async def resolve(self, client: Client, *, workspace: str | None,
                      file: str | None) -> Resolved:
        """The workspace and file a request means, after checking ``client`` may read them
        (``serena_workspaces.resolve_workspace``). Raises NotFound, Forbidden or BadRequest."""
        return await trio.to_thread.run_sync(functools.partial(
            resolve_workspace, client, workspace, file, config=self.config,
            configured=self._configured, platform=self._platform))

    def allowed_tools(self, resolved: Resolved) -> frozenset[str]:
        return tools_for(resolved.spec, read_tools=self.config.read_tools,
                         write_tools=self.config.write_tools, writer=resolved.writer)

    def check_arguments(self, resolved: Resolved, arguments: Mapping[str, Any]) -> None:
        """Paths in tool arguments must stay inside the workspace (Serena checks too), by the
        platform's path rules (on Windows: no ``..`` out, no other drive, no ``C:foo``)."""
        for key in ("relative_path", "cwd"):
            value = arguments.get(key)
            if isinstance(value, str) and value and relative_path(
                    resolved.spec.path, value, flavor=self.path_flavor) is None:
                raise Forbidden(f"{key} {value!r} leads outside the workspace")

    # --- calls ------------------------------------------------------------------------------

    async def call(self, resolved: Resolved, tool: str, arguments: dict[str, Any], *,
                   timeout: float | None = None) -> ToolAnswer:
        """Run an allowed tool on the workspace's warm Serena. Raises RouterdError."""
        if tool not in self.allowed_tools(resolved):
            raise Forbidden(f"the Serena tool {tool!r} is not allowed here (see routerctl "
                            "serena tools)")
        self.check_arguments(resolved, arguments)
        sup = await self.ensure(resolved.spec)
        try:
            return await sup.call(tool, arguments, timeout or self.config.call_timeout)
        except SerenaError as exc:
            raise translate_error(exc) from None

    async def warm(self, resolved: Resolved, timeout: float) -> Supervisor:
        """The workspace's supervisor once ready. Raises RouterdError."""
        sup = await self.ensure(resolved.spec)
        if not await sup.wait_ready(trio.current_time() + timeout):
            raise translate_error(sup.unready_error(timeout))
        return sup

    async def gather_context(
        self,
        client: Client,
        *,
        workspace: str | None,
        file: str | None,
        position: tuple[int, int] | None,
        symbol: str | None,
        category: str,
        query: str = "",
        budget: Budget | None = None,
        family: str = "default",
    ) -> ContextResult | ContextUnavailable:
        """Serena-first context for a routed code request; never raises for Serena's sake.

        Returns :class:`ContextUnavailable` (one line why) when Serena is disabled, down, not
        ready within the time budget, or the client may not read the workspace or file.
        """
        config = self.config
        budget = budget or Budget(config.context_tokens, config.context_timeout)
        t0 = trio.current_time()
        deadline = t0 + budget.seconds
        if not config.enabled:
            return ContextUnavailable("Serena is disabled")
        if file is None and symbol is None:
            return ContextUnavailable("the request names no file or symbol")
        try:
            with trio.fail_after(budget.seconds):
                resolved = await self.resolve(client, workspace=workspace, file=file)
                sup = await self.ensure(resolved.spec)
        except RouterdError as exc:
            return ContextUnavailable(exc.message)
        except trio.TooSlowError:
            return ContextUnavailable("out of time before Serena was reached")
        if not await sup.wait_ready(deadline):
            st = sup.status
            state = _STATE_WORDS.get(st.state.value, st.state.value)
            why = f" ({st.last_error})" if st.last_error and state == "down" else ""
            return ContextUnavailable(f"Serena for {resolved.spec.path} is {state}{why}")
        allowed = self.allowed_tools(resolved)
        planner = ContextPlanner(context_request(
            file=resolved.file, position=position, symbol=symbol, category=category,
            query=query))

        async def run(step: Step, left: float) -> StepOutcome:
            if step.tool not in allowed:
                return StepOutcome(failure="tool not allowed")
            answer = await sup.call(step.tool, step.arguments, min(left, config.call_timeout))
            return StepOutcome(text=answer.text, is_error=answer.is_error)

        try:
            await run_plan(planner, run, deadline)
        except SerenaGone as exc:
            parts = planner.parts()
            if parts.symbol is None and not parts.references and parts.overview is None:
                return ContextUnavailable(str(exc))
        parts = planner.parts()
        text, tokens, truncated = render_context(parts, budget.tokens, family)
        return ContextResult(workspace=resolved.spec.path, parts=parts, text=text, tokens=tokens,
                             truncated=truncated,
                             elapsed_ms=round((trio.current_time() - t0) * 1000.0, 1))

    # --- status -----------------------------------------------------------------------------

    def supervisors(self) -> list[Supervisor]:
        return sorted(self._sups.values(), key=lambda s: s.spec.path)

    def get(self, path: str) -> Supervisor | None:
        return self._sups.get(path)

    def status(self) -> dict[str, Any]:
        """The ``serena`` status component (cheap: cached state only)."""
        return {
            "enabled": self.config.enabled,
            "running": len(self._sups),
            "max_running": self.config.max_running,
            "leftovers_killed": self.leftovers_killed,
            "workspaces": [s.snapshot() for s in self.supervisors()],
        }
