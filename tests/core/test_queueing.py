"""routerd.core.queueing: the fair per-(server, model) queue as a pure state machine."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.config import ConcurrencyConfig
from routerd.core.queueing import (
    FairQueue,
    Grant,
    QueuePolicy,
    QueueStat,
    ServerLimits,
    limits_for,
)


def ids(grants: list[Grant]) -> list[str]:
    return [g.request_id for g in grants]


def fifo_queue(**kw: float | int | bool) -> FairQueue:
    return FairQueue(QueuePolicy(round_robin=False, **kw))  # type: ignore[arg-type]


# --- capacity ----------------------------------------------------------------------------------


def test_one_at_a_time_per_model_by_default() -> None:
    q = fifo_queue()
    for i in range(3):
        q.enqueue(f"r{i}", "ollama", "m", now=i)
    assert ids(q.dispatch(3)) == ["r0"]
    assert ids(q.dispatch(4)) == []
    assert (q.in_flight("ollama", "m"), q.waiting("ollama", "m")) == (1, 2)
    assert q.release("r0")
    (g,) = q.dispatch(5)
    assert (g.request_id, g.server, g.model, g.swap, g.waited) == ("r1", "ollama", "m", False, 4)


def test_models_have_their_own_capacity() -> None:
    q = fifo_queue()
    q.enqueue("a", "ollama", "m1", now=0)
    q.enqueue("b", "ollama", "m2", now=0)
    assert ids(q.dispatch(0)) == ["a", "b"]


def test_configured_capacity_per_model_per_server_and_total() -> None:
    q = fifo_queue()
    q.set_limits("s", ServerLimits(per_model=2, total=3, models={"big": 1}))
    assert (q.capacity("s", "small"), q.capacity("s", "big")) == (2, 1)
    for i in range(3):
        q.enqueue(f"s{i}", "s", "small", now=i)
        q.enqueue(f"b{i}", "s", "big", now=i + 0.5)
    assert ids(q.dispatch(10)) == ["s0", "b0", "s1"]  # total 3; small 2, big 1
    q.release("b0")
    assert ids(q.dispatch(11)) == ["b1"]


def test_reported_slots_set_the_capacity() -> None:
    q = fifo_queue()
    q.set_occupancy("llamacpp", busy_slots=0, total_slots=4)
    assert q.capacity("llamacpp", "any.gguf") == 4
    q.set_limits("llamacpp", ServerLimits(per_model=2))
    assert q.capacity("llamacpp", "any.gguf") == 2  # configuration wins


def test_other_clients_occupancy_counts_against_the_server() -> None:
    q = fifo_queue()
    q.set_occupancy("llamacpp", busy_slots=3, total_slots=4)  # 3 slots busy for others
    for i in range(3):
        q.enqueue(f"r{i}", "llamacpp", "m", now=i)
    assert ids(q.dispatch(3)) == ["r0"]
    # A new report taken while r0 ran: 2 busy, one of them ours -> one other client.
    q.set_occupancy("llamacpp", busy_slots=2, total_slots=4, ours_at_probe=1)
    assert ids(q.dispatch(4)) == ["r1", "r2"]
    # Default ours_at_probe: our in-flight count now (3): nothing external.
    q.set_occupancy("llamacpp", busy_slots=3, total_slots=4)
    q.enqueue("r3", "llamacpp", "m", now=5)
    assert ids(q.dispatch(5)) == ["r3"]


# --- fairness ----------------------------------------------------------------------------------


def test_fifo_within_a_model() -> None:
    q = fifo_queue()
    for i, client in enumerate(["x", "x", "y", "x"]):
        q.enqueue(f"r{i}", "s", "m", now=i, client=client)
    order = []
    for t in range(4):
        order += ids(q.dispatch(10 + t))
        q.release(order[-1])
    assert order == ["r0", "r1", "r2", "r3"]


def test_round_robin_takes_turns_between_clients() -> None:
    q = FairQueue(QueuePolicy(round_robin=True))
    for i in range(3):
        q.enqueue(f"x{i}", "s", "m", now=i, client="x")
    q.enqueue("y0", "s", "m", now=5, client="y")
    q.enqueue("z0", "s", "m", now=6, client="z")
    order = []
    for t in range(5):
        order += ids(q.dispatch(10 + t))
        q.release(order[-1])
    assert order == ["x0", "y0", "z0", "x1", "x2"]


# --- grouping by resident model ----------------------------------------------------------------


def busy_with_a(swap_wait: float, b_at: float = 1, a_at: float = 2) -> FairQueue:
    """Ollama with model ``a`` resident and running a1; b1 (needs a swap) and a2 wait."""
    q = fifo_queue(swap_wait=swap_wait)
    q.set_resident("ollama", ["a"], now=0)
    q.enqueue("a1", "ollama", "a", now=0)
    assert ids(q.dispatch(0)) == ["a1"]
    q.enqueue("b1", "ollama", "b", now=b_at)
    q.enqueue("a2", "ollama", "a", now=a_at)
    return q


def test_resident_model_is_served_before_a_swap_within_swap_wait() -> None:
    q = busy_with_a(10.0)
    assert q.dispatch(2) == []
    assert q.next_deadline() == 11.0  # b1's arrival + swap_wait
    q.release("a1")
    assert ids(q.dispatch(3)) == ["a2"]  # the resident model first, though b1 is older


def test_a_swap_becomes_due_then_waits_for_the_server_to_drain() -> None:
    q = busy_with_a(10.0)
    assert q.dispatch(11) == []  # b1 is due: a2 may not start; a1 still runs
    q.release("a1")
    (g,) = q.dispatch(12)
    assert (g.request_id, g.swap, g.waited) == ("b1", True, 11)
    # Now b is resident: a2 needs a swap back, due swap_wait after this swap at the earliest.
    assert q.dispatch(13) == []
    assert q.next_deadline() == 22.0
    q.release("b1")
    (g,) = q.dispatch(13)  # b has no work left: a2 need not wait
    assert (g.request_id, g.swap) == ("a2", True)


def test_swap_is_immediate_when_the_resident_model_is_idle() -> None:
    q = fifo_queue(swap_wait=30.0)
    q.set_resident("ollama", ["a"], now=0)
    q.enqueue("b1", "ollama", "b", now=5)
    (g,) = q.dispatch(5)
    assert g.swap and q.snapshot() == (QueueStat("ollama", "b", 0, 1, 1, True),)


def test_several_requests_for_the_new_model_follow_the_swap() -> None:
    q = fifo_queue()
    q.set_limits("ollama", ServerLimits(per_model=2))
    q.set_resident("ollama", [], now=0)
    q.enqueue("b1", "ollama", "b", now=0)
    q.enqueue("b2", "ollama", "b", now=0)
    grants = q.dispatch(0)
    assert [(g.request_id, g.swap) for g in grants] == [("b1", True), ("b2", False)]


def test_without_a_residency_report_nothing_is_grouped() -> None:
    q = fifo_queue()
    q.enqueue("a1", "vllm", "a", now=0)
    q.enqueue("b1", "vllm", "b", now=0)
    assert [(g.request_id, g.swap) for g in q.dispatch(0)] == [("a1", False), ("b1", False)]
    assert q.next_deadline() is None


def test_a_model_loaded_behind_our_back_starts_a_swap_window() -> None:
    q = fifo_queue(swap_wait=10.0)
    q.set_resident("ollama", ["a"], now=0)
    q.set_resident("ollama", ["a", "c"], now=50)  # another machine's client loaded c
    q.enqueue("c1", "ollama", "c", now=50)
    assert ids(q.dispatch(50)) == ["c1"]  # resident now: no swap
    q.enqueue("b1", "ollama", "b", now=51)
    q.enqueue("a1", "ollama", "a", now=52)
    assert ids(q.dispatch(52)) == ["a1"]
    assert q.next_deadline() == 61.0


# --- cancellation and ids ----------------------------------------------------------------------


def test_cancel_waiting_granted_and_unknown() -> None:
    q = fifo_queue()
    q.enqueue("r0", "s", "m", now=0)
    q.enqueue("r1", "s", "m", now=1)
    q.enqueue("r2", "s", "m", now=2)
    q.dispatch(2)
    assert q.is_granted("r0") and q.is_waiting("r1")
    assert q.cancel("r1")
    assert not q.is_waiting("r1")
    assert q.cancel("r0")  # granted: frees its slot
    assert ids(q.dispatch(3)) == ["r2"]
    assert not q.cancel("nope") and not q.release("nope") and not q.release("r1")


def test_a_cancelled_swap_no_longer_blocks_the_server() -> None:
    q = busy_with_a(1.0, b_at=0, a_at=0)
    q.set_limits("ollama", ServerLimits(per_model=2))
    assert q.dispatch(5) == []  # b1 due: a2 held back
    q.cancel("b1")
    assert ids(q.dispatch(5)) == ["a2"]


def test_duplicate_ids_are_refused_until_released() -> None:
    q = fifo_queue()
    q.enqueue("r", "s", "m", now=0)
    with pytest.raises(ValueError):
        q.enqueue("r", "s", "other", now=0)
    q.dispatch(0)
    with pytest.raises(ValueError):
        q.enqueue("r", "s", "m", now=0)
    q.release("r")
    q.enqueue("r", "s", "m", now=1)


def test_limits_for_kinds_and_config() -> None:
    assert limits_for("ollama", None) == ServerLimits()
    assert limits_for("vllm", None).per_model == 8
    cfg = ConcurrencyConfig(per_model=3, total=5, models={"x": 1})
    assert limits_for("vllm", cfg) == ServerLimits(per_model=3, total=5, models={"x": 1})
    assert limits_for(None, ConcurrencyConfig(total=2)) == ServerLimits(total=2)


# --- properties --------------------------------------------------------------------------------

_SERVERS = ["s0", "s1"]
_MODELS = ["a", "b", "c"]

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.sampled_from(_SERVERS), st.sampled_from(_MODELS),
                  st.sampled_from(["x", "y", "z"])),
        st.tuples(st.just("release"), st.integers(0, 30)),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
        st.tuples(st.just("tick"), st.floats(0, 20)),
        st.tuples(st.just("resident"), st.sampled_from(_SERVERS),
                  st.none() | st.frozensets(st.sampled_from(_MODELS), max_size=2)),
        st.tuples(st.just("occupancy"), st.sampled_from(_SERVERS), st.integers(0, 3)),
    ),
    max_size=60,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    ops=_OPS,
    round_robin=st.booleans(),
    swap_wait=st.sampled_from([0.0, 5.0, 30.0]),
    per_model=st.integers(1, 3),
    total=st.none() | st.integers(1, 4),
)
def test_queue_properties(
    ops: list[tuple[object, ...]],
    round_robin: bool,
    swap_wait: float,
    per_model: int,
    total: int | None,
) -> None:
    q = FairQueue(QueuePolicy(round_robin=round_robin, swap_wait=swap_wait))
    for s in _SERVERS:
        q.set_limits(s, ServerLimits(per_model=per_model, total=total))
        q.set_occupancy(s, busy_slots=0, total_slots=4)
    now = 0.0
    enqueued: dict[str, tuple[str, str, str]] = {}
    order_in: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    order_out: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    granted: list[str] = []
    cancelled: set[str] = set()
    external = dict.fromkeys(_SERVERS, 0)

    def dispatch() -> None:
        for g in q.dispatch(now):
            assert g.request_id in enqueued and g.request_id not in cancelled
            granted.append(g.request_id)
            order_out[enqueued[g.request_id]].append(g.request_id)
            # A grant never exceeds capacity, per model nor per server (with other clients).
            assert q.in_flight(g.server, g.model) <= per_model
            limit = total if total is not None else 4
            assert q.in_flight(g.server) + external[g.server] <= limit
        deadline = q.next_deadline()
        assert deadline is None or deadline > now

    for op in ops:
        kind = op[0]
        if kind == "enqueue":
            rid = f"r{len(enqueued)}"
            server, model, client = str(op[1]), str(op[2]), str(op[3])
            enqueued[rid] = (server, model, client)
            order_in[(server, model, client)].append(rid)
            q.enqueue(rid, server, model, now=now, client=client)
        elif kind == "release":
            live = [r for r in granted if q.is_granted(r)]
            if live:
                q.release(live[int(str(op[1])) % len(live)])
        elif kind == "cancel" and enqueued:
            rid = f"r{int(str(op[1])) % len(enqueued)}"
            if q.is_waiting(rid):
                cancelled.add(rid)
            q.cancel(rid)
        elif kind == "tick":
            now += float(str(op[1]))
        elif kind == "resident":
            models = op[2]
            q.set_resident(str(op[1]), models if isinstance(models, frozenset) else None, now=now)
        elif kind == "occupancy":
            server = str(op[1])
            external[server] = int(str(op[2]))
            q.set_occupancy(
                server, busy_slots=external[server] + q.in_flight(server), total_slots=4
            )
        dispatch()

    # Capacity frees: other clients leave, every request ends; everything waiting is served.
    for s in _SERVERS:
        external[s] = 0
        q.set_occupancy(s, busy_slots=0, total_slots=4, ours_at_probe=q.in_flight(s))
    for _ in range(len(enqueued) + 2):
        for r in granted:
            q.release(r)
        deadline = q.next_deadline()
        now = max(now, deadline) if deadline is not None else now
        dispatch()
    assert set(granted) | cancelled == set(enqueued)
    assert not set(granted) & cancelled
    # FIFO within a model for each client (and for everyone without round-robin).
    for key, out in order_out.items():
        expected = [r for r in order_in[key] if r not in cancelled]
        assert out == expected, key
    if not round_robin:
        by_model: dict[tuple[str, str], list[str]] = defaultdict(list)
        for r in granted:
            by_model[enqueued[r][:2]].append(r)
        for out in by_model.values():
            assert out == sorted(out, key=lambda r: int(r[1:]))
