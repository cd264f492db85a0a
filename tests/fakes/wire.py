"""How each real server spells its bytes: JSON flavours, dates, ids, header sets.

* ``compact``: ``{"a":1,"b":"é"}`` — nlohmann (llama-server), Starlette's JSONResponse,
  pydantic (vLLM), Express.
* ``spaced``: ``{"a": 1, "b": "\\u00e9"}`` — Python's ``json.dumps`` defaults, which
  llama-cpp-python uses for every SSE event.
* ``go``: Go's ``encoding/json`` (Ollama, LocalAI): compact, and ``<``, ``>``, ``&``,
  U+2028 and U+2029 escaped as ``\\u003c`` and so on.

Header builders return the full header list in the server's own order; the captures in
``tests/data/servers/`` are the reference for llama-server and llama-cpp-python.
"""

from __future__ import annotations

import json
import secrets
import string
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

__all__ = [
    "Encoder",
    "compact",
    "spaced",
    "go",
    "http_date",
    "go_time",
    "alnum_id",
    "uuid_id",
    "hex_id",
    "GARBAGE",
    "GARBAGE_STREAM",
]

Encoder = Callable[[Any], bytes]


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def spaced(value: Any) -> bytes:
    return json.dumps(value).encode()


_GO_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def go(value: Any) -> bytes:
    # These characters only ever occur inside JSON strings, so plain replacement is exact.
    data = compact(value)
    for raw, escaped in _GO_ESCAPES:
        data = data.replace(raw, escaped)
    return data


def http_date(now: float) -> str:
    """``Wed, 25 Nov 2026 17:18:08 GMT``."""
    return formatdate(now, usegmt=True)


def go_time(now: float) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: ``2024-06-04T21:38:31.83753Z`` (zeros trimmed)."""
    moment = datetime.fromtimestamp(now, UTC)
    frac = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


_ALNUM = string.ascii_letters + string.digits


def alnum_id(prefix: str, length: int = 32) -> str:
    """llama-server's ids: ``chatcmpl-`` and 32 random letters and digits."""
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def uuid_id(prefix: str) -> str:
    """llama-cpp-python's ids: ``chatcmpl-`` and a UUID4."""
    return f"{prefix}{uuid.uuid4()}"


def hex_id(prefix: str, length: int = 32) -> str:
    return prefix + secrets.token_hex(length // 2)


#: What a server that "answers garbage" writes instead of HTTP.
GARBAGE = b"\x00\xff\xfe\x15\x03\x01garbage: this is not HTTP\r\n\x1b[0m\xc3\x28\r\n\r\n"

#: The body of a 200 stream that "answers garbage": neither SSE nor NDJSON.
GARBAGE_STREAM = (
    b"\x89PNG\r\n\x1a\n",
    b"data: {not json at all\n\n",
    b"<html><body>502 Bad Gateway</body></html>\n",
)
