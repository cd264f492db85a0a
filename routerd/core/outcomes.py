"""What the HTTP answer to a real request says about the server's health.

Invariants:

* ``classify_response`` maps one answer (status and body) to a health input; the shell maps
  transport failures itself (connection refused -> ``request_refused``, timeout ->
  ``request_timeout``, client gone -> ``request_cancelled``).
* Only server faults become ``request_5xx``. A 503 while loading, Ollama's queue-full 503,
  429, 401/403 and every 4xx (context overflow included) are something else.
* Never raises, whatever the body.
"""

from __future__ import annotations

import re
from typing import Final

from routerd.core.health import HealthInput
from routerd.core.identify import is_loading_body
from routerd.core.jsonpick import decode_json, pick_str

__all__ = ["classify_response", "is_context_overflow", "is_queue_full"]

# llama-cpp-python: code "context_length_exceeded" ("This model's maximum context length is
# 2048 tokens..."); llama-server: type "exceed_context_size_error" ("request (6031 tokens)
# exceeds the available context size (2048 tokens)"); vLLM: "maximum context length";
# Ollama: "input length exceeds the context length". See ../shared/real-servers/.
_OVERFLOW: Final = re.compile(
    r"context_length_exceeded|exceed_context_size|maximum context length|"
    r"exceeds? the (?:available )?context (?:size|length|window)|context window|"
    r"prompt is too long|too many tokens",
    re.IGNORECASE,
)

# Ollama's scheduler: "server busy, please try again.  maximum pending requests exceeded";
# Kobold.cpp while it generates for someone else: 503 {"detail": {"msg": "Server is busy;
# please try again later.", "type": "service_unavailable"}}.
_QUEUE_FULL: Final = re.compile(r"server (?:is )?busy|maximum pending requests", re.IGNORECASE)

_SCAN_LIMIT: Final = 64 * 1024


def _text(body: bytes) -> str:
    value = decode_json(body[:_SCAN_LIMIT])
    parts = [
        pick_str(value, "error", "message"),
        pick_str(value, "error", "code"),
        pick_str(value, "error", "type"),
        pick_str(value, "error"),
        pick_str(value, "message"),
        pick_str(value, "detail"),
        pick_str(value, "detail", "msg"),
    ]
    found = " ".join(p for p in parts if p)
    return found or body[:_SCAN_LIMIT].decode("utf-8", "replace")


def is_context_overflow(body: bytes) -> bool:
    """Does this error body say the prompt did not fit the model's context?"""
    return _OVERFLOW.search(_text(body)) is not None


def is_queue_full(body: bytes) -> bool:
    """Does this error body say the server's queue is full (busy, not down)?"""
    return _QUEUE_FULL.search(_text(body)) is not None


def classify_response(status: int, body: bytes) -> HealthInput:
    """The health input for a request answered with ``status`` and ``body``.

    2xx -> ``request_ok`` (the shell passes the latency in the event); 401/403 ->
    ``request_unauthorized``; 429 and queue-full 503 -> ``request_busy``; 503 "Loading
    model" -> ``request_loading``; a 4xx about the context -> ``request_context_overflow``;
    other 4xx -> ``request_client_error``; other 5xx -> ``request_5xx``.
    """
    if 200 <= status < 300:
        return "request_ok"
    if status in (401, 403):
        return "request_unauthorized"
    if status == 429:
        return "request_busy"
    if status == 503:
        if is_loading_body(body):
            return "request_loading"
        if is_queue_full(body):
            return "request_busy"
    if 400 <= status < 500:
        return "request_context_overflow" if is_context_overflow(body) else "request_client_error"
    if status >= 500:
        return "request_5xx"
    return "request_client_error"  # 1xx/3xx as a final answer: a protocol oddity, not a fault
