"""Failure kinds of HTTP error answers (real captures), and the figures of a finished stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from routerd.core.chat_outcome import (
    StreamTally,
    classify_failure,
    fallback_outcome,
    http_failure,
)
from routerd.core.fallback import FailedAfterFirstByte, FailedBeforeFirstByte, health_input
from routerd.core.outcomes import classify_response
from routerd.core.streams import (
    STREAM_ERROR_KINDS,
    Chunk,
    Finish,
    ModelReported,
    Reasoning,
    StreamError,
    StreamErrorKind,
    ToolCallDelta,
    Usage,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "servers"


def capture(name: str) -> tuple[int, bytes]:
    status_file = DATA / f"{name}.status"
    status = int(status_file.read_text().split()[0]) if status_file.exists() else 0
    return status, (DATA / f"{name}.body").read_bytes()


@pytest.mark.parametrize(
    ("status", "body", "kind", "health"),
    [
        (
            400,
            capture("llama-server/err_ctx_overflow")[1],
            "context_overflow",
            "request_context_overflow",
        ),
        (
            400,
            capture("llama-cpp-python/err_ctx_overflow")[1],
            "context_overflow",
            "request_context_overflow",
        ),
        (500, capture("llama-cpp-python/err_bad_json")[1], "http_5xx", "request_5xx"),
        (500, capture("llama-server/err_bad_json")[1], "http_5xx", "request_5xx"),
        (400, capture("llama-server/err_no_messages")[1], "http_4xx", "request_client_error"),
        (503, capture("llama-server/startup_v1_models_503")[1], "busy", "request_loading"),
        (
            503,
            b'{"error":"server busy, please try again.  maximum pending requests exceeded"}',
            "busy",
            "request_busy",
        ),
        (
            503,
            b'{"detail": {"msg": "Server is busy; please try again later.", '
            b'"type": "service_unavailable"}}',
            "busy",
            "request_busy",
        ),
        (429, b"", "busy", "request_busy"),
        (401, b'{"detail":"Not authenticated"}', "unauthorized", "request_unauthorized"),
        (403, b"", "unauthorized", "request_unauthorized"),
        (
            404,
            b'{"error":"model \\"x\\" not found, try pulling it first"}',
            "http_4xx",
            "request_client_error",
        ),
        (502, b"<html>Bad Gateway</html>", "http_5xx", "request_5xx"),
    ],
)
def test_classify_failure_agrees_with_health(
    status: int, body: bytes, kind: str, health: str
) -> None:
    assert classify_failure(status, body) == kind
    assert classify_response(status, body) == health


def test_captured_statuses_are_what_the_table_assumes() -> None:
    assert capture("llama-server/err_no_messages")[0] == 400
    assert capture("llama-cpp-python/err_bad_json")[0] == 500


def test_http_failure_carries_status_and_the_servers_message() -> None:
    failure = http_failure(400, capture("llama-server/err_ctx_overflow")[1])
    assert failure.kind == "context_overflow"
    assert failure.status == 400
    assert failure.message.startswith("HTTP 400: request (6031 tokens) exceeds")
    assert http_failure(500, b"Internal Server Error").message == "HTTP 500: Internal Server Error"


def test_tally_times_first_token_and_rate_from_usage() -> None:
    tally = StreamTally(started=100.0)
    tally.observe(ModelReported("m"), 100.5)
    tally.observe(Reasoning("t"), 102.0)  # first content event: 2 s after the request
    tally.observe(Chunk("a"), 102.5)
    tally.observe(Chunk("b"), 104.0)
    tally.observe(Finish("stop"), 104.0)
    tally.observe(Usage(10, 21), 104.1)
    done = tally.done(105.0)
    assert done.first_token_s == 2.0
    assert done.total_s == 5.0
    assert done.tokens_per_second == 10.0  # 20 tokens after the first, in 2 s
    assert (done.model, done.prompt_tokens, done.completion_tokens) == ("m", 10, 21)
    assert done.finish_reason == "stop"


def test_tally_rate_from_content_events_without_usage() -> None:
    tally = StreamTally(started=0.0)
    for i in range(5):
        tally.observe(ToolCallDelta(0, None, None, "x") if i else Chunk("a"), 1.0 + i * 0.5)
    done = tally.done(4.0)
    assert done.tokens_per_second == 2.0  # 4 events in 2 s
    assert done.completion_tokens is None
    assert done.finish_reason == "stop"


def test_tally_without_content_has_no_first_token_or_rate() -> None:
    tally = StreamTally(started=1.0)
    tally.observe(Finish("load"), 2.0)
    done = tally.done(3.0)
    assert done.first_token_s is None
    assert done.tokens_per_second is None
    assert done.finish_reason == "load"


def test_every_kind_maps_onto_a_fallback_outcome() -> None:
    for kind in STREAM_ERROR_KINDS:
        before = fallback_outcome(StreamError(kind, "why"), answered=False)
        after = fallback_outcome(StreamError(kind, "why"), answered=True)
        assert isinstance(before, FailedBeforeFirstByte)
        assert isinstance(after, FailedAfterFirstByte)
        assert before.detail == after.detail == "why"
        assert health_input(before.error) is not None or before.error == "queue_timeout"
        assert health_input(after.error) is not None


def test_fallback_outcome_choices_that_matter() -> None:
    def before(kind: StreamErrorKind) -> str:
        return fallback_outcome(StreamError(kind, ""), answered=False).error

    def after(kind: StreamErrorKind) -> str:
        return fallback_outcome(StreamError(kind, ""), answered=True).error

    assert before("egress_refused") == "refused"  # skips the whole service
    assert before("truncated") == "empty_stream"
    assert before("upstream_error") == "http_5xx"
    assert before("context_overflow") == "context_overflow"  # retried with a smaller budget
    assert after("truncated") == "connection_lost"
    assert after("timeout_idle") == "timeout_idle"
    assert after("upstream_error") == "server_error"
    assert after("cancelled") == before("cancelled") == "cancelled"
