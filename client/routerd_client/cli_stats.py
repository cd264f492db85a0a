"""routerctl commands for the daemon's figures: ``stats`` and ``metrics`` (``top`` is in
:mod:`routerd_client.cli_top`).

``stats`` prints per (service, model) tables: requests, errors, fallbacks by level, queue
waits, time to first token, latency percentiles and generation speed (``--json``: the
daemon's result as it came). ``metrics`` prints the Prometheus text the daemon renders; the
exposition is built daemon-side, so routerctl needs no Prometheus library. Like all of
routerctl, this module imports neither trio nor httpx.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from ._sync import typed_result
from .cli import EXIT_OK, Context, command
from .cli_services import columns
from .protocol_stats import (
    MAX_RECENT,
    MetricsResult,
    ModelStats,
    QueueRow,
    RecentRequest,
    StatsResult,
    Summary,
)

__all__ = [
    "cmd_stats",
    "cmd_metrics",
    "format_stats",
    "seconds_text",
    "rate_text",
    "fallback_text",
    "queue_table",
    "recent_table",
    "routes_line",
]

DASH = "-"


def seconds_text(value: float | None) -> str:
    """``850 us``, ``12 ms``, ``1.25 s``, ``2m 03s``; ``-`` for no value."""
    if value is None:
        return DASH
    if value < 0.001:
        return f"{value * 1e6:.0f} us"
    if value < 1.0:
        return f"{value * 1e3:.0f} ms" if value >= 0.01 else f"{value * 1e3:.1f} ms"
    if value < 60.0:
        return f"{value:.2f} s"
    s = int(value)
    return f"{s // 60}m {s % 60:02d}s"


def rate_text(value: float | None) -> str:
    return DASH if value is None else (f"{value:.0f}" if value >= 10 else f"{value:.1f}")


def fallback_text(m: ModelStats) -> str:
    """Answers given as a fallback, by level: ``L1:3 L2:1`` (``-``: none)."""
    parts = [f"L{level}:{n}" for level, n in sorted(m.fallback_levels.items()) if level != "0" and n]
    return " ".join(parts) or DASH


def _pct(s: Summary, name: str) -> str:
    value: float | None = getattr(s, name)
    return seconds_text(value)


def _models_table(models: Sequence[ModelStats]) -> str:
    header = ("SERVICE", "MODEL", "REQ", "OK", "ERR", "INC", "FALLBACK", "RUN",
              "WAIT p50", "WAIT p95", "TTFT p50", "TTFT p95",
              "LAT p50", "LAT p95", "LAT p99", "TOK/S p50")  # fmt: skip
    rows = [
        (
            m.service, m.model, str(m.requests), str(m.ok), str(m.errors), str(m.incomplete),
            fallback_text(m), str(m.in_flight),
            _pct(m.queue_wait, "p50"), _pct(m.queue_wait, "p95"),
            _pct(m.first_token, "p50"), _pct(m.first_token, "p95"),
            _pct(m.duration, "p50"), _pct(m.duration, "p95"), _pct(m.duration, "p99"),
            rate_text(m.tokens_per_second.p50),
        )
        for m in models
    ]
    return columns(header, rows)


def queue_table(queues: Sequence[QueueRow]) -> str:
    """The fair queue's busy (server, model)s."""
    rows = [(q.server, q.model, str(q.waiting), str(q.in_flight), str(q.capacity))
            for q in queues]  # fmt: skip
    return columns(("SERVER", "MODEL", "WAITING", "RUNNING", "CAPACITY"), rows)


def recent_table(recent: Sequence[RecentRequest]) -> str:
    """The latest requests, oldest first: one line per attempt (``LVL`` its fallback level)."""
    rows = [
        (
            time.strftime("%H:%M:%S", time.localtime(r.at)), r.service or DASH, r.model or DASH,
            r.category or DASH, r.outcome,
            DASH if r.fallback_level is None else str(r.fallback_level),
            seconds_text(r.queue_wait_s), seconds_text(r.first_token_s), seconds_text(r.total_s),
            rate_text(r.tokens_per_second), r.error or "",
        )
        for r in recent
    ]
    header = ("TIME", "SERVICE", "MODEL", "CATEGORY", "RESULT", "LVL", "WAIT", "TTFT", "TOTAL",
              "TOK/S", "ERROR")  # fmt: skip
    return columns(header, rows)


def _error_lines(models: Sequence[ModelStats]) -> list[str]:
    out = []
    for m in models:
        if m.error_classes or m.queue_timeouts:
            parts = [f"{k} {n}" for k, n in sorted(m.error_classes.items())]
            if m.queue_timeouts:
                parts.append(f"queue_timeout {m.queue_timeouts}")
            out.append(f"  {m.service}/{m.model}: {', '.join(parts)}")
    return out


def routes_line(st: StatsResult) -> str:
    r = st.routes
    parts = ", ".join(f"{k} {n}" for k, n in r.results.items())
    return f"routes {r.total}" + (f" ({parts})" if r.total else "")


def format_stats(st: StatsResult) -> str:
    """The text of ``routerctl stats``."""
    accuracy = f"{st.accuracy * 100:g}%"
    lines = [f"{routes_line(st)}; percentiles within {accuracy}"]
    if st.models:
        lines += ["", _models_table(st.models)]
        errors = _error_lines(st.models)
        if errors:
            lines += ["", "errors by class:", *errors]
        tokens = [f"  {m.service}/{m.model}: {m.prompt_tokens} prompt, "
                  f"{m.completion_tokens} completion" for m in st.models]  # fmt: skip
        lines += ["", "tokens:", *tokens]
    else:
        lines.append("no requests routed yet")
    if st.queues:
        lines += ["", queue_table(st.queues)]
    if st.recent:
        lines += ["", "latest requests:", recent_table(st.recent)]
    return "\n".join(lines)


def _stats_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recent", type=int, default=0, metavar="N",
                   help=f"also show the latest N requests (0-{MAX_RECENT}, default 0)")


@command("stats", help="show request figures per model: counts, errors, fallbacks, latency",
         arguments=_stats_arguments)
def cmd_stats(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.connect() as client:
        raw = client.call("stats", {"recent": args.recent})
    result = typed_result(raw, StatsResult, "stats")
    ctx.emit(raw, format_stats(result))
    return EXIT_OK


@command("metrics", help="print the daemon's figures in the Prometheus text format")
def cmd_metrics(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.connect() as client:
        raw = client.call("metrics")
    result = typed_result(raw, MetricsResult, "metrics")
    if ctx.json:
        ctx.emit(raw, "")
    else:
        sys.stdout.write(result.text)
        sys.stdout.flush()
    return EXIT_OK
