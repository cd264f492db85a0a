"""The figures a benchmark reports, for ``bench/report.py``.

A benchmark prints its figures for people, and also calls :func:`record` for each figure
worth comparing run to run (every figure with a target, at least). ``record`` does nothing
unless the environment variable ``ROUTERD_BENCH_FIGURES`` names a file: then it appends one
JSON line per figure to it, which is how ``bench/report.py`` collects them. A benchmark run by
hand is unaffected.

A figure: ``name`` (stable from run to run: no measured numbers in it), ``value``, ``unit``,
``target`` (None: no target), ``better`` (``"lower"`` or ``"higher"``: which side of the
target meets it) and ``latency`` (True: a time a user waits; these are drawn in the report's
latency plot against their targets).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Literal

__all__ = ["record", "FIGURES_ENV"]

FIGURES_ENV = "ROUTERD_BENCH_FIGURES"


def record(
    name: str,
    value: float,
    unit: str,
    *,
    target: float | None = None,
    better: Literal["lower", "higher"] = "lower",
    latency: bool = False,
) -> None:
    """Record one figure for the report (a no-op outside ``bench/report.py``)."""
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    bench = Path(sys.argv[0]).stem
    line = {"bench": bench, "name": name, "value": float(value), "unit": unit,
            "target": target, "better": better, "latency": latency}  # fmt: skip
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
