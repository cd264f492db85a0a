"""The Prometheus text exposition of a daemon's figures, built with prometheus-client.

``render_metrics(app)`` is what the ``metrics`` method returns and what an HTTP front serves
on ``/metrics`` (``metrics_response(app, accept)`` negotiates OpenMetrics for it). Nothing is
stored here: every rendering reads the daemon's counters, the stats book, the fair queue and
discovery's registry as they are at that moment, through one registry per app holding a
custom collector and the library's process, platform and garbage-collector collectors.

Naming follows the Prometheus conventions: a ``routerd_`` prefix, base units (seconds),
``_total`` on counters, labels for dimensions (``service``, ``model``, ``outcome``, ...),
never values in names. Label sets are bounded by the stats book's series limit.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Mapping
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from routerd import __version__
from routerd.core.histogram import Histogram

from .app import App
from .discovery import registry_of
from .stats import queue_stats, stats_of

__all__ = ["render_metrics", "metrics_response", "CONTENT_TYPE"]

#: The content type of :func:`render_metrics`' text (the classic format, version 0.0.4).
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_UP_STATES: Final = frozenset({"online", "busy"})

#: Per (service, model) histograms: (metric name, stats series name, help).
_HISTOGRAMS: Final = (
    ("routerd_model_queue_wait_seconds", "queue_wait",
     "Time requests waited in the fair queue for a slot on the model."),
    ("routerd_model_time_to_first_token_seconds", "first_token",
     "Time from sending a request to the model's first token."),
    ("routerd_model_request_duration_seconds", "duration",
     "Time from sending a request to the end of a complete answer."),
    ("routerd_model_generation_tokens_per_second", "tokens_per_second",
     "Generation speed of complete answers after the first token."),
)  # fmt: skip

_REGISTRIES: weakref.WeakKeyDictionary[App, CollectorRegistry] = weakref.WeakKeyDictionary()


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    buckets = [(_le(bound), float(n)) for bound, n in h.cumulative()]
    family.add_metric(labels, buckets, h.total)


def _by_label(name: str, doc: str, label: str, counts: Mapping[str, int]) -> Metric:
    """A counter with one label, a sample per key of ``counts``."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, n in sorted(counts.items()):
        family.add_metric([key], n)
    return family


class _DaemonCollector(Collector):
    """Reads one app's figures on every scrape."""

    def __init__(self, app: App) -> None:
        self._app = weakref.ref(app)

    def collect(self) -> Iterator[Metric]:
        app = self._app()
        if app is None:
            return
        yield from _daemon_families(app)
        yield from _model_families(app)
        yield from _service_families(app)


def _daemon_families(app: App) -> Iterator[Metric]:
    c = app.counters
    info = InfoMetricFamily("routerd_build", "routerd's version.")
    info.add_metric([], {"version": __version__})
    yield info
    yield GaugeMetricFamily("routerd_start_time_seconds",
                            "When the daemon started serving, in seconds since the epoch.",
                            value=app.started_at)  # fmt: skip
    yield GaugeMetricFamily("routerd_config_generation",
                            "1 at start, plus one per successful configuration reload.",
                            value=app.generation)  # fmt: skip
    yield GaugeMetricFamily("routerd_connections_open", "Client connections open now.",
                            value=c.connections_open)  # fmt: skip
    yield CounterMetricFamily("routerd_connections", "Client connections accepted.",
                              value=c.connections_total)  # fmt: skip
    yield CounterMetricFamily("routerd_connections_refused",
                              "Client connections refused (too many, or not allowed).",
                              value=c.connections_refused)  # fmt: skip
    yield GaugeMetricFamily("routerd_ipc_requests_in_flight",
                            "Socket requests being handled now.",
                            value=c.requests_in_flight)  # fmt: skip
    yield _by_label("routerd_ipc_requests", "Socket requests by method.", "method", c.methods)
    yield _by_label("routerd_ipc_errors", "Error replies sent, by error code.", "code", c.errors)


