"""Continuous discovery and health of the local model servers (the I/O around the core).

Public surface, for the daemon and for the routing feature:

* :func:`install` plugs discovery into an :class:`~routerd.shell.app.App` (methods
  ``services.list``, ``models.list``, ``events.subscribe``; status component ``services``;
  the probing task; the reload hook).
* :func:`registry_of` returns an app's :class:`ServiceRegistry`: ``available_models()``,
  ``backend(name)``, ``admit(name)`` before sending a request, ``report_outcome(name, ...)``
  after it (``routerd.core.outcomes.classify_response`` for an answer,
  :func:`outcome_from_exception` for a failure).

Modules: ``fetch`` (one HTTP request), ``probe`` (one probe of one address), ``monitor``
(per-address state and its wire view), ``registry`` (the live view), ``access`` (what routing
reads of it), ``events`` (the
broadcast), ``credentials`` (API keys), ``hostenv`` (WSL and containers), ``service`` (the
probing loops), ``methods`` (the wire methods).
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING

import httpx
import trio

from routerd.core.health import HealthInput
from routerd.shell.http import EgressRefused

from .access import AvailableModel, Backend, health_policy
from .events import EventHub, SubscriberDropped, Subscription
from .methods import register_methods
from .registry import ServiceRegistry
from .service import ClientFactory, Discovery

if TYPE_CHECKING:
    from routerd.shell.app import App

__all__ = [
    "install",
    "registry_of",
    "outcome_from_exception",
    "ServiceRegistry",
    "AvailableModel",
    "Backend",
    "Discovery",
    "ClientFactory",
    "EventHub",
    "Subscription",
    "SubscriberDropped",
    "health_policy",
]

_REGISTRIES: weakref.WeakKeyDictionary[App, ServiceRegistry] = weakref.WeakKeyDictionary()


def install(app: App, *, client_factory: ClientFactory | None = None) -> None:
    """Add discovery to ``app``; :func:`registry_of` ``(app)`` is then its registry."""
    # httpx logs every request at INFO (httpcore every step at DEBUG): probes every few
    # seconds must not fill the log. State changes are logged by the registry instead.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    registry = ServiceRegistry(app.config, instance_id=app.instance_id)
    discovery = Discovery(
        registry, config=lambda: app.config, env=app.env, client_factory=client_factory
    )
    register_methods(app.registry, registry)
    app.add_component("services", registry.summary)
    app.add_reload_hook(discovery.on_reload)
    # After READY: the first round of probes must not hold up the socket.
    app.add_service("discovery", discovery.run, before_ready=False)
    _REGISTRIES[app] = registry


def registry_of(app: App) -> ServiceRegistry:
    """The registry :func:`install` gave ``app``; raises LookupError if none."""
    try:
        return _REGISTRIES[app]
    except KeyError:
        raise LookupError("discovery is not installed in this app") from None


def outcome_from_exception(exc: BaseException) -> HealthInput | None:
    """The health input for a request that failed with ``exc`` before a whole answer.

    ``None`` means "not the server's doing; report nothing" (the egress policy refused it).
    """
    if isinstance(exc, trio.Cancelled):
        return "request_cancelled"
    if isinstance(exc, EgressRefused):
        return None
    if isinstance(exc, httpx.TimeoutException):
        return "request_timeout"
    if isinstance(exc, httpx.ConnectError):
        return "request_refused"
    if isinstance(exc, httpx.TransportError):
        return "request_5xx"  # a broken connection or answer mid-request: a server fault
    return None
