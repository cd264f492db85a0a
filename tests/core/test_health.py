"""The health state machine: every state x input, breakers, backoff, and what is no fault."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.health import (
    INPUTS,
    STATES,
    TABLE,
    HealthEvent,
    HealthInput,
    HealthPolicy,
    HealthState,
    ServiceHealth,
    admit,
    initial,
    probe_delay,
    step,
)

P = HealthPolicy()  # interval 5, cap 60, jitter 0.2, 3 probe / 5 request strikes, cooldown 30


def fresh(state: HealthState) -> ServiceHealth:
    """A service that entered ``state`` at t=0 (degraded: by requests, cool-down until 30)."""
    if state == "degraded":
        return ServiceHealth(state, since=0.0, degraded_by="request", breaker_until=30.0)
    return ServiceHealth(state, since=0.0)


def feed(
    h: ServiceHealth, name: HealthInput, now: float, rand: float = 0.5, **kw: object
) -> ServiceHealth:
    return step(h, HealthEvent(name, **kw), now=now, policy=P, rand=rand).health  # type: ignore[arg-type]


# State after ONE input, from a service that entered the column's state at t=0, at t=10
# (inside every cool-down). Written independently of TABLE: it states outcomes, not actions.
_EXPECTED = """
                          unknown  online   loading  busy     degraded offline  unauthorized foreign
