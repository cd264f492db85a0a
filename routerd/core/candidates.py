"""The models routing may choose from: one ``Candidate`` per (service, reported model), and the
reasons a candidate is unusable whatever the request asks.

Invariants:

* A ``Candidate`` is a value: what routing needs to know about one model on one service at
  one moment (its catalog entry, window, residency, occupancy and health). Building one with
  ``candidate_from_discovered`` never raises, whatever the server reported.
* ``context_length`` is the largest window a request may use there. ``window_settable`` means
  the request itself sets the window (Ollama's ``options.num_ctx``), so ``context_length`` is
  the model's maximum and ``loaded_context`` the window of the instance in memory, if any;
  asking for more than ``loaded_context`` reloads the model.
* ``loaded`` is None when the server has no notion of loading (a plain ``/v1/models``); only
  ``True`` counts as resident.
* ``hard_rejection`` looks only at the candidate and the request's VRAM limit: a block (a
  model file that failed its checksum), health, model kind (embedding models cannot chat)
  and memory. Context windows are judged per request by
  ``routerd.core.select``, since a window too small for the whole context may still take a
  compacted one.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from routerd.core.catalog import Catalog, ModelEntry, unknown_entry
from routerd.core.health import Admission, HealthState
from routerd.core.model_parsers import DiscoveredModel
from routerd.core.modelname import parse_size
from routerd.core.resolve import resolve

__all__ = [
    "RejectCode",
    "Rejection",
    "Candidate",
    "candidate_from_discovered",
    "hard_rejection",
    "DEFAULT_UNKNOWN_CONTEXT",
]

#: Window assumed for a model nobody states a window for (neither server nor catalog).
DEFAULT_UNKNOWN_CONTEXT: Final = 4096
_GB: Final = 1e9

RejectCode = Literal[
    "blocked",  # must not be used: its model file failed its checksum
    "service_offline",  # connection refused, probes time out
    "service_unauthorized",  # the server wants an API key
    "service_unavailable",  # degraded (breaker open), loading, not identified, foreign
    "embedding_only",  # an embedding model: it cannot answer a chat
    "vram",  # larger than the request's VRAM limit
    "context_too_small",  # the window cannot take even the compacted context
    "below_min_context",  # the window is below the category's ``min_context``
    "left_out",  # usable, but beyond ``max_attempts``
]


class Rejection(msgspec.Struct, frozen=True):
    """Why one model on one service is not in a plan."""

    service: str
    model: str
    code: RejectCode
    detail: str


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """One model on one service, as routing sees it now (see the module invariants).

    ``in_flight`` and ``queued`` are routerd's own requests (granted, waiting) for this
    (service, model); ``busy_slots`` and ``total_slots`` are the server's own figures
    (llama.cpp ``/slots``), which include other machines' clients.
    """

    service: str
    model: str  # the id the service reports: what a request to it names
    entry: ModelEntry  # the catalog's entry, or ``unknown_entry`` for an unknown model
    known: bool  # ``entry`` comes from the catalog
    context_length: int
    loaded: bool | None = None
    loaded_context: int | None = None
    window_settable: bool = False
    vram_gb: float = 0.0  # memory it takes; 0.0: not known
    capabilities: tuple[str, ...] = ()  # as the server states them (Ollama: "completion", ...)
    service_priority: int = 1  # lower is tried first
    health: HealthState = "online"
    admission: Admission = "admit"  # ``health.admit``'s answer for this service
    in_flight: int = 0
    queued: int = 0
    busy_slots: int | None = None
    total_slots: int | None = None
    blocked: str | None = None  # why it must not be used (security), e.g. a failed checksum

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.model)

    @property
    def label(self) -> str:
        return f"{self.service}/{self.model}"

    @property
    def embedding_only(self) -> bool:
        caps = self.capabilities
        if caps and "embedding" in caps and "completion" not in caps:
            return True
        return self.entry.has("embedding") and "completion" not in caps

    def resident(self, window: int) -> bool:
        """True when a request with this ``window`` runs without loading anything."""
        if self.loaded is not True:
            return False
        return (
            not self.window_settable or self.loaded_context is None or self.loaded_context >= window
        )

    @property
    def pressure(self) -> float:
        """How full the service is for this model: occupied slots (ours and others', plus our
        queue) per slot. Only ordering uses it."""
        occupied = max(self.in_flight, self.busy_slots or 0) + self.queued
        return occupied / max(1, self.total_slots or 1)


def candidate_from_discovered(
    model: DiscoveredModel,
    catalog: Catalog,
    *,
    service_priority: int = 1,
    health: HealthState = "online",
    admission: Admission = "admit",
    in_flight: int = 0,
    queued: int = 0,
    busy_slots: int | None = None,
    total_slots: int | None = None,
    window_settable: bool = False,
    loaded: bool | None = None,
    default_context: int = DEFAULT_UNKNOWN_CONTEXT,
) -> Candidate:
    """The candidate for one discovered model.

    The name is resolved against ``catalog`` (with the server's parameter size as a hint, then
    the model's aliases); an unknown model gets ``unknown_entry``. ``loaded`` overrides the
    server's word (pass True for a server that always serves its listed model). The window
    is the server's (runtime window, else maximum; the maximum when ``window_settable``), else
    the catalog's, else ``default_context``.
    """
    hint = _params_b(model.parameter_size)
    entry: ModelEntry | None = None
    for name in (model.id, *model.aliases):
        found = resolve(name, catalog, size_hint_b=hint).model_id
        if found is not None:
            entry = catalog[found]
            break
    if window_settable:
        server_ctx = max(model.max_context_length or 0, model.context_length or 0) or None
    else:
        server_ctx = model.context_length or model.max_context_length
    window = server_ctx or (entry.context_length if entry is not None else default_context)
    is_loaded = model.loaded if loaded is None else loaded
    known = entry is not None
    if entry is None:
        entry = unknown_entry(model.id, context_length=window, params_b=hint)
    size = model.size_vram if model.size_vram else model.size_bytes
    return Candidate(
        service=model.service,
        model=model.id,
        entry=entry,
        known=known,
        context_length=max(1, window),
        loaded=is_loaded,
        loaded_context=model.context_length if window_settable and is_loaded else None,
        window_settable=window_settable,
        vram_gb=round(size / _GB, 2) if size else entry.vram_gb,
        capabilities=model.capabilities,
        service_priority=service_priority,
        health=health,
        admission=admission,
        in_flight=in_flight,
        queued=queued,
        busy_slots=busy_slots,
        total_slots=total_slots,
    )


def _params_b(parameter_size: str | None) -> float | None:
    if not parameter_size:
        return None
    parsed = parse_size(parameter_size)
    return parsed[1] if parsed is not None else None


_HEALTH_CODES: Final[dict[str, RejectCode]] = {
    "offline": "service_offline",
    "unauthorized": "service_unauthorized",
}


def hard_rejection(c: Candidate, vram_limit_gb: float | None) -> Rejection | None:
    """Why ``c`` cannot serve any chat request now, or None. Checked in this order: a block,
    the service's admission, the model's kind, the VRAM limit."""
    if c.blocked is not None:
        return Rejection(c.service, c.model, "blocked", f"blocked ({c.blocked})")
    if c.admission == "refuse":
        code = _HEALTH_CODES.get(c.health, "service_unavailable")
        return Rejection(c.service, c.model, code, f"service {c.service} is {c.health}")
    if c.embedding_only:
        return Rejection(c.service, c.model, "embedding_only", "an embedding model cannot chat")
    if vram_limit_gb is not None and c.vram_gb > vram_limit_gb:
        return Rejection(
            c.service,
            c.model,
            "vram",
            f"needs about {c.vram_gb:g} GB, over the {vram_limit_gb:g} GB limit",
        )
    return None
