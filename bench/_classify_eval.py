"""Shared helpers for the classifier benches: load the labeled set and split, score predictions.

Not part of the package. Scripts in bench/ import this as a sibling module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "classify"
LABELS = ("coding", "reasoning", "analysis", "documentation")


class Item:
    __slots__ = ("label", "serena", "text")

    def __init__(self, text: str, label: str, serena: bool) -> None:
        self.text = text
        self.label = label
        self.serena = serena


def load_items() -> list[Item]:
    with (DATA / "requests.jsonl").open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [Item(r["text"], r["label"], bool(r["serena"])) for r in rows]


def load_split() -> tuple[list[int], list[int]]:
    """Return (train indices, held-out indices) over the first n_items of the set."""
    doc = json.loads((DATA / "split.json").read_text(encoding="utf-8"))
    held = set(doc["heldout"])
    train = [i for i in range(doc["n_items"]) if i not in held]
    return train, sorted(held)


def confusion(gold: Sequence[str], pred: Sequence[str]) -> list[list[int]]:
    """Rows are gold labels, columns predicted labels, both in LABELS order."""
    m = [[0] * len(LABELS) for _ in LABELS]
    for g, p in zip(gold, pred, strict=True):
        m[LABELS.index(g)][LABELS.index(p)] += 1
    return m


def accuracy(gold: Sequence[str], pred: Sequence[str]) -> float:
    return sum(g == p for g, p in zip(gold, pred, strict=True)) / max(1, len(gold))


def macro_f1(gold: Sequence[str], pred: Sequence[str]) -> float:
    m = confusion(gold, pred)
    f1s = []
    for k in range(len(LABELS)):
        tp = m[k][k]
        fp = sum(m[r][k] for r in range(len(LABELS))) - tp
        fn = sum(m[k]) - tp
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return sum(f1s) / len(f1s)


def format_confusion(m: list[list[int]]) -> str:
    short = [lab[:5] for lab in LABELS]
    lines = ["gold \\ pred  " + " ".join(f"{s:>6}" for s in short)]
    for lab, row in zip(short, m, strict=True):
        lines.append(f"{lab:<12} " + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)
