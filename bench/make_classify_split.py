"""Make the fixed, seeded, stratified held-out split of tests/data/classify/requests.jsonl.

Run once, commit split.json, never re-run to "get a better split". The split depends only
on the labels of the first ``n_items`` lines and on SEED, so it is reproducible, and the data
test checks that it is. Items appended later are not in the split (neither train nor
held-out) until a new split is made deliberately with --force.

    python bench/make_classify_split.py [--force]
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

SEED = 20240611
HELDOUT_FRACTION = 0.35
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "classify"


def make_split(
    labels: list[str], seed: int = SEED, fraction: float = HELDOUT_FRACTION
) -> list[int]:
    """Return the sorted held-out indices: ceil(fraction * n) of each label, drawn by seed."""
    rng = random.Random(seed)
    heldout: list[int] = []
    for label in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        rng.shuffle(idx)
        heldout.extend(idx[: math.ceil(fraction * len(idx))])
    return sorted(heldout)


def read_labels(path: Path = DATA / "requests.jsonl") -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["label"] for line in f if line.strip()]


def main(argv: list[str]) -> int:
    out = DATA / "split.json"
    if out.exists() and "--force" not in argv:
        print(f"{out} exists; a committed split is not remade (use --force deliberately)")
        return 1
    labels = read_labels()
    heldout = make_split(labels)
    doc = {
        "seed": SEED,
        "heldout_fraction": HELDOUT_FRACTION,
        "n_items": len(labels),
        "heldout": heldout,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(heldout)} of {len(labels)} held out")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
