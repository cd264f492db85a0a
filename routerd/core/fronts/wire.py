"""What the two HTTP fronts share: status codes for routerd's errors, SSE and NDJSON framing,
body decoding and times.

Invariants: pure; every encoder is reused; a body that does not decode raises BadRequest
with msgspec's own message (which names the offending field), never a traceback.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import msgspec

from routerd.core.errors import BadRequest
from routerd_client.protocol import ErrorCode

__all__ = [
    "SSE_DONE",
    "decode_body",
    "iso_time",
    "ndjson",
    "sse",
    "status_for",
    "json_bytes",
]

T = TypeVar("T")

#: The HTTP status answering each routerd error code (anything else: 500).
_STATUS: Final[dict[str, int]] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.BUSY: 429,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.CANCELLED: 499,
    ErrorCode.SLOW_CONSUMER: 408,
    ErrorCode.BAD_CONFIG: 500,
    ErrorCode.INTERNAL: 500,
}

#: The line that ends an OpenAI event stream.
SSE_DONE: Final = b"data: [DONE]\n\n"

_encoder: Final = msgspec.json.Encoder()


def status_for(code: str) -> int:
    """The HTTP status for a routerd error code."""
    return _STATUS.get(code, 500)


def json_bytes(value: Any) -> bytes:
    return _encoder.encode(value)


def sse(value: Any) -> bytes:
    """One server-sent event carrying ``value`` as JSON."""
    return b"data: " + _encoder.encode(value) + b"\n\n"


def ndjson(value: Any) -> bytes:
    """One line of newline-delimited JSON."""
    return _encoder.encode(value) + b"\n"


def decode_body(body: bytes, kind: type[T]) -> T:
    """``body`` (JSON) as ``kind``; raises BadRequest saying what is wrong."""
    if not body.strip():
        raise BadRequest("the request has no JSON body")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def iso_time(epoch: float) -> str:
    """``epoch`` as RFC 3339 UTC with microseconds, as Ollama writes times."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
