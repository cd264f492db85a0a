"""The bounded-memory histogram: percentiles within the stated error, exact counts, bounds."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.histogram import SECONDS_BUCKETS, Histogram

# Log-uniform values over the histogram's accurate range: 1 us to 100,000 s.
log_values = st.floats(min_value=-6.0, max_value=5.0).map(lambda e: 10.0**e)


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(log_values, min_size=1, max_size=300),
    q=st.floats(min_value=0.0, max_value=1.0),
    alpha=st.sampled_from([0.005, 0.01, 0.02, 0.05]),
)
def test_quantiles_are_within_the_stated_relative_error(
    values: list[float], q: float, alpha: float
) -> None:
    h = Histogram(alpha=alpha)
    for v in values:
        h.record(v)
    want = exact(values, q)
    got = h.quantile(q)
    assert got is not None
    assert abs(got - want) <= alpha * want * (1 + 1e-9)
    assert h.minimum <= got <= h.maximum


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(log_values, min_size=1, max_size=300),
    qs=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=8),
)
def test_several_quantiles_in_one_pass(values: list[float], qs: list[float]) -> None:
    h = Histogram()
    for v in values:
        h.record(v)
    for q, got in zip(qs, h.quantiles(qs), strict=True):
        want = exact(values, q)
        assert got is not None
        assert abs(got - want) <= h.alpha * want * (1 + 1e-9)


@settings(max_examples=100, deadline=None)
@given(
    small=st.lists(st.floats(min_value=0.0, max_value=9.9e-7), min_size=1, max_size=50),
    large=st.lists(log_values, max_size=50),
    q=st.floats(min_value=0.0, max_value=1.0),
)
def test_values_below_the_range_are_within_min_value(
    small: list[float], large: list[float], q: float
) -> None:
    h = Histogram()
    for v in small + large:
        h.record(v)
    want = exact(small + large, q)
    got = h.quantile(q)
    assert got is not None
    if want < h.min_value:
        assert abs(got - want) < h.min_value
    else:
        assert abs(got - want) <= h.alpha * want * (1 + 1e-9)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(min_value=0.0, max_value=400.0), max_size=200))
def test_counts_sum_and_fixed_buckets_are_exact(values: list[float]) -> None:
    h = Histogram(SECONDS_BUCKETS)
    for v in values:
        h.record(v)
    assert h.count == len(values)
    assert h.total == pytest.approx(sum(values))
    cumulative = h.cumulative()
    assert [b for b, _ in cumulative] == [*SECONDS_BUCKETS, math.inf]
    for bound, n in cumulative:
        assert n == sum(1 for v in values if v <= bound)


@settings(max_examples=100, deadline=None)
@given(a=st.lists(log_values, max_size=100), b=st.lists(log_values, max_size=100),
       q=st.floats(min_value=0.0, max_value=1.0))  # fmt: skip
def test_merging_is_recording_both(a: list[float], b: list[float], q: float) -> None:
    left, right, both = Histogram(), Histogram(), Histogram()
    for v in a:
        left.record(v)
        both.record(v)
    for v in b:
        right.record(v)
        both.record(v)
    left.merge(right)
    assert left.count == both.count
    assert left.quantile(q) == both.quantile(q)
    assert left.cumulative() == both.cumulative()


def test_memory_is_bounded_whatever_is_recorded() -> None:
    h = Histogram(alpha=0.01, min_value=1e-6, max_value=1e5)
    bound = math.ceil(math.log(1e5 / 1e-6) / math.log(h.gamma)) + 2
    for i in range(-80, 80):
        h.record(10.0 ** (i / 10))  # from 1e-8 s to 1e8 s: beyond both ends
    h.record(0.0)
    assert h.buckets_in_use <= bound
    assert h.quantile(1.0) == 10.0 ** 7.9  # the maximum stays exact
    assert h.quantile(0.0) == 0.0
    for _ in range(10_000):
        h.record(1.0)
    assert h.buckets_in_use <= bound


def test_an_empty_histogram_has_no_figures() -> None:
    h = Histogram()
    assert h.quantile(0.5) is None and h.mean is None and h.count == 0
    assert h.cumulative()[-1] == (math.inf, 0)


@pytest.mark.parametrize("bad", [-0.001, math.nan, math.inf])
def test_only_finite_non_negative_values_are_recorded(bad: float) -> None:
    h = Histogram()
    with pytest.raises(ValueError):
        h.record(bad)
    assert h.count == 0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Histogram(alpha=0.0)
    with pytest.raises(ValueError):
        Histogram(min_value=1.0, max_value=1.0)
    with pytest.raises(ValueError):
        Histogram(bounds=(1.0, 0.5))
    with pytest.raises(ValueError):
        Histogram().quantile(1.5)
    with pytest.raises(ValueError):
        Histogram().merge(Histogram(alpha=0.02))


def test_a_known_distribution() -> None:
    h = Histogram()
    for ms in range(1, 1001):  # 1 ms .. 1 s, uniform
        h.record(ms / 1000)
    assert h.quantile(0.5) == pytest.approx(0.5, rel=0.01)
    assert h.quantile(0.99) == pytest.approx(0.99, rel=0.01)
    assert h.mean == pytest.approx(0.5005)
