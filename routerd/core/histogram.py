"""A bounded-memory histogram: percentiles with a stated relative error, and fixed buckets for
the Prometheus exposition.

Percentiles come from logarithmic buckets in the manner of DDSketch (Masson, Rim and Lee,
VLDB 2019): bucket ``k`` holds the values in ``(gamma**(k-1), gamma**k]`` with
``gamma = (1 + alpha) / (1 - alpha)``, and a quantile is reported as the bucket's centre
``2 * gamma**k / (gamma + 1)``.

Invariants:

* Relative error: for ``0 <= q <= 1`` let ``x`` be the exact quantile, the recorded value of
  0-based rank ``floor(q * (count - 1))`` in sorted order. If ``min_value <= x <= max_value``,
  ``quantile(q)`` is within ``alpha * x`` of ``x``; if ``x < min_value`` it is within
  ``min_value`` of ``x`` (those values share one bucket, reported as the smallest recorded
  value). ``quantile(0)`` and ``quantile(1)`` are the exact minimum and
  maximum, and every answer lies between them.
* Bounded memory: the buckets are one array covering only the keys between the smallest and
  the largest value seen, and never more than ``ceil(log(max_value / min_value) /
  log(gamma)) + 2`` of them (about 1,270 for the defaults: 1 µs to 100,000 s at 1 %), however
  many values are recorded. Values above ``max_value`` are counted in the last bucket.
* ``count``, ``total``, ``minimum``, ``maximum`` and the fixed-bucket counts are exact.
* Only finite, non-negative values are recorded (``ValueError`` otherwise): latencies,
  waits and rates.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from typing import Final

__all__ = [
    "Histogram",
    "DEFAULT_ALPHA",
    "SECONDS_BUCKETS",
    "RATE_BUCKETS",
]

#: Relative error of the percentiles (1 %).
DEFAULT_ALPHA: Final = 0.01

#: Upper bounds (seconds) of the exposed buckets of waits and latencies: from a queue that did
#: not wait to a model that took minutes to load.
SECONDS_BUCKETS: Final[tuple[float, ...]] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

#: Upper bounds of the exposed buckets of generation speed (tokens per second).
RATE_BUCKETS: Final[tuple[float, ...]] = (
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 500.0, 1000.0,
)  # fmt: skip


class Histogram:
    """Counts of recorded values (see the module invariants). Not thread-safe; one owner."""

    __slots__ = (
        "_base",
        "_counts",
        "_fixed",
        "_inv_log_gamma",
        "_low",
        "_max_key",
        "_min_key",
        "alpha",
        "bounds",
        "count",
        "gamma",
        "max_value",
        "maximum",
        "min_value",
        "minimum",
        "total",
    )

    def __init__(
        self,
        bounds: Sequence[float] = SECONDS_BUCKETS,
        *,
        alpha: float = DEFAULT_ALPHA,
        min_value: float = 1e-6,
        max_value: float = 1e5,
    ) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be within (0, 1), not {alpha}")
        if not 0.0 < min_value < max_value < math.inf:
            raise ValueError("need 0 < min_value < max_value < inf")
        if list(bounds) != sorted(set(bounds)) or any(not math.isfinite(b) for b in bounds):
            raise ValueError("bounds must be finite, strictly increasing")
        self.alpha = alpha
        self.gamma = (1.0 + alpha) / (1.0 - alpha)
        self._inv_log_gamma = 1.0 / math.log(self.gamma)
        self.min_value = min_value
        self.max_value = max_value
        self._min_key = self._key(min_value)
        self._max_key = self._key(max_value)
        self.bounds: tuple[float, ...] = tuple(bounds)
        self._fixed = array("Q", bytes(8 * (len(self.bounds) + 1)))
        self._counts = array("Q")  # _counts[i] is bucket _base + i
        self._base = 0
        self._low = 0  # values below min_value
        self.count = 0
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf

    def _key(self, value: float) -> int:
        return math.ceil(math.log(value) * self._inv_log_gamma)

    def _centre(self, key: int) -> float:
        return 2.0 * self.gamma**key / (self.gamma + 1.0)

    # --- recording ---------------------------------------------------------------------------

    def record(self, value: float, n: int = 1) -> None:
        """Count ``value`` ``n`` times. ValueError for a negative, NaN or infinite value."""
        if not (value >= 0.0 and math.isfinite(value)):
            raise ValueError(f"cannot record {value!r}: values are finite and not negative")
        if n < 1:
            raise ValueError("n must be at least 1")
        self.count += n
        self.total += value * n
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        self._fixed[bisect_left(self.bounds, value)] += n
        if value < self.min_value:
            self._low += n
            return
        key = min(self._key(value), self._max_key)
        self._grow(key)
        self._counts[key - self._base] += n

    def _grow(self, key: int) -> None:
        counts = self._counts
        if not counts:
            self._base = key
            counts.append(0)
            return
        if key < self._base:
            self._counts = array("Q", bytes(8 * (self._base - key))) + counts
            self._base = key
        elif key >= self._base + len(counts):
            counts.extend(array("Q", bytes(8 * (key - self._base - len(counts) + 1))))

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s values (same ``alpha``, range and bounds; ValueError otherwise)."""
        same = (other.alpha, other.min_value, other.max_value, other.bounds)
        if same != (self.alpha, self.min_value, self.max_value, self.bounds):
            raise ValueError("histograms with different parameters cannot be merged")
        if other.count == 0:
            return
        self.count += other.count
        self.total += other.total
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        self._low += other._low
        for i, n in enumerate(other._fixed):
            self._fixed[i] += n
        if other._counts:
            self._grow(other._base)
            self._grow(other._base + len(other._counts) - 1)
            offset = other._base - self._base
            for i, n in enumerate(other._counts):
                if n:
                    self._counts[offset + i] += n

    # --- reading -----------------------------------------------------------------------------

    @property
    def buckets_in_use(self) -> int:
        """Buckets held now (the memory bound of the module docstring)."""
        return len(self._counts) + 1

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (``0 <= q <= 1``) within the stated error; None if empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """:meth:`quantile` of each of ``qs``, in one pass over the buckets."""
        if any(not 0.0 <= q <= 1.0 for q in qs):
            raise ValueError(f"quantiles must be within [0, 1], not {list(qs)}")
        if self.count == 0:
            return [None] * len(qs)
        ranks = sorted((math.floor(q * (self.count - 1)), i) for i, q in enumerate(qs))
        out: list[float | None] = [None] * len(qs)
        pending = iter(ranks)
        rank, index = next(pending)
        seen = self._low
        key = -1  # the bucket being passed; -1: values below min_value
        counts = self._counts
        while True:
            if rank == 0:
                value = self.minimum
            elif rank == self.count - 1:
                value = self.maximum
            else:
                while seen <= rank and key + 1 < len(counts):
                    key += 1
                    seen += counts[key]
                if key < 0 or seen <= rank:
                    value = self.minimum if key < 0 else self.maximum
                else:
                    value = self._centre(self._base + key)
            out[index] = min(max(value, self.minimum), self.maximum)
            try:
                rank, index = next(pending)
            except StopIteration:
                return out

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, values <= bound)`` for each fixed bound, then ``(inf, count)``:
        the buckets of a Prometheus histogram, exact."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self._fixed, strict=True):
            running += n
            out.append((bound, running))
        return out
