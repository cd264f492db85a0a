"""classify_response(): what a request's answer says about the server."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.core.health import INPUTS
from routerd.core.outcomes import classify_response, is_context_overflow, is_queue_full

DATA = pathlib.Path(__file__).parent.parent / "data" / "servers"

OLLAMA_QUEUE_FULL = b'{"error":"server busy, please try again.  maximum pending requests exceeded"}'
# Kobold.cpp, generating for another client (its /api/v1/generate and OpenAI routes alike).
KOBOLD_BUSY = (
    b'{"detail": {"msg": "Server is busy; please try again later.", '
    b'"type": "service_unavailable"}}'
)
LOADING = (DATA / "llama-server" / "startup_health_503.body").read_bytes()


def test_real_context_overflow_captures() -> None:
    for server in ("llama-server", "llama-cpp-python"):
        body = (DATA / server / "err_ctx_overflow.body").read_bytes()
        assert is_context_overflow(body), server
        assert classify_response(400, body) == "request_context_overflow"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b"{}", "request_ok"),
        (401, b"", "request_unauthorized"),
        (403, b"<html>", "request_unauthorized"),
        (429, b"", "request_busy"),
        (503, OLLAMA_QUEUE_FULL, "request_busy"),
        (503, KOBOLD_BUSY, "request_busy"),
        (503, LOADING, "request_loading"),
        (503, b"upstream gone", "request_5xx"),
        (500, b'{"error":"boom"}', "request_5xx"),
        (502, b"", "request_5xx"),
        (
            400,
            b'{"error":{"message":"This model\'s maximum context length is 32768 tokens."}}',
            "request_context_overflow",
        ),
        (400, b'{"error":"input length exceeds the context length"}', "request_context_overflow"),
        (400, b'{"error":{"message":"messages: field required"}}', "request_client_error"),
        (404, b'{"error":"model \\"x\\" not found"}', "request_client_error"),
        (499, b'{"error":"request canceled"}', "request_client_error"),
    ],
)
def test_classify(status: int, body: bytes, expected: str) -> None:
    assert classify_response(status, body) == expected


def test_queue_full() -> None:
    assert is_queue_full(OLLAMA_QUEUE_FULL)
    assert is_queue_full(KOBOLD_BUSY)
    assert not is_queue_full(LOADING)


@given(status=st.integers(min_value=100, max_value=599), body=st.binary(max_size=300))
def test_never_raises_and_never_says_refused(status: int, body: bytes) -> None:
    result = classify_response(status, body)
    assert result in INPUTS and result.startswith("request_")
    assert result not in ("request_refused", "request_timeout", "request_cancelled")
    if status in (401, 403, 429) or 400 <= status < 500:
        assert result not in ("request_5xx",)
