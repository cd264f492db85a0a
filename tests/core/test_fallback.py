"""routerd.core.fallback: the step after each attempt, the budget, and ``incomplete``."""

from __future__ import annotations

from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.candidates import Candidate
from routerd.core.catalog import unknown_entry
from routerd.core.config import RoutingTimeoutsConfig
from routerd.core.fallback import (
    ErrorClass,
    Failed,
    FailedAfterFirstByte,
    FailedBeforeFirstByte,
    FallbackState,
    Finished,
    Incomplete,
    Outcome,
    StreamError,
    Succeeded,
    Timeouts,
    TryAttempt,
    advance,
    first_byte_deadline,
    health_input,
    start,
)
from routerd.core.health import INPUTS
from routerd.core.select import Attempt, FallbackLevel, RoutePlan

T = Timeouts(connect=5, first_token=60, idle=30, overall=100)


def attempt(service: str, model: str, budget: int = 8000, level: int = 0) -> Attempt:
    c = Candidate(
        service=service,
        model=model,
        entry=unknown_entry(model, context_length=budget + 1000),
        known=False,
        context_length=budget + 1000,
    )
    return Attempt(
        candidate=c,
        level=FallbackLevel(level),
        context_budget_tokens=budget,
        window_tokens=budget + 1000,
        reason="test",
    )


def make_plan(*attempts: Attempt, floor: int | None = 2000) -> RoutePlan:
    return RoutePlan(
        category="coding",
        category_source="classified",
        attempts=attempts,
        prompt_tokens=6000,
        min_prompt_tokens=floor,
        reserve_tokens=1000,
    )


PLAN = make_plan(attempt("a", "m1"), attempt("a", "m2"), attempt("b", "m1"), attempt("c", "m3"))


def begin(plan: RoutePlan = PLAN, now: float = 0.0) -> tuple[FallbackState, TryAttempt]:
    state, step = start(plan, started_at=0.0, now=now, timeouts=T)
    assert isinstance(step, TryAttempt)
    return state, step


def fail_with(
    state: FallbackState, error: ErrorClass, now: float = 1.0
) -> tuple[FallbackState, object]:
    return advance(state, FailedBeforeFirstByte(error, "x"), now=now, timeouts=T)


def label(step: object) -> str:
    assert isinstance(step, TryAttempt), step
    return step.attempt.candidate.label


def test_start_tries_the_first_attempt_with_the_budget_deadline() -> None:
    state, step = begin()
    assert (label(step), step.number, step.deadline) == ("a/m1", 1, 100.0)
    assert state.current == PLAN.attempts[0]


def test_an_empty_plan_fails_at_once() -> None:
    _, step = start(make_plan(), started_at=0, now=0, timeouts=T)
    assert isinstance(step, Failed) and step.code == "all_failed"


def test_success_and_failure_after_the_first_byte_end_the_request() -> None:
    state, _ = begin()
    done, step = advance(state, Succeeded(), now=5, timeouts=T)
    assert step == Finished(PLAN.attempts[0]) and done.current is None and not done.pending
    _, step = advance(
        state, FailedAfterFirstByte("timeout_idle", "no chunk for 30 s"), now=9, timeouts=T
    )
    assert isinstance(step, Incomplete)
    assert step.finish_reason == "incomplete"
    assert step.reason == "a/m1 stopped: timeout_idle: no chunk for 30 s"


def test_after_the_first_byte_nothing_is_retried_even_with_attempts_left() -> None:
    state, _ = begin()
    done, step = advance(state, FailedAfterFirstByte("connection_lost"), now=1, timeouts=T)
    assert isinstance(step, Incomplete)
    with pytest.raises(ValueError):
        advance(done, Succeeded(), now=2, timeouts=T)


@pytest.mark.parametrize("error", ["refused", "timeout_connect", "unauthorized", "busy"])
def test_service_level_errors_skip_the_rest_of_that_service(error: ErrorClass) -> None:
    state, _ = begin()
    state, step = fail_with(state, error)
    assert label(step) == "b/m1"
    assert step.number == 2  # a fallback: the ``selected`` event is sent again


@pytest.mark.parametrize(
    "error",
    [
        "timeout_first_token",
        "http_5xx",
        "http_4xx",
        "bad_response",
        "empty_stream",
        "queue_timeout",
    ],
)
def test_model_level_errors_skip_only_that_model_on_that_service(error: ErrorClass) -> None:
    state, _ = begin()
    state, step = fail_with(state, error)
    assert label(step) == "a/m2"


def test_cancellation_stops_without_fallback() -> None:
    state, _ = begin()
    state, step = fail_with(state, "cancelled")
    assert isinstance(step, Failed) and step.code == "cancelled"
    assert state.pending == () and len(step.failures) == 1


