"""Routing benchmark: the latency routerd adds over a direct HTTP call to the same model server.

Run: ``.venv/bin/python bench/route.py [--seconds S] [--requests N]``. Starts an instant
OpenAI-compatible fake model server (``bench/_instant_backend.py``, precomputed answers) and the
real daemon (``python -m routerd``) configured with it as its only server, then measures, in
the same run and on the same machine, the same request sent

* **direct**: ``httpx.AsyncClient`` straight to the fake server, and
* **routed**: ``routerd_client.AsyncClient`` to the daemon (``route.complete`` for the whole
  answer, ``route`` for the stream), which classifies, plans, queues and sends it to the fake
  server through its egress-checked client;

reporting p50 and p99 of the non-streamed total and the streamed time to the first token, and
the difference (what routing adds), in three conditions:

1. idle: one request at a time, direct and routed alternating;
2. an open-loop load (arrivals at fixed intervals, whatever the answers) at half the lower of
   the routed and direct saturation rates, which is measured first (closed loop, 32 requests
   in flight) and printed; routed and direct take turns in blocks of half a second, so both
   meet the same moments of a shared machine;
3. 100 streams started at once (routed and direct in turn, five rounds each).

Target for what routing adds: p50 <= 0.3 ms and p99 <= 1 ms. Then the classifier's throughput
and held-out accuracy (from ``bench/classify.py``). The daemon writes its audit log as it does
by default (one record per request); ``--no-audit`` turns it off, to show what it costs.
Loopback only; about a minute.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _figures import record

from routerd_client import Client, DaemonUnreachable
from routerd_client.aio import AsyncClient

P50_TARGET_MS = 0.3
P99_TARGET_MS = 1.0
IN_FLIGHT = 32  # requests in flight while measuring saturation
CONNECTIONS = 8  # routerd connections the load is spread over
BUILTIN = ("ollama", "lmstudio", "jan", "openwebui", "localai", "vllm", "llamacpp", "koboldcpp",
           "gpt4all", "textgen")  # fmt: skip
MESSAGES = [{"role": "user", "content": "Write a Python function that adds two numbers."}]


# --- processes ----------------------------------------------------------------------------------


@contextmanager
def process(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _wait(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SystemExit(f"{what} exited with code {proc.returncode}:\n{err[-2000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} is not ready after 30 s")
        time.sleep(0.05)


def _routable(sock: str) -> bool:
    try:
        with Client(sock, timeout=5) as c:
            result = c.call("models.list", {"available": True})
    except DaemonUnreachable:
        return False
    return bool(result.get("models"))


def config_text(home: str, backend: str, audit: bool = True) -> str:
    off = "\n".join(f"[services.{k}]\nenabled = false" for k in BUILTIN)
    routes = "\n".join(f"[task_routing.{c}]\nmin_context = 1024"
                       for c in ("coding", "reasoning", "analysis", "documentation"))  # fmt: skip
    return f"""
