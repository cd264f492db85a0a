"""Wire types of observability: ``stats`` and ``metrics`` (docs/protocol.md, section "stats").

Like every wire type these ignore unknown fields, so either side may add fields. Times are
seconds (epoch seconds for ``at`` fields); ``None`` means "no value yet" (no request has been
timed). Percentiles are estimates within ``StatsResult.accuracy`` (relative) of the exact
value; counts, sums, minimum and maximum are exact.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "StatsParams",
    "Summary",
    "ModelStats",
    "QueueRow",
    "ServerRow",
    "RecentRequest",
    "RouteTotals",
    "DaemonStats",
    "StatsResult",
    "MetricsResult",
    "ATTEMPT_OUTCOMES",
    "ROUTE_RESULTS",
    "MAX_RECENT",
]

#: How an attempt on one (service, model) ended: an answer to its end; a failure before the
#: first byte (the request may have fallen back); an answer cut off after it; a cancellation.
ATTEMPT_OUTCOMES: tuple[str, ...] = ("ok", "error", "incomplete", "cancelled")

#: How a whole ``route`` request ended: an answer, a cut-off answer, no answer (every attempt
#: failed, the budget ran out, nothing could serve it), or the client cancelled.
ROUTE_RESULTS: tuple[str, ...] = ("ok", "incomplete", "failed", "cancelled")

#: The most recent requests the daemon keeps (and ``stats`` may return).
MAX_RECENT = 200


class StatsParams(msgspec.Struct, omit_defaults=True):
    """``recent``: how many of the latest attempts to return (0 to :data:`MAX_RECENT`)."""

    recent: int = 20


class Summary(msgspec.Struct):
    """The figures of one histogram (seconds, or tokens per second)."""

    count: int = 0
    sum: float = 0.0
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None


class ModelStats(msgspec.Struct):
    """Attempts sent to one model on one service since the daemon started.

    ``requests`` counts attempts started; ``ok + errors + incomplete + cancelled`` those ended
    (``in_flight`` the rest). ``error_classes``: failures by class (``refused``, ``busy``,
    ``timeout_first_token``, ...). ``fallback_levels``: answers (``ok`` and ``incomplete``)
    by fallback level, as a string (``"0"`` the first choice). ``queue_timeouts``: requests
    that gave up waiting for a slot here. ``duration`` is the whole answer, from sending to
    the last token.
    """

    service: str
    model: str
    requests: int = 0
    in_flight: int = 0
    ok: int = 0
    errors: int = 0
    incomplete: int = 0
    cancelled: int = 0
    error_classes: dict[str, int] = {}
    fallback_levels: dict[str, int] = {}
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_timeouts: int = 0
    queue_wait: Summary = msgspec.field(default_factory=Summary)
    first_token: Summary = msgspec.field(default_factory=Summary)
    duration: Summary = msgspec.field(default_factory=Summary)
    tokens_per_second: Summary = msgspec.field(default_factory=Summary)
    last_at: float | None = None


class QueueRow(msgspec.Struct):
    """One (server, model) of the fair queue with work: ``server`` is the backend group."""

    server: str
    model: str
    waiting: int = 0
    in_flight: int = 0
    capacity: int = 1
    resident: bool | None = None


class ServerRow(msgspec.Struct, omit_defaults=True):
    """One model server as discovery sees it now (a few fields of ``services.list``)."""

    name: str
    state: str
    kind: str | None = None
    endpoint: str = ""
    latency_ms: float | None = None
    models: int = 0
    loaded_models: list[str] = []
    busy_slots: int | None = None
    total_slots: int | None = None


class RecentRequest(msgspec.Struct, omit_defaults=True):
    """One ended attempt (or a route that reached no model: ``service`` None), newest last."""

    at: float
    outcome: str
    service: str | None = None
    model: str | None = None
    category: str | None = None
    fallback_level: int | None = None
    error: str | None = None
    queue_wait_s: float | None = None
    first_token_s: float | None = None
    total_s: float | None = None
    tokens_per_second: float | None = None
    completion_tokens: int | None = None


class RouteTotals(msgspec.Struct):
    """Whole ``route`` requests by result (:data:`ROUTE_RESULTS`) and by category."""

    total: int = 0
    results: dict[str, int] = {}
    categories: dict[str, int] = {}


class DaemonStats(msgspec.Struct):
    version: str
    pid: int
    uptime_s: float
    connections_open: int = 0
    requests_total: int = 0
    requests_in_flight: int = 0


class StatsResult(msgspec.Struct):
    """The ``stats`` result. ``at``: when it was taken (epoch seconds); ``accuracy``: the
    relative error of every percentile (0.01: within 1 %)."""

    at: float
    accuracy: float
    daemon: DaemonStats
    routes: RouteTotals = msgspec.field(default_factory=RouteTotals)
    models: list[ModelStats] = []
    queues: list[QueueRow] = []
    servers: list[ServerRow] = []
    recent: list[RecentRequest] = []


class MetricsResult(msgspec.Struct):
    """The ``metrics`` result: the Prometheus text exposition and its HTTP content type."""

    text: str
    content_type: str
