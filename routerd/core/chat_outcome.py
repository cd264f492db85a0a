"""How one chat call ended: failure kinds for HTTP error answers, and the figures of a success.

Invariants:

* ``classify_failure`` never raises and agrees with ``outcomes.classify_response`` (the health
  view of the same answer): 401/403 are ``unauthorized``; 429, Ollama's and Kobold.cpp's busy 503s and
  llama.cpp's 503 "Loading model" are ``busy`` (up, but not serving now: try another
  service); a context overflow is ``context_overflow`` whatever the status; other 4xx (404 for
  a model the server does not have included) are ``http_4xx``; the rest ``http_5xx``.
* ``fallback_outcome`` maps every ``StreamError`` kind onto ``routerd.core.fallback``'s
  outcomes, so the route executor never matches on kinds itself.
* ``StreamTally`` is pure: every time is a parameter (the shell passes ``trio.current_time()``).
  Its first token is the first content event (``CONTENT_EVENTS``), not the first byte: a
  server may send a role-only chunk long before it has generated anything.
"""

from __future__ import annotations

from typing import Final

from routerd.core.chat_decode import error_message
from routerd.core.fallback import (
    ErrorClass,
    FailedAfterFirstByte,
    FailedBeforeFirstByte,
)
from routerd.core.fallback import StreamError as LateError
from routerd.core.identify import is_loading_body
from routerd.core.jsonpick import decode_json
from routerd.core.outcomes import is_context_overflow, is_queue_full
from routerd.core.streams import (
    CONTENT_EVENTS,
    Done,
    Finish,
    ModelReported,
    StreamError,
    StreamErrorKind,
    StreamEvent,
    Usage,
)

__all__ = ["classify_failure", "http_failure", "fallback_outcome", "StreamTally"]


def classify_failure(status: int, body: bytes) -> StreamErrorKind:
    """The failure kind of a non-2xx answer with ``status`` and ``body``."""
    if status in (401, 403):
        return "unauthorized"
    if status == 429:
        return "busy"
    if status == 503 and (is_loading_body(body) or is_queue_full(body)):
        return "busy"
    if status >= 400 and is_context_overflow(body):
        return "context_overflow"
    if 400 <= status < 500:
        return "http_4xx"
    return "http_5xx"


def http_failure(status: int, body: bytes) -> StreamError:
    """The ``StreamError`` for a non-2xx answer: its kind, what the body says, the status."""
    message = error_message(decode_json(body), body)
    return StreamError(classify_failure(status, body), f"HTTP {status}: {message}", status)


_BEFORE: Final[dict[StreamErrorKind, ErrorClass]] = {
    "refused": "refused",
    "egress_refused": "refused",  # skip the whole service, as for a refused connection
    "timeout_connect": "timeout_connect",
    "timeout_first_token": "timeout_first_token",
    "timeout_idle": "timeout_first_token",
    "http_5xx": "http_5xx",
    "http_4xx": "http_4xx",
    "unauthorized": "unauthorized",
    "busy": "busy",
    "context_overflow": "context_overflow",
    "bad_response": "bad_response",
    "empty_stream": "empty_stream",
    "truncated": "empty_stream",  # ended before any content: nothing came
    "upstream_error": "http_5xx",  # the server's own error, sent inside a 200
    "unsupported": "http_4xx",  # this (service, model) cannot serve it; others may
    "cancelled": "cancelled",
}

_AFTER: Final[dict[StreamErrorKind, LateError]] = {
    "timeout_idle": "timeout_idle",
    "timeout_first_token": "timeout_idle",
    "truncated": "connection_lost",
    "empty_stream": "connection_lost",
    "bad_response": "bad_response",
    "cancelled": "cancelled",
}


def fallback_outcome(
    error: StreamError, *, answered: bool
) -> FailedBeforeFirstByte | FailedAfterFirstByte:
    """``error`` as the fallback machine's outcome. ``answered``: some of the answer already
    reached the client (then it is never retried elsewhere)."""
    if answered:
        return FailedAfterFirstByte(_AFTER.get(error.kind, "server_error"), error.message)
    return FailedBeforeFirstByte(_BEFORE[error.kind], error.message)


class StreamTally:
    """Watches the events of one call and sums them up as a :class:`Done`.

    ``started`` is when the request was sent. Call ``observe`` with each event and the time it
    came, then ``done(now)`` when the stream ended without error.
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.content_events = 0
        self.model: str | None = None
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    @property
    def first_token_s(self) -> float | None:
        """Seconds from the request to its first content event, if any came."""
        return None if self.first_token_at is None else self.first_token_at - self.started

    def observe(self, event: StreamEvent, now: float) -> None:
        """Take note of ``event``, which arrived at ``now``."""
        if isinstance(event, CONTENT_EVENTS):
            if self.first_token_at is None:
                self.first_token_at = now
            self.last_token_at = now
            self.content_events += 1
        elif isinstance(event, ModelReported):
            self.model = event.model
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, Finish):
            self.finish_reason = event.reason

    def done(self, now: float) -> Done:
        """The summary of a stream that ended well at ``now``."""
        prompt = completion = None
        if self.usage is not None:
            prompt, completion = self.usage.prompt_tokens, self.usage.completion_tokens
        return Done(
            finish_reason=self.finish_reason or "stop",
            model=self.model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            first_token_s=self.first_token_s,
            total_s=max(0.0, now - self.started),
            tokens_per_second=self._rate(completion),
        )

    def _rate(self, completion: int | None) -> float | None:
        tokens = completion if completion is not None else self.content_events
        if self.first_token_at is None or self.last_token_at is None or tokens < 2:
            return None
        span = self.last_token_at - self.first_token_at
        # The first token's time is prefill; the other tokens were generated in ``span``.
        return (tokens - 1) / span if span > 0 else None
