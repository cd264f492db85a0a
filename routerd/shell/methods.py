"""The daemon's own methods: ``hello``, ``ping``, ``status`` and ``config.reload``.

Later features register their methods on the same :class:`~routerd.shell.dispatch.Registry`
(see ``build_registry``) and add their status under ``components`` with
:meth:`routerd.shell.app.App.add_component`.
"""

from __future__ import annotations

import os
import time

from routerd import __version__
from routerd.core.errors import UnsupportedVersion
from routerd_client.protocol import (
    PROTOCOL_VERSION,
    EmptyParams,
    HelloParams,
    HelloResult,
    PingResult,
    ReloadResult,
    StatusResult,
)

from .dispatch import Registry, RequestContext

__all__ = ["register_core_methods", "build_registry"]


async def hello(ctx: RequestContext, params: HelloParams) -> HelloResult:
    major, minor = params.protocol
    if major != PROTOCOL_VERSION[0]:
        ours = f"{PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]}"
        raise UnsupportedVersion(
            f"protocol {major}.{minor} is not supported; this routerd speaks {ours}",
            data={"protocol": list(PROTOCOL_VERSION)},
        )
    ctx.conn.client = params.client
    ctx.conn.agent = params.agent
    app = ctx.app
    return HelloResult(
        daemon="routerd",
        version=__version__,
        protocol=PROTOCOL_VERSION,
        instance_id=app.instance_id,
        capabilities=app.registry.names(),
        max_frame_size=ctx.conn.max_frame_size or app.config.daemon.max_frame_size,
    )


async def ping(ctx: RequestContext, params: EmptyParams) -> PingResult:
    return PingResult()


async def status(ctx: RequestContext, params: EmptyParams) -> StatusResult:
    app = ctx.app
    counters = app.counters
    return StatusResult(
        version=__version__,
        pid=os.getpid(),
        started_at=app.started_at,
        uptime_s=round(time.monotonic() - app.started_monotonic, 3),
        instance_id=app.instance_id,
        socket=app.socket_path or "",
        config_path=str(app.config_path) if app.config_path is not None else None,
        config_generation=app.generation,
        last_reload=app.last_reload,
        connections=counters.connections_map(),
        requests=counters.requests_map(),
        errors=dict(counters.errors),
        methods=dict(counters.methods),
        components=app.component_status(),
    )


async def config_reload(ctx: RequestContext, params: EmptyParams) -> ReloadResult:
    result: ReloadResult = await ctx.app.reload(reason=f"request from connection {ctx.conn.id}")
    return result


def register_core_methods(registry: Registry) -> None:
    """Register hello, ping, status and config.reload on ``registry``."""
    # hello, ping and status never wait: inline saves a task per call (ping is the latency
    # benchmark). config.reload reads a file in a thread, so it gets a task of its own.
    registry.add("hello", hello, params=HelloParams, inline=True)
    registry.add("ping", ping, inline=True)
    registry.add("status", status, inline=True)
    registry.add("config.reload", config_reload)


def build_registry() -> Registry:
    """A registry holding the daemon's core methods; features add theirs to it."""
    registry = Registry()
    register_core_methods(registry)
    return registry
