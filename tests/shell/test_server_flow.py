"""Concurrency, cancellation, backpressure, limits and graceful shutdown of the daemon."""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable

import trio

from routerd.shell.app import App


def is_final(msg: dict) -> bool:
    t = msg.get("type")
    return t in ("result", "error") or (t == "event" and msg.get("event") == "end")


async def eventually(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    with trio.fail_after(timeout):
        while True:
            if predicate():
                return
            await trio.sleep(0.01)


async def _finals(wire, ids: set[int], timeout: float = 10.0) -> dict[int, dict]:
    """Read until every id in ``ids`` has its final frame; fail on a second final frame."""
    finals: dict[int, dict] = {}
    with trio.fail_after(timeout):
        while set(finals) != ids:
            msg = await wire.recv()
            if is_final(msg):
                assert msg["id"] not in finals, f"second final frame for {msg['id']}"
                finals[msg["id"]] = msg
    return finals


async def test_many_requests_in_flight_interleave(start_daemon, connect):
    app = await start_daemon()
    wire = await connect(app)
    n = 40
    for i in range(n):  # later requests finish first
        await wire.request(i, "test.sleep", {"seconds": (n - i) * 0.005})
    order = []
    for _ in range(n):
        msg = await wire.recv()
        assert msg["type"] == "result"
        order.append(msg["id"])
    assert sorted(order) == list(range(n))
    assert order != sorted(order)  # they really ran concurrently
    assert app.counters.requests_in_flight == 0


async def test_streams_interleave_and_end_once(start_daemon, connect):
    app = await start_daemon()
    wire = await connect(app)
    await wire.request(1, "test.stream", {"count": 20, "interval": 0.001})
    await wire.request(2, "test.stream", {"count": 20, "interval": 0.001})
    await wire.request(3, "ping")
    events: Counter[int] = Counter()
    finals = {}
    while len(finals) < 3:
        msg = await wire.recv()
        if is_final(msg):
            assert msg["id"] not in finals
            finals[msg["id"]] = msg
        else:
            assert msg["type"] == "event" and msg["event"] == "tick"
            assert msg["id"] not in finals, "event after the final frame"
            events[msg["id"]] += 1
    assert events == {1: 20, 2: 20}
    assert finals[1] == {"type": "event", "id": 1, "event": "end", "data": {"sent": 20}}
    assert finals[3]["type"] == "result"


async def test_cancel_gets_exactly_one_cancelled(start_daemon, connect, probe):
    app = await start_daemon()
    wire = await connect(app)
    await wire.request(1, "test.stream", {"interval": 0.001})
    await wire.request(2, "test.sleep", {"seconds": 30})
    for _ in range(3):
        assert (await wire.recv())["event"] == "tick"
    await wire.send({"type": "cancel", "id": 1})
    await wire.send({"type": "cancel", "id": 2})
    await wire.send({"type": "cancel", "id": 2})  # a second cancel changes nothing
    finals = await _finals(wire, {1, 2})
    for rid in (1, 2):
        assert finals[rid]["code"] == "cancelled"
        assert finals[rid]["message"] == "request cancelled by the client"
        assert rid in probe.cancelled
    # Nothing more arrives for them: the next frame is the answer to a new request.
    await wire.request(3, "ping")
    assert (await wire.recv())["id"] == 3
    assert app.counters.requests_cancelled == 2
    assert app.counters.requests_in_flight == 0


async def test_client_disconnect_cancels_its_requests(start_daemon, connect, probe, serves):
    app = await start_daemon()
    wire = await connect(app)
    await wire.request(1, "test.stream", {"interval": 0.001})
    await wire.request(2, "test.sleep", {"seconds": 30})
    await wire.recv()
    await probe.wait_started(2)
    await wire.aclose()
    await probe.wait_ended(1)
    await probe.wait_ended(2)
    assert set(probe.cancelled) == {1, 2}
    await eventually(lambda: app.counters.connections_open == 0)
    assert app.counters.requests_in_flight == 0
    await serves(app)


async def test_disconnect_while_the_daemon_writes(start_daemon, connect, probe, serves):
    app = await start_daemon(stream_queue=2)
    wire = await connect(app)
    await wire.request(1, "test.stream", {"size": 60000})
    await probe.wait_started(1)
    await trio.sleep(0.05)  # the socket buffers are full, the writer is blocked
    await wire.aclose()
    await probe.wait_ended(1)
    assert probe.cancelled == [1]
    await serves(app)


async def test_a_client_that_never_reads_cannot_grow_memory(start_daemon, connect, short_tmp):
    high = 64 * 1024
    size = 32 * 1024
    app = await start_daemon(high_water=high)
    wire = await connect(app)
    total = 400  # 400 x 32 KiB = 12.5 MiB of replies if nothing held them back
    sent = 0

    async def send_all_requests() -> None:
        nonlocal sent
        for i in range(total):
            await wire.request(i, "test.big", {"size": size})
            sent += 1

    async with trio.open_nursery() as nursery:
        # The sender blocks once the daemon stops reading and the socket buffers are full.
        nursery.start_soon(send_all_requests)
        await trio.sleep(0.5)
        (conn,) = app.server.connections
        # Bound: the high-water mark plus one final frame per request that was in flight.
        in_flight = app.config.daemon.max_in_flight
        assert conn.outbound.backlog <= high + in_flight * (size + 64)
        assert in_flight * size * 4 < total * size  # ...which is far below "everything"
        assert app.counters.requests_total < total  # the reader stopped reading
        got = set()
        while len(got) < total:  # reading again releases it all
            msg = await wire.recv()
            assert msg["type"] == "result" and len(msg["result"]) == size
            got.add(msg["id"])
    assert sent == total


async def test_a_stalled_stream_ends_with_slow_consumer(start_daemon, connect, probe, serves):
    app = await start_daemon(stream_queue=4, slow_consumer_timeout=0.3)
    wire = await connect(app)
    await wire.request(1, "test.stream", {"size": 8192})
    await probe.wait_ended(1, timeout=10)  # no reading at all: buffers fill, then the timeout
    assert probe.cancelled == [1]
    emitted = probe.emitted[1]
    ticks = 0
    while True:
        msg = await wire.recv()
        if is_final(msg):
            break
        ticks += 1
    assert msg["type"] == "error" and msg["id"] == 1 and msg["code"] == "slow_consumer"
    assert "0.3" in msg["message"]
    assert ticks == emitted  # every emitted event was delivered, then the final frame
    (conn,) = app.server.connections
    assert conn.in_flight == 0
    assert (await wire.call(2, "ping"))["type"] == "result"
    await serves(app)


async def test_connection_cap_answers_busy(start_daemon, connect, serves):
    app = await start_daemon(max_connections=2)
    a = await connect(app)
    b = await connect(app)
    assert (await a.call(1, "ping"))["type"] == "result"
    assert (await b.call(1, "ping"))["type"] == "result"
    c = await connect(app)
    frames = await c.expect_eof()
    assert len(frames) == 1
    assert frames[0]["type"] == "error" and frames[0]["id"] is None
    assert frames[0]["code"] == "busy" and "limit 2" in frames[0]["message"]
    assert app.counters.connections_refused == 1
    await a.aclose()
    await eventually(lambda: app.counters.connections_open == 1)
    await serves(app)


async def test_in_flight_cap_answers_busy_with_the_id(start_daemon, connect, probe):
    app = await start_daemon(max_in_flight=2)
    wire = await connect(app)
    await wire.request(1, "test.sleep", {"seconds": 0.2})
    await wire.request(2, "test.sleep", {"seconds": 0.2})
    await wire.request(3, "ping")
    busy = await wire.recv()
    assert busy["type"] == "error" and busy["id"] == 3 and busy["code"] == "busy"
    finals = await _finals(wire, {1, 2})
    assert all(f["type"] == "result" for f in finals.values())
    assert (await wire.call(3, "ping"))["type"] == "result"


async def _run_app(app: App, nursery: trio.Nursery) -> trio.Event:
    done = trio.Event()

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await app.run(handle_signals=False, task_status=task_status)
        finally:
            done.set()

    await nursery.start(run)
    return done


async def test_shutdown_finishes_then_cancels_in_flight(short_tmp, test_registry, probe, kit):
    path = f"{short_tmp}/d.sock"
    app = App(kit.config_with(socket=path, shutdown_grace=0.3), env={}, registry=test_registry)
    async with trio.open_nursery() as nursery:
        done = await _run_app(app, nursery)
        wire = await kit.open(path)
        await wire.request(1, "test.sleep", {"seconds": 0.1})
        await wire.request(2, "test.sleep", {"seconds": 30})
        await wire.request(3, "test.stream", {"interval": 0.01})
        await probe.wait_started(2)
        await probe.wait_started(3)
        app.request_shutdown()
        await trio.sleep(0.05)
        await wire.request(4, "ping")  # during the grace period
        finals = await _finals(wire, {1, 2, 3, 4})
        assert finals[1]["type"] == "result"
        for rid in (2, 3, 4):
            assert finals[rid]["code"] == "unavailable"
            assert finals[rid]["message"] == "routerd is shutting down"
        assert await wire.expect_eof() == []
        with trio.fail_after(5):
            await done.wait()
        await wire.aclose()
    assert not await trio.Path(path).exists()
    assert not await trio.Path(path + ".lock").exists()


async def test_second_shutdown_request_skips_the_grace(short_tmp, test_registry, probe, kit):
    path = f"{short_tmp}/d.sock"
    app = App(kit.config_with(socket=path, shutdown_grace=60), env={}, registry=test_registry)
    async with trio.open_nursery() as nursery:
        done = await _run_app(app, nursery)
        wire = await kit.open(path)
        await wire.request(1, "test.sleep", {"seconds": 30})
        await probe.wait_started(1)
        app.request_shutdown()
        await trio.sleep(0.05)
        app.request_shutdown()
        assert (await wire.recv(timeout=3))["code"] == "unavailable"
        with trio.fail_after(5):
            await done.wait()
        await wire.aclose()


async def test_in_process_daemon_refuses_a_second_on_the_same_socket(start_daemon, short_tmp, kit):
    app = await start_daemon()
    other = App(kit.config_with(socket=app.socket_path), env={})
    from routerd.shell.listener import SocketInUse

    try:
        await other.run(handle_signals=False)
    except SocketInUse as exc:
        assert app.socket_path in str(exc) and f"pid {os.getpid()}" in str(exc)
    else:
        raise AssertionError("a second daemon started on a live socket")
    assert await trio.Path(app.socket_path).exists()


async def test_run_reports_started_only_once_the_socket_accepts(short_tmp, test_registry, kit):
    path = f"{short_tmp}/d.sock"
    app = App(kit.config_with(socket=path), env={}, registry=test_registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.run, handle_signals=False))
        wire = await kit.open(path)  # no retry needed
        assert (await wire.call(1, "ping"))["type"] == "result"
        await wire.aclose()
        app.request_shutdown()


