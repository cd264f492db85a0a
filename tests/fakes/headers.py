"""Each server's response headers, in its own order and spelling.

Captured: llama-server (cpp-httplib) and llama-cpp-python (uvicorn plus its middleware), see
``tests/data/servers/``. The plain uvicorn set serves the other FastAPI servers (vLLM,
text-generation-webui, Open WebUI). A header set is ``(fake, request, status, length) ->
headers``; SSE sets are ``(fake, request) -> headers``.
"""

from __future__ import annotations

from collections.abc import Callable

from fakes.http import Headers, Request
from fakes.state import FakeServer
from fakes.wire import hex_id, http_date

__all__ = [
    "JsonHeaders",
    "SseHeaders",
    "llamacpp_headers",
    "llamacpp_sse_headers",
    "uvicorn_headers",
    "uvicorn_sse_headers",
    "lcp_headers",
    "lcp_sse_headers",
]

JsonHeaders = Callable[[FakeServer, Request, int, int], Headers]
SseHeaders = Callable[[FakeServer, Request], Headers]


def llamacpp_headers(
    fake: FakeServer,
    request: Request,
    status: int,
    length: int,
    ctype: str = "application/json; charset=utf-8",
) -> Headers:
    """llama-server (cpp-httplib): errors close the connection, others keep it alive."""
    closing = status >= 400 or (request.header("connection") or "").lower() == "close"
    tail = (
        ("Connection", "close")
        if closing
        else ("Keep-Alive", f"timeout=5, max={max(1, 100 - request.seq)}")
    )
    return [
        ("Server", "llama.cpp"),
        ("Access-Control-Allow-Origin", request.header("origin") or ""),
        ("Content-Type", ctype),
        ("Content-Length", str(length)),
        tail,
    ]


def llamacpp_sse_headers(fake: FakeServer, request: Request) -> Headers:
    return [
        ("Server", "llama.cpp"),
        ("Access-Control-Allow-Origin", request.header("origin") or ""),
        ("X-Accel-Buffering", "no"),
        ("Content-Type", "text/event-stream"),
        ("Transfer-Encoding", "chunked"),
        ("Keep-Alive", f"timeout=5, max={max(1, 100 - request.seq)}"),
    ]


def uvicorn_headers(
    fake: FakeServer,
    request: Request,
    status: int,
    length: int,
    ctype: str = "application/json",
) -> Headers:
    """A plain FastAPI app behind uvicorn (vLLM, text-generation-webui, Open WebUI)."""
    return [
        ("date", http_date(fake.now())),
        ("server", "uvicorn"),
        ("content-length", str(length)),
        ("content-type", ctype),
    ]


def uvicorn_sse_headers(fake: FakeServer, request: Request) -> Headers:
    return [
        ("date", http_date(fake.now())),
        ("server", "uvicorn"),
        ("content-type", "text/event-stream; charset=utf-8"),
        ("transfer-encoding", "chunked"),
    ]


def lcp_headers(
    fake: FakeServer,
    request: Request,
    status: int,
    length: int,
    ctype: str = "application/json",
) -> Headers:
    """llama-cpp-python: uvicorn plus its timing and request-id middleware."""
    headers = [
        ("date", http_date(fake.now())),
        ("server", "uvicorn"),
        ("content-length", str(length)),
        ("content-type", ctype),
    ]
    if status == 200:
        headers.append(("openai-processing-ms", "0"))
    headers += [("x-request-id", hex_id("")), ("vary", "Origin")]
    return headers


def lcp_sse_headers(fake: FakeServer, request: Request) -> Headers:
    return [
        ("date", http_date(fake.now())),
        ("server", "uvicorn"),
        ("cache-control", "no-store"),
        ("connection", "keep-alive"),
        ("x-accel-buffering", "no"),
        ("content-type", "text/event-stream; charset=utf-8"),
        ("openai-processing-ms", "0"),
        ("x-request-id", hex_id("")),
        ("vary", "Origin"),
        ("Transfer-Encoding", "chunked"),
    ]
