"""Where each feature plugs into the daemon.

A feature is a function ``install(app)`` that registers its methods on ``app.registry``, its
long-lived tasks with ``app.add_service``, its status with ``app.add_component`` and its
reaction to reloads with ``app.add_reload_hook``. The daemon calls every installer in
:data:`FEATURES` order before it starts serving; add one line here per feature.
"""

from __future__ import annotations

from collections.abc import Callable

from routerd.shell import (
    discovery,
    fronts,
    routing,
    security,
    serena,
    sessions,
    stats,
    systemd,
)
from routerd.shell.app import App

Feature = Callable[[App], None]

#: Installers, in the order they run.
FEATURES: list[Feature] = [
    systemd.install,  # first: its watchdog must ping while the others start
    security.install,  # before the rest: app.audit and app.access exist when they start
    discovery.install,  # model servers: services.list, models.list, events.subscribe
    serena.install,  # warm Serena per workspace: serena.* methods, context for routing
    sessions.install,  # conversation context in SQLite: sessions.* methods, sessions_of(app)
    stats.install,  # before routing, which records there: stats, metrics, stats_of(app)
    routing.install,  # after discovery and Serena: route, route.complete, classify, resolve
    fronts.install,  # after routing: the OpenAI- and Ollama-compatible HTTP fronts, /metrics
]


def install_features(app: App, features: list[Feature] | None = None) -> None:
    """Install ``features`` (default: :data:`FEATURES`) into ``app``."""
    for install in FEATURES if features is None else features:
        install(app)
