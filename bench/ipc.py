"""IPC benchmark: ping round trips against routerd beside a minimal echo server; routerctl start-up.

Run: ``.venv/bin/python bench/ipc.py [--seconds S] [--runs N]``. Prints:

* ping round-trip p50 / p99 (microseconds) and requests per second, over 1 and over 8
  connections (one blocking :class:`routerd_client.Client` per connection, each in its own
  thread, one request in flight per connection), against the real daemon (``python -m routerd``
  on a temporary socket) and against a minimal trio + msgspec echo server with the same framing,
  measured in the same run on the same machine;
* ``routerctl status`` whole-process wall time, median of N runs.

Targets, printed beside the figures: routerd's ping p50 within 1.5x and p99 within 2x of the
echo server's; ``routerctl status`` under 150 ms. Takes well under a minute. Loopback only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from _figures import record

from routerd_client import Client, DaemonUnreachable

P50_TARGET = 1.5
P99_TARGET = 2.0
ROUTERCTL_TARGET_MS = 150.0


# --- the reference echo server (run in its own process: `ipc.py --echo-server PATH`) ----------

def echo_server(path: str) -> None:
    """Answer every ``request`` frame with ``result {}``: the least a server can do with this
    protocol, in the same stack as the daemon (trio, msgspec, the same framing)."""
    import msgspec
    import trio

    from routerd_client.framing import FrameParser, frame
    from routerd_client.protocol import DEFAULT_MAX_FRAME_SIZE, ClientMessage, Result, encode

    decoder = msgspec.msgpack.Decoder(ClientMessage)

    async def handle(stream: trio.SocketStream) -> None:
        parser = FrameParser(DEFAULT_MAX_FRAME_SIZE)
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                parser.feed(data)
                out = bytearray()
                for body in parser.frames():
                    msg = decoder.decode(body)
                    out += frame(encode(Result(id=msg.id, result={})))
                if out:
                    try:
                        await stream.send_all(out)
                    except trio.BrokenResourceError:
                        return

    async def main() -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen(128)
        await trio.serve_listeners(handle, [trio.SocketListener(sock)])

    trio.run(main)


# --- processes -------------------------------------------------------------------------------

def _wait_for_socket(path: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            Client(path, timeout=2, hello=False).close()
            return
        except DaemonUnreachable:
            if proc.poll() is not None:
                raise SystemExit(
                    f"{what} exited with code {proc.returncode} before serving"
                ) from None
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start serving on {path} within 20 s") from None
            time.sleep(0.05)


@contextmanager
def running(argv: list[str], path: str, what: str, env: dict[str, str]) -> Iterator[None]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_socket(path, proc, what)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


# --- measurement -----------------------------------------------------------------------------

class Figures:
    def __init__(self, latencies_us: list[float], elapsed: float) -> None:
        latencies_us.sort()
        n = len(latencies_us)
        self.count = n
        self.p50 = latencies_us[n // 2]
        self.p99 = latencies_us[min(n - 1, int(n * 0.99))]
        self.rps = n / elapsed


def ping_for(clients: list[Client], seconds: float) -> tuple[list[float], float]:
    """Ping from one thread per client (one request in flight each) for ``seconds``; return
    the latencies in microseconds and the elapsed time."""
    per_thread: list[list[float]] = [[] for _ in clients]
    start_line = threading.Barrier(len(clients) + 1)
    stop_at = [0.0]

    def work(client: Client, out: list[float]) -> None:
        start_line.wait()
        clock = time.perf_counter
        end = stop_at[0]
        while True:
            t0 = clock()
            client.ping()
            t1 = clock()
            out.append((t1 - t0) * 1e6)
            if t1 >= end:
                return

    threads = [
        threading.Thread(target=work, args=(c, out))
        for c, out in zip(clients, per_thread, strict=True)
    ]
    for t in threads:
        t.start()
    t_start = time.perf_counter()
    stop_at[0] = t_start + seconds
    start_line.wait()
    for t in threads:
        t.join()
    return [x for out in per_thread for x in out], time.perf_counter() - t_start


def compare(paths: dict[str, str], connections: int, seconds: float) -> dict[str, Figures]:
    """Measure every server for ``seconds`` in all, in alternating slices, so that a change in
    the machine's load during the run weighs on all of them alike."""
    clients = {name: [Client(path, timeout=10, hello=False) for _ in range(connections)]
               for name, path in paths.items()}
    for group in clients.values():  # warm up: first requests pay for lazy set-up on both sides
        for c in group:
            for _ in range(200):
                c.ping()
    slices = 4
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    elapsed = dict.fromkeys(paths, 0.0)
    for _ in range(slices):
        for name, group in clients.items():
            lat, took = ping_for(group, seconds / slices)
            latencies[name] += lat
            elapsed[name] += took
    for group in clients.values():
        for c in group:
            c.close()
    return {name: Figures(latencies[name], elapsed[name]) for name in paths}


