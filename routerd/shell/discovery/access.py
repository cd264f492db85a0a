"""What the routing feature reads of a service: its routable models and how to reach it.

``AvailableModel`` and ``Backend`` are built by the registry
(:meth:`~routerd.shell.discovery.registry.ServiceRegistry.available_models`,
:meth:`~routerd.shell.discovery.registry.ServiceRegistry.backend`); the functions here are
the pure parts of that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

from routerd.core.config import DiscoveryConfig, ServiceConfig
from routerd.core.health import Admission, HealthPolicy, HealthState
from routerd.core.model_parsers import DiscoveredModel
from routerd.core.services import ChatFlavor, ServiceKind, spec_for

from .credentials import Credentials
from .monitor import Monitor

__all__ = ["AvailableModel", "Backend", "health_policy", "make_backend", "server_only"]

_OPENAI_CHAT = "/v1/chat/completions"


def server_only(model: DiscoveredModel) -> DiscoveredModel:
    """``model`` without a context length that did not come from the server."""
    if model.context_source in (None, "server"):
        return model
    return msgspec.structs.replace(model, context_length=None, context_source=None)


def health_policy(d: DiscoveryConfig) -> HealthPolicy:
    """The health machine's policy from the ``discovery`` section."""
    return HealthPolicy(
        interval=d.interval,
        probe_timeout=d.probe_timeout,
        backoff_cap=d.backoff_cap,
        jitter=d.jitter,
        probe_failures_to_trip=d.probe_failures_to_trip,
        request_failures_to_trip=d.request_failures_to_trip,
        cooldown=d.cooldown,
        slow_request=d.slow_request,
    )


class AvailableModel(msgspec.Struct, frozen=True):
    """A model on a service, as routing needs it.

    ``model`` carries only what the server said (a context length guessed from the name is
    left out: the model database knows better). ``group`` names the backend group: services
    that reach one GPU server share one group, so its limits are counted once.
    ``admission`` is what :meth:`ServiceRegistry.admit` would answer now (without taking a
    degraded service's one trial).
    """

    model: DiscoveredModel
    service: str
    kind: ServiceKind | None
    group: str
    state: HealthState | Literal["blocked"]
    admission: Admission
    priority: int
    busy_slots: int | None = None
    total_slots: int | None = None


@dataclass(frozen=True)
class Backend:
    """How to send requests to one service. ``credentials`` are masked in ``repr``."""

    name: str
    base_url: str
    kind: ServiceKind | None
    chat_flavor: ChatFlavor
    chat_path: str
    credentials: Credentials
    timeout: float  # seconds, services.*.timeout
    max_retries: int
    priority: int


def make_backend(m: Monitor, cfg: ServiceConfig, credentials: Credentials) -> Backend:
    """How to reach ``m``: its identified kind's chat API, unless ``cfg.api_style`` says
    otherwise; a custom endpoint not (yet) identified speaks its configured flavour."""
    if m.kind is not None and m.kind != "custom":
        spec = spec_for(m.kind)
        flavor, path = spec.chat_flavor, spec.chat_path
    else:
        flavor = m.target.flavor or "openai"
        path = spec_for("ollama").chat_path if flavor == "ollama" else _OPENAI_CHAT
    if cfg.api_style is not None and cfg.api_style != flavor:
        flavor = "ollama" if cfg.api_style == "ollama" else "openai"
        path = spec_for("ollama").chat_path if flavor == "ollama" else _OPENAI_CHAT
    return Backend(
        name=m.name,
        base_url=m.target.base_url,
        kind=m.kind,
        chat_flavor=flavor,
        chat_path=path,
        credentials=credentials,
        timeout=cfg.timeout / 1000.0,
        max_retries=cfg.max_retries,
        priority=cfg.priority,
    )
