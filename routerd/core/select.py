"""Model selection: which models, on which services, in which order, with which window.

``plan_route`` turns a request's facts, the candidates of the moment and the policy into a
``RoutePlan`` (attempts in order, to be run by the shell with ``routerd.core.fallback``), or a
``RouteFailure`` that says why nothing can serve the request.

Invariants:

* Pure and deterministic: the same inputs give the same plan, ``explain`` lines included.
* Precedence: an explicit model wins and is never silently replaced (not available means a
  failure naming it); an explicit category beats the classification; a classification below
  ``min_confidence`` (or none) means ``default_category``. Then the agent's preferred models
  and family, then the category's configured primary and fallback lists, the catalog's
  priority list, and last every other model by its score for the category.
* A model already loaded is tried before a better one that is not, when its score is within
  ``quality_tolerance`` points: a swap costs seconds. The same model on several services:
  loaded first, then the less busy, then the lower service priority.
* Levels: PRIMARY (explicit, agent-preferred or primary-listed models whose window takes the
  whole context), FALLBACK_MODELS (other such models), REDUCED_CONTEXT (windows that take the
  context only compacted to ``context_budget_tokens``), and one SMALLEST_MODEL attempt last.
  Each (service, model) appears at most once; a plan has at most ``max_attempts`` attempts.
* Every attempt's ``window_tokens - context_budget_tokens`` is the answer reserve, and its
  budget is at least the request's ``min_prompt_tokens`` (or ``prompt_tokens``, when the
  context cannot be compacted).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Final, Literal

import msgspec

from routerd.core.candidates import Candidate, Rejection, hard_rejection
from routerd.core.catalog import Catalog, Category
from routerd.core.routing_policy import (
    RoutingPolicy,
    as_category,
    family_matches,
    first_match,
    model_ref,
    ref_match,
)

__all__ = [
    "FallbackLevel",
    "CategorySource",
    "RouteRequest",
    "Attempt",
    "RoutePlan",
    "FailureCode",
    "RouteFailure",
    "plan_route",
    "window_for",
]

#: The smallest window asked of a server whose window the request sets (Ollama's num_ctx).
MIN_WINDOW: Final = 2048


class FallbackLevel(IntEnum):
    """How far from the first choice an attempt is (the seed's levels)."""

    PRIMARY = 0
    FALLBACK_MODELS = 1
    REDUCED_CONTEXT = 2
    SMALLEST_MODEL = 3


CategorySource = Literal["explicit", "classified", "default"]


class RouteRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The facts of one request that routing needs. Token counts are estimates.

    ``prompt_tokens`` is what would be sent now (system prompt, session, new request);
    ``min_prompt_tokens`` is the least compaction can bring it to (None: it cannot be
    compacted). ``reserve_tokens`` is room for the answer (None: the policy's).
    """

    category: str | None = None  # the classifier's category
    confidence: float = 1.0
    explicit_model: str | None = None
    explicit_category: str | None = None
    agent: str | None = None  # the coding agent named in ``hello``
    prompt_tokens: int = 0
    min_prompt_tokens: int | None = None
    reserve_tokens: int | None = None
    vram_limit_gb: float | None = None


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One try: this model on this service, with this window.

    ``window_tokens`` is the window to ask for (Ollama's ``num_ctx`` when the candidate's
    window is settable; otherwise the server's fixed window). ``context_budget_tokens`` is the
    most the prompt may take; when below the request's ``prompt_tokens`` the shell compacts
    the context to fit before sending.
    """

    candidate: Candidate
    level: FallbackLevel
    context_budget_tokens: int
    window_tokens: int
    reason: str

    @property
    def service(self) -> str:
        return self.candidate.service

    @property
    def model(self) -> str:
        return self.candidate.model


class RoutePlan(msgspec.Struct, frozen=True, kw_only=True):
    """The attempts, best first, and why (``explain``: one line each, for logs and clients)."""

    category: Category
    category_source: CategorySource
    attempts: tuple[Attempt, ...]
    prompt_tokens: int
    min_prompt_tokens: int | None
    reserve_tokens: int
    explain: tuple[str, ...] = ()
    rejections: tuple[Rejection, ...] = ()


FailureCode = Literal["no_models", "unknown_model", "no_usable_model"]


class RouteFailure(msgspec.Struct, frozen=True, kw_only=True):
    """No plan: ``no_models`` (no service offers any model), ``unknown_model`` (the explicit
    model is on no service), ``no_usable_model`` (every candidate rejected; see
    ``rejections``). ``message`` is one line a user can act on."""

    code: FailureCode
    message: str
    category: Category
    rejections: tuple[Rejection, ...] = ()
    explain: tuple[str, ...] = ()


class _Ctx(msgspec.Struct, frozen=True):
    """Per-request numbers every step needs."""

    category: Category
    prompt: int
    floor: int | None
    reserve: int
    min_context: int

    @property
    def needed(self) -> int:
        return self.prompt + self.reserve

    @property
    def full_window(self) -> int:
        return max(self.needed, self.min_context)


def window_for(c: Candidate, needed: int) -> int:
    """The window to ask ``c`` for when a request needs ``needed`` tokens of it.

    A fixed window is what it is. A settable one reuses the loaded instance's window when that
    suffices (no reload); otherwise it is the next power of two (at least ``MIN_WINDOW``), so
    a growing session changes it, and reloads the model, rarely. Never above the maximum.
    """
    if not c.window_settable:
        return c.context_length
    loaded = c.loaded_context
    if c.loaded and loaded is not None and needed <= loaded <= c.context_length:
        return loaded
    step = MIN_WINDOW
    while step < needed:
        step *= 2
    return min(c.context_length, step)


def plan_route(
    request: RouteRequest,
    candidates: Sequence[Candidate],
    policy: RoutingPolicy,
    *,
    catalog: Catalog,
) -> RoutePlan | RouteFailure:
    """Plan the attempts for ``request`` over ``candidates`` (see the module invariants).

    ``catalog`` resolves an explicit model name, as ``policy`` was resolved. A (service, model)
    given twice counts once (the first).
    """
    category, source, why = _category(request, policy)
    explain = [why]
    reserve = (
        policy.reserve_for_answer if request.reserve_tokens is None else request.reserve_tokens
    )
    prompt = max(0, request.prompt_tokens)
    floor = request.min_prompt_tokens
    floor = None if floor is None else max(0, min(floor, prompt))
    explicit = request.explicit_model
    min_context = 1 if explicit else policy.route(category).min_context
    ctx = _Ctx(category, prompt, floor, max(0, reserve), min_context)
    explain.append(
        f"needs {ctx.needed} tokens ({prompt} prompt + {ctx.reserve} answer)"
        + (f"; compactable to {floor} prompt tokens" if floor is not None else "")
    )
    unique: dict[tuple[str, str], Candidate] = {}
    for c in candidates:
        unique.setdefault(c.key, c)
    candidates = list(unique.values())
    if not candidates:
        msg = "no model server offers any model (is one running? see routerctl status)"
        return RouteFailure(code="no_models", message=msg, category=category, explain=(msg,))

    rejections: list[Rejection] = []
    keyed: list[_Keyed]
    if explicit:
        ref = model_ref(explicit, catalog)
        named = [c for c in candidates if ref_match(ref, c) is not None]
        if not named:
            shown = ", ".join(sorted({c.model for c in candidates})[:12])
            read = f" (read as {ref.model_id})" if ref.model_id else ""
            msg = f"no service offers the model {explicit!r}{read}; available: {shown}"
            return RouteFailure(
                code="unknown_model", message=msg, category=category, explain=(*explain, msg)
            )
        explain.append(f"explicit model {explicit!r}: no other model will be used")
        pool = _usable(named, request, rejections)
        keyed = [((ref_match(ref, c) or 0,), "explicitly requested", True, c) for c in pool]
    else:
        pool = _usable(candidates, request, rejections)
        keyed = _rank(pool, request, policy, ctx, explain)

    full, reduced = _split(keyed, ctx, rejections)
    attempts = _order(full, ctx, policy, FallbackLevel.FALLBACK_MODELS, explicit is not None)
    attempts += _order(reduced, ctx, policy, FallbackLevel.REDUCED_CONTEXT, explicit is not None)
    cap = policy.max_attempts
    smallest = None if explicit else _smallest(pool, ctx, attempts[: cap - 1])
    if smallest is not None and attempts and cap == 1:
        smallest = None  # one attempt allowed: the best, not the last resort
    room = cap - (1 if smallest is not None else 0)
    for a in attempts[room:]:
        if smallest is not None and a.candidate.key == smallest.candidate.key:
            continue  # it comes back as the last resort
        rejections.append(
            Rejection(
                a.service, a.model, "left_out", f"beyond max_attempts ({policy.max_attempts})"
            )
        )
    attempts = attempts[:room] + ([smallest] if smallest is not None else [])
    if not attempts:
        msg = _failure_message(explicit, category, rejections)
        return RouteFailure(
            code="no_usable_model",
            message=msg,
            category=category,
            rejections=tuple(rejections),
            explain=(*explain, msg),
        )
    for i, a in enumerate(attempts, 1):
        explain.append(
            f"{i}. {a.candidate.label} [{a.level.name}] window {a.window_tokens},"
            f" budget {a.context_budget_tokens}: {a.reason}"
        )
    explain.extend(f"not used: {r.service}/{r.model}: {r.detail}" for r in rejections)
    return RoutePlan(
        category=category,
        category_source=source,
        attempts=tuple(attempts),
        prompt_tokens=prompt,
        min_prompt_tokens=floor,
        reserve_tokens=ctx.reserve,
        explain=tuple(explain),
        rejections=tuple(rejections),
    )


def _category(request: RouteRequest, policy: RoutingPolicy) -> tuple[Category, CategorySource, str]:
    explicit = as_category(request.explicit_category)
    if explicit is not None:
        return explicit, "explicit", f"category {explicit} (asked for by the client)"
    odd = request.explicit_category
    note = f"; the client's category {odd!r} is not one" if odd else ""
    classified = as_category(request.category)
    default = policy.default_category
    if classified is None:
        return default, "default", f"category {default} (the default: no classification{note})"
    if request.confidence < policy.min_confidence:
        return (
            default,
            "default",
            f"category {default} (the default: {classified} only at confidence"
            f" {request.confidence:.2f} < {policy.min_confidence:.2f}{note})",
        )
    why = f"category {classified} (confidence {request.confidence:.2f}{note})"
    return classified, "classified", why


def _usable(
    candidates: Sequence[Candidate], request: RouteRequest, rejections: list[Rejection]
) -> list[Candidate]:
    out = []
    for c in candidates:
        r = hard_rejection(c, request.vram_limit_gb)
        if r is None:
            out.append(c)
        else:
            rejections.append(r)
    return out


# A ranked candidate: (sort key, reason text, counts as primary, candidate).
_Keyed = tuple[tuple[object, ...], str, bool, Candidate]


def _rank(
    pool: list[Candidate],
    request: RouteRequest,
    policy: RoutingPolicy,
    ctx: _Ctx,
    explain: list[str],
) -> list[_Keyed]:
    route = policy.route(ctx.category)
    agent = policy.agents.get(request.agent) if request.agent else None
    if agent is not None and (agent.models or agent.family):
        wants = [r.name for r in agent.models] + (
            [f"family {agent.family}"] if agent.family else []
        )
        explain.append(f"agent {request.agent} prefers {', '.join(wants)}")
    out: list[_Keyed] = []
    for c in pool:
        score = c.entry.score(ctx.category)
        listed: tuple[object, ...]
        if (m := first_match(route.primary, c)) is not None:
            listed, why = (0, *m), f"primary model for {ctx.category}"
        elif (m := first_match(route.fallback, c)) is not None:
            listed, why = (1, *m), f"fallback model for {ctx.category}"
        elif c.known and c.entry.id in route.catalog_order:
            listed = (2, route.catalog_order.index(c.entry.id), 0)
            why = f"on the model database's {ctx.category} list"
        else:
            listed = (3, -score, 0)
            why = f"scores {score} for {ctx.category}" if c.known else "not in the model database"
        group, primary = 2, listed[0] == 0
        if agent is not None:
            if (m := first_match(agent.models, c)) is not None:
                group, listed, primary = 0, (0, *m), True
                why = f"preferred by agent {request.agent}"
            elif agent.family and listed[0] != 3 and family_matches(agent.family, c):
                group, primary = 1, True
                why += f"; agent {request.agent} prefers family {agent.family}"
        out.append(((group, *listed, -score, c.entry.tier, c.entry.id), why, primary, c))
    return out


def _same_model_order(c: Candidate, window: int) -> tuple[object, ...]:
    """Among services offering the same model: loaded, admitted (not on trial), less busy,
    lower priority number, then by name."""
    return (
        not c.resident(window),
        c.admission == "trial",
        c.pressure,
        c.service_priority,
        c.service,
    )


def _split(
    keyed: list[_Keyed], ctx: _Ctx, rejections: list[Rejection]
) -> tuple[list[_Keyed], list[_Keyed]]:
    """Candidates whose window takes the whole context, and those that take it compacted."""
    full: list[_Keyed] = []
    reduced: list[_Keyed] = []
    for item in keyed:
        c = item[3]
        n = c.context_length
        if n >= ctx.full_window:
            full.append(item)
        elif n < ctx.min_context:
            rejections.append(
                Rejection(
                    c.service,
                    c.model,
                    "below_min_context",
                    f"window {n} is below {ctx.category}'s min_context {ctx.min_context}",
                )
            )
        elif ctx.floor is not None and n - ctx.reserve >= ctx.floor:
            reduced.append(item)
        else:
            least = ctx.needed if ctx.floor is None else ctx.floor + ctx.reserve
            rejections.append(
                Rejection(
                    c.service,
                    c.model,
                    "context_too_small",
                    f"window {n} is below the {least} tokens needed",
                )
            )
    return full, reduced


def _order(
    keyed: list[_Keyed], ctx: _Ctx, policy: RoutingPolicy, other: FallbackLevel, explicit: bool
) -> list[Attempt]:
    """Attempts in rank order, a loaded model moved ahead of a better unloaded one when within
    ``quality_tolerance``. ``other`` is the level of candidates not counted as primary."""
    reduced = other == FallbackLevel.REDUCED_CONTEXT

    def need(c: Candidate) -> int:
        return c.context_length if reduced else ctx.full_window

    remaining = sorted(keyed, key=lambda k: (k[0], _same_model_order(k[3], need(k[3])), k[3].model))
    tol = policy.quality_tolerance
    out: list[Attempt] = []
    while remaining:
        pick = remaining[0]
        top = pick[3]
        note = ""
        if not explicit and not top.resident(need(top)):
            floor = top.entry.score(ctx.category) - tol
            for item in remaining[1:]:
                c = item[3]
                if c.resident(need(c)) and c.entry.score(ctx.category) >= floor:
                    pick = item
                    note = f"; loaded, within {tol} points of {top.label}, which is not"
                    break
        remaining.remove(pick)
        c = pick[3]
        window = window_for(c, need(c))
        level = other if reduced or not pick[2] else FallbackLevel.PRIMARY
        loaded = "; loaded" if c.resident(window) and not note else ""
        trial = "; service on trial after failures" if c.admission == "trial" else ""
        out.append(
            Attempt(
                candidate=c,
                level=level,
                context_budget_tokens=window - ctx.reserve,
                window_tokens=window,
                reason=pick[1]
                + loaded
                + note
                + trial
                + ("; context compacted to fit" if reduced else ""),
            )
        )
    return out


def _smallest(pool: list[Candidate], ctx: _Ctx, planned: list[Attempt]) -> Attempt | None:
    """The last resort: the smallest usable model that takes the (compacted) context, when it
    is not in the plan already. The category's ``min_context`` does not apply to it."""
    least = ctx.prompt if ctx.floor is None else ctx.floor
    fits = [c for c in pool if c.context_length - ctx.reserve >= least]
    if not fits:
        return None
    taken = {a.candidate.key for a in planned}

    def size(c: Candidate) -> tuple[object, ...]:
        vram = c.vram_gb if c.vram_gb > 0 else float("inf")
        return (vram, c.entry.params_b, *_same_model_order(c, ctx.needed), c.model)

    c = min(fits, key=size)
    if c.key in taken:
        return None
    window = window_for(c, min(ctx.needed, c.context_length))
    budget = window - ctx.reserve
    return Attempt(
        candidate=c,
        level=FallbackLevel.SMALLEST_MODEL,
        context_budget_tokens=budget,
        window_tokens=window,
        reason="the smallest model available, as a last resort"
        + ("; context compacted to fit" if budget < ctx.prompt else ""),
    )


def _failure_message(explicit: str | None, category: Category, rejections: list[Rejection]) -> str:
    what = f"the model {explicit!r}" if explicit else f"a {category} request"
    if not rejections:
        return f"no model can serve {what}"
    reasons = "; ".join(f"{r.service}/{r.model}: {r.detail}" for r in rejections[:6])
    more = f" (and {len(rejections) - 6} more)" if len(rejections) > 6 else ""
    return f"no model can serve {what}: {reasons}{more}"