def routerctl_wall_ms(path: str, runs: int, env: dict[str, str]) -> list[float]:
    script = os.path.join(os.path.dirname(sys.executable), "routerctl")
    argv = [script] if os.path.exists(script) else [sys.executable, "-m", "routerd_client.cli"]
    argv += ["--socket", path, "status"]
    times = []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append((time.perf_counter() - t0) * 1000)
        if proc.returncode != 0:
            raise SystemExit(f"routerctl status failed: {proc.stderr.decode().strip()}")
    return times[1:]  # the first run warms the page cache


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="measuring time per server and connection count (3)")
    ap.add_argument("--runs", type=int, default=15, help="routerctl status runs (15)")
    ap.add_argument("--echo-server", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo_server:
        echo_server(args.echo_server)
        return 0

    home = tempfile.mkdtemp(prefix="rdb-", dir="/tmp")
    env = dict(os.environ)
    for var in ("ROUTERD_SOCKET", "ROUTERD_CONFIG"):
        env.pop(var, None)
    env.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, "cfg"))
    config = os.path.join(home, "config.toml")
    with open(config, "w") as f:
        f.write('[daemon]\nlog_level = "warning"\n')
    daemon_sock = os.path.join(home, "routerd.sock")
    echo_sock = os.path.join(home, "echo.sock")
    daemon_argv = [sys.executable, "-m", "routerd", "--socket", daemon_sock, "--config", config]
    echo_argv = [sys.executable, os.path.abspath(__file__), "--echo-server", echo_sock]
    results: dict[tuple[str, int], Figures] = {}
    try:
        with running(echo_argv, echo_sock, "the echo server", env), \
                running(daemon_argv, daemon_sock, "routerd", env):
            for conns in (1, 8):
                figures = compare({"echo": echo_sock, "routerd": daemon_sock}, conns,
                                  args.seconds)
                for name, f in figures.items():
                    results[name, conns] = f
            wall = routerctl_wall_ms(daemon_sock, args.runs, env)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    print("ping round trip (client: routerd_client.Client, one request in flight per connection)")
    print(f"{'server':<10} {'conns':>5} {'p50 us':>9} {'p99 us':>9} {'req/s':>9} {'pings':>8}")
    for conns in (1, 8):
        for server in ("echo", "routerd"):
            f = results[server, conns]
            print(f"{server:<10} {conns:>5} {f.p50:>9.1f} {f.p99:>9.1f} {f.rps:>9.0f} {f.count:>8}")
        d, e = results["routerd", conns], results["echo", conns]
        r50, r99, rrps = d.p50 / e.p50, d.p99 / e.p99, d.rps / e.rps
        print(f"{'ratio':<10} {conns:>5} {r50:>8.2f}x {r99:>8.2f}x {rrps:>8.2f}x   "
              f"target p50 <= {P50_TARGET}x: {_verdict(r50 <= P50_TARGET)}, "
              f"p99 <= {P99_TARGET}x: {_verdict(r99 <= P99_TARGET)}")
        each = f"{conns} connection{'s' if conns > 1 else ''}"
        record(f"ping p50, {each}", d.p50, "us", target=e.p50 * P50_TARGET, latency=True)
        record(f"ping p99, {each}", d.p99, "us", target=e.p99 * P99_TARGET, latency=True)
        record(f"pings per second, {each}", d.rps, "/s", better="higher")
    med = statistics.median(wall)
    record("routerctl status wall time", med, "ms", target=ROUTERCTL_TARGET_MS, latency=True)
    print(f"routerctl status wall time: median {med:.0f} ms over {len(wall)} runs "
          f"(min {min(wall):.0f}, max {max(wall):.0f}); target < {ROUTERCTL_TARGET_MS:.0f} ms: "
          f"{_verdict(med < ROUTERCTL_TARGET_MS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