async def test_services_start_around_ready_and_stop_at_shutdown(short_tmp, test_registry, kit):
    path = f"{short_tmp}/d.sock"
    app = App(kit.config_with(socket=path), env={}, registry=test_registry)
    events: list[str] = []

    def service(name: str, delay: float):
        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await trio.sleep(delay)
            events.append(f"{name} started")
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                events.append(f"{name} stopped")

        return run

    app.add_service("early", service("early", 0.1))
    app.add_service("warmup", service("warmup", 0.2), before_ready=False)
    async with trio.open_nursery() as nursery:
        done = await _run_app(app, nursery)
        events.append("ready")
        assert events == ["early started", "ready"]
        await eventually(lambda: "warmup started" in events)
        wire = await kit.open(path)
        assert (await wire.call(1, "ping"))["type"] == "result"
        app.request_shutdown()
        with trio.fail_after(5):
            await done.wait()
        await wire.aclose()
    assert set(events[-2:]) == {"early stopped", "warmup stopped"}


async def test_a_slow_warm_up_holds_up_no_later_one(short_tmp, test_registry, kit):
    """Services started after READY start each on its own: one that takes its time (or
    never says it started) does not keep the next from starting."""
    path = f"{short_tmp}/d.sock"
    app = App(kit.config_with(socket=path), env={}, registry=test_registry)
    started: list[str] = []

    async def stuck(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep_forever()  # never reports started

    async def quick(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started.append("quick")
        task_status.started()
        await trio.sleep_forever()

    app.add_service("stuck", stuck, before_ready=False)
    app.add_service("quick", quick, before_ready=False)
    async with trio.open_nursery() as nursery:
        done = await _run_app(app, nursery)
        await eventually(lambda: started == ["quick"])
        app.request_shutdown()
        with trio.fail_after(5):
            await done.wait()
