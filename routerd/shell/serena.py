"""Keep Serena warm: the feature's installer, its ``serena.*`` methods, and the entry point the
routing feature uses for Serena-first context.

For routing (a code request with file context, or a category that requires Serena)::

    pool = get_serena(app)                      # None when the feature is not installed
    ctx = await pool.gather_context(
        Client(uid=conn.peer_uid, gid=conn.peer_gid, groups=conn.peer_groups),
        workspace=None,                          # or the client's project directory
        file="/abs/or/relative/file.py",         # relative: to the workspace
        position=(line, character),              # 0-based, or None
        symbol="Circle/area",                    # or None
        category="coding",                       # the classification's category
        query=text,                              # refactor/rename words ask for references
        budget=Budget(tokens=1500, seconds=2.0), # None: serena.context_tokens/_timeout
    )
    if isinstance(ctx, ContextResult):
        prompt = enrich_query(text, ctx)         # routerd.core.serena_context
    else:                                        # ContextUnavailable: route without context
        selected_event["serena"] = {"available": False, "reason": ctx.reason}

``gather_context`` never raises for Serena's sake and never takes much longer than the time
budget; it starts a workspace's Serena on first use but does not wait past the budget for it.

Modules: ``routerd.core.serena*`` decide (state machine, backoff, allow-lists, the context plan
and prompt); ``serena_pool`` / ``serena_supervisor`` / ``serena_mcp`` / ``serena_procs`` carry
it out; only the ``serena*`` shell modules import the ``mcp`` SDK.
"""

from __future__ import annotations

import time
import weakref
from pathlib import Path
from typing import Any

import msgspec
import trio

from routerd import __version__
from routerd.core.config import Config
from routerd.core.errors import BadRequest, Forbidden
from routerd.core.serena_access import WRITE_TOOLS, EditError, edit_call
from routerd.core.sessions import is_operator
from routerd_client.protocol_serena import (
    SerenaApplyEditParams,
    SerenaCallParams,
    SerenaCallResult,
    SerenaRestartResult,
    SerenaStatusResult,
    SerenaToolInfo,
    SerenaToolsResult,
    SerenaWorkspaceParams,
    SerenaWorkspaceStatus,
)

from .app import App
from .dispatch import RequestContext
from .osdeps import effective_uid
from .serena_pool import Budget, Client, Resolved, SerenaPool
from .serena_types import Launcher
from .state_dir import ensure_private_dir, resolve_state_dir

__all__ = ["Budget", "Client", "get_serena", "install"]

_POOLS: weakref.WeakKeyDictionary[App, SerenaPool] = weakref.WeakKeyDictionary()


def get_serena(app: App) -> SerenaPool | None:
    """The app's Serena pool, or None if the feature is not installed."""
    return _POOLS.get(app)


def serena_home(config: Config, env: Any) -> Path:
    """``serena.home``, else ``<state directory>/serena``."""
    if config.serena.home:
        return Path(config.serena.home)
    return resolve_state_dir(config.daemon.state_dir, env, uid=effective_uid()) / "serena"


def install(app: App, *, launcher: Launcher | None = None, home: Path | None = None,
            warm_up: bool = True) -> None:
    """Plug Serena into ``app``: the ``serena`` service (started after READY), its status
    component, its reload hook and the ``serena.*`` methods. Tests pass a fake ``launcher``."""
    home = home or serena_home(app.config, app.env)
    pool = SerenaPool(app.config.serena, home=home, env=app.env, launcher=launcher,
                      version=__version__, warm_up=warm_up,
                      security=lambda kind, reason, **details: app.audit.security(
                          kind, reason, **details))
    _POOLS[app] = pool

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.to_thread.run_sync(ensure_private_dir, home)
        await pool.run(task_status=task_status)

    app.add_service("serena", run, before_ready=False)
    app.add_component("serena", pool.status)

    def on_reload(old: Config, new: Config) -> None:
        if old.serena != new.serena:
            pool.apply_config(new.serena)

    app.add_reload_hook(on_reload)
    reg = app.registry
    reg.add("serena.status", _status, params=SerenaWorkspaceParams)
    reg.add("serena.restart", _restart, params=SerenaWorkspaceParams)
    reg.add("serena.tools", _tools, params=SerenaWorkspaceParams)
    reg.add("serena.call", _call, params=SerenaCallParams)
    reg.add("serena.apply_edit", _apply_edit, params=SerenaApplyEditParams)


# --- methods ----------------------------------------------------------------------------------


def _pool(ctx: RequestContext) -> SerenaPool:
    pool = _POOLS.get(ctx.app)
    assert pool is not None, "serena methods registered without a pool"
    return pool


