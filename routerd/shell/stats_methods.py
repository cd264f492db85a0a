"""The observability methods: ``stats`` (figures as a map) and ``metrics`` (Prometheus text).

See docs/protocol.md, "stats". Both read the daemon's state as it is when asked; neither
waits. ``routerctl top`` polls ``stats``: a client that wants a live view asks again.
"""

from __future__ import annotations

from routerd.core.errors import BadRequest
from routerd_client.protocol import EmptyParams
from routerd_client.protocol_stats import MAX_RECENT, MetricsResult, StatsParams, StatsResult

from .app import App
from .dispatch import RequestContext
from .prometheus import CONTENT_TYPE, render_metrics
from .stats import build_stats, stats_of

__all__ = ["register_methods"]


def register_methods(app: App) -> None:
    """Add ``stats`` and ``metrics`` to ``app.registry``."""

    async def stats(ctx: RequestContext, params: StatsParams) -> StatsResult:
        if not 0 <= params.recent <= MAX_RECENT:
            raise BadRequest(f"recent must be within [0, {MAX_RECENT}], not {params.recent}")
        return build_stats(ctx.app, stats_of(ctx.app), recent=params.recent)

    async def metrics(ctx: RequestContext, params: EmptyParams) -> MetricsResult:
        return MetricsResult(text=render_metrics(ctx.app).decode(), content_type=CONTENT_TYPE)

    app.registry.add("stats", stats, params=StatsParams)
    app.registry.add("metrics", metrics)
