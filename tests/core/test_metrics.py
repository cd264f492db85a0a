"""The stats book: counters per (service, model), fallbacks by level, bounds, the ring."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.metrics import MAX_LABELS, OTHER, MetricsBook
from routerd_client.protocol_stats import ATTEMPT_OUTCOMES


def test_an_answer_and_a_fallback_are_counted_per_model() -> None:
    book = MetricsBook()
    book.attempt_started("ollama", "qwen")
    book.attempt_finished("ollama", "qwen", now=1.0, outcome="error", error="refused",
                          fallback_level=0, queue_wait_s=0.0)  # fmt: skip
    book.attempt_started("llamacpp", "qwen-gguf")
    book.attempt_finished(
        "llamacpp", "qwen-gguf", now=2.0, outcome="ok", fallback_level=1, category="coding",
        prompt_tokens=100, completion_tokens=40, queue_wait_s=0.25, first_token_s=0.5,
        total_s=2.5, tokens_per_second=20.0,
    )
    book.route_finished("ok", now=2.0, category="coding")
    first, second = book.views()  # sorted by service: llamacpp, ollama
    assert (first.service, first.model) == ("llamacpp", "qwen-gguf")
    assert (first.requests, first.ok, first.errors, first.in_flight) == (1, 1, 0, 0)
    assert first.fallback_levels == {"1": 1}
    assert (first.prompt_tokens, first.completion_tokens) == (100, 40)
    assert first.first_token.p50 == pytest.approx(0.5, rel=0.01)
    assert first.duration.count == 1 and first.duration.max == 2.5
    assert first.queue_wait.max == 0.25
    assert first.tokens_per_second.p50 == pytest.approx(20.0, rel=0.01)
    assert (second.errors, second.error_classes, second.fallback_levels) == (1, {"refused": 1}, {})
    assert second.duration.count == 0  # a failure has no answer duration
    totals = book.totals()
    assert totals.total == 1 and totals.results["ok"] == 1 and totals.categories == {"coding": 1}
    recent = book.recent(10)
    assert [(r.service, r.outcome, r.fallback_level) for r in recent] == [
        ("ollama", "error", 0), ("llamacpp", "ok", 1)]  # fmt: skip
    assert recent[1].queue_wait_s == 0.25 and recent[1].category == "coding"


def test_an_incomplete_answer_counts_its_level_and_error_but_no_duration() -> None:
    book = MetricsBook()
    book.attempt_started("s", "m")
    book.attempt_finished("s", "m", now=0.0, outcome="incomplete", error="timeout_idle",
                          fallback_level=2, first_token_s=0.1, total_s=5.0)  # fmt: skip
    (v,) = book.views()
    assert v.incomplete == 1 and v.error_classes == {"timeout_idle": 1}
    assert v.fallback_levels == {"2": 1}
    assert v.first_token.count == 1 and v.duration.count == 0


def test_queue_timeouts_count_their_wait() -> None:
    book = MetricsBook()
    book.queue_timed_out("s", "m", 3.0)
    (v,) = book.views()
    assert v.queue_timeouts == 1 and v.queue_wait.max == 3.0 and v.requests == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(ATTEMPT_OUTCOMES)), max_size=60))
def test_in_flight_is_started_minus_ended_and_never_negative(
    steps: list[tuple[bool, str]],
) -> None:
    book = MetricsBook()
    started = ended = 0
    for start, outcome in steps:
        if start:
            book.attempt_started("s", "m")
            started += 1
        else:
            book.attempt_finished("s", "m", now=0.0, outcome=outcome)
            ended += 1
    views = book.views()
    if not views:
        assert not steps
        return
    (v,) = views
    assert v.requests == started
    assert v.ok + v.errors + v.incomplete + v.cancelled == ended
    assert v.in_flight == max(0, started - ended)


def test_series_are_bounded() -> None:
    book = MetricsBook(max_series=3)
    for i in range(10):
        book.attempt_started("s", f"model-{i}")
    keys = [(v.service, v.model) for v in book.views()]
    assert len(keys) == 3
    assert (OTHER, OTHER) in keys
    other = next(v for v in book.views() if v.model == OTHER)
    assert other.requests == 8  # every attempt is still counted


def test_labels_are_bounded() -> None:
    book = MetricsBook()
    for i in range(MAX_LABELS + 10):
        book.attempt_finished("s", "m", now=0.0, outcome="error", error=f"e{i}")
        book.route_finished("failed", now=0.0, category=f"c{i}")
    (v,) = book.views()
    assert len(v.error_classes) == MAX_LABELS
    assert v.error_classes[OTHER] == 11
    assert len(book.totals().categories) == MAX_LABELS


def test_the_ring_keeps_the_latest() -> None:
    book = MetricsBook(recent=5)
    for i in range(12):
        book.attempt_finished("s", "m", now=float(i), outcome="ok")
    assert [r.at for r in book.recent(100)] == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert [r.at for r in book.recent(2)] == [10.0, 11.0]
    assert book.recent(0) == []


def test_a_route_that_reached_no_model_is_listed_with_its_reason() -> None:
    book = MetricsBook()
    book.route_finished("failed", now=5.0, category="coding", reason="all_failed")
    book.route_finished("ok", now=6.0)  # answered: its attempts are listed, not the route
    (r,) = book.recent(10)
    assert (r.service, r.outcome, r.error) == (None, "failed", "all_failed")


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [
        ("attempt_finished", {"outcome": "great"}),
        ("attempt_finished", {"outcome": "ok", "total_s": -1.0}),
        ("attempt_finished", {"outcome": "ok", "tokens_per_second": float("nan")}),
        ("route_finished", {"result": "meh"}),
    ],
)
def test_nonsense_is_a_value_error(call: str, kwargs: dict[str, object]) -> None:
    book = MetricsBook()
    with pytest.raises(ValueError):
        if call == "route_finished":
            book.route_finished(now=0.0, **kwargs)  # type: ignore[arg-type]
        else:
            book.attempt_finished("s", "m", now=0.0, **kwargs)  # type: ignore[arg-type]
    assert book.totals().total == 0
    assert all(v.ok == 0 for v in book.views())
