"""Request statistics: what the route executor records, what ``stats`` and ``metrics`` show.

For the route executor (one attempt on one model)::

    stats = stats_of(app)
    async with router.queue.slot(group, model, ...) as g:
        if g is None:
            stats.queue_timeout(service, model, waited)
            return ...
        with stats.attempt(service, model, category=category, fallback_level=level,
                           queue_wait=g.waited) as rec:
            tried = await _send(...)
            rec.ended(tried.outcome, tried.done)

and once per ``route`` request, ``stats.route_finished(result, category=...)`` with a
result of ``routerd_client.protocol_stats.ROUTE_RESULTS``. An attempt block left without
``ended`` (the client cancelled, the daemon is stopping) counts as ``cancelled``; nothing
leaks into ``in_flight``.

Recording never raises and never waits: a figure that cannot be recorded (a negative
duration, an unknown outcome: a bug in the caller) is logged once per kind and dropped, so
statistics can never fail a request. The figures themselves live in the pure
:class:`routerd.core.metrics.MetricsBook`; queue depths are read from the routing feature's
fair queue and server states from discovery's registry when ``stats`` is asked, not copied.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Final

from routerd import __version__
from routerd.core.fallback import FailedAfterFirstByte, FailedBeforeFirstByte, Outcome, Succeeded
from routerd.core.metrics import MetricsBook
from routerd.core.queueing import QueueStat
from routerd.core.streams import Done
from routerd_client.protocol_stats import (
    MAX_RECENT,
    DaemonStats,
    QueueRow,
    ServerRow,
    StatsResult,
)

from .app import App
from .discovery import registry_of

__all__ = [
    "AttemptRecorder",
    "StatsCollector",
    "install",
    "stats_of",
    "attach",
    "build_stats",
    "queue_stats",
]

log = logging.getLogger("routerd.stats")

_COLLECTORS: weakref.WeakKeyDictionary[App, StatsCollector] = weakref.WeakKeyDictionary()

#: Kinds of recording errors already logged (each is logged once per process).
_LOGGED: set[str] = set()

QueueSource = Callable[[], Iterable[QueueStat]]


def _dropped(kind: str, exc: Exception) -> None:
    if kind not in _LOGGED:
        _LOGGED.add(kind)
        log.warning("a %s figure was not recorded (%s); this is a bug in routerd", kind, exc)


class StatsCollector:
    """The recording API (see the module docstring). ``clock`` gives the epoch seconds that
    stamp the latest requests."""

    def __init__(
        self, book: MetricsBook | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.book = book if book is not None else MetricsBook()
        self.clock = clock
        #: Where queue depths come from (the routing feature's fair queue); None: no queues.
        self.queues: QueueSource | None = None

    # --- recording -------------------------------------------------------------------------

    def request_started(self, service: str, model: str) -> None:
        """An attempt is being sent to ``model`` on ``service``; pair it with
        :meth:`finished` (or use :meth:`attempt`, which does)."""
        self.book.attempt_started(service, model)

    def finished(self, service: str, model: str, *, outcome: str, **figures: Any) -> None:
        """An attempt ended: ``outcome`` is one of ``ATTEMPT_OUTCOMES``; ``figures`` are the
        keyword arguments of :meth:`MetricsBook.attempt_finished` (``fallback_level``,
        ``error``, ``category``, ``prompt_tokens``, ``completion_tokens``, ``queue_wait_s``,
        ``first_token_s``, ``total_s``, ``tokens_per_second``)."""
        try:
            self.book.attempt_finished(service, model, now=self.clock(), outcome=outcome,
                                       **figures)  # fmt: skip
        except (ValueError, TypeError) as exc:
            _dropped("attempt", exc)

    def queue_timeout(self, service: str, model: str, seconds: float) -> None:
        """A request gave up after ``seconds`` waiting for a slot on (service, model)."""
        try:
            self.book.queue_timed_out(service, model, max(0.0, seconds))
        except ValueError as exc:
            _dropped("queue wait", exc)

    def route_finished(
        self, result: str, *, category: str | None = None, reason: str | None = None
    ) -> None:
        """A whole ``route`` request ended: ``result`` is one of ``ROUTE_RESULTS``;
        ``reason``, for one that reached no model, shows in the latest requests."""
        try:
            self.book.route_finished(result, now=self.clock(), category=category, reason=reason)
        except ValueError as exc:
            _dropped("route", exc)

    def attempt(
        self,
        service: str,
        model: str,
        *,
        category: str | None = None,
        fallback_level: int | None = None,
        queue_wait: float | None = None,
    ) -> AttemptRecorder:
        """A context manager around one attempt: started on entry, ended by
        :meth:`AttemptRecorder.ended`, else as ``cancelled`` when the block is left."""
        return AttemptRecorder(self, service, model, category, fallback_level, queue_wait)


class AttemptRecorder:
    """``with collector.attempt(...) as rec``: one attempt's figures (see
    :meth:`StatsCollector.attempt`)."""

    __slots__ = ("_base", "_collector", "_done", "_first", "_model", "_service")

    def __init__(
        self,
        collector: StatsCollector,
        service: str,
        model: str,
        category: str | None,
        fallback_level: int | None,
        queue_wait: float | None,
    ) -> None:
        self._collector = collector
        self._service = service
        self._model = model
        self._base: dict[str, Any] = {"category": category, "fallback_level": fallback_level,
                                      "queue_wait_s": queue_wait}  # fmt: skip
        self._first: float | None = None
        self._done = False

    def __enter__(self) -> AttemptRecorder:
        self._collector.request_started(self._service, self._model)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            # Cancelled (or KeyboardInterrupt) is the client or the daemon stopping; an
            # Exception escaping the send is a bug, counted as an error.
            error = "internal" if isinstance(exc, Exception) else None
            self.finish("cancelled" if error is None else "error", error=error)

    def first_token(self, seconds: float) -> None:
        """The first token came ``seconds`` after sending (used when ``ended`` has no Done)."""
        self._first = seconds

    def ended(self, outcome: Outcome, done: Done | None = None) -> None:
        """Record the attempt's outcome as the fallback core sees it, with the figures of
        ``done`` for a success."""
        if isinstance(outcome, Succeeded):
            if done is None:
                self.finish("ok")
                return
            self.finish(
                "ok",
                prompt_tokens=done.prompt_tokens,
                completion_tokens=done.completion_tokens,
                first_token_s=done.first_token_s,
                total_s=done.total_s,
                tokens_per_second=done.tokens_per_second,
            )
        elif isinstance(outcome, FailedBeforeFirstByte):
            self.finish("cancelled" if outcome.error == "cancelled" else "error",
                        error=outcome.error)  # fmt: skip
        elif isinstance(outcome, FailedAfterFirstByte):
            self.finish("cancelled" if outcome.error == "cancelled" else "incomplete",
                        error=outcome.error)  # fmt: skip

    def finish(self, outcome: str, **figures: Any) -> None:
        """Record the attempt's end directly (``outcome`` of ``ATTEMPT_OUTCOMES``); only the
        first call counts."""
        if self._done:
            return
        self._done = True
        merged = {**self._base, **figures}
        if merged.get("first_token_s") is None and self._first is not None:
            merged["first_token_s"] = self._first
        self._collector.finished(self._service, self._model, outcome=outcome, **merged)


# --- reading ---------------------------------------------------------------------------------


def queue_stats(collector: StatsCollector) -> list[QueueRow]:
    """The fair queue's (server, model)s with work, or none if routing is not there."""
    if collector.queues is None:
        return []
    return [
        QueueRow(server=q.server, model=q.model, waiting=q.waiting, in_flight=q.in_flight,
                 capacity=q.capacity, resident=q.resident)
        for q in collector.queues()
    ]