def _model_families(app: App) -> Iterator[Metric]:
    try:
        collector = stats_of(app)
    except LookupError:
        return
    book = collector.book
    sm = ["service", "model"]
    yield _by_label("routerd_routes", "Route requests ended, by result.", "result", book.routes)
    yield _by_label("routerd_route_categories", "Route requests by category.", "category",
                    book.categories)  # fmt: skip
    ended = CounterMetricFamily("routerd_model_requests",
                                "Requests sent to a model that ended, by outcome.",
                                labels=[*sm, "outcome"])  # fmt: skip
    flight = GaugeMetricFamily("routerd_model_requests_in_flight",
                               "Requests being answered by a model now.", labels=sm)  # fmt: skip
    errors = CounterMetricFamily("routerd_model_errors",
                                 "Failed requests to a model, by error class.",
                                 labels=[*sm, "error"])  # fmt: skip
    answers = CounterMetricFamily("routerd_model_answers",
                                  "Answers given by a model, by fallback level (0: first choice).",
                                  labels=[*sm, "fallback_level"])  # fmt: skip
    prompt = CounterMetricFamily("routerd_model_prompt_tokens", "Prompt tokens sent.", labels=sm)
    completion = CounterMetricFamily("routerd_model_completion_tokens",
                                     "Completion tokens received.", labels=sm)  # fmt: skip
    timeouts = CounterMetricFamily("routerd_model_queue_timeouts",
                                   "Requests that gave up waiting for a slot.",
                                   labels=sm)  # fmt: skip
    hists = {key: HistogramMetricFamily(name, doc, labels=sm) for name, key, doc in _HISTOGRAMS}
    for s in book.all_series():
        key = [s.service, s.model]
        for outcome, n in s.outcomes.items():
            ended.add_metric([*key, outcome], n)
        flight.add_metric(key, s.in_flight)
        for error, n in sorted(s.error_classes.items()):
            errors.add_metric([*key, error], n)
        for level, n in sorted(s.levels.items()):
            answers.add_metric([*key, level], n)
        prompt.add_metric(key, s.prompt_tokens)
        completion.add_metric(key, s.completion_tokens)
        timeouts.add_metric(key, s.queue_timeouts)
        for name, h in s.histograms().items():
            _histogram(hists[name], key, h)
    yield from (ended, flight, errors, answers, prompt, completion, timeouts)
    yield from hists.values()
    queues = queue_stats(collector)
    labels = ["server", "model"]
    waiting = GaugeMetricFamily("routerd_queue_waiting",
                                "Requests waiting in the fair queue.", labels=labels)  # fmt: skip
    running = GaugeMetricFamily("routerd_queue_in_flight",
                                "Requests granted a slot and running.", labels=labels)  # fmt: skip
    capacity = GaugeMetricFamily("routerd_queue_capacity",
                                 "Requests allowed at once.", labels=labels)  # fmt: skip
    for q in queues:
        waiting.add_metric([q.server, q.model], q.waiting)
        running.add_metric([q.server, q.model], q.in_flight)
        capacity.add_metric([q.server, q.model], q.capacity)
    yield from (waiting, running, capacity)


def _service_families(app: App) -> Iterator[Metric]:
    try:
        services = registry_of(app).services()
    except LookupError:
        return
    up = GaugeMetricFamily("routerd_service_up",
                           "1 if the model server takes requests (online or busy).",
                           labels=["service", "kind"])  # fmt: skip
    state = GaugeMetricFamily("routerd_service_state",
                              "1 for the model server's current health state.",
                              labels=["service", "state"])  # fmt: skip
    latency = GaugeMetricFamily("routerd_service_probe_latency_seconds",
                                "Latency of the last successful probe.",
                                labels=["service"])  # fmt: skip
    models = GaugeMetricFamily("routerd_service_models", "Models the server offers.",
                               labels=["service"])  # fmt: skip
    busy = GaugeMetricFamily("routerd_service_slots_busy",
                             "Busy slots the server reports (llama.cpp).",
                             labels=["service"])  # fmt: skip
    total = GaugeMetricFamily("routerd_service_slots_total",
                              "Slots the server reports (llama.cpp).", labels=["service"])
    for s in services:
        up.add_metric([s.name, s.kind or ""], 1.0 if s.state in _UP_STATES else 0.0)
        state.add_metric([s.name, s.state], 1.0)
        if s.latency_ms is not None:
            latency.add_metric([s.name], s.latency_ms / 1000.0)
        models.add_metric([s.name], s.models)
        if s.busy_slots is not None:
            busy.add_metric([s.name], s.busy_slots)
        if s.total_slots is not None:
            total.add_metric([s.name], s.total_slots)
    yield from (up, state, latency, models, busy, total)


def _registry(app: App) -> CollectorRegistry:
    registry = _REGISTRIES.get(app)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_DaemonCollector(app))
        # The usual process_*, python_info and python_gc_* series, in our own registry.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        _REGISTRIES[app] = registry
    return registry


def render_metrics(app: App) -> bytes:
    """The daemon's figures now, in the Prometheus text format (:data:`CONTENT_TYPE`)."""
    return generate_latest(_registry(app))


def metrics_response(app: App, accept: str | None = None) -> tuple[bytes, str]:
    """The body and content type for an HTTP ``GET /metrics`` whose ``Accept`` header is
    ``accept``: OpenMetrics when the scraper asks for it, else the classic text format."""
    encoder, content_type = choose_encoder(accept or "")
    if encoder is generate_latest:
        return render_metrics(app), CONTENT_TYPE
    return encoder(_registry(app)), content_type
