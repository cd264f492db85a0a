"""The index that name resolution runs on, built once per catalog.

Invariants:

* ``build_index`` is pure; the index it returns is never changed afterwards.
* Each id and alias key (see ``modelname.ParsedName.key``) belongs to one entry, and each
  family name and family alias key to one family. A collision is reported as a problem; the
  index never picks a winner silently.
* ``find_family`` is a longest match: among the families whose words the name's words start
  with (after at most two vendor words such as ``meta`` or ``deepseek-ai``), the family with
  the most words wins, so ``qwen2.5-coder`` beats ``qwen2.5``.
* Size matching never crosses sizes: a size written in a name matches an entry whose label
  is the same, or whose label or parameter count is within ``NAME_TOLERANCE``; the closest
  wins. 13b is neither 7b nor 14b.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

from routerd.core.modelname import parse_name, parse_size

if TYPE_CHECKING:
    from routerd.core.catalog import Family, ModelEntry

__all__ = [
    "NAME_TOLERANCE",
    "HINT_TOLERANCE",
    "VENDOR_WORDS",
    "FamilySizes",
    "NameIndex",
    "build_index",
]

#: Relative difference allowed between a size written in a name and an entry's size label or
#: parameter count: "3.2b" is llama-3.2-3b (3.21B), "1.5b" is 1.54B, but 13b is not 14b.
NAME_TOLERANCE: Final = 0.05
#: The same for a size a server reports (Ollama's "parameter_size" such as "9.8B"), which
#: counts parameters differently from the marketing label.
HINT_TOLERANCE: Final = 0.12
#: Words that may precede a family in a name without being part of it (organisations).
VENDOR_WORDS: Final = frozenset(
    {
        "meta",
        "google",
        "microsoft",
        "mistralai",
        "ibm",
        "qwen",
        "deepseek",
        "ai",
        "openai",
        "bigcode",
        "nvidia",
        "unsloth",
        "bartowski",
        "thebloke",
    }
)


class FamilySizes:
    """The entries of one family, looked up by size."""

    __slots__ = ("default", "entries", "labels", "latest", "name", "numbers", "words")

    def __init__(self, name: str, entries: tuple[ModelEntry, ...], family: Family) -> None:
        self.name = name
        self.entries = entries
        labels: dict[str, list[ModelEntry]] = {}
        words: dict[str, list[ModelEntry]] = {}
        numbers: list[tuple[float, ModelEntry]] = []
        for e in entries:
            for label in (e.size, *e.size_aliases):
                size = parse_size(label)
                if size is None:
                    words.setdefault(label, []).append(e)
                    continue
                labels.setdefault(size[0], []).append(e)
                if size[1] is not None:
                    numbers.append((size[1], e))
            numbers.append((e.params_b, e))
        self.labels = {k: tuple(v) for k, v in labels.items()}
        self.words = {k: tuple(v) for k, v in words.items()}
        self.numbers = tuple(numbers)
        self.default = self.by_label(family.default) if family.default else ()
        self.latest = self.by_label(family.ollama_latest) if family.ollama_latest else ()

    def by_label(self, label: str) -> tuple[ModelEntry, ...]:
        """Entries whose size label or size word is ``label`` exactly."""
        size = parse_size(label)
        if size is None:
            return self.words.get(label, ())
        return self.labels.get(size[0], ())

    def by_number(self, params_b: float, tolerance: float) -> tuple[ModelEntry, ...]:
        """Entries closest to ``params_b`` billions, if within ``tolerance`` (relative)."""
        best = tolerance
        found: list[ModelEntry] = []
        for value, e in self.numbers:
            if value <= 0:
                continue
            d = abs(params_b - value) / value
            if d < best - 1e-9:
                best, found = d, [e]
            elif abs(d - best) <= 1e-9 and e not in found:
                found.append(e)
        return tuple(found)

    def by_size(self, label: str, params_b: float | None) -> tuple[ModelEntry, ...]:
        """Entries for a size written in a name: the same label, else the closest number."""
        exact = self.by_label(label)
        if exact or params_b is None:
            return exact
        return self.by_number(params_b, NAME_TOLERANCE)

    def size_list(self) -> str:
        """The family's sizes for messages: "7b, 13b, 34b, 70b"."""
        seen = sorted({(e.params_b, e.size) for e in self.entries})
        return ", ".join(s for _, s in seen)

    @property
    def only(self) -> tuple[ModelEntry, ...]:
        """All entries, if they share one size; else nothing."""
        return self.entries if len({e.size for e in self.entries}) == 1 else ()