def _servers(app: App) -> list[ServerRow]:
    try:
        registry = registry_of(app)
    except LookupError:
        return []
    return [
        ServerRow(name=s.name, state=s.state, kind=s.kind, endpoint=s.endpoint,
                  latency_ms=s.latency_ms, models=s.models, loaded_models=list(s.loaded_models),
                  busy_slots=s.busy_slots, total_slots=s.total_slots)
        for s in registry.services()
    ]


def build_stats(app: App, collector: StatsCollector, *, recent: int = 20) -> StatsResult:
    """The ``stats`` result: the daemon's figures now."""
    book = collector.book
    c = app.counters
    return StatsResult(
        at=collector.clock(),
        accuracy=book.alpha,
        daemon=DaemonStats(
            version=__version__,
            pid=os.getpid(),
            uptime_s=max(0.0, time.monotonic() - app.started_monotonic),
            connections_open=c.connections_open,
            requests_total=c.requests_total,
            requests_in_flight=c.requests_in_flight,
        ),
        routes=book.totals(),
        models=book.views(),
        queues=queue_stats(collector),
        servers=_servers(app),
        recent=book.recent(max(0, min(recent, MAX_RECENT))),
    )


# --- plugging in ------------------------------------------------------------------------------

#: Status component keys (cheap: no histogram is read).
_COMPONENT: Final = "stats"


def stats_of(app: App) -> StatsCollector:
    """The collector :func:`install` gave ``app``; LookupError if none."""
    try:
        return _COLLECTORS[app]
    except KeyError:
        raise LookupError("stats are not installed in this app") from None


def attach(app: App, collector: StatsCollector) -> None:
    """Make ``collector`` what :func:`stats_of` returns for ``app``."""
    _COLLECTORS[app] = collector


def _routing_queue(app: App) -> QueueSource:
    def snapshot() -> Iterable[QueueStat]:
        # Imported here: routing imports this module to record, not the other way round.
        from routerd.shell.routing import router_of

        try:
            return router_of(app).queue.core.snapshot()
        except LookupError:
            return ()

    return snapshot


def install(app: App) -> None:
    """Add statistics to ``app``: the ``stats`` and ``metrics`` methods, the ``stats``
    status component, and :func:`stats_of`. Install before routing, which records here."""
    # Imported here: the methods render the exposition, which reads this module.
    from .stats_methods import register_methods

    collector = StatsCollector()
    collector.queues = _routing_queue(app)
    attach(app, collector)
    register_methods(app)

    def component() -> dict[str, Any]:
        totals = collector.book.routes
        n = sum(totals.values())
        return {"summary": f"{n} routed, {totals['ok']} ok, {totals['failed']} failed",
                "routed": n, "models": len(collector.book.all_series())}  # fmt: skip

    app.add_component(_COMPONENT, component)
