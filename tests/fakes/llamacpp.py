"""llama-server (``llamacpp``) and llama-cpp-python (``llama_cpp_python``), from real captures.

llama-server: ``/health`` (``/v1/health``), ``/props`` (the captured body with this fake's
model, slots, build and a random per-process ``media_marker``), ``/slots`` (``is_processing``
while a generation runs), ``/v1/models`` (``/models``, ``/api/tags``: ``data[].meta`` and the
Ollama-style ``models`` list), ``/metrics`` (501 without ``--metrics``), OpenAI routes under
``/v1`` and at the root, ``POST /tokenize`` (``{"content"}`` -> ``{"tokens": [...]}``). While
``loading``: 503 "Loading model" on every path. With an API key only ``/health``,
``/v1/health``, ``/models``, ``/v1/models`` and ``/api/tags`` stay public. Any model name is
answered by the loaded model, which reports its own id.

llama-cpp-python: ``/v1/models`` (``owned_by: "me"``), OpenAI routes, ``POST
/extras/tokenize/count`` (``{"input"}`` -> ``{"count": n}``); no ``/health``, ``/props`` or
``/slots`` (404 ``{"detail":"Not Found"}``); echoes the asked model name;
``interrupt_requests`` (its default, off in this fake unless asked) makes a new request end
the stream in progress with ``[DONE]`` and no finish reason.

Tokenizing (both): one token per word and per punctuation mark, or with option
``bytes_per_token`` one per that many UTF-8 bytes (rounded up); option ``tokenize=False``
answers 404, as a server without the endpoint does.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from fakes.headers import lcp_headers, lcp_sse_headers, llamacpp_headers, llamacpp_sse_headers
from fakes.http import Exchange, Request
from fakes.kinds import KindSpec, json_answer, register
from fakes.llama_dialects import LlamaCppDialect, LlamaCppPythonDialect
from fakes.routes import openai_routes, server_error_route
from fakes.state import FakeModel, FakeServer, Route
from fakes.wire import alnum_id, compact

__all__ = ["LLAMACPP", "LLAMA_CPP_PYTHON", "SMOLLM2_PATH", "fake_token_count", "smollm2"]

_CAPTURES = Path(__file__).resolve().parent.parent / "data" / "servers"
SMOLLM2_PATH = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2(model_id: str = SMOLLM2_PATH, n_ctx: int = 2048) -> FakeModel:
    """The model of the captures: SmolLM2-135M-Instruct Q4_1, trained on 8192 tokens."""
    return FakeModel(
        id=model_id,
        context_length=n_ctx,
        max_context_length=8192,
        size=96_576_768,
        family="llama",
        parameter_size="135M",
        quantization="Q4_1",
        n_params=134_515_008,
        embedding_length=576,
    )


# --- llama-server ------------------------------------------------------------------------------

LLAMACPP_DIALECT = LlamaCppDialect(llamacpp_headers, llamacpp_sse_headers)
_LOADING = b'{"error":{"message":"Loading model","type":"unavailable_error","code":503}}'
_NOT_FOUND = b'{"error":{"message":"File Not Found","type":"not_found_error","code":404}}'
# As quoted in llama.cpp PR #14352 (the handler's key order, unlike the 503 and 404 above).
_BAD_KEY = b'{"error":{"code":401,"message":"Invalid API Key","type":"authentication_error"}}'
_NO_METRICS = (
    b'{"error":{"code":501,"message":"This server does not support metrics endpoint. '
    b'Start it with `--metrics`","type":"not_supported_error"}}'
)
_PROPS_TEMPLATE: dict[str, Any] = json.loads(
    (_CAPTURES / "llama-server" / "props.body").read_bytes()
)


async def _respond(
    fake: FakeServer, request: Request, ex: Exchange, status: int, body: bytes
) -> None:
    await ex.respond(status, llamacpp_headers(fake, request, status, len(body)), body)


async def _health(fake: FakeServer, request: Request, ex: Exchange) -> None:
    await _respond(fake, request, ex, 200, b'{"status":"ok"}')


def _loaded(fake: FakeServer) -> FakeModel:
    return fake.models[0] if fake.models else smollm2()


def _media_marker(fake: FakeServer) -> str:
    marker = fake.options.get("media_marker")
    if marker is None:
        marker = fake.options["media_marker"] = f"<__media_{alnum_id('')}__>"
    return str(marker)


async def _props(fake: FakeServer, request: Request, ex: Exchange) -> None:
    model = _loaded(fake)
    props = json.loads(json.dumps(_PROPS_TEMPLATE))
    props["default_generation_settings"]["n_ctx"] = model.context_length
    props["total_slots"] = fake.total_slots
    props["model_alias"] = model.id
    props["model_ftype"] = model.quantization
    props["model_path"] = fake.options.get("model_path", model.id)
    props["media_marker"] = _media_marker(fake)
    props["build_info"] = fake.version
    props["modalities"]["vision"] = "vision" in model.capabilities
    await _respond(fake, request, ex, 200, compact(props))


async def _slots(fake: FakeServer, request: Request, ex: Exchange) -> None:
    model = _loaded(fake)
    busy = min(fake.active, fake.total_slots)
    slots: list[dict[str, Any]] = []
    for i in range(fake.total_slots):
        slot: dict[str, Any] = {
            "id": i,
            "n_ctx": model.context_length,
            "speculative": False,
            "is_processing": i < busy,
        }
        if i < busy:
            slot["id_task"] = 60 + i
            slot["n_prompt_tokens"] = 42
        slots.append(slot)
    await _respond(fake, request, ex, 200, compact(slots))


def _ollama_entry(model: FakeModel) -> dict[str, Any]:
    return {
        "name": model.id,
        "model": model.id,
        "modified_at": "",
        "size": "",
        "digest": "",
        "type": "model",
        "description": "",
        "tags": [""],
        "capabilities": list(model.capabilities),
        "parameters": "",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "",
            "families": [""],
            "parameter_size": "",
            "quantization_level": "",
        },
    }


async def _models(fake: FakeServer, request: Request, ex: Exchange) -> None:
    created = int(fake.now())
    data = [
        {
            "id": m.id,
            "aliases": [m.id],
            "tags": [],
            "object": "model",
            "created": created,
            "owned_by": "llamacpp",
            "meta": {
                "vocab_type": 2,
                "n_vocab": 49152,
                "n_ctx": m.context_length,
                "n_ctx_train": m.trained_context,
                "n_embd": m.embedding_length,
                "n_params": m.n_params,
                "size": m.size,
                "ftype": m.quantization,
            },
        }
        for m in fake.models
    ]
    body = {"models": [_ollama_entry(m) for m in fake.models], "object": "list", "data": data}
    await _respond(fake, request, ex, 200, compact(body))


_WORD_OR_MARK = re.compile(r"\w+|[^\w\s]")


def fake_token_count(fake: FakeServer, text: str) -> int:
    """How many tokens this fake's tokenizer makes of ``text`` (module docstring)."""
    per = fake.options.get("bytes_per_token")
    if per:
        return math.ceil(len(text.encode("utf-8")) / float(per))
    return len(_WORD_OR_MARK.findall(text))


