"""Fallback decisions: after an attempt ends, what happens next.

The shell runs a ``RoutePlan``'s attempts one at a time: ``start`` gives the first step, and
after each attempt ``advance`` takes its outcome and gives the next step.

Invariants:

* Pure: time is a parameter (``started_at``, when the request arrived; ``now``). Each call
  returns a new ``FallbackState``; nothing is mutated.
* Fallback happens only before the first byte of the answer reached the client. A failure
  after it ends the stream with finish reason ``incomplete`` and why (``Incomplete``); it is
  never retried, since a second model's answer would not continue the first one's.
* A client's cancellation stops at once, never falls back.
* The overall budget (``Timeouts.overall``) bounds the time from the request's arrival to the
  first byte, across every attempt and queue wait; once the answer streams, only the idle
  timeout applies. No attempt is started at or after the budget's end.
* A connection refused, a connect timeout, a 401/403 or a full server queue skips the rest of
  that service's attempts; other errors skip only that (service, model). A context overflow
  is retried once on the same model with a smaller budget, when the context can be compacted.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from routerd.core.config import RoutingTimeoutsConfig
from routerd.core.health import HealthInput
from routerd.core.select import Attempt, FallbackLevel, RoutePlan

__all__ = [
    "ErrorClass",
    "StreamError",
    "Timeouts",
    "Succeeded",
    "FailedBeforeFirstByte",
    "FailedAfterFirstByte",
    "Outcome",
    "AttemptRecord",
    "FallbackState",
    "TryAttempt",
    "Finished",
    "Incomplete",
    "Failed",
    "Step",
    "start",
    "advance",
    "first_byte_deadline",
    "health_input",
    "OVERFLOW_SHRINK",
]

#: Failures before the first byte reached the client.
ErrorClass = Literal[
    "refused",  # connection refused / host unreachable
    "timeout_connect",
    "timeout_first_token",
    "http_5xx",
    "http_4xx",  # any other client error (a model the server no longer has, ...)
    "unauthorized",  # 401/403
    "busy",  # 429, or Ollama's 503 "server busy"
    "context_overflow",  # a 400 saying the prompt is longer than the window
    "bad_response",  # an answer that cannot be read
    "empty_stream",  # the stream ended without a single token
    "queue_timeout",  # routerd's own queue did not grant the slot in time
    "cancelled",  # the client cancelled
]

#: Failures after the first byte.
StreamError = Literal[
    "timeout_idle", "connection_lost", "server_error", "bad_response", "cancelled"
]

#: A retry after a context overflow gets this fraction of the failed attempt's budget.
OVERFLOW_SHRINK: Final = 0.75

_SKIP_SERVICE: Final = frozenset({"refused", "timeout_connect", "unauthorized", "busy"})


class Timeouts(msgspec.Struct, frozen=True, kw_only=True):
    """Seconds: to connect; from sending to the first byte (generous: a model load can take a
    minute); between chunks; and from the request's arrival to the first byte overall."""

    connect: float = 5.0
    first_token: float = 120.0
    idle: float = 60.0
    overall: float = 300.0

    @classmethod
    def from_config(cls, cfg: RoutingTimeoutsConfig) -> Timeouts:
        return cls(
            connect=cfg.connect, first_token=cfg.first_token, idle=cfg.idle, overall=cfg.overall
        )


class Succeeded(msgspec.Struct, frozen=True):
    """The answer streamed to its end."""


class FailedBeforeFirstByte(msgspec.Struct, frozen=True):
    error: ErrorClass
    detail: str = ""


class FailedAfterFirstByte(msgspec.Struct, frozen=True):
    error: StreamError
    detail: str = ""


Outcome = Succeeded | FailedBeforeFirstByte | FailedAfterFirstByte


class AttemptRecord(msgspec.Struct, frozen=True):
    """One failed attempt, for the failure message and the audit log."""

    attempt: Attempt
    error: ErrorClass
    detail: str = ""

    def describe(self) -> str:
        more = f" ({self.detail})" if self.detail else ""
        return f"{self.attempt.candidate.label}: {self.error}{more}"


class FallbackState(msgspec.Struct, frozen=True, kw_only=True):
    """Where a request is in its plan: the attempt running, those left, those failed."""

    plan: RoutePlan
    started_at: float
    current: Attempt | None = None
    number: int = 0  # 1-based number of ``current``
    pending: tuple[Attempt, ...] = ()
    failures: tuple[AttemptRecord, ...] = ()
    shrunk: frozenset[tuple[str, str]] = frozenset()  # retried after an overflow already


class TryAttempt(msgspec.Struct, frozen=True):
    """Run ``attempt``. ``number`` > 1 is a fallback: send the ``selected`` event again.
    ``deadline`` is the budget's end: no queue wait or first byte may last beyond it."""

    attempt: Attempt
    number: int
    deadline: float


class Finished(msgspec.Struct, frozen=True):
    """The answer is complete."""

    attempt: Attempt


class Incomplete(msgspec.Struct, frozen=True):
    """End the stream with finish reason ``incomplete`` and ``reason``."""

    attempt: Attempt
    reason: str
    finish_reason: Literal["incomplete"] = "incomplete"


