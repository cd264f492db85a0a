"""The labeled request set and its committed held-out split are well formed and stable."""

from __future__ import annotations

import importlib.util
import json
import pathlib
from collections import Counter
from types import ModuleType
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "classify"
LABELS = {"coding", "reasoning", "analysis", "documentation"}


def _rows() -> list[dict[str, Any]]:
    lines = (DATA / "requests.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _split() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / "split.json").read_text(encoding="utf-8"))
    return doc


def _split_script() -> ModuleType:
    path = ROOT / "bench" / "make_classify_split.py"
    spec = importlib.util.spec_from_file_location("make_classify_split", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_set_has_enough_items_with_valid_fields() -> None:
    rows = _rows()
    assert len(rows) >= 240
    for i, row in enumerate(rows):
        assert set(row) == {"text", "label", "serena"}, i
        assert isinstance(row["text"], str) and row["text"].strip(), i
        assert row["label"] in LABELS, i
        assert isinstance(row["serena"], bool), i


def test_set_has_no_duplicate_texts() -> None:
    texts = [r["text"] for r in _rows()]
    assert len(set(texts)) == len(texts)


def test_labels_are_roughly_balanced() -> None:
    counts = Counter(r["label"] for r in _rows())
    assert set(counts) == LABELS
    assert max(counts.values()) <= 1.25 * min(counts.values()), counts


def test_set_has_the_hard_shapes_the_issue_names() -> None:
    texts = [r["text"] for r in _rows()]
    assert sum("Traceback (most recent call last)" in t or "\tat " in t for t in texts) >= 3
    assert sum("\n+++ " in t or "\n@@ " in t for t in texts) >= 3
    assert sum("```" in t for t in texts) >= 3
    assert sum(len(t.split()) <= 6 for t in texts) >= 20  # terse fragments
    assert sum(len(t) > 500 for t in texts) >= 5  # long pastes


def test_split_holds_out_at_least_30_percent_of_each_label() -> None:
    rows = _rows()
    doc = _split()
    n = doc["n_items"]
    held = doc["heldout"]
    assert 0 < n <= len(rows)
    assert held == sorted(set(held))
    assert all(0 <= i < n for i in held)
    assert len(held) >= 0.30 * n
    per_label = Counter(rows[i]["label"] for i in range(n))
    held_label = Counter(rows[i]["label"] for i in held)
    for label in LABELS:
        assert held_label[label] >= 0.30 * per_label[label], label


def test_split_is_what_the_seeded_script_makes() -> None:
    script = _split_script()
    doc = _split()
    assert doc["seed"] == script.SEED
    assert doc["heldout_fraction"] == script.HELDOUT_FRACTION
    labels = [r["label"] for r in _rows()][: doc["n_items"]]
    assert script.make_split(labels) == doc["heldout"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_script_is_deterministic_and_stratified(seed: int) -> None:
    script = _split_script()
    labels = ["a"] * 10 + ["b"] * 7 + ["c"] * 3
    first = script.make_split(labels, seed=seed, fraction=0.35)
    assert first == script.make_split(labels, seed=seed, fraction=0.35)
    held = Counter(labels[i] for i in first)
    assert held == Counter({"a": 4, "b": 3, "c": 2})  # ceil(0.35 * n) of each label