class NameIndex:
    """Lookups for ``resolve``: exact keys, families by words, sizes per family."""

    __slots__ = ("exact", "families", "sizes")

    def __init__(
        self,
        exact: Mapping[str, tuple[str, str | None]],
        families: Mapping[str, tuple[tuple[tuple[str, ...], str], ...]],
        sizes: Mapping[str, FamilySizes],
    ) -> None:
        #: name key -> (entry id, the alias as written, or None for the id itself)
        self.exact = exact
        #: first word -> ((family words, family name), ...), most words first
        self.families = families
        self.sizes = sizes

    def find_family(self, words: tuple[str, ...]) -> tuple[str, int, int] | None:
        """(family, start, end): ``words[start:end]`` name the family; None if none does."""
        for start in range(min(3, len(words))):
            if start > 0 and words[start - 1] not in VENDOR_WORDS:
                break
            for fam_words, fam in self.families.get(words[start], ()):
                end = start + len(fam_words)
                if words[start:end] == fam_words:
                    return fam, start, end
        return None


def build_index(
    entries: Iterable[ModelEntry], families: Mapping[str, Family]
) -> tuple[NameIndex, list[str]]:
    """Index ``entries`` (sizes already normalised) and ``families``; return the problems.

    Every family an entry names must be a key of ``families``.
    """
    problems: list[str] = []
    exact: dict[str, tuple[str, str | None]] = {}
    by_family: dict[str, list[ModelEntry]] = {name: [] for name in families}
    for e in entries:
        by_family.setdefault(e.family, []).append(e)
        for written, alias in ((e.id, None), *((a, a) for a in e.aliases)):
            key = parse_name(written).key
            what = f"alias {written!r} of {e.id!r}" if alias else f"id {written!r}"
            if key.startswith("|"):
                problems.append(f"{what} holds no name, only a size or noise")
                continue
            other = exact.get(key)
            if other is not None:
                was = f"alias {other[1]!r} of {other[0]!r}" if other[1] else f"id {other[0]!r}"
                problems.append(f"{what} reads the same as {was}")
                continue
            exact[key] = (e.id, alias)

    family_keys: dict[tuple[str, ...], str] = {}
    for name, fam in families.items():
        for written in (name, *fam.aliases):
            parsed = parse_name(written)
            what = f"family {name!r}" if written == name else f"alias {written!r} of {name!r}"
            if not parsed.words or parsed.size is not None:
                problems.append(f"{what} must be words without a size")
                continue
            other_fam = family_keys.get(parsed.words)
            if other_fam is not None and other_fam != name:
                problems.append(f"{what} reads the same as family {other_fam!r}")
                continue
            family_keys[parsed.words] = name
    first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for fam_words, name in family_keys.items():
        first.setdefault(fam_words[0], []).append((fam_words, name))
    ordered = {w: tuple(sorted(v, key=lambda t: -len(t[0]))) for w, v in first.items()}

    sizes: dict[str, FamilySizes] = {}
    for name, members in by_family.items():
        if not members:
            problems.append(f"family {name!r} has no models")
            continue
        fam = families[name]
        fs = FamilySizes(name, tuple(members), fam)
        for field, label in (("default", fam.default), ("ollama_latest", fam.ollama_latest)):
            if label and not fs.by_label(label):
                problems.append(
                    f"family {name!r}: {field} {label!r} is not a size of its models"
                    f" ({fs.size_list()})"
                )
        sizes[name] = fs
    return NameIndex(exact, ordered, sizes), problems
