"""The supervisor against a fake Serena (an in-process MCP server) that can crash, hang and
answer slowly; virtual time for backoff and ping intervals."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
from fakes.serena import FakeLauncher, FakeSerena

from routerd.core.serena import BackoffPolicy, SerenaState
from routerd.core.serena_access import WorkspaceSpec
from routerd.shell.serena_supervisor import Settings, Supervisor
from routerd.shell.serena_types import LaunchSpec, SerenaBusy, SerenaGone, SerenaTimeout

SETTINGS = Settings(start_timeout=60.0, call_timeout=10.0, ping_interval=15.0, ping_timeout=5.0,
                    policy=BackoffPolicy(initial=1.0, maximum=30.0, jitter=0.0), max_queue=4)


async def _prepare() -> LaunchSpec:
    return LaunchSpec(argv=["serena", "start-mcp-server"], env={}, cwd="/w")


# pytest-trio takes the clock from the test's own arguments: each test asks for autojump_clock.


@pytest.fixture
def fake() -> FakeSerena:
    return FakeSerena()


@pytest.fixture
async def sup(fake: FakeSerena, nursery: trio.Nursery) -> AsyncIterator[Supervisor]:
    s = Supervisor(WorkspaceSpec(path="/w", languages=("python_jedi",)), settings=SETTINGS,
                   launcher=FakeLauncher(fake), prepare=_prepare)
    await nursery.start(s.run)
    yield s
    s.request_stop()
    await s.stopped.wait()


async def until(sup: Supervisor, predicate: Callable[[], bool], within: float = 120.0) -> None:
    with trio.fail_after(within):
        while not predicate():
            await sup.wait_changed()


async def ready(sup: Supervisor, within: float = 60.0) -> None:
    assert await sup.wait_ready(trio.current_time() + within), sup.status


async def test_warm_up_pays_every_cold_cost_before_ready(
    sup: Supervisor, fake: FakeSerena, autojump_clock: Any
) -> None:
    await ready(sup)
    assert sup.status.state is SerenaState.READY and sup.status.restarts == 0
    assert [name for name, _ in fake.calls] == [
        "find_file", "get_symbols_overview", "find_symbol", "find_referencing_symbols",
        "get_diagnostics_for_file"]
    assert fake.calls[3][1] == {"name_path": "Circle", "relative_path": "geometry/shapes.py"}
    assert {t.name for t in sup.tools} >= {"find_symbol", "execute_shell_command"}
    assert next(t for t in sup.tools if t.name == "find_symbol").read_only is True
    answer = await sup.call("find_symbol", {"name_path_pattern": "Circle"}, 5.0)
    assert not answer.is_error and '"Circle"' in answer.text
    assert sup.latency.calls == 1


async def test_tool_errors_are_answers_not_failures(
    sup: Supervisor, fake: FakeSerena, autojump_clock: Any
) -> None:
    await ready(sup)
    answer = await sup.call("find_symbol", {"name_path_pattern": "X", "relative_path": "nope"},
                            5.0)
    assert answer.is_error and "not found" in answer.text
    assert sup.status.state is SerenaState.READY


async def test_a_crash_fails_calls_at_once_and_serena_comes_back(
    sup: Supervisor, fake: FakeSerena, autojump_clock: Any
) -> None:
    await ready(sup)
    fake.tool_delay = 3.0
    t0 = trio.current_time()
    async with trio.open_nursery() as n:
        n.start_soon(_crash_after, fake, 1.0)
        with pytest.raises(SerenaGone):
            await sup.call("find_symbol", {"name_path_pattern": "Circle"}, 10.0)
    assert trio.current_time() - t0 == pytest.approx(1.0, abs=0.01)
    assert sup.status.state is SerenaState.BACKOFF  # at once
    await trio.sleep(0.5)
    assert sup.status.last_error == "fake Serena killed"  # how it died, once it is reaped
    fake.tool_delay = 0.0
    await ready(sup)
    assert sup.status.restarts == 1 and fake.launches == 2
    assert (await sup.call("find_symbol", {"name_path_pattern": "Circle"}, 5.0)).text


async def _crash_after(fake: FakeSerena, seconds: float) -> None:
    await trio.sleep(seconds)
    fake.crash()


async def test_an_idle_crash_is_noticed_without_a_call(
    sup: Supervisor, fake: FakeSerena, autojump_clock: Any
) -> None:
    await ready(sup)
    fake.crash()
    await trio.sleep(0.01)
    assert sup.status.state is SerenaState.BACKOFF
    await ready(sup)
    assert fake.launches == 2


async def test_a_hang_is_found_by_ping_and_restarted(
    sup: Supervisor, fake: FakeSerena, autojump_clock: Any
) -> None:
    await ready(sup)
    t0 = trio.current_time()
    fake.freeze()
    await until(sup, lambda: sup.status.state is not SerenaState.READY)
    # the next ping is due within ping_interval and fails after ping_timeout
    assert trio.current_time() - t0 <= SETTINGS.ping_interval + SETTINGS.ping_timeout + 0.5
    assert "ping" in (sup.status.last_error or "")
    fake.thaw()
    await ready(sup)
    assert fake.launches == 2


async def test_backoff_grows_between_failed_starts(
    sup: Supervisor, fake: FakeSerena, autojump_clock: Any
) -> None:
    await ready(sup)
    fake.fail_starts = 4
    starts: list[float] = []
    fake.crash()
    with trio.fail_after(120):
        for n in range(2, 7):
            await fake.wait_launches(n)
            starts.append(trio.current_time())
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(starts)]
    assert gaps == [2.0, 4.0, 8.0, 16.0]  # after failures 1..4 of the first crash: 1 s, then 2 ...
    await ready(sup)
    assert sup.status.failures == 0 and sup.status.restarts == 5


async def test_restart_request_skips_the_backoff(
    sup: Supervisor, fake: FakeSerena, autojump_clock: Any
) -> None:
    await ready(sup)
    fake.fail_starts = 3
    fake.crash()
    with trio.fail_after(30):
        await fake.wait_launches(4)
    await until(sup, lambda: sup.status.state is SerenaState.BACKOFF)
    assert sup.status.state is SerenaState.BACKOFF and (sup.status.next_retry_at or 0) > (
        trio.current_time() + 3)
    t0 = trio.current_time()
    sup.request_restart()
    await ready(sup)
    assert trio.current_time() - t0 < 0.5 and sup.status.failures == 0


async def test_a_slow_call_times_out_and_two_in_a_row_mean_hung(
    sup: Supervisor, fake: FakeSerena, autojump_clock: Any
) -> None:
    await ready(sup)
    fake.tool_delay = 20.0
    with pytest.raises(SerenaTimeout):
        await sup.call("find_symbol", {"name_path_pattern": "Circle"}, 2.0)
    assert sup.status.state is SerenaState.READY  # one slow call is no failure
    with pytest.raises(SerenaTimeout):
        await sup.call("find_symbol", {"name_path_pattern": "Circle"}, 2.0)
    await trio.sleep(0.01)
    assert sup.status.state is not SerenaState.READY
    assert "timed out (hung)" in (sup.status.last_error or "")
    fake.tool_delay = 0.0
    await ready(sup)


async def test_calls_take_turns_and_the_queue_is_bounded(
    sup: Supervisor, fake: FakeSerena, autojump_clock: Any
) -> None:
    await ready(sup)
    fake.tool_delay = 1.0
    done: list[float] = []
    t0 = trio.current_time()

    async def one() -> None:
        await sup.call("find_symbol", {"name_path_pattern": "Circle"}, 30.0)
        done.append(trio.current_time() - t0)

    async with trio.open_nursery() as n:
        for _ in range(4):
            n.start_soon(one)
        await trio.sleep(0.1)
        with pytest.raises(SerenaBusy):
            await sup.call("find_symbol", {"name_path_pattern": "Circle"}, 30.0)
    assert [round(x) for x in sorted(done)] == [1, 2, 3, 4]  # one at a time


async def test_waiting_for_a_turn_too_long_is_not_a_hang(
    sup: Supervisor, fake: FakeSerena, autojump_clock: Any
) -> None:
    await ready(sup)
    fake.tool_delay = 5.0
    async with trio.open_nursery() as n:
        n.start_soon(sup.call, "find_symbol", {"name_path_pattern": "Circle"}, 30.0)
        await trio.sleep(0.1)
        for _ in range(3):
            with pytest.raises(SerenaTimeout, match="no turn"):
                await sup.call("find_symbol", {"name_path_pattern": "Circle"}, 1.0)
    assert sup.status.state is SerenaState.READY and fake.launches == 1


async def test_calls_wait_for_a_starting_serena(fake: FakeSerena, nursery: trio.Nursery,
                                                autojump_clock: Any) -> None:
    fake.tool_delay = 0.5  # a slow warm-up: five calls
    s = Supervisor(WorkspaceSpec(path="/w", languages=("python_jedi",)), settings=SETTINGS,
                   launcher=FakeLauncher(fake), prepare=_prepare)
    await nursery.start(s.run)
    answer = await s.call("find_symbol", {"name_path_pattern": "Circle"}, 10.0)
    assert trio.current_time() == pytest.approx(3.0, abs=0.05)  # warm-up, then the call
    assert not answer.is_error
    s.request_stop()
    await s.stopped.wait()
    assert s.status.state is SerenaState.STOPPED
    with pytest.raises(SerenaGone, match="stopped"):
        await s.call("find_symbol", {"name_path_pattern": "Circle"}, 1.0)


async def test_stop_is_clean(
    sup: Supervisor, fake: FakeSerena, autojump_clock: Any
) -> None:
    await ready(sup)
    sup.request_stop()
    await sup.stopped.wait()
    assert sup.status.state is SerenaState.STOPPED and fake.link.exited.is_set()
    assert not fake.link.killed  # it closed its input and exited by itself


def test_snapshot_shape() -> None:
    async def main() -> dict[str, Any]:
        s = Supervisor(WorkspaceSpec(path="/w"), settings=SETTINGS,
                       launcher=FakeLauncher(FakeSerena()), prepare=_prepare)
        return s.snapshot()

    snap = trio.run(main)
    assert snap["state"] == "stopped" and snap["latency"]["calls"] == 0
    assert set(snap) >= {"pid", "uptime_s", "restarts", "last_error", "latency", "queued"}


async def test_a_failing_start_is_a_failure_not_a_daemon_crash(
    fake: FakeSerena, nursery: trio.Nursery, autojump_clock: Any
) -> None:
    calls = 0

    async def prepare() -> LaunchSpec:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise PermissionError(13, "Permission denied", "/state/serena")
        if calls == 2:
            raise RuntimeError("a bug")
        return await _prepare()

    s = Supervisor(WorkspaceSpec(path="/w", languages=("python_jedi",)), settings=SETTINGS,
                   launcher=FakeLauncher(fake), prepare=prepare)
    await nursery.start(s.run)
    await until(s, lambda: s.status.state is SerenaState.BACKOFF)
    assert "cannot write Serena's files" in (s.status.last_error or "")
    await until(s, lambda: "internal error" in (s.status.last_error or ""))
    await ready(s)
    assert s.status.restarts == 2
    s.request_stop()
    await s.stopped.wait()
