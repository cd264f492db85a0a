"""Routing: classify a request, pick a model, run it with fallback, stream the answer back.

Public surface:

* :func:`install` plugs routing into an :class:`~routerd.shell.app.App` (after discovery):
  the methods ``route``, ``route.complete``, ``classify`` and ``resolve``; the ``routing``
  service (it owns the egress-checked HTTP client); the ``routing`` status component (queue
  figures); the reload hook.
* :func:`router_of` returns an app's :class:`Router`.

The decisions are the pure core's: ``routerd.core.classify``, ``candidates``, ``select``,
``fallback``, ``queueing``, ``compaction``. Modules here: ``router`` (state derived from the
configuration, candidates of the moment), ``queue`` (trio waits around the fair queue),
``prepare`` (messages, counting, compaction), ``fit`` (one attempt's exact count, a summary
model's summary, compaction), ``enrich`` (Serena's context, the system prompt), ``turns`` (a
request to a planned turn, its audit record), ``executor`` (the attempt loop) and ``methods``
(the wire methods).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TypeVar

from routerd.shell.app import App
from routerd.shell.checksums import blocked_models_of
from routerd.shell.discovery import registry_of
from routerd.shell.security import egress_reporter
from routerd.shell.stats import stats_of

from .methods import register_methods
from .router import Router, View
from .session import manager_of

__all__ = ["install", "router_of", "Router", "View"]

T = TypeVar("T")

_ROUTERS: weakref.WeakKeyDictionary[App, Router] = weakref.WeakKeyDictionary()


def install(app: App) -> None:
    """Add routing to ``app``. Discovery must be installed first (its registry is where the
    candidates come from); raises LookupError otherwise."""
    router = Router(
        app.config,
        registry_of(app),
        on_refused=egress_reporter(app),
        sessions=lambda: manager_of(app),
        stats=lambda: _optional(stats_of, app),
        blocked=lambda: blocked_models_of(app),
    )
    _ROUTERS[app] = router
    register_methods(app.registry, router)
    app.add_component("routing", router.status)
    app.add_reload_hook(router.on_reload)
    # Before READY: a request must find the HTTP client in place.
    app.add_service("routing", router.run, before_ready=True)


def _optional(get: Callable[[App], T], app: App) -> T | None:
    try:
        return get(app)
    except LookupError:  # the feature is not installed
        return None


def router_of(app: App) -> Router:
    """The router :func:`install` gave ``app``; raises LookupError if none."""
    try:
        return _ROUTERS[app]
    except KeyError:
        raise LookupError("routing is not installed in this app") from None
