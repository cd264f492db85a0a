"""Request figures per (service, model): counters, histograms and the latest requests.

The shell's collector (``routerd.shell.stats``) feeds a :class:`MetricsBook` as requests run;
``stats`` and ``metrics`` read it. Pure: time comes in as ``now`` (epoch seconds, used only to
stamp entries), nothing here waits or does I/O.

Invariants:

* Per series: ``in_flight == requests - (ok + errors + incomplete + cancelled)`` and never goes
  negative; an attempt that ends without a matching start is counted but not subtracted.
* Bounded memory: at most ``max_series`` (service, model) series, the last of them
  (:data:`OTHER`, :data:`OTHER`), which counts the attempts on every series beyond the rest. Error classes and categories are
  strings from closed sets in the routing core, but are bounded all the same
  (:data:`MAX_LABELS` each, the rest under :data:`OTHER`). Each histogram is bounded
  (``routerd.core.histogram``); the latest requests are a ring of ``recent`` entries.
* Outcomes and route results are the closed sets of ``routerd_client.protocol_stats``; any
  other value is a ``ValueError`` (a bug in the caller, not a figure).
"""

from __future__ import annotations

from collections import deque
from typing import Final

from routerd.core.histogram import DEFAULT_ALPHA, RATE_BUCKETS, SECONDS_BUCKETS, Histogram
from routerd_client.protocol_stats import (
    ATTEMPT_OUTCOMES,
    MAX_RECENT,
    ROUTE_RESULTS,
    ModelStats,
    RecentRequest,
    RouteTotals,
    Summary,
)

__all__ = ["MetricsBook", "Series", "OTHER", "MAX_LABELS", "summarize"]

#: The series (and label) that takes what is over a bound.
OTHER: Final = "(other)"
#: Distinct error classes, fallback levels and categories kept per counter.
MAX_LABELS: Final = 64
#: Percentiles every summary reports.
_QUANTILES: Final = (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99))


def _bump(counts: dict[str, int], key: str, n: int = 1) -> None:
    if key not in counts and len(counts) >= MAX_LABELS - 1:  # one left for OTHER
        key = OTHER
    counts[key] = counts.get(key, 0) + n


def summarize(h: Histogram) -> Summary:
    """The wire figures of ``h``."""
    if h.count == 0:
        return Summary()
    values = h.quantiles([q for _, q in _QUANTILES])
    fields = {name: v for (name, _), v in zip(_QUANTILES, values, strict=True)}
    return Summary(count=h.count, sum=h.total, mean=h.mean, min=h.minimum, max=h.maximum,
                   **fields)  # fmt: skip


class Series:
    """The figures of one (service, model)."""

    __slots__ = (
        "completion_tokens",
        "duration",
        "error_classes",
        "first_token",
        "last_at",
        "levels",
        "model",
        "outcomes",
        "prompt_tokens",
        "queue_timeouts",
        "queue_wait",
        "rate",
        "requests",
        "service",
    )

    def __init__(self, service: str, model: str, alpha: float) -> None:
        self.service = service
        self.model = model
        self.requests = 0
        self.outcomes: dict[str, int] = dict.fromkeys(ATTEMPT_OUTCOMES, 0)
        self.error_classes: dict[str, int] = {}
        self.levels: dict[str, int] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.queue_timeouts = 0
        self.queue_wait = Histogram(SECONDS_BUCKETS, alpha=alpha)
        self.first_token = Histogram(SECONDS_BUCKETS, alpha=alpha)
        self.duration = Histogram(SECONDS_BUCKETS, alpha=alpha)
        self.rate = Histogram(RATE_BUCKETS, alpha=alpha, min_value=1e-3, max_value=1e6)
        self.last_at: float | None = None

    @property
    def ended(self) -> int:
        return sum(self.outcomes.values())

    @property
    def in_flight(self) -> int:
        return max(0, self.requests - self.ended)

    def histograms(self) -> dict[str, Histogram]:
        """By wire name: ``queue_wait``, ``first_token``, ``duration``, ``tokens_per_second``."""
        return {
            "queue_wait": self.queue_wait,
            "first_token": self.first_token,
            "duration": self.duration,
            "tokens_per_second": self.rate,
        }

    def view(self) -> ModelStats:
        o = self.outcomes
        return ModelStats(
            service=self.service,
            model=self.model,
            requests=self.requests,
            in_flight=self.in_flight,
            ok=o["ok"],
            errors=o["error"],
            incomplete=o["incomplete"],
            cancelled=o["cancelled"],
            error_classes=dict(self.error_classes),
            fallback_levels=dict(self.levels),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            queue_timeouts=self.queue_timeouts,
            queue_wait=summarize(self.queue_wait),
            first_token=summarize(self.first_token),
            duration=summarize(self.duration),
            tokens_per_second=summarize(self.rate),
            last_at=self.last_at,
        )