def test_context_overflow_retries_the_same_model_once_with_a_smaller_budget() -> None:
    state, _ = begin()
    state, step = fail_with(state, "context_overflow")
    assert label(step) == "a/m1"
    assert isinstance(step, TryAttempt)
    assert step.attempt.level == FallbackLevel.REDUCED_CONTEXT
    assert step.attempt.context_budget_tokens == 6000  # 8000 * 0.75
    assert "overflowed" in step.attempt.reason
    state, step = fail_with(state, "context_overflow")
    assert label(step) == "a/m2"  # once only


def test_overflow_budget_never_goes_below_what_compaction_reaches() -> None:
    plan = make_plan(attempt("a", "m1", budget=2400), attempt("b", "m2"), floor=2000)
    state, _ = begin(plan)
    state, step = fail_with(state, "context_overflow")
    assert isinstance(step, TryAttempt)
    assert step.attempt.context_budget_tokens == 2000
    state, step = fail_with(state, "context_overflow")
    assert label(step) == "b/m2"


def test_overflow_without_compaction_moves_on() -> None:
    state, _ = begin(make_plan(attempt("a", "m1"), attempt("b", "m2"), floor=None))
    _, step = fail_with(state, "context_overflow")
    assert label(step) == "b/m2"


def test_every_attempt_failing_is_a_failure_naming_each() -> None:
    state, _ = begin()
    errors: list[ErrorClass] = ["http_5xx", "timeout_first_token", "refused", "empty_stream"]
    step: object = None
    for e in errors:
        state, step = fail_with(state, e)
    assert isinstance(step, Failed) and step.code == "all_failed"
    assert [r.error for r in step.failures] == errors
    assert "a/m1: http_5xx (x)" in step.reason and "c/m3: empty_stream" in step.reason


def test_budget_exhaustion_stops_before_the_next_attempt() -> None:
    state, _ = begin()
    state, step = fail_with(state, "http_5xx", now=99.9)
    assert label(step) == "a/m2"
    _, step = fail_with(state, "http_5xx", now=100.0)
    assert isinstance(step, Failed) and step.code == "budget_exhausted"
    assert "100 s budget" in step.reason and "a/m2: http_5xx" in step.reason


def test_budget_counts_from_the_request_arrival() -> None:
    _, step = start(PLAN, started_at=10.0, now=111.0, timeouts=T)
    assert isinstance(step, Failed) and step.code == "budget_exhausted"
    assert "nothing tried yet" in step.reason


def test_first_byte_deadline_is_capped_by_the_budget() -> None:
    assert first_byte_deadline(T, started_at=0.0, sent_at=10.0) == 70.0
    assert first_byte_deadline(T, started_at=0.0, sent_at=50.0) == 100.0


def test_timeouts_from_config() -> None:
    cfg = RoutingTimeoutsConfig(connect=1, first_token=2, idle=3, overall=4)
    assert Timeouts.from_config(cfg) == Timeouts(connect=1, first_token=2, idle=3, overall=4)
    assert Timeouts.from_config(RoutingTimeoutsConfig()) == Timeouts()


def test_every_error_maps_to_a_health_input_or_none() -> None:
    for e in (*get_args(ErrorClass), *get_args(StreamError)):
        got = health_input(e)
        assert got is None or got in INPUTS
    assert health_input("refused") == "request_refused"
    assert health_input("cancelled") == "request_cancelled"
    assert health_input("context_overflow") == "request_context_overflow"
    assert health_input("queue_timeout") is None


_OUTCOMES = st.one_of(
    st.builds(Succeeded),
    st.builds(FailedBeforeFirstByte, st.sampled_from(get_args(ErrorClass))),
    st.builds(FailedAfterFirstByte, st.sampled_from(get_args(StreamError))),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_OUTCOMES, min_size=1, max_size=12), st.lists(st.floats(0, 30), max_size=12))
def test_any_outcome_sequence_terminates_within_the_plan(
    outcomes: list[Outcome], gaps: list[float]
) -> None:
    state, step = start(PLAN, started_at=0.0, now=0.0, timeouts=T)
    now, tries = 0.0, 1
    for i, outcome in enumerate(outcomes):
        if not isinstance(step, TryAttempt):
            break
        now += gaps[i] if i < len(gaps) else 1.0
        first_byte_seen = not isinstance(outcome, FailedBeforeFirstByte)
        state, step = advance(state, outcome, now=now, timeouts=T)
        if isinstance(step, TryAttempt):
            tries += 1
            assert not first_byte_seen  # never a fallback after the first byte
            assert now < step.deadline
            assert step.number == tries
    # At most every attempt once, plus one overflow retry per (service, model).
    assert tries <= len(PLAN.attempts) * 2
    if isinstance(step, Incomplete):
        assert step.finish_reason == "incomplete"
