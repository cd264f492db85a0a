"""The model capability database: what each model is good at, how big it is, what it can do.

The built-in database is data (``routerd/data/models.toml``, loaded by
``routerd.data.load_builtin_catalog``); users add or override entries from config with
``Catalog.merge``. Name resolution over a catalog lives in ``routerd.core.resolve``.

Invariants:

* A ``Catalog`` is immutable and always valid: ids are unique, no id or alias reads the same
  as another (same words and size once case, separators and quantisation are ignored), scores
  are 0-100, tiers 1-3, every size label agrees with the parameter count, every family
  default names a size its models have, and every priority list names only ids.
  ``CatalogError`` lists every problem found, not just the first.
* Tier 1 is the best; ``LOWEST_TIER`` is what a model the database does not know gets.
* Size labels are normalised at construction ("14B" -> "14b"; missing -> from ``params_b``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

from routerd.core.modelname import format_size, parse_name, parse_size
from routerd.core.nameindex import NameIndex, build_index

__all__ = [
    "Category",
    "CATEGORIES",
    "Capability",
    "CAPABILITIES",
    "LOWEST_TIER",
    "UNKNOWN_SCORE",
    "Scores",
    "ModelEntry",
    "Family",
    "Priorities",
    "ScoresOverride",
    "ModelOverride",
    "CatalogError",
    "Catalog",
    "parse_catalog",
    "estimate_vram_gb",
    "unknown_entry",
]

Category = Literal["coding", "reasoning", "analysis", "documentation"]
CATEGORIES: Final[tuple[Category, ...]] = ("coding", "reasoning", "analysis", "documentation")
Capability = Literal["tools", "vision", "thinking", "fim", "embedding"]
CAPABILITIES: Final[tuple[Capability, ...]] = ("tools", "vision", "thinking", "fim", "embedding")
#: Tier of a model the database does not know (1 is best).
LOWEST_TIER: Final = 3
#: Every category score of a model the database does not know: below every known chat model.
UNKNOWN_SCORE: Final = 30

ModelId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=128)]
Score = Annotated[int, msgspec.Meta(ge=0, le=100)]
Tier = Annotated[int, msgspec.Meta(ge=1, le=LOWEST_TIER)]
Billions = Annotated[float, msgspec.Meta(gt=0)]
Tokens = Annotated[int, msgspec.Meta(ge=1)]
Gigabytes = Annotated[float, msgspec.Meta(ge=0)]
Word = Annotated[str, msgspec.Meta(pattern=r"^[a-z]+$")]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class Scores(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Suitability per task category, 0-100 (higher is better)."""

    coding: Score
    reasoning: Score
    analysis: Score
    documentation: Score


class ModelEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One model of the database. ``size`` is the label names use ("14b", "8x7b")."""

    id: ModelId
    family: NonEmpty  # the model line as Ollama names it: "qwen2.5-coder", "llama3.3"
    params_b: Billions  # total parameters, in billions
    context_length: Tokens  # the model's own context window, in tokens
    vram_gb: Gigabytes  # approximate memory at 4-bit quantisation
    tier: Tier
    scores: Scores
    size: str = ""  # "" means format_size(params_b)
    size_aliases: tuple[str, ...] = ()  # other labels ("6.7b") or words ("medium", "lite")
    active_params_b: Billions | None = None  # mixture of experts: parameters used per token
    variant: Word = "instruct"  # the release this entry describes: instruct, base, chat...
    aliases: tuple[NonEmpty, ...] = ()  # further names that mean exactly this entry
    capabilities: tuple[Capability, ...] = ()
    note: str = ""

    def score(self, category: Category) -> int:
        """The score for ``category``."""
        s = self.scores
        match category:
            case "coding":
                return s.coding
            case "reasoning":
                return s.reasoning
            case "analysis":
                return s.analysis
            case "documentation":
                return s.documentation

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities


class Family(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How names of one model line read. Sizes are labels or size words of its models."""

    aliases: tuple[NonEmpty, ...] = ()  # other spellings: "deepseek-r1-distill-qwen"
    default: str | None = None  # the size meant when a name gives none
    ollama_latest: str | None = None  # the size of Ollama's ``latest`` tag


