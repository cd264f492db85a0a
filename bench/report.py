"""Run every benchmark under bench/ and write one Markdown report: the figures beside their
targets and the previous run's, a latency plot, and each benchmark's own output.

Run: ``.venv/bin/python bench/report.py [--quick] [--only NAME ...] [--out DIR]
[--timeout SECONDS]``. Writes, in ``--out`` (default ``bench/out``):

* ``report.md``: the run (date, host, commit), a table of every recorded figure (value,
  target, met or not, the previous run's value and the change), the plot, then each
  benchmark's command, time, exit status and printed output;
* ``latency.png``: the latency figures with a target, as fractions of their targets
  (``bench/_report_plot.py``), with the previous run's values marked;
* ``figures.json``: the latest figure of every benchmark (this run's, and the earlier ones of
  benchmarks not run this time), which the next run compares against; each run's own figures
  are also appended to ``history.jsonl``.

The benchmarks are the ``bench/*.py`` scripts that are not helpers (``_*.py``) or tools
(:data:`TOOLS`); they run one after another (they measure), each with a time limit, each in its
own process group so that a benchmark that runs out of time is stopped with every process it
started. Figures come from ``bench/_figures.py``'s ``record`` calls; a benchmark that
records none still has its output in the report. ``--quick`` passes each benchmark the
shorter settings in :data:`QUICK` (less precise figures, a few minutes in all). Loopback only,
like the benchmarks themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _figures import FIGURES_ENV  # noqa: E402
from _report_plot import fmt_value, latency_chart  # noqa: E402

#: Scripts under bench/ that are not benchmarks.
TOOLS = frozenset({"report", "make_classify_split", "train_classify", "seed_classifier"})
#: The order benchmarks run in (others follow, alphabetically).
ORDER = ("ipc", "classify", "route", "health", "serena", "tokens")
#: Shorter settings for ``--quick``.
QUICK: dict[str, list[str]] = {
    "ipc": ["--seconds", "1", "--runs", "5"],
    "classify": ["--rounds", "2"],
    "route": ["--seconds", "2", "--requests", "200", "--streams", "50"],
    "health": ["--seconds", "10", "--deaths", "1", "--interval", "2"],
    "serena": ["--calls", "10"],
    "tokens": ["--limit", "80"],
}
OUTPUT_TAIL = 40  # lines of stderr shown for a benchmark that failed


@dataclass
class Run:
    name: str
    argv: list[str]
    seconds: float = 0.0
    returncode: int | None = None  # None: stopped at the time limit
    stdout: str = ""
    stderr: str = ""
    figures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.returncode is None:
            return "stopped at the time limit"
        return "ok" if self.returncode == 0 else f"failed (exit {self.returncode})"


def benchmarks(only: list[str] | None) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("*.py")
                   if not p.stem.startswith("_") and p.stem not in TOOLS)  # fmt: skip
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise SystemExit(f"no such benchmark: {', '.join(unknown)} (have: {', '.join(names)})")
        names = [n for n in names if n in only]
    return names


def run_one(name: str, script: Path, args: list[str], timeout: float) -> Run:
    """Run ``script`` with ``args`` (at most ``timeout`` seconds) and collect its figures."""
    argv = [sys.executable, str(script), *args]
    run = Run(name, argv)
    with tempfile.NamedTemporaryFile(prefix=f"rd-figures-{name}-", suffix=".jsonl") as f:
        env = {**os.environ, FIGURES_ENV: f.name}
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        try:
            run.stdout, run.stderr = proc.communicate(timeout=timeout)
            run.returncode = proc.returncode
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            run.stdout, run.stderr = proc.communicate()
        run.seconds = time.perf_counter() - t0
        text = Path(f.name).read_text(encoding="utf-8")
    run.figures = [json.loads(line) for line in text.splitlines() if line.strip()]
    return run


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """Stop the benchmark and every process it started (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# --- the report ----------------------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=False)  # fmt: skip
    except OSError:
        return ""
    return out.stdout.strip()


def run_info(quick: bool) -> dict[str, Any]:
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--untracked-files=no"):
        commit += " with local changes"
    try:
        from routerd import __version__ as version
    except ImportError:
        version = "not importable"
    return {
        "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "routerd": version,
        "commit": commit,
        "mode": "quick" if quick else "full",
    }


def met(f: dict[str, Any]) -> bool | None:
    target = f.get("target")
    if target is None:
        return None
    value = float(f["value"])
    return value >= target if f.get("better") == "higher" else value <= target


def change(f: dict[str, Any], before: float | None) -> str:
    if before is None:
        return "new"
    if before == 0:
        return "=" if f["value"] == 0 else "from 0"
    delta = (f["value"] - before) / abs(before) * 100
    if abs(delta) < 0.05:
        return "="
    improved = delta < 0 if f.get("better", "lower") == "lower" else delta > 0
    return f"{delta:+.1f}% ({'better' if improved else 'worse'})"


def figures_table(runs: list[Run], previous: dict[tuple[str, str], float]) -> list[str]:
    lines = ["| benchmark | figure | value | target | met | previous | change |",
             "|---|---|---:|---:|:---:|---:|---|"]  # fmt: skip
    for run in runs:
        for f in run.figures:
            ok = met(f)
            target = f.get("target")
            target_text = "" if target is None else (
                ("≥ " if f.get("better") == "higher" else "≤ ") + fmt_value(target, f["unit"]))
            before = previous.get((f["bench"], f["name"]))
            lines.append("| " + " | ".join([
                run.name, f["name"], fmt_value(f["value"], f["unit"]), target_text,
                "" if ok is None else ("yes" if ok else "**no**"),
                "" if before is None else fmt_value(before, f["unit"]), change(f, before),
            ]) + " |")  # fmt: skip
    if len(lines) == 2:
        lines.append("| | no figures were recorded | | | | | |")
    return lines


def write_report(out: Path, runs: list[Run], info: dict[str, Any],
                 previous: dict[tuple[str, str], float], prev_info: dict[str, Any] | None) -> None:
    figures = [f for run in runs for f in run.figures]
    subtitle = f"{info['at']}, {info['mode']} settings, commit {info['commit']}"
    latency_chart(figures, previous, subtitle=subtitle).save(out / "latency.png")
    missed = [f for f in figures if met(f) is False]
    lines = [
        "# routerd benchmark report", "",
        f"Run {info['at']} on {info['host']} ({info['cpus']} CPUs, {info['platform']}, "
        f"Python {info['python']}); routerd {info['routerd']} at commit {info['commit']}; "
        f"{info['mode']} settings.",
        "Previous run: " + (f"{prev_info['at']} ({prev_info['mode']}, commit "
                            f"{prev_info['commit']})." if prev_info else "none in this folder."),
        "",
        f"{len(runs)} benchmarks: " + ", ".join(f"{r.name} {r.status}" for r in runs) + ". "
        + (f"**{len(missed)} figure(s) missed their target.**" if missed
           else "Every figure with a target met it."),
        "", "## Figures", "", *figures_table(runs, previous), "",
        "![latency figures as fractions of their targets](latency.png)", "",
    ]  # fmt: skip
    for run in runs:
        shown = " ".join(Path(a).name if a == sys.executable else a for a in run.argv)
        shown = shown.replace(str(HERE) + "/", "bench/")
        lines += [f"## {run.name}", "",
                  f"`{shown}`: {run.status} in {run.seconds:.1f} s.", "",
                  "```text", run.stdout.rstrip() or "(no output)", "```", ""]  # fmt: skip
        if run.returncode != 0 and run.stderr.strip():
            tail = run.stderr.rstrip().splitlines()[-OUTPUT_TAIL:]
            lines += ["stderr (last lines):", "", "```text", *tail, "```", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")


def load_previous(out: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The figures and run information ``figures.json`` holds (none if it is not there)."""
    try:
        data = json.loads((out / "figures.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], None
    return list(data.get("figures", [])), data.get("run")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs, less precise figures")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    ap.add_argument("--out", type=Path, default=HERE / "out", help="where to write (bench/out)")
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="seconds each benchmark may take (900)")
    args = ap.parse_args(argv)
    names = benchmarks(args.only)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    earlier, prev_info = load_previous(out)
    previous = {(f["bench"], f["name"]): float(f["value"]) for f in earlier}
    info = run_info(args.quick)
    runs = []
    for name in names:
        print(f"running bench/{name}.py ...", flush=True)
        extra = QUICK.get(name, []) if args.quick else []
        run = run_one(name, HERE / f"{name}.py", extra, args.timeout)
        print(f"  {run.status} in {run.seconds:.1f} s, {len(run.figures)} figures", flush=True)
        runs.append(run)
    write_report(out, runs, info, previous, prev_info)
    now = [{**f, "at": info["at"]} for r in runs for f in r.figures]
    kept = [f for f in earlier if f["bench"] not in names]
    latest = {"run": info, "figures": now + kept}
    (out / "figures.json").write_text(json.dumps(latest, indent=1), encoding="utf-8")
    with open(out / "history.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"run": info, "figures": now}) + "\n")
    print(f"wrote {out / 'report.md'} and {out / 'latency.png'}")
    return 0 if all(r.returncode == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