[daemon]
log_level = "warning"
state_dir = "{home}/state"
max_in_flight = 256
{off}
[[services.custom_endpoints]]
name = "bench"
endpoint = "{backend}"
api_style = "openai"
{routes}
[security]
audit_enabled = {"true" if audit else "false"}
[serena]
enabled = false
[routing]
reserve_for_answer = 256
[routing.concurrency.bench]
per_model = 1000
"""


# --- one request ----------------------------------------------------------------------------------

Probe = Callable[[], Awaitable[tuple[float, float | None]]]  # (total s, first token s or None)


def direct_probes(http: httpx.AsyncClient) -> tuple[Probe, Probe]:
    body = {"model": "bench-model", "messages": MESSAGES}

    async def whole() -> tuple[float, float | None]:
        t0 = time.perf_counter()
        r = await http.post("/v1/chat/completions", json={**body, "stream": False})
        r.json()["choices"][0]["message"]["content"]
        return time.perf_counter() - t0, None

    async def stream() -> tuple[float, float | None]:
        t0 = time.perf_counter()
        first = None
        async with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            async for line in r.aiter_lines():
                if first is None and '"content"' in line:
                    first = time.perf_counter() - t0
        return time.perf_counter() - t0, first

    return whole, stream


def routed_probes(clients: list[AsyncClient]) -> tuple[Probe, Probe]:
    params = {"messages": MESSAGES}
    turn = [0]

    def pick() -> AsyncClient:
        turn[0] += 1
        return clients[turn[0] % len(clients)]

    async def whole() -> tuple[float, float | None]:
        t0 = time.perf_counter()
        result = await pick().call("route.complete", params)
        assert result["text"] == "ok", result
        return time.perf_counter() - t0, None

    async def stream() -> tuple[float, float | None]:
        t0 = time.perf_counter()
        first = None
        async with pick().stream("route", params) as events:
            async for ev in events:
                if first is None and ev.event == "chunk":
                    first = time.perf_counter() - t0
        return time.perf_counter() - t0, first

    return whole, stream


# --- figures ----------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))] * 1000.0  # ms


class Sample:
    def __init__(self) -> None:
        self.total: list[float] = []
        self.ttft: list[float] = []

    def add(self, result: tuple[float, float | None]) -> None:
        total, first = result
        if first is None:
            self.total.append(total)
        else:
            self.ttft.append(first)


def report(title: str, direct: Sample, routed: Sample, key: str) -> None:
    """Print one condition's figures; ``key`` names it in bench/report.py's figures."""
    print(f"\n== {title} ==")
    print(f"{'':<26}{'direct p50':>11}{'routed p50':>11}{'added':>9}   "
          f"{'direct p99':>11}{'routed p99':>11}{'added':>9}")  # fmt: skip
    for name, d, r in (("non-streamed total (ms)", direct.total, routed.total),
                       ("streamed first token (ms)", direct.ttft, routed.ttft)):  # fmt: skip
        if not d or not r:
            continue
        a50, a99 = pct(r, 0.5) - pct(d, 0.5), pct(r, 0.99) - pct(d, 0.99)
        ok = "ok" if a50 <= P50_TARGET_MS and a99 <= P99_TARGET_MS else "MISSED"
        print(f"{name:<26}{pct(d, 0.5):>11.3f}{pct(r, 0.5):>11.3f}{a50:>9.3f}   "
              f"{pct(d, 0.99):>11.3f}{pct(r, 0.99):>11.3f}{a99:>9.3f}   "
              f"({len(r)} routed, {len(d)} direct) {ok}")  # fmt: skip
        what = f"{key}, {'total' if d is direct.total else 'first token'}"
        record(f"added {what}, p50", a50, "ms", target=P50_TARGET_MS, latency=True)
        record(f"added {what}, p99", a99, "ms", target=P99_TARGET_MS, latency=True)


# --- conditions -----------------------------------------------------------------------------------


async def idle(probes: dict[str, tuple[Probe, Probe]], n: int) -> dict[str, Sample]:
    out = {name: Sample() for name in probes}
    for i in range(n):
        order = list(probes) if i % 2 == 0 else list(reversed(probes))
        for name in order:
            whole, stream = probes[name]
            out[name].add(await whole())
            out[name].add(await stream())
    return out


async def saturation(probe: Probe, seconds: float) -> float:
    """Answers per second with IN_FLIGHT requests always in flight."""
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await probe()
            done += 1

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(IN_FLIGHT):
            nursery.start_soon(worker)
    return done / (time.perf_counter() - t0)


async def open_loop(whole: Probe, stream: Probe, rate: float, seconds: float,
                    into: Sample) -> None:
    """Requests at fixed intervals (alternately whole and streamed), whatever the answers."""
    interval = 1.0 / rate
    count = int(seconds * rate)

    async def one(probe: Probe) -> None:
        into.add(await probe())

    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        for i in range(count):
            await trio.sleep_until(start + i * interval)
            nursery.start_soon(one, whole if i % 2 == 0 else stream)


async def alternating(probes: dict[str, tuple[Probe, Probe]], rate: float, seconds: float,
                      block: float = 0.5) -> dict[str, Sample]:
    """The open loop on each path in turn, ``block`` seconds at a time, ``seconds`` in all
    for each: both paths meet the same moments of a shared, noisy machine."""
    out = {name: Sample() for name in probes}
    done = 0.0
    while done < seconds:
        step = min(block, seconds - done)
        for name, (whole, stream) in probes.items():
            await open_loop(whole, stream, rate, step, out[name])
        done += step
    return out


async def burst(probes: dict[str, tuple[Probe, Probe]], n: int, rounds: int
                ) -> dict[str, Sample]:
    """``n`` streams started at once, ``rounds`` times on each path, the paths in turn."""
    out = {name: Sample() for name in probes}
    for _ in range(rounds):
        for name, (_, stream) in probes.items():
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(_add, out[name], stream)
    return out


async def _add(sample: Sample, probe: Probe) -> None:
    sample.add(await probe())


async def measure(sock: str, backend: str, args: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=backend, trust_env=False, limits=limits, timeout=30)
        )
        clients = [
            await stack.enter_async_context(AsyncClient(sock, timeout=30, client_name="bench"))
            for _ in range(CONNECTIONS)
        ]
        probes = {"direct": direct_probes(http), "routed": routed_probes(clients)}
        await idle(probes, 200)  # warm up both paths
        s = await idle(probes, args.requests)
        report(f"idle: one request at a time ({args.requests} of each kind)",
               s["direct"], s["routed"], "idle")  # fmt: skip
        pings = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            await clients[0].ping()
            pings.append(time.perf_counter() - t0)
        print(f"(the floor: a routerd ping round trip is p50 {pct(pings, 0.5):.3f} ms, "
              f"p99 {pct(pings, 0.99):.3f} ms)")  # fmt: skip

        sat_routed = await saturation(probes["routed"][0], args.seconds)
        sat_direct = await saturation(probes["direct"][0], args.seconds)
        print(f"\nsaturation ({IN_FLIGHT} in flight, non-streamed): routed {sat_routed:,.0f}/s, "
              f"direct {sat_direct:,.0f}/s")  # fmt: skip
        record("saturation, routed", sat_routed, "/s", better="higher")
        # Half the lower of the two: a rate the direct client cannot sustain would compare a
        # drowning baseline with routerd, not measure what routing adds.
        rate = min(sat_routed, sat_direct) / 2
        s = await alternating(probes, rate, args.seconds)
        report(f"open loop at {rate:,.0f}/s (half the lower saturation), {args.seconds:g} s each "
               "in alternating 0.5 s blocks", s["direct"], s["routed"], "open loop")  # fmt: skip

        s = await burst(probes, args.streams, 5)
        report(f"{args.streams} streams started at once (5 rounds each, in turn)",
               s["direct"], s["routed"], "burst")  # fmt: skip


def classifier_figures() -> None:
    from _classify_eval import accuracy, load_items, load_split
    from classify import throughput

    from routerd.core.classify import classify

    items = load_items()
    wall, cpu = throughput(classify, [it.text for it in items], 3)
    _, held = load_split()
    gold = [items[i].label for i in held]
    pred = [classify(items[i].text).category.value for i in held]
    print(f"\n== classifier (bench/classify.py has the details) ==\n"
          f"{wall:,.0f}/s wall, {cpu:,.0f}/s cpu (target >= 100,000/s); held-out accuracy "
          f"{accuracy(gold, pred):.3f} on {len(held)} requests")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per load phase (5)")
    ap.add_argument("--requests", type=int, default=1000, help="idle requests of each kind")
    ap.add_argument("--streams", type=int, default=100, help="concurrent streams (100)")
    ap.add_argument(
        "--no-audit",
        action="store_true",
        help="run the daemon without its audit log (to see what the log costs)",
    )
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="rdr-", dir="/tmp")
    env = dict(os.environ)
    for var in ("ROUTERD_SOCKET", "ROUTERD_CONFIG"):
        env.pop(var, None)
    env.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, "cfg"))
    here = Path(__file__).resolve().parent
    port_file = os.path.join(home, "port")
    sock = os.path.join(home, "routerd.sock")
    try:
        backend_argv = [sys.executable, str(here / "_instant_backend.py"), port_file]
        with process(backend_argv, env) as backend_proc:
            _wait(lambda: os.path.exists(port_file), backend_proc, "the fake model server")
            backend = f"http://127.0.0.1:{Path(port_file).read_text()}"
            config = os.path.join(home, "config.toml")
            Path(config).write_text(config_text(home, backend, audit=not args.no_audit))
            daemon_argv = [sys.executable, "-m", "routerd", "--socket", sock, "--config", config]
            with process(daemon_argv, env) as daemon_proc:
                _wait(lambda: _routable(sock), daemon_proc, "routerd")
                trio.run(measure, sock, backend, args)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"\ntarget for what routing adds: p50 <= {P50_TARGET_MS} ms, p99 <= {P99_TARGET_MS} ms")
    classifier_figures()
    return 0


if __name__ == "__main__":
    sys.exit(main())
