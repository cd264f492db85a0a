"""Discovery and health benchmark: idle CPU with twelve services (half down), and the time
from a backend's death to its ``offline`` event, found actively (probes) and passively (a
real request meeting a refused connection).

Run: ``.venv/bin/python bench/health.py [--seconds 60] [--deaths 3] [--interval 5]``.

Set-up: six fake model servers of different kinds (tests/fakes, real HTTP on loopback) and six
addresses where nothing listens, as twelve custom endpoints; the built-in kinds' usual ports
are switched off so the twelve are all there is. Prints:

* the daemon's CPU use while idle over ``--seconds`` (``python -m routerd`` as its own
  process; user + system time from /proc/<pid>/stat), as CPU seconds and % of one core;
* active detection: ``--deaths`` times, one fake stops listening at a random moment of its
  probe cycle and the time until ``events.subscribe`` delivers its ``offline`` event is taken
  (median / max, next to the probe interval that bounds it); the fake comes back before the
  next death;
* passive detection: the same death, in-process, when a request sent the way the routing
  feature sends it fails and its outcome is reported (``report_outcome``).

Loopback only. Takes about ``seconds + deaths * 3 * interval`` seconds.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _figures import record  # noqa: E402
from fakes import FakeServer, start_fake  # noqa: E402

from routerd.core.config import SERVICE_KINDS, Config, parse_config  # noqa: E402
from routerd.core.egress import policy_from_config  # noqa: E402
from routerd.core.hostenv import HostEnvironment  # noqa: E402
from routerd.shell.discovery import (  # noqa: E402
    Discovery,
    ServiceRegistry,
    outcome_from_exception,
)
from routerd.shell.http import make_http_client  # noqa: E402
from routerd_client.aio import AsyncClient  # noqa: E402

UP_KINDS = ("ollama", "llamacpp", "vllm", "lmstudio", "koboldcpp", "openai_compat")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def config_text(fakes: list[FakeServer], down: list[int], interval: float, sock: str) -> str:
    lines = [f'[daemon]\nsocket = "{sock}"']
    lines += [f"[services.{k}]\nenabled = false" for k in SERVICE_KINDS]
    lines.append(f"[discovery]\ninterval = {interval}")
    for i, fake in enumerate(fakes):
        style = "ollama" if fake.kind == "ollama" else "openai"
        lines.append(
            f'[[services.custom_endpoints]]\nname = "up-{i}-{fake.kind}"\n'
            f'endpoint = "{fake.base_url}"\napi_style = "{style}"'
        )
    for i, port in enumerate(down):
        lines.append(
            f'[[services.custom_endpoints]]\nname = "down-{i}"\nendpoint = "http://127.0.0.1:{port}"'
        )
    return "\n".join(lines) + "\n"


def spawn_daemon(config: Path, sock: str, log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m routerd`` on ``sock``, its output in ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "routerd", "--config", str(config), "--socket", sock],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


async def wait_state(events: Any, name: str, state: str) -> float:
    """Read events until ``name`` reaches ``state``; return trio's clock at that moment."""
    async for ev in events:
        service = ev.data.get("service") if ev.event == "service" else None
        if service is not None and (service["name"], service["state"]) == (name, state):
            return trio.current_time()
        if ev.event == "snapshot":
            for s in ev.data["services"]:
                if s["name"] == name and s["state"] == state:
                    return trio.current_time()
    raise RuntimeError("the event stream ended")


async def wait_all_online(client: AsyncClient, names: list[str], timeout: float) -> None:
    with trio.fail_after(timeout):
        while True:
            result = await client.call("services.list")
            states = {s["name"]: s["state"] for s in result["services"]}
            if all(states.get(n) == "online" for n in names):
                return
            await trio.sleep(0.2)


