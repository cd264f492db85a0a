"""The routing policy: the configuration's model lists, resolved once, and its routing knobs.

Invariants:

* ``policy_from_config`` is pure and never raises for a configuration that passed
  ``validate_config``; names it cannot place in the catalog are kept with ``model_id=None``
  and still match a service's model of exactly that name.
* A ``ModelRef`` matches a candidate in two ways, strongest first: the service reports exactly
  that name (case and Ollama's ``:latest`` aside), or both resolve to the same catalog id.
  Names are read, never substring-matched.
* Every category in ``CATEGORIES`` has a ``CategoryRoute``; its ``catalog_order`` is the model
  database's default priority list, used after the configured lists.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Final, Literal

import msgspec

from routerd.core.candidates import Candidate
from routerd.core.catalog import CATEGORIES, Catalog, Category
from routerd.core.config import Config
from routerd.core.resolve import resolve

__all__ = [
    "ModelRef",
    "CategoryRoute",
    "AgentPreference",
    "RoutingPolicy",
    "policy_from_config",
    "model_ref",
    "ref_match",
    "as_category",
    "family_matches",
]

MatchStrength = Literal[0, 1]  # 0: the reported name itself; 1: the same catalog id


class ModelRef(msgspec.Struct, frozen=True):
    """A model named by a client or the configuration, and the catalog id it resolves to."""

    name: str
    model_id: str | None = None


class CategoryRoute(msgspec.Struct, frozen=True, kw_only=True):
    """Models for one category, best first: configured primaries, configured fallbacks, then
    the catalog's priority list. A model below ``min_context`` is not used for it."""

    primary: tuple[ModelRef, ...] = ()
    fallback: tuple[ModelRef, ...] = ()
    catalog_order: tuple[str, ...] = ()
    min_context: int = 1


class AgentPreference(msgspec.Struct, frozen=True, kw_only=True):
    """One coding agent's preferences: models to try first, and a family to favour."""

    family: str | None = None
    models: tuple[ModelRef, ...] = ()


_DEFAULT_ROUTE: Final = CategoryRoute()


class RoutingPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``plan_route`` takes from the configuration (see ``routing`` in
    docs/configuration.md)."""

    routes: dict[str, CategoryRoute] = {}
    agents: dict[str, AgentPreference] = {}
    default_category: Category = "coding"
    min_confidence: float = 0.4
    quality_tolerance: int = 5
    max_attempts: int = 6
    reserve_for_answer: int = 2048

    def route(self, category: Category) -> CategoryRoute:
        return self.routes.get(category, _DEFAULT_ROUTE)


def model_ref(name: str, catalog: Catalog) -> ModelRef:
    """``name`` with the catalog id it resolves to (None when it names no known model)."""
    return ModelRef(name, resolve(name, catalog).model_id)


def _refs(names: Iterable[str], catalog: Catalog) -> tuple[ModelRef, ...]:
    return tuple(model_ref(n, catalog) for n in names)


def policy_from_config(config: Config, catalog: Catalog) -> RoutingPolicy:
    """The policy of a validated configuration, with its names resolved against ``catalog``
    (the catalog with the configuration's ``models`` merged in)."""
    routes: dict[str, CategoryRoute] = {}
    for category in CATEGORIES:
        r = config.task_routing.get(category)
        routes[category] = CategoryRoute(
            primary=_refs(r.primary_models, catalog),
            fallback=_refs(r.fallback_models, catalog),
            catalog_order=catalog.priority(category),
            min_context=r.min_context,
        )
    agents = {
        name: AgentPreference(
            family=a.default_model_preference, models=_refs(a.preferred_models, catalog)
        )
        for name, a in config.agents.items()
    }
    rc = config.routing
    return RoutingPolicy(
        routes=routes,
        agents=agents,
        default_category=as_category(rc.default_category) or "coding",
        min_confidence=rc.min_confidence,
        quality_tolerance=rc.quality_tolerance,
        max_attempts=rc.max_attempts,
        reserve_for_answer=rc.reserve_for_answer,
    )


@functools.lru_cache(maxsize=4096)
def _plain(name: str) -> str:
    """``name`` compared as a model name: trimmed, lower case, without ``:latest``
    (cached: every plan compares the same few names, on every request)."""
    low = name.strip().lower()
    return low[: -len(":latest")] if low.endswith(":latest") else low


def _match(ref: ModelRef, c: Candidate, plain: str) -> MatchStrength | None:
    if _plain(ref.name) == plain:
        return 0
    if ref.model_id is not None and c.known and ref.model_id == c.entry.id:
        return 1
    return None


def ref_match(ref: ModelRef, c: Candidate) -> MatchStrength | None:
    """How ``ref`` names ``c``: 0 by its reported name, 1 by catalog id, None not at all."""
    return _match(ref, c, _plain(c.model))


def first_match(refs: tuple[ModelRef, ...], c: Candidate) -> tuple[int, int] | None:
    """(position in ``refs``, match strength) of the first ref naming ``c``, or None."""
    if not refs:
        return None
    plain = _plain(c.model)
    for i, ref in enumerate(refs):
        m = _match(ref, c, plain)
        if m is not None:
            return (i, m)
    return None


_CATEGORY_NAMES: Final[Mapping[str, Category]] = {c: c for c in CATEGORIES}


def as_category(value: object) -> Category | None:
    """``value`` as a category (a classifier's StrEnum member or a plain string), or None."""
    return _CATEGORY_NAMES.get(str(value)) if isinstance(value, str) else None


def family_matches(preference: str, c: Candidate) -> bool:
    """True when ``c`` belongs to the family an agent prefers: the catalog family, or the
    reported name, starts with the preference word ("qwen" matches qwen2.5-coder, qwq no)."""
    p = preference.strip().lower()
    if not p:
        return False
    family = c.entry.family.lower() if c.known else ""
    return family.startswith(p) or _plain(c.model).startswith(p)
