"""Benchmark the request classifier against the seed's, on the labeled set.

Prints, for routerd.core.classify and the seed baseline (bench/seed_classifier.py) measured in
the same run:
- classifications per second over the set's own texts (its length distribution), best of
  several rounds, by wall clock and by process CPU time (the CPU figure is steadier on a
  shared machine). Target: >= 100,000/s.
- the time to classify a 1 MB pasted log. Target: < 5 ms.
- accuracy, macro-F1 and the confusion matrix on the HELD-OUT part of the split, plus the
  accuracy of the Serena decision.

    python bench/classify.py [--rounds N]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _classify_eval import (
    accuracy,
    confusion,
    format_confusion,
    load_items,
    load_split,
    macro_f1,
)
from _figures import record
from seed_classifier import seed_classify

from routerd.core.classify import classify

PASSES_PER_ROUND = 10


def throughput(fn: Callable[[str], object], texts: list[str], rounds: int) -> tuple[float, float]:
    """Best (wall, cpu) classifications per second over ``rounds`` rounds."""
    best_wall = best_cpu = float("inf")
    n = PASSES_PER_ROUND * len(texts)
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(PASSES_PER_ROUND):
            for t in texts:
                fn(t)
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return n / best_wall, n / best_cpu


def pasted_log(size: int = 1_000_000) -> str:
    """A deterministic application log of ``size`` characters, pasted with a question on top."""
    lines = ["why does the worker keep restarting? log below", ""]
    i = 0
    total = sum(len(x) + 1 for x in lines)
    while total < size:
        line = (
            f"2024-05-01T02:{i // 60 % 60:02d}:{i % 60:02d}Z INFO worker-{i % 7} "
            f"job={i} state=done took={(i * 37) % 900}ms queue=orders attempt={i % 3}"
        )
        if i % 97 == 0:
            line = (
                f"2024-05-01T02:{i // 60 % 60:02d}:{i % 60:02d}Z ERROR worker-{i % 7} job={i} "
                "ConnectionResetError: [Errno 104] Connection reset by peer"
            )
        lines.append(line)
        total += len(line) + 1
        i += 1
    return "\n".join(lines)[:size]


def main(argv: list[str]) -> int:
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 7
    items = load_items()
    texts = [it.text for it in items]
    _, held = load_split()
    mean_len = sum(map(len, texts)) / len(texts)
    print(
        f"set: {len(texts)} requests, mean {mean_len:.0f} chars, "
        f"max {max(map(len, texts))} chars; held out: {len(held)}"
    )

    print(
        "\n== throughput on the set's length distribution (best of "
        f"{rounds} rounds x {PASSES_PER_ROUND} passes) =="
    )
    for name, fn in (("routerd", classify), ("seed", seed_classify)):
        wall, cpu = throughput(fn, texts, rounds)
        print(f"{name:<8} {wall:>10,.0f}/s wall   {cpu:>10,.0f}/s cpu")
        if name == "routerd":
            record("classifications per second (cpu)", cpu, "/s", target=100_000,
                   better="higher")
    print("target: routerd >= 100,000/s")

    log = pasted_log()
    reps = 50
    best = float("inf")
    t0 = time.perf_counter()
    for _ in range(reps):
        s = time.perf_counter()
        result = classify(log)
        best = min(best, time.perf_counter() - s)
    mean = (time.perf_counter() - t0) / reps
    s = time.perf_counter()
    seed_result = seed_classify(log)
    seed_time = time.perf_counter() - s
    print(f"\n== 1 MB pasted log ({len(log):,} chars) ==")
    print(
        f"routerd  best {best * 1e3:.3f} ms, mean {mean * 1e3:.3f} ms -> "
        f"{result.category.value} ({result.confidence:.2f}) {result.signals}"
    )
    print(f"seed     {seed_time * 1e3:.1f} ms -> {seed_result[0]}")
    print("target: routerd < 5 ms")
    record("1 MB pasted log", best * 1e3, "ms", target=5.0, latency=True)

    print(f"\n== held-out part ({len(held)} requests; never used for tuning) ==")
    gold = [items[i].label for i in held]
    gold_serena = [items[i].serena for i in held]
    runs: list[tuple[str, list[str], list[bool]]] = []
    ours = [classify(items[i].text) for i in held]
    runs.append(("routerd", [c.category.value for c in ours], [c.requires_serena for c in ours]))
    raw = [classify(items[i].text, min_confidence=0.0) for i in held]
    runs.append(
        (
            "routerd, no low-confidence fallback",
            [c.category.value for c in raw],
            [c.requires_serena for c in raw],
        )
    )
    seed = [seed_classify(items[i].text) for i in held]
    runs.append(("seed", [r[0] for r in seed], [r[2] for r in seed]))
    for name, pred, serena in runs:
        serena_acc = accuracy([str(x) for x in gold_serena], [str(x) for x in serena])
        print(
            f"\n{name}: accuracy {accuracy(gold, pred):.3f}, macro-F1 {macro_f1(gold, pred):.3f}, "
            f"Serena decision accuracy {serena_acc:.3f}"
        )
        print(format_confusion(confusion(gold, pred)))
        if name == "routerd":
            record("held-out accuracy", accuracy(gold, pred) * 100, "%", better="higher")
    low = sum(c.low_confidence for c in ours)
    print(f"\nrouterd fell back to the default (coding) on {low} of {len(held)} held-out requests")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