def _seconds(value: float | None) -> float | None:
    """A duration as given, or None when there is none; ValueError for a negative one."""
    if value is None:
        return None
    if not value >= 0.0:
        raise ValueError(f"a duration cannot be {value!r}")
    return value


class MetricsBook:
    """Every series, the route totals and the ring of the latest attempts."""

    def __init__(
        self, *, max_series: int = 256, recent: int = MAX_RECENT, alpha: float = DEFAULT_ALPHA
    ) -> None:
        if max_series < 1 or recent < 0:
            raise ValueError("max_series must be at least 1 and recent not negative")
        self.alpha = alpha
        self.max_series = max_series
        self._series: dict[tuple[str, str], Series] = {}
        self._recent: deque[RecentRequest] = deque(maxlen=recent)
        self.routes: dict[str, int] = dict.fromkeys(ROUTE_RESULTS, 0)
        self.categories: dict[str, int] = {}

    def series(self, service: str, model: str) -> Series:
        """The series of (service, model), created if new (or the overflow series)."""
        key = (service, model)
        s = self._series.get(key)
        if s is None:
            if len(self._series) >= self.max_series - 1:  # one left for OTHER
                key = (OTHER, OTHER)
                s = self._series.get(key)
            if s is None:
                s = self._series[key] = Series(*key, self.alpha)
        return s

    def all_series(self) -> list[Series]:
        """Every series, sorted by service then model."""
        return [self._series[k] for k in sorted(self._series)]

    # --- recording -----------------------------------------------------------------------------

    def attempt_started(self, service: str, model: str) -> None:
        self.series(service, model).requests += 1

    def queue_timed_out(self, service: str, model: str, seconds: float) -> None:
        """A request gave up after waiting ``seconds`` for a slot (it was never sent)."""
        s = self.series(service, model)
        s.queue_wait.record(seconds)
        s.queue_timeouts += 1

    def attempt_finished(
        self,
        service: str,
        model: str,
        *,
        now: float,
        outcome: str,
        fallback_level: int | None = None,
        error: str | None = None,
        category: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        queue_wait_s: float | None = None,
        first_token_s: float | None = None,
        total_s: float | None = None,
        tokens_per_second: float | None = None,
    ) -> None:
        """An attempt ended with ``outcome`` (one of ``ATTEMPT_OUTCOMES``). Timings are
        recorded when given (``queue_wait_s``: how long it waited for its slot); ``total_s``
        and the rate only for an answer that ended well."""
        if outcome not in ATTEMPT_OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        wait = _seconds(queue_wait_s)
        first = _seconds(first_token_s)
        total = _seconds(total_s)
        if tokens_per_second is not None and not tokens_per_second >= 0.0:
            raise ValueError(f"a rate cannot be {tokens_per_second!r}")
        s = self.series(service, model)
        s.outcomes[outcome] += 1
        s.last_at = now
        if error is not None and outcome in ("error", "incomplete"):
            _bump(s.error_classes, error)
        if fallback_level is not None and outcome in ("ok", "incomplete"):
            _bump(s.levels, str(fallback_level))
        s.prompt_tokens += max(0, prompt_tokens or 0)
        s.completion_tokens += max(0, completion_tokens or 0)
        if wait is not None:
            s.queue_wait.record(wait)
        if first is not None:
            s.first_token.record(first)
        if outcome == "ok":
            if total is not None:
                s.duration.record(total)
            if tokens_per_second is not None:
                s.rate.record(tokens_per_second)
        self._recent.append(
            RecentRequest(
                at=now,
                outcome=outcome,
                service=service,
                model=model,
                category=category,
                fallback_level=fallback_level,
                error=error,
                queue_wait_s=wait,
                first_token_s=first,
                total_s=total,
                tokens_per_second=tokens_per_second,
                completion_tokens=completion_tokens,
            )
        )

    def route_finished(
        self, result: str, *, now: float, category: str | None = None, reason: str | None = None
    ) -> None:
        """A whole ``route`` request ended with ``result`` (one of ``ROUTE_RESULTS``). One that
        reached no model (``failed`` or ``cancelled`` with no attempt) also gets a line in the
        latest requests, with ``reason`` as its error."""
        if result not in ROUTE_RESULTS:
            raise ValueError(f"unknown route result {result!r}")
        self.routes[result] += 1
        if category is not None:
            _bump(self.categories, category)
        if reason is not None:
            self._recent.append(
                RecentRequest(at=now, outcome=result, category=category, error=reason)
            )

    # --- reading -------------------------------------------------------------------------------

    def recent(self, n: int) -> list[RecentRequest]:
        """The latest ``n`` entries, oldest first."""
        if n <= 0:
            return []
        items = list(self._recent)
        return items[-n:]

    def totals(self) -> RouteTotals:
        return RouteTotals(
            total=sum(self.routes.values()),
            results=dict(self.routes),
            categories=dict(self.categories),
        )

    def views(self) -> list[ModelStats]:
        return [s.view() for s in self.all_series()]