async def daemon_part(args: argparse.Namespace) -> tuple[float, float, list[float]]:
    """Idle CPU and active detection against the daemon process."""
    home = tempfile.mkdtemp(prefix="rdh-", dir="/tmp")
    sock = f"{home}/d.sock"
    async with trio.open_nursery() as nursery:
        fakes = [await start_fake(nursery, kind) for kind in UP_KINDS]
        down = free_ports(6)
        cfg = Path(home) / "config.toml"
        cfg.write_text(config_text(fakes, down, args.interval, sock))
        proc = spawn_daemon(cfg, sock, Path(home) / "routerd.log")
        try:
            await wait_listening(sock, proc, Path(home) / "routerd.log")
            async with AsyncClient(sock, client_name="bench-health") as client:
                up_names = [f"up-{i}-{f.kind}" for i, f in enumerate(fakes)]
                await wait_all_online(client, up_names, 30 + 3 * args.interval)
                await trio.sleep(args.interval * 2)  # past the first round and its refreshes
                c0, t0 = cpu_seconds(proc.pid), time.monotonic()
                await trio.sleep(args.seconds)
                c1, t1 = cpu_seconds(proc.pid), time.monotonic()
                active: list[float] = []
                victim, name = fakes[1], up_names[1]
                phases = random.Random(7)
                for _ in range(args.deaths):
                    async with client.stream("events.subscribe", {"snapshot": False}) as events:
                        # Die at a random moment of the probe cycle, not right after a probe.
                        await trio.sleep(phases.uniform(0, args.interval))
                        await victim.down()
                        died = trio.current_time()
                        active.append(await wait_state(events, name, "offline") - died)
                        await victim.up()
                        await wait_state(events, name, "online")
            return c1 - c0, t1 - t0, active
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            shutil.rmtree(home, ignore_errors=True)
            nursery.cancel_scope.cancel()


async def wait_listening(sock: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Return once the daemon accepts connections on ``sock``; exit with its log if not."""
    deadline = trio.current_time() + 20
    while True:
        try:
            stream = await trio.open_unix_socket(sock)
        except OSError:
            if proc.poll() is not None or trio.current_time() > deadline:
                text = await trio.Path(log_path).read_text(errors="replace")
                tail = text.splitlines()[-15:]
                raise SystemExit("routerd did not start:\n" + "\n".join(tail)) from None
            await trio.sleep(0.05)
        else:
            await stream.aclose()
            return


async def passive_part(args: argparse.Namespace) -> list[float]:
    """Death to ``offline`` when a real request finds the connection refused (in-process)."""
    times: list[float] = []
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery, "llamacpp")
        config: Config = parse_config(
            config_text([fake], [], args.interval, "/tmp/unused.sock"), fmt="toml", env={}
        )
        registry = ServiceRegistry(config, instance_id="bench")
        discovery = Discovery(
            registry, config=lambda: config, env={}, host_environment=HostEnvironment()
        )
        await nursery.start(discovery.run)
        name = "up-0-llamacpp"

        def state() -> str:
            info = registry.service(name)
            return info.state if info is not None else "?"

        policy = policy_from_config(config.security)
        async with make_http_client(policy, timeout=5.0) as http:
            for _ in range(args.deaths):
                with trio.fail_after(30 + 3 * args.interval):
                    await registry.wait_until(lambda: state() == "online")
                await fake.down()
                died = trio.current_time()
                try:
                    await http.post(fake.base_url + "/v1/chat/completions", json={})
                except Exception as exc:  # what the routing feature does with a failure
                    outcome = outcome_from_exception(exc)
                    if outcome is not None:
                        registry.report_outcome(name, outcome)
                await registry.wait_until(lambda: state() == "offline")
                times.append(trio.current_time() - died)
                await fake.up()
                registry.hint(name)
        nursery.cancel_scope.cancel()
    return times


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"


async def main_async(args: argparse.Namespace) -> None:
    print(f"12 services (6 fakes up, 6 addresses down), probe interval {args.interval:g} s")
    cpu, wall, active = await daemon_part(args)
    print(
        f"idle CPU of routerd over {wall:.0f} s: {cpu:.2f} CPU-s = {100 * cpu / wall:.2f} % "
        "of one core"
    )
    print(
        f"active detection (probes), {len(active)} deaths: {ms(active)} "
        f"(bound: one interval, {args.interval * 1000:.0f} ms)"
    )
    passive = await passive_part(args)
    print(f"passive detection (a refused request), {len(passive)} deaths: {ms(passive)}")
    record("idle CPU", 100 * cpu / wall, "% of a core")
    record("offline found by probes, median", statistics.median(active) * 1000, "ms",
           target=args.interval * 1000, latency=True)
    record("offline found by a request, median", statistics.median(passive) * 1000, "ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="idle window (default 60)")
    p.add_argument("--deaths", type=int, default=3, help="deaths timed (default 3)")
    p.add_argument("--interval", type=float, default=5.0, help="probe interval (default 5)")
    trio.run(main_async, p.parse_args())


if __name__ == "__main__":
    main()