class Failed(msgspec.Struct, frozen=True):
    """Nothing reached the client and nothing more will be tried."""

    code: Literal["cancelled", "budget_exhausted", "all_failed"]
    reason: str
    failures: tuple[AttemptRecord, ...] = ()


Step = TryAttempt | Finished | Incomplete | Failed


def first_byte_deadline(timeouts: Timeouts, started_at: float, sent_at: float) -> float:
    """When an attempt whose request was sent at ``sent_at`` must have its first byte."""
    return min(sent_at + timeouts.first_token, started_at + timeouts.overall)


def start(
    plan: RoutePlan, *, started_at: float, now: float, timeouts: Timeouts
) -> tuple[FallbackState, Step]:
    """The first step of ``plan`` for a request that arrived at ``started_at``."""
    state = FallbackState(plan=plan, started_at=started_at, pending=plan.attempts)
    return _next(state, now, timeouts)


def advance(
    state: FallbackState, outcome: Outcome, *, now: float, timeouts: Timeouts
) -> tuple[FallbackState, Step]:
    """The step after the current attempt ended with ``outcome``.

    Raises ValueError when no attempt is running (after a final step).
    """
    attempt = state.current
    if attempt is None:
        raise ValueError("no attempt is running")
    if isinstance(outcome, Succeeded):
        return _done(state), Finished(attempt)
    if isinstance(outcome, FailedAfterFirstByte):
        why = outcome.error + (f": {outcome.detail}" if outcome.detail else "")
        return _done(state), Incomplete(attempt, f"{attempt.candidate.label} stopped: {why}")
    record = AttemptRecord(attempt, outcome.error, outcome.detail)
    failures = (*state.failures, record)
    if outcome.error == "cancelled":
        done = msgspec.structs.replace(_done(state), failures=failures)
        return done, Failed("cancelled", "the client cancelled the request", failures)
    c = attempt.candidate
    if outcome.error in _SKIP_SERVICE:
        pending = tuple(a for a in state.pending if a.service != c.service)
    else:
        pending = tuple(a for a in state.pending if a.candidate.key != c.key)
    shrunk = state.shrunk
    if outcome.error == "context_overflow":
        retry = _smaller(state, attempt)
        if retry is not None:
            pending = (retry, *pending)
            shrunk = shrunk | {c.key}
    state = msgspec.structs.replace(
        state, current=None, pending=pending, failures=failures, shrunk=shrunk
    )
    return _next(state, now, timeouts)


def _done(state: FallbackState) -> FallbackState:
    return msgspec.structs.replace(state, current=None, pending=())


def _smaller(state: FallbackState, attempt: Attempt) -> Attempt | None:
    """The same attempt with a smaller budget after an overflow, once, if compaction can
    still reach it."""
    floor = state.plan.min_prompt_tokens
    budget = attempt.context_budget_tokens
    if floor is None or attempt.candidate.key in state.shrunk or budget <= floor:
        return None
    smaller = max(floor, int(budget * OVERFLOW_SHRINK))
    return msgspec.structs.replace(
        attempt,
        level=FallbackLevel.REDUCED_CONTEXT,
        context_budget_tokens=smaller,
        reason=f"the prompt overflowed the window at {budget} tokens: compacted to {smaller}",
    )


def _next(state: FallbackState, now: float, timeouts: Timeouts) -> tuple[FallbackState, Step]:
    deadline = state.started_at + timeouts.overall
    if not state.pending:
        done = _done(state)
        if not state.failures:
            return done, Failed("all_failed", "the plan has no attempts")
        tried = "; ".join(r.describe() for r in state.failures)
        return done, Failed("all_failed", f"every model failed: {tried}", state.failures)
    if now >= deadline:
        tried = "; ".join(r.describe() for r in state.failures) or "nothing tried yet"
        reason = f"no answer within the {timeouts.overall:g} s budget ({tried})"
        return _done(state), Failed("budget_exhausted", reason, state.failures)
    attempt, *rest = state.pending
    number = state.number + 1
    new = msgspec.structs.replace(state, current=attempt, number=number, pending=tuple(rest))
    return new, TryAttempt(attempt, number, deadline)


_HEALTH: Final[dict[str, HealthInput | None]] = {
    "refused": "request_refused",
    "timeout_connect": "request_timeout",
    "timeout_first_token": "request_timeout",
    "http_5xx": "request_5xx",
    "http_4xx": "request_client_error",
    "unauthorized": "request_unauthorized",
    "busy": "request_busy",
    "context_overflow": "request_context_overflow",
    "bad_response": "request_5xx",
    "empty_stream": "request_5xx",
    "queue_timeout": None,  # routerd's own queue: says nothing about the server
    "cancelled": "request_cancelled",
    "timeout_idle": "request_timeout",
    "connection_lost": "request_5xx",
    "server_error": "request_5xx",
}


def health_input(error: ErrorClass | StreamError) -> HealthInput | None:
    """What a failed attempt tells the service's health machine (None: nothing)."""
    return _HEALTH[error]
