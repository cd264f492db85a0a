"""Resolve the model names servers report to entries of the model database.

Invariants:

* ``resolve`` is pure and never raises, whatever the name; a name it cannot place gets
  ``model_id=None`` and a reason saying why. Such a model is still routable (see
  ``catalog.unknown_entry``).
* A name is read, never substring-matched: its family words, size, variant and quantisation
  are taken apart (``modelname.parse_name``) and matched against the catalog's index.
* The size must agree: a name's size matches only an entry of that size (13b is neither 7b
  nor 34b). A name without a size means, in order: the size the server reports
  (``size_hint_b``), Ollama's default size for that family (Ollama names only: ``latest``
  or another tag without a size), the family's declared default, the family's only size.
  Otherwise it is ambiguous: None.
* Words the family does not account for (``math`` in ``qwen2.5-math``, ``coder`` in
  ``yi-coder``) make the name a different model: None. Variant words (instruct, chat, base,
  code, python, thinking...) only choose among entries of the same size.
* An id or alias written out (case, separators and quantisation aside) resolves to its entry,
  except that an Ollama tag without a size is read by family first: ``deepseek-r1:latest``
  is Ollama's 8B distill, while ``deepseek-r1`` is the 671B model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

import msgspec

from routerd.core.catalog import Catalog, ModelEntry
from routerd.core.modelname import ParsedName, SourceFormat, format_size, parse_name
from routerd.core.nameindex import HINT_TOLERANCE, FamilySizes

__all__ = ["MatchKind", "Resolution", "resolve", "resolve_all", "VARIANT_WORDS"]

MatchKind = Literal["id", "alias", "size", "hint", "latest", "default", "only", "none"]

#: Words naming a release of a model, and the variant each means.
VARIANT_WORDS: Final[dict[str, str]] = {
    "instruct": "instruct",
    "it": "instruct",
    "chat": "chat",
    "base": "base",
    "pt": "base",
    "text": "base",
    "code": "code",
    "python": "python",
    "thinking": "thinking",
}
_INSTRUCT_LIKE: Final = frozenset({"instruct", "chat"})
# A model file's directories tried when its own name says nothing (e.g. ggml-model-q4_0.gguf).
_MAX_PARENTS: Final = 2


class Resolution(msgspec.Struct, frozen=True):
    """The database entry a reported name means, or None, and why.

    ``family``, ``size``, ``params_b``, ``variant``, ``quant`` and ``source_format`` are what
    the name says (``family`` is the catalog family it was read as, if any).
    """

    name: str
    model_id: str | None
    reason: str
    matched_by: MatchKind
    family: str | None = None
    size: str | None = None
    params_b: float | None = None
    variant: str | None = None
    quant: str | None = None
    source_format: SourceFormat = "plain"


def resolve(name: str, catalog: Catalog, *, size_hint_b: float | None = None) -> Resolution:
    """Resolve one reported model name against ``catalog``.

    ``size_hint_b`` is the parameter count (billions) the server reports for the model, if any
    (Ollama's ``details.parameter_size``, llama.cpp's ``meta.n_params / 1e9``); it is used only
    when the name itself gives no size.
    """
    if size_hint_b is not None and not size_hint_b > 0:
        size_hint_b = None
    parsed = parse_name(name)
    if not parsed.words:
        return _none(name, parsed, None, "no model name in it, only a size, a tag or noise")
    result = _resolve_parsed(name, parsed, catalog, size_hint_b)
    if result.model_id is None and result.family is None:
        for parent in parsed.parents[:_MAX_PARENTS]:
            p = parse_name(parent)
            if not p.words or catalog.index.find_family(p.words) is None:
                continue
            p = msgspec.structs.replace(
                p,
                source_format=parsed.source_format,
                size=parsed.size or p.size,
                params_b=parsed.params_b if parsed.size else p.params_b,
                quant=parsed.quant or p.quant,
            )
            found = _resolve_parsed(name, p, catalog, size_hint_b)
            return msgspec.structs.replace(
                found, reason=f"{found.reason} (from directory {parent!r})"
            )
    return result


def resolve_all(
    names: Iterable[str], catalog: Catalog, *, size_hints: dict[str, float] | None = None
) -> list[Resolution]:
    """``resolve`` each name, in order (what ``routerctl resolve`` prints)."""
    hints = size_hints or {}
    return [resolve(n, catalog, size_hint_b=hints.get(n)) for n in names]


def _resolve_parsed(
    name: str, parsed: ParsedName, catalog: Catalog, hint: float | None
) -> Resolution:
    index = catalog.index
    exact = index.exact.get(parsed.key)
    if exact is not None and not parsed.latest:
        entry = catalog[exact[0]]
        if hint is None or _fits_hint(index.sizes[entry.family], entry, hint):
            return _exact(name, parsed, entry, exact[1])
    by_family = _by_family(name, parsed, catalog, hint)
    if by_family.model_id is None and exact is not None:
        return _exact(name, parsed, catalog[exact[0]], exact[1])
    return by_family


def _exact(name: str, parsed: ParsedName, entry: ModelEntry, alias: str | None) -> Resolution:
    variant = next((VARIANT_WORDS[w] for w in parsed.words if w in VARIANT_WORDS), None)
    how: MatchKind
    if alias is None:
        reason, how = f"reads as the id {entry.id!r}", "id"
    else:
        reason, how = f"reads as {alias!r}, an alias of {entry.id!r}", "alias"
    return _result(name, parsed, entry, how, reason, entry.family, variant)


def _by_family(name: str, parsed: ParsedName, catalog: Catalog, hint: float | None) -> Resolution:
    found = catalog.index.find_family(parsed.words)
    if found is None:
        shown = "-".join(parsed.words)
        return _none(name, parsed, None, f"no known model family in {shown!r}")
    family, _start, end = found
    fs = catalog.index.sizes[family]
    variant: str | None = None
    size_words: list[str] = []
    unknown: list[str] = []
    for w in parsed.words[end:]:
        if w in VARIANT_WORDS:
            variant = variant or VARIANT_WORDS[w]
        elif w in fs.words:
            size_words.append(w)
        else:
            unknown.append(w)
    if unknown:
        extra = "-".join(unknown)
        return _none(
            name,
            parsed,
            family,
            f"family {family} followed by {extra!r}, which none of its models has:"
            " a different model or a fine-tune",
            variant,
        )
    if parsed.extra_sizes:
        sizes = ", ".join((parsed.size or "", *parsed.extra_sizes))
        return _none(name, parsed, family, f"family {family} with several sizes ({sizes})", variant)

    how: Literal["size", "hint", "latest", "default", "only"]
    if parsed.size is not None:
        cands = fs.by_size(parsed.size, parsed.params_b)
        how, why = "size", f"size {parsed.size}"
        if not cands:
            return _none(
                name,
                parsed,
                family,
                f"family {family} has no {parsed.size} model (it has {fs.size_list()})",
                variant,
            )
    elif size_words:
        cands = fs.words[size_words[0]]
        how, why = "size", f"size {size_words[0]!r}"
    elif hint is not None:
        cands = fs.by_number(hint, HINT_TOLERANCE)
        how, why = "hint", f"size {format_size(hint)} as the server reports"
        if not cands:
            return _none(
                name,
                parsed,
                family,
                f"family {family} has no model of the {format_size(hint)} the server reports"
                f" (it has {fs.size_list()})",
                variant,
            )
    elif parsed.latest and fs.latest:
        cands = fs.latest
        how, why = "latest", f"no size given; Ollama's default for it is {fs.latest[0].size}"
    elif fs.default:
        cands = fs.default
        how, why = "default", f"no size given; the family's default is {fs.default[0].size}"
    elif fs.only:
        cands = fs.only
        how, why = "only", f"no size given; its only size is {fs.only[0].size}"
    else:
        return _none(
            name,
            parsed,
            family,
            f"family {family} comes in several sizes ({fs.size_list()}) and the name gives none",
            variant,
        )
    entry = _pick_variant(cands, variant)
    reason = f"family {family}, {why}"
    if (
        variant is not None
        and variant != entry.variant
        and not (variant in _INSTRUCT_LIKE and entry.variant in _INSTRUCT_LIKE)
    ):
        reason += f"; the name's variant is {variant}, the entry describes {entry.variant}"
    return _result(name, parsed, entry, how, reason, family, variant)


def _pick_variant(cands: tuple[ModelEntry, ...], variant: str | None) -> ModelEntry:
    """The most specific candidate: same variant, else instruct, else the first by id."""
    ordered = sorted(cands, key=lambda e: e.id)
    for wanted in (variant, "instruct"):
        for e in ordered:
            if e.variant == wanted:
                return e
    return ordered[0]


def _fits_hint(fs: FamilySizes, entry: ModelEntry, hint: float) -> bool:
    return entry in fs.by_number(hint, HINT_TOLERANCE)


def _result(
    name: str,
    parsed: ParsedName,
    entry: ModelEntry,
    how: MatchKind,
    reason: str,
    family: str,
    variant: str | None,
) -> Resolution:
    return Resolution(
        name=name,
        model_id=entry.id,
        reason=reason,
        matched_by=how,
        family=family,
        size=parsed.size,
        params_b=parsed.params_b,
        variant=variant,
        quant=parsed.quant,
        source_format=parsed.source_format,
    )


def _none(
    name: str, parsed: ParsedName, family: str | None, reason: str, variant: str | None = None
) -> Resolution:
    return Resolution(
        name=name,
        model_id=None,
        reason=reason,
        matched_by="none",
        family=family,
        size=parsed.size,
        params_b=parsed.params_b,
        variant=variant,
        quant=parsed.quant,
        source_format=parsed.source_format,
    )
