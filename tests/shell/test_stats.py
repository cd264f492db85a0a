"""Stats: the collector's recording API, and ``stats``/``metrics`` through a running daemon.

The daemon runs in-process with discovery (one Ollama fake), routing (for its fair queue)
and stats; figures are recorded through the collector the way the route executor records
them, so the test knows exactly what each figure must be.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import signal
import struct
import sys
import termios
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
import trio
from fakes import FakeServer, Script, start_fake
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from routerd.core.config import Config, parse_config
from routerd.core.fallback import FailedAfterFirstByte, FailedBeforeFirstByte, Succeeded
from routerd.core.streams import Done
from routerd.shell import discovery, routing, stats
from routerd.shell.app import App
from routerd.shell.methods import build_registry
from routerd.shell.prometheus import CONTENT_TYPE, metrics_response, render_metrics
from routerd.shell.routing import router_of
from routerd.shell.stats import StatsCollector, stats_of
from routerd_client.protocol_stats import StatsResult

BUILTIN = ("ollama", "lmstudio", "jan", "openwebui", "localai", "vllm", "llamacpp", "koboldcpp",
           "gpt4all", "textgen")  # fmt: skip
WAIT = 10.0
QUERY = "Write a Python function that adds two numbers."


def one_server_config(socket: str, url: str) -> Config:
    off = "\n".join(f"[services.{k}]\nenabled = false" for k in BUILTIN if k != "ollama")
    text = (f'[daemon]\nsocket = "{socket}"\n{off}\n[services.ollama]\nendpoint = "{url}"\n'
            "[serena]\nenabled = false\n[discovery]\ninterval = 30.0\n")  # fmt: skip
    return parse_config(text, fmt="toml", env={})


class Daemon:
    def __init__(self, app: App, fake: FakeServer) -> None:
        self.app = app
        self.fake = fake
        self.stats = stats_of(app)


@pytest.fixture
async def daemon(nursery: trio.Nursery, short_tmp: str) -> Daemon:
    fake = await start_fake(nursery, "ollama")
    app = App(one_server_config(f"{short_tmp}/d.sock", fake.base_url), env={},
              registry=build_registry())  # fmt: skip
    discovery.install(app)
    stats.install(app)
    routing.install(app)
    await nursery.start(functools.partial(app.run, handle_signals=False))
    registry = discovery.registry_of(app)

    def online() -> bool:
        info = registry.service("ollama")
        return info is not None and info.state == "online"

    with trio.fail_after(WAIT):
        await registry.wait_until(online)
    return Daemon(app, fake)


def record_traffic(c: StatsCollector) -> None:
    """Three requests: one answered first time, one after a fallback, one that failed."""
    done = Done(finish_reason="stop", model="qwen", prompt_tokens=120, completion_tokens=30,
                first_token_s=0.2, total_s=1.5, tokens_per_second=25.0)  # fmt: skip
    with c.attempt("ollama", "qwen", category="coding", fallback_level=0, queue_wait=0.0) as rec:
        rec.ended(Succeeded(), done)
    c.route_finished("ok", category="coding")
    with c.attempt("lms", "qwen-lms", category="coding", fallback_level=0, queue_wait=0.0) as rec:
        rec.ended(FailedBeforeFirstByte("refused", "connection refused"))
    with c.attempt("ollama", "qwen", category="coding", fallback_level=1, queue_wait=0.75) as rec:
        rec.ended(Succeeded(), done)
    c.route_finished("ok", category="coding")
    c.queue_timeout("ollama", "qwen", 8.0)
    c.route_finished("failed", category="reasoning", reason="budget_exhausted")


# --- the collector -------------------------------------------------------------------------------


def test_outcomes_of_the_fallback_core_map_to_attempt_outcomes() -> None:
    c = StatsCollector(clock=lambda: 100.0)
    cases = [
        (FailedBeforeFirstByte("busy"), "error"),
        (FailedBeforeFirstByte("cancelled"), "cancelled"),
        (FailedAfterFirstByte("timeout_idle"), "incomplete"),
        (FailedAfterFirstByte("cancelled"), "cancelled"),
        (Succeeded(), "ok"),
    ]
    for outcome, _ in cases:
        with c.attempt("s", "m", fallback_level=0) as rec:
            rec.first_token(0.3)
            rec.ended(outcome)
    got = [(r.outcome, r.error) for r in c.book.recent(10)]
    assert got == [("error", "busy"), ("cancelled", "cancelled"),
                   ("incomplete", "timeout_idle"), ("cancelled", "cancelled"),
                   ("ok", None)]  # fmt: skip
    (v,) = c.book.views()
    assert v.in_flight == 0 and v.requests == 5
    assert v.first_token.count == 5  # given by first_token() when no Done says it
    assert all(r.at == 100.0 for r in c.book.recent(10))


async def test_an_attempt_left_by_cancellation_counts_as_cancelled() -> None:
    c = StatsCollector()
    with trio.move_on_after(0):
        with c.attempt("s", "m") as rec:
            await trio.sleep(10)
            rec.ended(Succeeded())  # never reached
    (v,) = c.book.views()
    assert (v.requests, v.cancelled, v.in_flight) == (1, 1, 0)


def test_an_attempt_left_by_a_bug_counts_as_an_error_and_only_once() -> None:
    c = StatsCollector()
    with pytest.raises(KeyError), c.attempt("s", "m") as rec:
        raise KeyError("bug")
    rec.ended(Succeeded())  # a second end is ignored
    (v,) = c.book.views()
    assert (v.errors, v.ok, v.error_classes) == (1, 0, {"internal": 1})


def test_recording_nonsense_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    c = StatsCollector()
    with caplog.at_level(logging.WARNING, logger="routerd.stats"):
        c.finished("s", "m", outcome="splendid")
        c.finished("s", "m", outcome="ok", total_s=-3.0)
        c.route_finished("unheard-of")
    assert c.book.totals().total == 0
    assert "bug in routerd" in caplog.text


# --- through the daemon ----------------------------------------------------------------------------


async def test_stats_shows_models_servers_queues_and_latest(daemon: Daemon, connect: Any) -> None:
    record_traffic(daemon.stats)
    router = router_of(daemon.app)
    holding = trio.Event()
    release = trio.Event()

    async def hold_a_slot() -> None:
        deadline = trio.current_time() + WAIT
        async with router.queue.slot("ollama", "qwen", client="a", deadline=deadline):
            holding.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold_a_slot)
        await holding.wait()
        wire = await connect(daemon.app)
        reply = await wire.call(1, "stats", {"recent": 3})
        release.set()
    st = msgspec.convert(reply["result"], StatsResult)
    assert st.accuracy == 0.01
    assert st.routes.total == 3 and st.routes.results["failed"] == 1
    assert st.routes.categories == {"coding": 2, "reasoning": 1}
    by_key = {(m.service, m.model): m for m in st.models}
    q = by_key[("ollama", "qwen")]
    assert (q.requests, q.ok, q.errors, q.queue_timeouts) == (2, 2, 0, 1)
    assert q.fallback_levels == {"0": 1, "1": 1}
    assert q.first_token.p50 == pytest.approx(0.2, rel=0.01)
    assert q.queue_wait.max == 8.0 and q.queue_wait.count == 3
    assert (q.prompt_tokens, q.completion_tokens) == (240, 60)
    lms = by_key[("lms", "qwen-lms")]
    assert lms.error_classes == {"refused": 1}
    assert [(r.service, r.outcome) for r in st.recent] == [
        ("lms", "error"), ("ollama", "ok"), (None, "failed")]  # fmt: skip
    assert [(s.name, s.state, s.kind) for s in st.servers] == [("ollama", "online", "ollama")]
    assert [(x.server, x.model, x.in_flight, x.waiting) for x in st.queues] == [
        ("ollama", "qwen", 1, 0)]  # fmt: skip
    assert st.daemon.connections_open >= 1 and st.daemon.requests_in_flight == 1


async def test_routed_requests_are_counted_end_to_end(daemon: Daemon, connect: Any) -> None:
    wire = await connect(daemon.app)
    reply = await wire.call(1, "route.complete", {"query": QUERY})
    end = reply["result"]
    daemon.fake.script = Script(fail_before_first_token="server_error")
    reply = await wire.call(2, "route.complete", {"query": QUERY})
    assert reply["type"] == "error"
    st = msgspec.convert((await wire.call(3, "stats", {"recent": 10}))["result"], StatsResult)
    assert st.routes.results == {"ok": 1, "incomplete": 0, "failed": 1, "cancelled": 0}
    answered = next(m for m in st.models if m.model == end["model"])
    assert answered.ok == 1 and answered.fallback_levels == {str(end["fallback_level"]): 1}
    assert answered.first_token.count == 1 and answered.duration.count == 1
    assert sum(m.error_classes.get("http_5xx", 0) for m in st.models) >= 1
    assert all(m.in_flight == 0 for m in st.models)
    assert st.recent[-1].service is None and st.recent[-1].outcome == "failed"


async def test_stats_refuses_a_silly_recent(daemon: Daemon, connect: Any) -> None:
    wire = await connect(daemon.app)
    reply = await wire.call(1, "stats", {"recent": 10_000})
    assert reply["type"] == "error" and reply["code"] == "bad_request"


async def test_metrics_parse_with_prometheus_own_parser(daemon: Daemon, connect: Any) -> None:
    record_traffic(daemon.stats)
    wire = await connect(daemon.app)
    await wire.call(1, "ping")
    reply = await wire.call(2, "metrics")
    result = reply["result"]
    assert result["content_type"] == CONTENT_TYPE
    families = {f.name: f for f in text_string_to_metric_families(result["text"])}

    def value(family: str, sample: str, **labels: str) -> float:
        for s in families[family].samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        raise AssertionError(f"no {sample} {labels} in {families[family].samples}")

    key = {"service": "ollama", "model": "qwen"}
    assert families["routerd_model_requests"].type == "counter"
    assert value("routerd_model_requests", "routerd_model_requests_total",
                 outcome="ok", **key) == 2  # fmt: skip
    assert value("routerd_model_errors", "routerd_model_errors_total", service="lms",
                 error="refused") == 1  # fmt: skip
    assert value("routerd_model_answers", "routerd_model_answers_total",
                 fallback_level="1", **key) == 1  # fmt: skip
    assert value("routerd_routes", "routerd_routes_total", result="failed") == 1
    ttft = "routerd_model_time_to_first_token_seconds"
    assert families[ttft].type == "histogram"
    assert value(ttft, f"{ttft}_count", **key) == 2
    assert value(ttft, f"{ttft}_sum", **key) == pytest.approx(0.4)
    assert value(ttft, f"{ttft}_bucket", le="0.1", **key) == 0
    assert value(ttft, f"{ttft}_bucket", le="0.25", **key) == 2
    assert value(ttft, f"{ttft}_bucket", le="+Inf", **key) == 2
    wait = "routerd_model_queue_wait_seconds"
    assert value(wait, f"{wait}_bucket", le="5.0", **key) == 2
    assert value(wait, f"{wait}_bucket", le="+Inf", **key) == 3
    assert value("routerd_service_up", "routerd_service_up", service="ollama") == 1
    assert value("routerd_ipc_requests", "routerd_ipc_requests_total", method="ping") == 1
    assert value("routerd_build_info", "routerd_build_info") == 1  # an info metric, as a gauge
    assert "process_resident_memory_bytes" in families or "process_cpu_seconds" in families
    # The same figures for an HTTP front, in either format.
    assert render_metrics(daemon.app).startswith(b"# HELP")
    body, ctype = metrics_response(daemon.app, "application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    names = {f.name for f in openmetrics_families(body.decode())}
    assert "routerd_model_time_to_first_token_seconds" in names
    body, ctype = metrics_response(daemon.app, None)
    assert ctype == CONTENT_TYPE and body.startswith(b"# HELP")


async def test_queue_depth_shows_in_metrics(daemon: Daemon) -> None:
    router = router_of(daemon.app)
    holding = trio.Event()
    release = trio.Event()

    async def hold(client: str) -> None:
        deadline = trio.current_time() + WAIT
        async with router.queue.slot("ollama", "qwen", client=client, deadline=deadline):
            holding.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, "a")
        await holding.wait()
        nursery.start_soon(hold, "b")  # capacity 1: this one waits
        await trio.testing.wait_all_tasks_blocked()
        text = render_metrics(daemon.app).decode()
        release.set()
    samples = {
        (s.name, s.labels.get("server")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name.startswith("routerd_queue_")
    }
    assert samples[("routerd_queue_waiting", "ollama")] == 1
    assert samples[("routerd_queue_in_flight", "ollama")] == 1
    assert samples[("routerd_queue_capacity", "ollama")] == 1


async def test_the_status_component_summarizes(daemon: Daemon, connect: Any) -> None:
    record_traffic(daemon.stats)
    wire = await connect(daemon.app)
    reply = await wire.call(1, "status")
    component = reply["result"]["components"]["stats"]
    assert component["summary"] == "3 routed, 2 ok, 1 failed"


# --- routerctl: stats, metrics, top ----------------------------------------------------------------

ROUTERCTL = "import sys\nfrom routerd_client.cli import main\nsys.exit(main(sys.argv[1:]))\n"
PROBE = (
    "import sys\nfrom routerd_client.cli import main\ncode = main(sys.argv[1:])\n"
    "print('PROMETHEUS:' + str('prometheus_client' in sys.modules))\nsys.exit(code)\n"
)


def routerctl_argv(app: App, *argv: str, code: str = ROUTERCTL) -> list[str]:
    assert app.socket_path is not None
    return [sys.executable, "-c", code, "--socket", app.socket_path, *argv]


async def run_routerctl(app: App, *argv: str, code: str = ROUTERCTL) -> tuple[int, str]:
    proc = await trio.run_process(routerctl_argv(app, *argv, code=code), capture_stdout=True,
                                  capture_stderr=True, check=False)  # fmt: skip
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()


@pytest.mark.parametrize("argv", [["stats"], ["metrics"], ["top", "--once"]])
async def test_routerctl_never_imports_prometheus_client(daemon: Daemon, argv: list[str]) -> None:
    code, out = await run_routerctl(daemon.app, *argv, code=PROBE)
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "PROMETHEUS:False"


async def test_routerctl_stats_prints_the_table(daemon: Daemon) -> None:
    record_traffic(daemon.stats)
    code, out = await run_routerctl(daemon.app, "stats", "--recent", "2")
    assert code == 0, out
    assert out.startswith("routes 3 (ok 2, incomplete 0, failed 1, cancelled 0); "
                          "percentiles within 1%")  # fmt: skip
    row = next(line.split() for line in out.splitlines() if line.startswith("ollama "))
    # SERVICE MODEL REQ OK ERR INC FALLBACK RUN WAIT p50 ...
    assert row[:8] == ["ollama", "qwen", "2", "2", "0", "0", "L1:1", "0"]
    assert "lms/qwen-lms: refused 1" in out and "ollama/qwen: queue_timeout 1" in out
    assert "budget_exhausted" in out  # the latest requests
    code, out = await run_routerctl(daemon.app, "--json", "stats")
    assert code == 0
    assert msgspec.json.decode(out)["routes"]["total"] == 3


async def test_routerctl_metrics_prints_the_exposition(daemon: Daemon) -> None:
    record_traffic(daemon.stats)
    code, out = await run_routerctl(daemon.app, "metrics")
    assert code == 0
    names = {f.name for f in text_string_to_metric_families(out)}
    assert {"routerd_model_requests", "routerd_model_request_duration_seconds"} <= names


async def test_routerctl_top_prints_plain_frames_when_not_a_terminal(daemon: Daemon) -> None:
    record_traffic(daemon.stats)
    code, out = await run_routerctl(daemon.app, "top", "--count", "2", "--interval", "0.05")
    assert code == 0, out
    assert "\x1b" not in out
    heads = [line for line in out.splitlines() if line.startswith("routerd ")]
    assert len(heads) == 2 and out.startswith("routerd ") and out.endswith("\n\n")
    assert "SERVERS" in out and "budget_exhausted" in out
    code, out = await run_routerctl(daemon.app, "--json", "top", "--once")
    assert code == 0
    assert msgspec.json.decode(out.splitlines()[0])["routes"]["total"] == 3


class Pty:
    """routerctl top on a pseudo-terminal: what it draws, and keys for it."""

    def __init__(self, rows: int = 40, cols: int = 140) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.original = termios.tcgetattr(self.slave)
        self.output = b""
        self.stream = trio.lowlevel.FdStream(os.dup(self.master))

    async def read_until(self, predicate: Callable[[bytes], bool]) -> None:
        with trio.fail_after(WAIT):
            while not predicate(self.output):
                try:
                    data = await self.stream.receive_some(65536)
                except (OSError, trio.BrokenResourceError):
                    return
                if not data:
                    return
                self.output += data

    async def aclose(self) -> None:
        await self.stream.aclose()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
async def pty() -> AsyncIterator[Pty]:
    p = Pty()
    try:
        yield p
    finally:
        await p.aclose()


def frames(output: bytes) -> int:
    return output.count(b"\x1b[H")


@pytest.mark.parametrize("how", ["q", "sigint"])
async def test_routerctl_top_in_a_terminal_refreshes_and_restores_it(
    daemon: Daemon, pty: Pty, how: str
) -> None:
    record_traffic(daemon.stats)
    argv = routerctl_argv(daemon.app, "top", "--interval", "0.1")
    # The window's size comes from the terminal (readline, once loaded in this process, may
    # have left COLUMNS and LINES in the environment children inherit).
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(functools.partial(
            trio.run_process, argv, stdin=pty.slave, stdout=pty.slave, stderr=pty.slave,
            env=env, check=False))  # fmt: skip
        await pty.read_until(lambda out: frames(out) >= 2)
        with daemon.stats.attempt("ollama", "qwen", fallback_level=0) as rec:
            rec.finish("ok", total_s=0.5)  # a new request shows on a later frame
        seen = frames(pty.output)
        await pty.read_until(lambda out: frames(out) >= seen + 2)
        if how == "q":
            os.write(pty.master, b"q")
        else:
            proc.send_signal(signal.SIGINT)
        with trio.fail_after(WAIT):
            await proc.wait()
    await pty.read_until(lambda out: out.endswith(b"\x1b[?25h\x1b[?1049l"))
    out = pty.output
    assert proc.returncode == 0, out[-500:]
    assert out.startswith(b"\x1b[?1049h\x1b[?25l")  # alternate screen, cursor hidden
    assert out.endswith(b"\x1b[?25h\x1b[?1049l")  # and both undone
    assert termios.tcgetattr(pty.slave) == pty.original  # echo and line mode are back
    last = out.rsplit(b"\x1b[H", 1)[-1].decode()
    assert "SERVERS" in last and "ollama" in last and "MODELS" in last
    models_row = next(line for line in last.split("\r\n") if line.startswith("ollama  "))
    assert models_row.split()[2] != "-"  # REQ/S, from two frames
    assert "budget_exhausted" in last, last.replace("\x1b[K", "")
    assert b"Traceback" not in out