def _tokenize_input(fake: FakeServer, request: Request, field: str) -> str | None:
    if fake.options.get("tokenize") is False:
        return None
    try:
        body = json.loads(request.body)
    except ValueError:
        return None
    text = body.get(field) if isinstance(body, dict) else None
    return text if isinstance(text, str) else None


async def _tokenize(fake: FakeServer, request: Request, ex: Exchange) -> None:
    text = _tokenize_input(fake, request, "content")
    if text is None:
        await _respond(fake, request, ex, 404, _NOT_FOUND)
        return
    ids = [(i * 7919) % 49152 for i in range(fake_token_count(fake, text))]
    await _respond(fake, request, ex, 200, compact({"tokens": ids}))


def _llamacpp_routes() -> dict[tuple[str, str], Route]:
    routes: dict[tuple[str, str], Route] = {
        ("GET", "/health"): _health,
        ("GET", "/v1/health"): _health,
        ("GET", "/props"): _props,
        ("GET", "/slots"): _slots,
        ("GET", "/v1/models"): _models,
        ("GET", "/models"): _models,
        ("GET", "/api/tags"): _models,
        ("GET", "/metrics"): json_answer(llamacpp_headers, 501, _NO_METRICS),
        ("POST", "/tokenize"): _tokenize,
    }
    routes.update(openai_routes(LLAMACPP_DIALECT, "/v1"))
    routes.update(openai_routes(LLAMACPP_DIALECT, ""))
    return routes


LLAMACPP = register(
    KindSpec(
        name="llamacpp",
        routes=_llamacpp_routes(),
        not_found=json_answer(llamacpp_headers, 404, _NOT_FOUND),
        unauthorized=json_answer(llamacpp_headers, 401, _BAD_KEY),
        server_error=server_error_route(LLAMACPP_DIALECT),
        default_models=lambda: [smollm2()],
        version="b1-0c1e570",
        public_paths=frozenset({"/health", "/v1/health", "/models", "/v1/models", "/api/tags"}),
        loading_everywhere=json_answer(llamacpp_headers, 503, _LOADING),
        description="llama.cpp's llama-server",
    )
)


# --- llama-cpp-python --------------------------------------------------------------------------

LCP_DIALECT = LlamaCppPythonDialect(lcp_headers, lcp_sse_headers)


async def _lcp_models(fake: FakeServer, request: Request, ex: Exchange) -> None:
    data = [
        {"id": m.id, "object": "model", "owned_by": "me", "permissions": []} for m in fake.models
    ]
    body = compact({"object": "list", "data": data})
    await ex.respond(200, lcp_headers(fake, request, 200, len(body)), body)


async def _lcp_docs(fake: FakeServer, request: Request, ex: Exchange) -> None:
    body = (_CAPTURES / "llama-cpp-python" / "docs.body").read_bytes()
    ctype = "text/html; charset=utf-8"
    await ex.respond(200, lcp_headers(fake, request, 200, len(body), ctype), body)


async def _lcp_tokenize_count(fake: FakeServer, request: Request, ex: Exchange) -> None:
    text = _tokenize_input(fake, request, "input")
    body = b'{"detail":"Not Found"}'
    status = 404
    if text is not None:
        status, body = 200, compact({"count": fake_token_count(fake, text)})
    await ex.respond(status, lcp_headers(fake, request, status, len(body)), body)


def _lcp_routes() -> dict[tuple[str, str], Route]:
    routes: dict[tuple[str, str], Route] = {
        ("GET", "/v1/models"): _lcp_models,
        ("GET", "/docs"): _lcp_docs,
        ("POST", "/extras/tokenize/count"): _lcp_tokenize_count,
    }
    routes.update(openai_routes(LCP_DIALECT, "/v1"))
    return routes


LLAMA_CPP_PYTHON = register(
    KindSpec(
        name="llama_cpp_python",
        routes=_lcp_routes(),
        not_found=json_answer(lcp_headers, 404, b'{"detail":"Not Found"}'),
        unauthorized=json_answer(lcp_headers, 401, b'{"detail":"Invalid API key"}'),
        server_error=server_error_route(LCP_DIALECT),
        default_models=lambda: [smollm2()],
        version="0.3.36",
        public_paths=frozenset({"/docs", "/openapi.json"}),
        description="llama-cpp-python's server (uvicorn)",
    )
)