class Priorities(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Default task routing: model ids per category, best first."""

    coding: tuple[str, ...] = ()
    reasoning: tuple[str, ...] = ()
    analysis: tuple[str, ...] = ()
    documentation: tuple[str, ...] = ()

    def for_category(self, category: Category) -> tuple[str, ...]:
        match category:
            case "coding":
                return self.coding
            case "reasoning":
                return self.reasoning
            case "analysis":
                return self.analysis
            case "documentation":
                return self.documentation


class ScoresOverride(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    coding: Score | None = None
    reasoning: Score | None = None
    analysis: Score | None = None
    documentation: Score | None = None


class ModelOverride(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A user's change to one entry, or a new entry, from config (matched by ``id``).

    ``None`` (or absent) keeps the built-in value. ``aliases`` are added to the entry's.
    A new entry needs ``family``, ``params_b``, ``context_length``, ``tier`` and all four
    ``scores``; ``vram_gb`` is estimated from ``params_b`` when absent.
    """

    id: ModelId
    family: NonEmpty | None = None
    params_b: Billions | None = None
    context_length: Tokens | None = None
    vram_gb: Gigabytes | None = None
    tier: Tier | None = None
    scores: ScoresOverride | None = None
    size: str | None = None
    size_aliases: tuple[str, ...] | None = None
    active_params_b: Billions | None = None
    variant: Word | None = None
    aliases: tuple[NonEmpty, ...] = ()
    capabilities: tuple[Capability, ...] | None = None
    note: str | None = None


class _CatalogFile(msgspec.Struct, forbid_unknown_fields=True):
    schema_version: Literal[1]
    models: tuple[ModelEntry, ...]
    priorities: Priorities = Priorities()
    families: dict[str, Family] = {}


class CatalogError(ValueError):
    """The catalog (or a user's change to it) is invalid. ``problems`` lists every issue."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("invalid model catalog: " + "; ".join(self.problems))


def estimate_vram_gb(params_b: float) -> float:
    """Approximate memory for weights at Q4_K_M (about 4.8 bits a parameter) plus overhead."""
    return round(params_b * 0.6 + 0.5, 1)


def unknown_entry(name: str, *, context_length: int, params_b: float | None = None) -> ModelEntry:
    """A routable stand-in for a model the database does not know.

    It has the server's ``name`` as id, the ``context_length`` the server reports, the lowest
    tier and ``UNKNOWN_SCORE`` everywhere. Not validated: ``name`` may be any server string.
    """
    s = UNKNOWN_SCORE
    return ModelEntry(
        id=name,
        family="unknown",
        params_b=params_b if params_b and params_b > 0 else 1.0,
        context_length=max(1, context_length),
        vram_gb=estimate_vram_gb(params_b) if params_b and params_b > 0 else 0.0,
        tier=LOWEST_TIER,
        scores=Scores(coding=s, reasoning=s, analysis=s, documentation=s),
        size=format_size(params_b) if params_b and params_b > 0 else "",
        note="not in the model database",
    )


class Catalog:
    """A validated, indexed set of model entries with their families and default priorities.

    Build one with ``parse_catalog`` or ``Catalog(entries, families, priorities)``; both raise
    ``CatalogError``. Instances are read-only.
    """

    __slots__ = ("_by_id", "entries", "families", "index", "priorities")

    def __init__(
        self,
        entries: Iterable[ModelEntry],
        families: Mapping[str, Family] | None = None,
        priorities: Priorities | None = None,
    ) -> None:
        problems: list[str] = []
        fams = dict(families or {})
        normal: list[ModelEntry] = []
        by_id: dict[str, ModelEntry] = {}
        for e in entries:
            e = _checked(e, fams, problems)
            if e.id in by_id:
                problems.append(f"id {e.id!r} appears twice")
                continue
            by_id[e.id] = e
            normal.append(e)
            fams.setdefault(e.family, Family())
        _check_variants(normal, problems)
        index, more = build_index(normal, fams)
        problems.extend(more)
        prio = priorities or Priorities()
        _check_priorities(prio, by_id, index, problems)
        if problems:
            raise CatalogError(problems)
        self.entries: tuple[ModelEntry, ...] = tuple(normal)
        self.families: Mapping[str, Family] = fams
        self.priorities = prio
        self.index: NameIndex = index
        self._by_id = by_id

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.entries)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id

    def __getitem__(self, model_id: str) -> ModelEntry:
        return self._by_id[model_id]

    def get(self, model_id: str) -> ModelEntry | None:
        return self._by_id.get(model_id)

    def in_family(self, family: str) -> tuple[ModelEntry, ...]:
        """The entries of ``family``, smallest first; empty if the family is unknown."""
        fs = self.index.sizes.get(family)
        return tuple(sorted(fs.entries, key=lambda e: e.params_b)) if fs else ()

    def priority(self, category: Category) -> tuple[str, ...]:
        """Default model ids for ``category``, best first."""
        return self.priorities.for_category(category)

    def merge(
        self, overrides: Iterable[ModelEntry | ModelOverride | Mapping[str, Any] | msgspec.Struct]
    ) -> Catalog:
        """A new catalog with ``overrides`` applied in order; raises ``CatalogError``.

        A ``ModelEntry`` replaces the entry with its id or is added. A ``ModelOverride`` changes
        only the fields it sets; so does a mapping or another Struct with ``ModelOverride``'s
        field names, where ``None`` means "keep" (a config's own model Struct plugs in).
        """
        merged: dict[str, ModelEntry] = dict(self._by_id)
        problems: list[str] = []
        for i, item in enumerate(overrides):
            where = f"models[{i}]"
            if isinstance(item, ModelEntry):
                merged[item.id] = item
                continue
            # Convert even a ModelOverride: one built in Python was never validated.
            try:
                if isinstance(item, msgspec.Struct):
                    pairs = msgspec.to_builtins(item)
                else:
                    pairs = dict(item)
                raw = {k: v for k, v in pairs.items() if v is not None}
                item = msgspec.convert(raw, ModelOverride)
            except (msgspec.ValidationError, TypeError, ValueError) as exc:
                problems.append(f"{where}: {exc}")
                continue
            entry = _apply(item, merged.get(item.id), f"{where} ({item.id!r})", problems)
            if entry is not None:
                merged[item.id] = entry
        if problems:
            raise CatalogError(problems)
        return Catalog(merged.values(), self.families, self.priorities)


def parse_catalog(data: bytes | str) -> Catalog:
    """Decode a TOML catalog (``schema_version = 1``, ``[[models]]``, ``[families.*]``,
    ``[priorities]``) and validate it. Raises ``CatalogError`` naming the offending entry."""
    try:
        raw = msgspec.toml.decode(data, type=_CatalogFile)
    except msgspec.ValidationError as exc:
        raise CatalogError([_locate(str(exc), data)]) from None
    except msgspec.DecodeError as exc:
        raise CatalogError([f"not valid TOML: {exc}"]) from None
    return Catalog(raw.models, raw.families, raw.priorities)


def _locate(message: str, data: bytes | str) -> str:
    """Add the id of the entry a ``$.models[N]`` path points at, when it can be read."""
    m = re.search(r"\$\.models\[(\d+)\]", message)
    if m is None:
        return message
    try:
        loose = msgspec.toml.decode(data)
        model_id = loose["models"][int(m.group(1))]["id"]
    except Exception:  # any shape at all: the plain message is still right
        return message
    return f"{message} (model {model_id!r})"


def _checked(e: ModelEntry, families: Mapping[str, Family], problems: list[str]) -> ModelEntry:
    """Validate one entry (constraints included, for entries built in Python) and normalise
    its sizes."""
    try:
        e = msgspec.convert(msgspec.to_builtins(e), ModelEntry)
    except msgspec.ValidationError as exc:
        problems.append(f"model {e.id!r}: {exc}")
        return e
    where = f"model {e.id!r}"
    if e.family not in families:
        fam_words = parse_name(e.family).words
        for name, fam in families.items():
            if any(parse_name(a).words == fam_words for a in fam.aliases):
                problems.append(f"{where}: family {e.family!r} is an alias; write {name!r}")
    label = e.size or format_size(e.params_b)
    size = parse_size(label)
    if size is None:
        problems.append(f"{where}: size {label!r} is not a size such as 14b, 135m or 8x7b")
        return e
    if size[1] is not None and abs(size[1] - e.params_b) > 0.35 * size[1]:
        problems.append(f"{where}: size {size[0]} disagrees with params_b {e.params_b}")
    aliases: list[str] = []
    for a in e.size_aliases:
        alias_size = parse_size(a)
        if alias_size is not None:
            aliases.append(alias_size[0])
        elif a.isalpha() and a.islower():
            aliases.append(a)
        else:
            problems.append(f"{where}: size alias {a!r} is neither a size nor a lowercase word")
    return msgspec.structs.replace(e, size=size[0], size_aliases=tuple(aliases))


def _check_variants(entries: list[ModelEntry], problems: list[str]) -> None:
    seen: dict[tuple[str, str, str], str] = {}
    for e in entries:
        k = (e.family, e.size, e.variant)
        if k in seen:
            problems.append(
                f"models {seen[k]!r} and {e.id!r} are both family {e.family!r}, size {e.size},"
                f" variant {e.variant}"
            )
        seen[k] = e.id


def _check_priorities(
    prio: Priorities, by_id: Mapping[str, ModelEntry], index: NameIndex, problems: list[str]
) -> None:
    for category in CATEGORIES:
        ids = prio.for_category(category)
        for model_id in ids:
            if model_id in by_id:
                continue
            hit = index.exact.get(parse_name(model_id).key)
            hint = f"; did you mean {hit[0]!r}?" if hit else ""
            problems.append(f"priorities.{category} names {model_id!r}, which is no model id{hint}")
        dups = sorted({m for m in ids if ids.count(m) > 1})
        if dups:
            problems.append(f"priorities.{category} lists {', '.join(dups)} more than once")


def _apply(
    o: ModelOverride, base: ModelEntry | None, where: str, problems: list[str]
) -> ModelEntry | None:
    """The entry ``o`` makes of ``base`` (None: ``o`` is a new entry)."""
    fields = {
        f: getattr(o, f)
        for f in o.__struct_fields__
        if f not in ("id", "scores", "aliases") and getattr(o, f) is not None
    }
    if base is not None:
        if o.scores is not None:
            fields["scores"] = _scores(base.scores, o.scores)
        fields["aliases"] = base.aliases + tuple(a for a in o.aliases if a not in base.aliases)
        return msgspec.structs.replace(base, **fields)
    missing = [f for f in ("family", "params_b", "context_length", "tier") if f not in fields]
    s = o.scores
    if s is None or None in (s.coding, s.reasoning, s.analysis, s.documentation):
        missing.append("scores (all four)")
    if missing:
        problems.append(f"{where}: a new model needs {', '.join(missing)}")
        return None
    assert s is not None  # for mypy: checked just above
    fields["scores"] = _scores(None, s)
    fields.setdefault("vram_gb", estimate_vram_gb(fields["params_b"]))
    return ModelEntry(id=o.id, aliases=o.aliases, **fields)


def _scores(base: Scores | None, o: ScoresOverride) -> Scores:
    def pick(new: int | None, old: int | None) -> int:
        return new if new is not None else (old if old is not None else 0)

    return Scores(
        coding=pick(o.coding, base.coding if base else None),
        reasoning=pick(o.reasoning, base.reasoning if base else None),
        analysis=pick(o.analysis, base.analysis if base else None),
        documentation=pick(o.documentation, base.documentation if base else None),
    )