def _client(ctx: RequestContext) -> Client:
    c = ctx.conn
    return Client(uid=c.peer_uid, gid=c.peer_gid, groups=tuple(getattr(c, "peer_groups", ())))


def _is_operator(ctx: RequestContext) -> bool:
    # Root and the daemon's own user; on Windows every pipe peer (osdeps.SELF_UID).
    return is_operator(ctx.conn.peer_uid, effective_uid())


async def _status(ctx: RequestContext, params: SerenaWorkspaceParams) -> SerenaStatusResult:
    pool = _pool(ctx)
    raw = pool.status()
    entries = raw["workspaces"]
    if params.workspace is not None or params.file is not None:
        resolved = await pool.resolve(_client(ctx), workspace=params.workspace, file=params.file)
        entries = [e for e in entries if e["workspace"] == resolved.spec.path]
    return SerenaStatusResult(
        enabled=raw["enabled"], running=raw["running"], max_running=raw["max_running"],
        leftovers_killed=raw["leftovers_killed"],
        workspaces=[msgspec.convert(e, SerenaWorkspaceStatus) for e in entries])


async def _restart(ctx: RequestContext, params: SerenaWorkspaceParams) -> SerenaRestartResult:
    pool = _pool(ctx)
    if params.workspace is None and params.file is None:
        if not _is_operator(ctx):
            raise Forbidden("only root and the daemon's user may restart every Serena; name a "
                            "workspace to restart yours")
        sups = pool.supervisors()
        for sup in sups:
            sup.request_restart()
        return SerenaRestartResult(restarted=[s.spec.path for s in sups])
    resolved = await pool.resolve(_client(ctx), workspace=params.workspace, file=params.file)
    running = pool.get(resolved.spec.path)
    if running is None:
        await pool.ensure(resolved.spec)
    else:
        running.request_restart()
    return SerenaRestartResult(restarted=[resolved.spec.path])


async def _tools(ctx: RequestContext, params: SerenaWorkspaceParams) -> SerenaToolsResult:
    pool = _pool(ctx)
    resolved = await pool.resolve(_client(ctx), workspace=params.workspace, file=params.file)
    sup = await pool.warm(resolved, pool.config.start_timeout)
    allowed = pool.allowed_tools(resolved)
    tools = [SerenaToolInfo(name=t.name, description=t.description,
                            writes=t.name in WRITE_TOOLS or t.read_only is False,
                            input_schema=t.input_schema)
             for t in sup.tools if t.name in allowed]
    return SerenaToolsResult(workspace=resolved.spec.path, writable=resolved.writer,
                             tools=sorted(tools, key=lambda t: (t.writes, t.name)))


async def _run(ctx: RequestContext, resolved: Resolved, tool: str, arguments: dict[str, Any],
               timeout: float | None) -> SerenaCallResult:
    t0 = time.perf_counter()
    answer = await _pool(ctx).call(resolved, tool, arguments, timeout=timeout)
    try:
        data = msgspec.json.decode(answer.text) if answer.text else None
    except msgspec.DecodeError:
        data = None
    return SerenaCallResult(workspace=resolved.spec.path, tool=tool, is_error=answer.is_error,
                            text=answer.text, data=data,
                            elapsed_ms=round((time.perf_counter() - t0) * 1000.0, 2))


def _timeout(value: float | None) -> float | None:
    if value is not None and not (0 < value < 86400):
        raise BadRequest(f"timeout must be more than 0 seconds and less than a day ({value})")
    return value


async def _call(ctx: RequestContext, params: SerenaCallParams) -> SerenaCallResult:
    pool = _pool(ctx)
    resolved = await pool.resolve(_client(ctx), workspace=params.workspace, file=params.file)
    return await _run(ctx, resolved, params.tool, dict(params.arguments),
                      _timeout(params.timeout))


async def _apply_edit(ctx: RequestContext, params: SerenaApplyEditParams) -> SerenaCallResult:
    pool = _pool(ctx)
    edit = params.edit
    resolved = await pool.resolve(_client(ctx), workspace=params.workspace, file=edit.file)
    if not resolved.writer:
        raise Forbidden(
            f"Serena may not edit {resolved.spec.path} for uid {ctx.conn.peer_uid}: the "
            "workspace must be configured writable (serena.workspaces: writable, write_uids)")
    try:
        tool, arguments = edit_call(edit, resolved.spec.path, flavor=pool.path_flavor)
    except EditError as exc:
        raise BadRequest(str(exc)) from None
    return await _run(ctx, resolved, tool, arguments, _timeout(params.timeout))
