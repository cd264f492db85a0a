"""The trio side of the fair queue: waiting, deadlines, cancellation and a due model swap.

Every wait here is on trio primitives, so the autojump clock runs them in virtual time.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from routerd.core.queueing import QueuePolicy, ServerLimits
from routerd.shell.routing.queue import SlotQueue


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_one_slot_serializes_and_the_next_waits(autojump_clock: object) -> None:
    queue = SlotQueue(QueuePolicy(default_capacity=1))
    log: list[tuple[str, str, float]] = []

    async def job(name: str, hold: float) -> None:
        async with queue.slot("srv", "m", client=name, deadline=100.0) as grant:
            assert grant is not None
            log.append((name, "start", trio.current_time()))
            await trio.sleep(hold)
            log.append((name, "end", trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(job, "a", 5.0)
        await trio.sleep(0.1)
        nursery.start_soon(job, "b", 1.0)
    assert [(n, e) for n, e, _ in log] == [("a", "start"), ("a", "end"), ("b", "start"),
                                          ("b", "end")]  # fmt: skip
    assert log[2][2] == pytest.approx(log[1][2])  # granted the moment a released
    assert queue.status()["in_flight"] == 0


async def test_the_deadline_ends_a_wait_without_a_grant(autojump_clock: object) -> None:
    queue = SlotQueue()
    outcome: list[object] = []

    async def holder(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with queue.slot("srv", "m", client="a", deadline=100.0):
            task_status.started()
            await trio.sleep(50.0)

    async with trio.open_nursery() as nursery:
        await nursery.start(holder)
        async with queue.slot("srv", "m", client="b", deadline=trio.current_time() + 3) as g:
            outcome.append(g)
            outcome.append(trio.current_time())
        assert queue.status()["waiting"] == 0
    assert outcome[0] is None and outcome[1] == pytest.approx(3.0, abs=0.2)


async def test_cancelling_a_waiter_leaves_the_queue(autojump_clock: object) -> None:
    queue = SlotQueue()
    async with trio.open_nursery() as nursery:

        async def holder() -> None:
            async with queue.slot("srv", "m", client="a", deadline=100.0):
                await trio.sleep(10.0)

        nursery.start_soon(holder)
        await trio.sleep(0.1)
        with trio.move_on_after(1.0):
            async with queue.slot("srv", "m", client="b", deadline=100.0):
                raise AssertionError("granted while the slot was held")
        assert queue.status()["waiting"] == 0
    assert queue.status() == {"in_flight": 0, "waiting": 0, "queues": []}


async def test_a_due_swap_goes_before_more_work_for_the_loaded_model(
    autojump_clock: object,
) -> None:
    # The server holds model "a". A request for "b" may be held back while "a" has work, but
    # only swap_wait seconds: after that it goes first, before the later "a" request.
    queue = SlotQueue(QueuePolicy(swap_wait=5.0, default_capacity=1))
    queue.set_limits("srv", ServerLimits(total=1))
    queue.set_resident("srv", ["a"])
    started: dict[str, float] = {}

    async def job(model: str, name: str, hold: float) -> None:
        async with queue.slot("srv", model, client=name, deadline=100.0) as grant:
            assert grant is not None
            started[name] = trio.current_time()
            await trio.sleep(hold)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(job, "a", "a1", 8.0)
        await trio.sleep(0.1)
        nursery.start_soon(job, "b", "b1", 1.0)
        await trio.sleep(0.1)
        nursery.start_soon(job, "a", "a2", 1.0)
    assert started == {"a1": 0.0, "b1": pytest.approx(8.0), "a2": pytest.approx(9.0)}