probe_ok                  online   online   online   online   degraded online   online   online
probe_busy                busy     busy     busy     busy     degraded busy     busy     busy
probe_loading             loading  loading  loading  loading  loading  loading  loading  loading
probe_refused             offline  offline  offline  offline  offline  offline  offline  offline
probe_timeout             unknown  online   loading  busy     degraded offline  unauthorized foreign
probe_error               unknown  online   loading  busy     degraded degraded unauthorized degraded
probe_unauthorized        unauthorized unauthorized unauthorized unauthorized unauthorized unauthorized unauthorized unauthorized
probe_foreign             foreign  foreign  foreign  foreign  foreign  foreign  foreign  foreign
probe_routerd             foreign  foreign  foreign  foreign  foreign  foreign  foreign  foreign
request_ok                online   online   online   online   degraded offline  unauthorized foreign
request_slow              unknown  online   loading  busy     degraded offline  unauthorized foreign
request_5xx               unknown  online   loading  busy     degraded offline  unauthorized foreign
request_timeout           unknown  online   loading  busy     degraded offline  unauthorized foreign
request_refused           offline  offline  offline  offline  offline  offline  offline  offline
request_busy              busy     busy     loading  busy     degraded offline  unauthorized foreign
request_loading           loading  loading  loading  loading  loading  loading  unauthorized foreign
request_unauthorized      unauthorized unauthorized unauthorized unauthorized unauthorized unauthorized unauthorized foreign
request_cancelled         unknown  online   loading  busy     degraded offline  unauthorized foreign
request_context_overflow  unknown  online   loading  busy     degraded offline  unauthorized foreign
request_client_error      unknown  online   loading  busy     degraded offline  unauthorized foreign
hint                      unknown  online   loading  busy     degraded offline  unauthorized foreign
"""


def _expected() -> dict[tuple[str, str], str]:
    lines = [line.split() for line in _EXPECTED.strip().splitlines()]
    states = lines[0]
    return {
        (state, row[0]): cell
        for row in lines[1:]
        for state, cell in zip(states, row[1:], strict=True)
    }


EXPECTED = _expected()


def test_table_covers_every_state_and_input() -> None:
    assert set(TABLE) == {(s, i) for s in STATES for i in INPUTS}
    assert set(EXPECTED) == set(TABLE)


@pytest.mark.parametrize(("state", "name"), sorted(EXPECTED))
def test_every_state_and_input(state: HealthState, name: HealthInput) -> None:
    before = fresh(state)
    t = step(before, HealthEvent(name), now=10.0, policy=P, rand=0.5)
    assert t.health.state == EXPECTED[(state, name)]
    assert t.previous == state
    assert t.changed == (t.health.state != state)
    if t.changed:
        assert t.health.since == 10.0 or {state, t.health.state} <= {"online", "busy"}
        assert t.reason == t.health.reason
    else:
        assert t.health.since == before.since
    if name.startswith("probe_"):
        assert t.health.next_probe_at > 10.0
    elif t.probe_now:
        assert t.health.next_probe_at == 10.0
    else:
        assert t.health.next_probe_at == before.next_probe_at


@pytest.mark.parametrize("state", STATES)
def test_401_403_429_never_offline_or_degraded(state: HealthState) -> None:
    for name in ("probe_unauthorized", "request_unauthorized", "request_busy"):
        result = step(fresh(state), HealthEvent(name), now=10.0, policy=P, rand=0.0).health.state  # type: ignore[arg-type]
        if state not in ("offline", "degraded"):
            assert result not in ("offline", "degraded"), (state, name)


_NOT_FAULTS: list[HealthInput] = [
    "request_cancelled",
    "request_context_overflow",
    "request_client_error",
    "request_busy",
    "request_loading",
    "request_unauthorized",
    "probe_unauthorized",
    "probe_loading",
]


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.sampled_from(_NOT_FAULTS), max_size=60))
def test_what_is_not_a_fault_never_degrades_or_takes_offline(events: list[HealthInput]) -> None:
    h = fresh("online")
    for i, name in enumerate(events):
        h = feed(h, name, now=float(i))
        assert h.state not in ("degraded", "offline")
        assert h.request_strikes == 0 and h.probe_strikes == 0


# --- Breakers ----------------------------------------------------------------------------------


def test_request_breaker_opens_after_five_and_readmits_one_trial_after_cooldown() -> None:
    h = fresh("online")
    for i in range(4):
        t = step(h, HealthEvent("request_5xx"), now=float(i), policy=P, rand=0.5)
        h = t.health
        assert (h.state, t.changed, h.request_strikes) == ("online", False, i + 1)
    t = step(h, HealthEvent("request_timeout"), now=4.0, policy=P, rand=0.5)
    h = t.health
    assert (h.state, t.changed, h.breaker_until, h.degraded_by) == (
        "degraded",
        True,
        34.0,
        "request",
    )
    assert "5 requests in a row" in t.reason
    assert admit(h, 20.0, P) == ("refuse", h)
    verdict, h = admit(h, 34.0, P)
    assert verdict == "trial" and h.trial_started == 34.0
    assert admit(h, 35.0, P)[0] == "refuse"  # one trial at a time
    # The passive probe says "/ answers" - not enough to close a request-opened breaker.
    assert feed(h, "probe_ok", now=36.0).state == "degraded"
    t = step(h, HealthEvent("request_ok"), now=40.0, policy=P, rand=0.5)
    assert (t.health.state, t.changed, t.health.request_strikes) == ("online", True, 0)
    assert t.health.breaker_until is None and t.health.trial_started is None
    assert admit(t.health, 41.0, P)[0] == "admit"


def test_failed_trial_restarts_the_cooldown() -> None:
    h = ServiceHealth("degraded", degraded_by="request", breaker_until=30.0)
    verdict, h = admit(h, 31.0, P)
    assert verdict == "trial"
    t = step(h, HealthEvent("request_5xx"), now=32.0, policy=P, rand=0.5)
    assert (t.health.state, t.changed, t.health.breaker_until, t.health.trial_started) == (
        "degraded",
        False,
        62.0,
        None,
    )
    assert admit(t.health, 61.0, P)[0] == "refuse"
    assert admit(t.health, 62.0, P)[0] == "trial"


def test_a_lost_trial_does_not_block_forever() -> None:
    h = ServiceHealth("degraded", degraded_by="request", breaker_until=30.0)
    _, h = admit(h, 30.0, P)
    assert admit(h, 59.0, P)[0] == "refuse"
    assert admit(h, 60.0, P)[0] == "trial"


def test_late_success_from_before_the_trip_does_not_close_early() -> None:
    h = ServiceHealth("degraded", degraded_by="request", breaker_until=30.0)
    assert feed(h, "request_ok", now=10.0).state == "degraded"


def test_a_success_ends_the_request_streak_but_a_probe_does_not() -> None:
    h = fresh("online")
    for i in range(4):
        h = feed(h, "request_5xx", now=float(i))
    h = feed(h, "request_ok", now=4.0)
    assert h.request_strikes == 0
    for i in range(4):
        h = feed(h, "request_5xx", now=5.0 + i)
    h = feed(h, "probe_ok", now=9.0)
    assert (h.state, h.request_strikes) == ("online", 4)
    assert feed(h, "request_5xx", now=10.0).state == "degraded"


def test_probe_breaker_heals_by_probe_after_cooldown() -> None:
    h = fresh("online")
    for i in range(2):
        h = feed(h, "probe_error", now=float(i))
        assert h.state == "online"
    t = step(h, HealthEvent("probe_error", "GET /health 500"), now=2.0, policy=P, rand=0.5)
    h = t.health
    assert (h.state, h.degraded_by, h.breaker_until) == ("degraded", "probe", 32.0)
    assert t.reason == "3 probes in a row: GET /health 500"
    assert feed(h, "probe_ok", now=20.0).state == "degraded"
    assert feed(h, "probe_ok", now=32.0).state == "online"


def test_probe_timeouts_take_offline_after_three() -> None:
    h = fresh("online")
    h = feed(h, "probe_timeout", now=1.0)
    h = feed(h, "probe_timeout", now=2.0)
    assert h.state == "online"
    t = step(h, HealthEvent("probe_timeout"), now=3.0, policy=P, rand=0.5)
    assert (t.health.state, t.changed) == ("offline", True)
    assert t.reason.startswith("3 probes in a row")


def test_probe_success_ends_a_probe_streak() -> None:
    h = fresh("online")
    h = feed(h, "probe_timeout", now=1.0)
    h = feed(h, "probe_timeout", now=2.0)
    h = feed(h, "probe_ok", now=3.0)
    h = feed(h, "probe_timeout", now=4.0)
    h = feed(h, "probe_timeout", now=5.0)
    assert h.state == "online"


def test_connection_refused_is_offline_at_once() -> None:
    for state in ("online", "busy", "degraded", "loading"):
        t = step(fresh(state), HealthEvent("request_refused"), now=3.0, policy=P, rand=0.5)  # type: ignore[arg-type]
        assert (t.health.state, t.changed) == ("offline", True)


def test_slow_requests_count_towards_degraded() -> None:
    h = fresh("online")
    for i in range(4):
        h = feed(h, "request_ok", now=float(i), latency=121.0)
    assert (h.state, h.request_strikes) == ("online", 4)
    t = step(h, HealthEvent("request_ok", latency=150.0), now=5.0, policy=P, rand=0.5)
    assert t.health.state == "degraded" and "first byte after 150.0s" in t.reason
    assert feed(fresh("online"), "request_ok", now=1.0, latency=5.0).request_strikes == 0
    off = HealthPolicy(slow_request=None)
    assert (
        step(
            fresh("online"), HealthEvent("request_ok", latency=1e6), now=1.0, policy=off, rand=0.5
        ).health.request_strikes
        == 0
    )


# --- Backoff and scheduling --------------------------------------------------------------------


def test_offline_backs_off_exponentially_to_the_cap() -> None:
    h = feed(fresh("online"), "probe_refused", now=0.0, rand=0.0)
    assert (h.state, h.backoff_step, h.next_probe_at) == ("offline", 0, 5.0)
    delays = []
    now = h.next_probe_at
    for _ in range(6):
        h = feed(h, "probe_refused", now=now, rand=0.0)
        delays.append(h.next_probe_at - now)
        now = h.next_probe_at
    assert delays == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]


def test_online_probes_every_interval() -> None:
    h = feed(fresh("online"), "probe_ok", now=100.0, rand=0.99)
    assert h.next_probe_at == 105.0


@given(
    step_=st.integers(min_value=0, max_value=10_000),
    rand=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_backoff_bounds(step_: int, rand: float) -> None:
    for state in ("offline", "unauthorized", "foreign"):
        delay = probe_delay(state, step_, P, rand)  # type: ignore[arg-type]
        base = min(P.backoff_cap, P.interval * 2.0 ** min(step_, 62))
        assert base * (1 - P.jitter) <= delay <= base <= P.backoff_cap
        assert delay > 0
    assert probe_delay("online", step_, P, rand) == P.interval


def test_hint_reprobes_an_offline_service_at_once() -> None:
    h = fresh("offline")
    for i in range(4):
        h = feed(h, "probe_refused", now=float(i), rand=0.0)
    assert h.backoff_step == 4 and h.next_probe_at > 10.0
    t = step(h, HealthEvent("hint"), now=11.0, policy=P, rand=0.5)
    assert t.probe_now and not t.changed
    assert (t.health.next_probe_at, t.health.backoff_step) == (11.0, 0)


def test_a_request_that_succeeds_while_offline_is_a_hint() -> None:
    h = feed(fresh("offline"), "probe_refused", now=1.0)
    t = step(h, HealthEvent("request_ok"), now=2.0, policy=P, rand=0.5)
    assert t.probe_now and t.health.next_probe_at == 2.0 and t.health.state == "offline"


# --- Logging once ------------------------------------------------------------------------------


def test_a_change_is_reported_once() -> None:
    h = initial(0.0)
    assert (h.state, h.next_probe_at) == ("unknown", 0.0)
    t = step(h, HealthEvent("probe_ok"), now=1.0, policy=P, rand=0.5)
    assert (t.changed, t.reason, t.previous) == (True, "ready", "unknown")
    h = t.health
    for i in range(20):
        t = step(h, HealthEvent("probe_ok"), now=2.0 + i, policy=P, rand=0.5)
        assert not t.changed
        h = t.health
    assert h.since == 1.0


def test_online_busy_flips_are_quiet() -> None:
    t = step(fresh("online"), HealthEvent("request_busy"), now=1.0, policy=P, rand=0.5)
    assert (t.changed, t.quiet) == (True, True)
    t = step(t.health, HealthEvent("probe_ok"), now=2.0, policy=P, rand=0.5)
    assert (t.health.state, t.changed, t.quiet) == ("online", True, True)
    t = step(t.health, HealthEvent("probe_refused"), now=3.0, policy=P, rand=0.5)
    assert (t.changed, t.quiet) == (True, False)


def test_reasons_carry_the_detail() -> None:
    t = step(
        fresh("online"),
        HealthEvent("probe_unauthorized", "GET /api/models answered 401"),
        now=1.0,
        policy=P,
        rand=0.5,
    )
    assert t.reason == "GET /api/models answered 401"
    t = step(fresh("online"), HealthEvent("probe_routerd"), now=1.0, policy=P, rand=0.5)
    assert t.health.state == "foreign" and "loop" in t.reason


def test_admission_by_state() -> None:
    for state in STATES:
        verdict, _ = admit(fresh(state), 10.0, P)
        expected = "admit" if state in ("online", "busy") else "refuse"
        assert verdict == expected, state


# --- Any sequence --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    start=st.sampled_from(STATES),
    events=st.lists(
        st.tuples(
            st.sampled_from(INPUTS),
            st.floats(min_value=0.0, max_value=50.0),
            st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
            st.one_of(st.none(), st.floats(min_value=0.0, max_value=500.0)),
        ),
        max_size=40,
    ),
)
def test_any_sequence_keeps_the_invariants(
    start: HealthState, events: list[tuple[HealthInput, float, float, float | None]]
) -> None:
    h = fresh(start)
    now = 0.0
    for name, dt, rand, latency in events:
        now += dt
        t = step(h, HealthEvent(name, latency=latency), now=now, policy=P, rand=rand)
        assert t.changed == (t.health.state != h.state)
        assert 0 <= t.health.probe_strikes < P.probe_failures_to_trip
        assert 0 <= t.health.request_strikes < P.request_failures_to_trip
        assert (t.health.state == "degraded") == (t.health.degraded_by is not None)
        if name.startswith("probe_"):
            assert now < t.health.next_probe_at <= now + P.backoff_cap
        if name in (
            "request_unauthorized",
            "probe_unauthorized",
            "request_busy",
            "request_cancelled",
            "request_context_overflow",
            "request_client_error",
        ):
            assert t.health.state not in ("offline", "degraded") or t.health.state == h.state
        assert msgspec.json.decode(msgspec.json.encode(t.health), type=ServiceHealth) == t.health
        h = t.health
