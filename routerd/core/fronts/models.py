"""The models the HTTP fronts show and accept: routable ones, virtual ones, passthrough picks.

Invariants:

* Virtual models mean "let routerd choose": ``routerd/auto`` (classify, then choose) and
  ``routerd/<category>`` (choose for that category). Ollama's ``:latest`` tag on a virtual
  name is ignored. Any other name is an explicit model, which routing uses or fails with,
  never replaces.
* A listing shows each model id once (the first service offering it, in priority order) after
  the virtual models.
* What a listing says of a model comes from its server first (window, size, capabilities),
  else from the model database, never invented: unknown stays None.
* Passthrough (``/v1/completions``, ``/v1/embeddings``) picks among the candidates of the
  moment: an explicit name goes to the services offering it; a virtual one to a model able to
  do the job (fill-in-the-middle: the database's ``fim`` or Ollama's ``insert``; embeddings:
  ``embedding``), resident first, then by service priority, then smallest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

import msgspec

from routerd.core.candidates import Candidate
from routerd.core.catalog import CATEGORIES, Catalog
from routerd.core.errors import BadRequest
from routerd.core.routing_policy import model_ref, ref_match

__all__ = [
    "AUTO_MODEL",
    "VIRTUAL_PREFIX",
    "ModelChoice",
    "ModelFacts",
    "Purpose",
    "facts_of",
    "parse_model",
    "pick_passthrough",
    "unique_models",
    "virtual_models",
]

VIRTUAL_PREFIX: Final = "routerd/"
AUTO_MODEL: Final = "routerd/auto"
#: Most services one passthrough request is tried on.
PASSTHROUGH_TRIES: Final = 3

Purpose = Literal["completion", "embedding"]


class ModelChoice(msgspec.Struct, frozen=True):
    """What a request's ``model`` means for routing: an explicit model, or a category (None
    for each: classify and choose)."""

    model: str | None = None
    category: str | None = None

    @property
    def virtual(self) -> bool:
        return self.model is None


def virtual_models() -> tuple[str, ...]:
    """``routerd/auto`` then one virtual model per category."""
    return (AUTO_MODEL, *(VIRTUAL_PREFIX + c for c in CATEGORIES))


def parse_model(name: str | None) -> ModelChoice:
    """The meaning of a request's model name. No name means ``routerd/auto``.

    Raises BadRequest for ``routerd/<something>`` that is no virtual model.
    """
    if name is None or not name.strip():
        return ModelChoice()
    text = name.strip()
    if not text.lower().startswith(VIRTUAL_PREFIX):
        return ModelChoice(model=text)
    word = text[len(VIRTUAL_PREFIX) :].lower().removesuffix(":latest")
    if word == "auto":
        return ModelChoice()
    if word in CATEGORIES:
        return ModelChoice(category=word)
    raise BadRequest(f"{text!r} is no routerd model: use one of {', '.join(virtual_models())}")


class ModelFacts(msgspec.Struct, frozen=True, kw_only=True):
    """One routable model as the fronts describe it. ``capabilities`` use Ollama's words
    (``completion``, ``tools``, ``insert``, ``vision``, ``embedding``, ``thinking``)."""

    id: str
    service: str
    context_length: int | None = None
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    size: int | None = None
    size_vram: int | None = None
    digest: str | None = None
    loaded: bool | None = None
    expires_at: float | None = None
    capabilities: tuple[str, ...] = ()
    params_b: float | None = None


_CATALOG_WORDS: Final = {"fim": "insert"}


def facts_of(c: Candidate, *, size: int | None = None, size_vram: int | None = None,
             digest: str | None = None, quantization: str | None = None,
             parameter_size: str | None = None, family: str | None = None,
             expires_at: float | None = None) -> ModelFacts:  # fmt: skip
    """The facts of candidate ``c``, with what only the server's report carries."""
    entry = c.entry if c.known else None
    if c.capabilities:
        caps = tuple(c.capabilities)
    else:
        caps = () if c.embedding_only else ("completion",)
        caps += tuple(_CATALOG_WORDS.get(x, x) for x in (entry.capabilities if entry else ()))
    return ModelFacts(
        id=c.model,
        service=c.service,
        context_length=c.context_length,
        family=family or (entry.family if entry else None),
        parameter_size=parameter_size or (entry.size or None if entry else None),
        quantization=quantization,
        size=size,
        size_vram=size_vram,
        digest=digest,
        loaded=c.loaded,
        expires_at=expires_at,
        capabilities=caps,
        params_b=entry.params_b if entry else None,
    )


def unique_models(facts: Sequence[ModelFacts]) -> list[ModelFacts]:
    """``facts`` with each id once, the first occurrence kept."""
    seen: set[str] = set()
    out: list[ModelFacts] = []
    for f in facts:
        if f.id not in seen:
            seen.add(f.id)
            out.append(f)
    return out


def _able(c: Candidate, purpose: Purpose) -> bool:
    caps = c.capabilities
    if purpose == "embedding":
        return "embedding" in caps or c.entry.has("embedding")
    return "insert" in caps or c.entry.has("fim")


def pick_passthrough(
    candidates: Sequence[Candidate],
    name: str | None,
    purpose: Purpose,
    catalog: Catalog,
    *,
    needs_fim: bool = False,
    excluded: frozenset[str] = frozenset(),
) -> list[Candidate] | str:
    """The candidates to try, best first (at most ``PASSTHROUGH_TRIES``), or why there is none.

    ``excluded`` names services that cannot take the request (no such API). ``needs_fim``:
    the request has a suffix, so a virtual name only takes a model able to fill in.
    """
    usable = [
        c
        for c in candidates
        if c.admission != "refuse" and c.blocked is None and c.service not in excluded
    ]
    choice = parse_model(name)
    if choice.model is not None:
        ref = model_ref(choice.model, catalog)
        named = [c for c in usable if ref_match(ref, c) is not None]
        if not named:
            why = [c.blocked for c in candidates if c.blocked and ref_match(ref, c) is not None]
            if why:
                return f"the model {choice.model!r} is blocked ({why[0]})"
            return f"no service offers the model {choice.model!r} now"
        named.sort(key=lambda c: (ref_match(ref, c) or 0, c.service_priority))
        return named[:PASSTHROUGH_TRIES]
    able = [c for c in usable if _able(c, purpose)]
    if purpose == "embedding":
        pool = able
        if not pool:
            return "no embedding model is available now; name one explicitly"
    else:
        pool = able or ([] if needs_fim else [c for c in usable if not c.embedding_only])
        if not pool:
            what = "fill-in-the-middle (fim) model" if needs_fim else "completion model"
            return f"no {what} is available now; name one explicitly"

    def order(c: Candidate) -> tuple[bool, int, float, str]:
        return (c.loaded is not True, c.service_priority, c.entry.params_b, c.model)

    return sorted(pool, key=order)[:PASSTHROUGH_TRIES]
