"""What the daemon remembers about one probed address, and how it is shown on the wire.

A :class:`Monitor` is plain state: the registry changes it, the probing loop reads it. The
functions below turn it into the wire types of ``routerd_client.protocol``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import trio

from routerd.core.discovery import ServiceReport
from routerd.core.health import HealthPolicy, ServiceHealth, admit
from routerd.core.identify import ProbeResponse
from routerd.core.model_parsers import DiscoveredModel
from routerd.core.services import ServiceKind
from routerd.core.targets import ProbeTarget
from routerd_client.protocol import ModelInfo, ServiceInfo

from .probe import PriorState, ShowCache

__all__ = ["Monitor", "UP_STATES", "EMPTY_STATES", "service_info", "model_info"]

#: States in which a server answers as a model server; others get a full probe next time.
UP_STATES: Final = frozenset({"online", "busy", "loading", "degraded"})
#: States in which nothing is known of a server's models: its list is cleared.
EMPTY_STATES: Final = frozenset({"offline", "foreign", "unauthorized"})


@dataclass(eq=False)
class Monitor:
    """One address: its target, health, identity and models. ``blocked`` is the egress
    policy's reason when it refused the address (not probed again until a reload)."""

    target: ProbeTarget
    health: ServiceHealth
    kind: ServiceKind | None = None
    version: str | None = None
    report: ServiceReport | None = None
    models: tuple[DiscoveredModel, ...] = ()
    answers: dict[str, ProbeResponse] = field(default_factory=dict)
    shows: ShowCache = field(default_factory=dict)
    last_full: float | None = None
    latency: float | None = None
    last_error: str | None = None
    blocked: str | None = None
    wake: trio.Event = field(default_factory=trio.Event)

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def state(self) -> str:
        """The state shown: the health machine's, or ``blocked``."""
        return "blocked" if self.blocked is not None else self.health.state

    def full_due(self, now: float, refresh: float) -> bool:
        """Is the next probe a full discovery (unknown kind, down, or time to refresh)?"""
        return (
            self.kind is None
            or self.health.state not in UP_STATES
            or self.last_full is None
            or now - self.last_full >= refresh
        )

    def prior(self) -> PriorState:
        return PriorState(
            kind=self.kind,
            offline=self.health.state == "offline",
            answers=self.answers,
            shows=self.shows,
            model_ids=frozenset(m.id for m in self.models),
        )

    def routable(self, now: float, policy: HealthPolicy) -> bool:
        """Would a request be admitted now (without taking a half-open trial)?"""
        return self.blocked is None and admit(self.health, now, policy)[0] != "refuse"


def service_info(
    m: Monitor, *, wall: Callable[[float], float], priority: int, group: str | None
) -> ServiceInfo:
    """The wire view of ``m``; ``wall`` turns trio's clock into epoch seconds."""
    h = m.health
    report = m.report
    reason = f"refused by the egress policy: {m.blocked}" if m.blocked is not None else h.reason
    return ServiceInfo(
        name=m.name,
        endpoint=m.target.base_url,
        state=m.state,
        kind=m.kind,
        candidates=list(m.target.candidates),
        reason=reason,
        since=round(wall(h.since), 3),
        latency_ms=None if m.latency is None else round(m.latency * 1000.0, 2),
        version=m.version,
        models=len(m.models),
        loaded_models=[x.id for x in m.models if x.loaded],
        busy_slots=report.busy_slots if report is not None else None,
        total_slots=report.total_slots if report is not None else None,
        last_error=m.last_error,
        last_ok=None if h.last_ok is None else round(wall(h.last_ok), 3),
        next_probe_at=None if m.blocked is not None else round(wall(h.next_probe_at), 3),
        priority=priority,
        group=group,
    )


def model_info(m: Monitor, model: DiscoveredModel, *, available: bool, group: str | None) -> ModelInfo:
    """The wire view of one model of ``m``."""
    return ModelInfo(
        id=model.id,
        service=m.name,
        kind=m.kind,
        available=available,
        context_length=model.context_length,
        context_source=model.context_source,
        max_context_length=model.max_context_length,
        loaded=model.loaded,
        capabilities=list(model.capabilities),
        family=model.family,
        parameter_size=model.parameter_size,
        quantization=model.quantization,
        size_bytes=model.size_bytes,
        size_vram=model.size_vram,
        expires_at=model.expires_at,
        group=group,
    )
