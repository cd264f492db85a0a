"""OpenAI-style kinds from documentation: vLLM, LM Studio, Jan, GPT4All, ``openai_compat``,
and ``routerd`` (another routerd's HTTP front).

No capture exists for these; shapes follow ``tests/data/servers/documented/`` and the sources
named there. What is certain: the paths, field names and the markers ``identify`` reads
(vLLM ``owned_by: "vllm"`` and ``max_model_len``; LM Studio ``/api/v0/models`` ``state`` and
``/api/v1/models`` ``loaded_instances``; LM Studio's 200 ``{"error":"Unexpected endpoint or
method. (GET /x)"}`` for every path it lacks; routerd's ``X-Routerd-Instance`` header on
every answer). Header sets are plausible for each server's HTTP stack, not captured.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from fakes.headers import JsonHeaders, uvicorn_headers, uvicorn_sse_headers
from fakes.http import Exchange, Headers, Request
from fakes.kinds import KindSpec, json_answer, register
from fakes.openai import Dialect, StandardDialect, VllmDialect
from fakes.routes import openai_routes, server_error_route
from fakes.state import FakeModel, FakeServer, Route
from fakes.wire import compact, http_date
from routerd.core.identify import ROUTERD_INSTANCE_HEADER

__all__ = ["VLLM", "LMSTUDIO", "JAN", "GPT4ALL", "OPENAI_COMPAT", "ROUTERD", "openai_kind"]

ModelsBody = Callable[[FakeServer], Any]


async def send_json(
    fake: FakeServer,
    request: Request,
    ex: Exchange,
    headers: JsonHeaders,
    value: Any,
    status: int = 200,
    encode: Callable[[Any], bytes] = compact,
) -> None:
    body = encode(value)
    await ex.respond(status, headers(fake, request, status, len(body)), body)


def openai_kind(
    name: str,
    *,
    dialect: Dialect,
    models_body: ModelsBody,
    default_models: Callable[[], list[FakeModel]],
    not_found: Route,
    unauthorized: Route,
    version: str = "",
    extra_routes: dict[tuple[str, str], Route] | None = None,
    public_paths: frozenset[str] = frozenset(),
    default_api_key: str | None = None,
    description: str = "",
    encode: Callable[[Any], bytes] = compact,
) -> KindSpec:
    """A kind serving ``/v1/models`` (from ``models_body``) and the OpenAI routes."""

    async def models(fake: FakeServer, request: Request, ex: Exchange) -> None:
        await send_json(fake, request, ex, dialect.json_headers, models_body(fake), encode=encode)

    routes: dict[tuple[str, str], Route] = {("GET", "/v1/models"): models}
    routes.update(openai_routes(dialect, "/v1"))
    routes.update(extra_routes or {})
    return register(
        KindSpec(
            name=name,
            routes=routes,
            not_found=not_found,
            unauthorized=unauthorized,
            server_error=server_error_route(dialect),
            default_models=default_models,
            version=version,
            public_paths=public_paths,
            default_api_key=default_api_key,
            description=description,
        )
    )


def coder(model_id: str, ctx: int = 32768, **kw: Any) -> FakeModel:
    return FakeModel(
        model_id,
        context_length=ctx,
        max_context_length=kw.pop("max_context_length", ctx),
        family=kw.pop("family", "qwen2"),
        parameter_size=kw.pop("parameter_size", "7.6B"),
        **kw,
    )


# --- vLLM --------------------------------------------------------------------------------------

_VLLM = VllmDialect(uvicorn_headers, uvicorn_sse_headers)


def _vllm_models(fake: FakeServer) -> Any:
    created = int(fake.started_at)
    return {
        "object": "list",
        "data": [
            {
                "id": m.id,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": m.id,
                "parent": None,
                "max_model_len": m.context_length,
                "permission": [
                    {
                        "id": f"modelperm-{hashlib.md5(m.id.encode()).hexdigest()}",
                        "object": "model_permission",
                        "created": created,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for m in fake.models
        ],
    }


async def _vllm_health(fake: FakeServer, request: Request, ex: Exchange) -> None:
    headers = [("date", http_date(fake.now())), ("server", "uvicorn"), ("content-length", "0")]
    await ex.respond(200, headers, b"")


async def _vllm_version(fake: FakeServer, request: Request, ex: Exchange) -> None:
    await send_json(fake, request, ex, uvicorn_headers, {"version": fake.version})


VLLM = openai_kind(
    "vllm",
    dialect=_VLLM,
    models_body=_vllm_models,
    default_models=lambda: [coder("Qwen/Qwen2.5-Coder-7B-Instruct")],
    not_found=json_answer(uvicorn_headers, 404, b'{"detail":"Not Found"}'),
    unauthorized=json_answer(uvicorn_headers, 401, b'{"error":"Unauthorized"}'),
    version="0.6.4",
    extra_routes={
        ("GET", "/health"): _vllm_health,
        ("GET", "/ping"): _vllm_health,
        ("GET", "/version"): _vllm_version,
    },
    # vLLM's key check only guards paths under /v1.
    public_paths=frozenset({"/health", "/ping", "/version", "/metrics"}),
    description="vLLM OpenAI server (uvicorn)",
)


# --- LM Studio ---------------------------------------------------------------------------------


def express_headers(
    fake: FakeServer,
    request: Request,
    status: int,
    length: int,
    ctype: str = "application/json; charset=utf-8",
) -> Headers:
    return [
        ("X-Powered-By", "Express"),
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Headers", "*"),
        ("Content-Type", ctype),
        ("Content-Length", str(length)),
        ("Date", http_date(fake.now())),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
    ]


def express_sse_headers(fake: FakeServer, request: Request) -> Headers:
    return [
        ("X-Powered-By", "Express"),
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Headers", "*"),
        ("Content-Type", "text/event-stream"),
        ("Cache-Control", "no-cache"),
        ("Date", http_date(fake.now())),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
    ]


_LMSTUDIO = StandardDialect(express_headers, express_sse_headers)


def _lms_loaded(fake: FakeServer, m: FakeModel) -> bool:
    return m.loaded and fake.state != "loading"


def _lms_type(m: FakeModel) -> str:
    if "embedding" in m.capabilities:
        return "embeddings"
    return "vlm" if "vision" in m.capabilities else "llm"


def _lms_openai(fake: FakeServer) -> Any:
    data = [{"id": m.id, "object": "model", "owned_by": "organization_owner"} for m in fake.models]
    return {"data": data, "object": "list"}


def _lms_v0(fake: FakeServer) -> Any:
    return {
        "object": "list",
        "data": [
            {
                "id": m.id,
                "object": "model",
                "type": _lms_type(m),
                "publisher": m.publisher,
                "arch": m.family,
                "compatibility_type": "gguf",
                "quantization": m.quantization,
                "state": "loaded" if _lms_loaded(fake, m) else "not-loaded",
                "max_context_length": m.trained_context,
            }
            for m in fake.models
        ],
    }


def _lms_v1(fake: FakeServer) -> Any:
    models = []
    for m in fake.models:
        kind = "embedding" if "embedding" in m.capabilities else "llm"
        instances = (
            [{"id": m.id, "config": {"context_length": m.context_length}}]
            if _lms_loaded(fake, m)
            else []
        )
        models.append(
            {
                "type": kind,
                "publisher": m.publisher,
                "key": m.id,
                "display_name": m.id,
                "architecture": m.family,
                "quantization": {"name": m.quantization, "bits_per_weight": 4},
                "size_bytes": m.size,
                "params_string": m.parameter_size,
                "loaded_instances": instances,
                "max_context_length": m.trained_context,
                "format": "gguf",
                "capabilities": {
                    "vision": "vision" in m.capabilities,
                    "trained_for_tool_use": "tools" in m.capabilities,
                },
                "description": None,
            }
        )
    return {"models": models}


def _lms_route(body: ModelsBody) -> Route:
    async def route(fake: FakeServer, request: Request, ex: Exchange) -> None:
        await send_json(fake, request, ex, express_headers, body(fake))

    return route


async def _lms_unknown(fake: FakeServer, request: Request, ex: Exchange) -> None:
    # Measured on LM Studio: 200, not 404, for any path it does not serve.
    message = f"Unexpected endpoint or method. ({request.method} {request.path})"
    await send_json(fake, request, ex, express_headers, {"error": message})


_LMS_V0_CHAT = openai_routes(_LMSTUDIO, "/api/v0")

LMSTUDIO = openai_kind(
    "lmstudio",
    dialect=_LMSTUDIO,
    models_body=_lms_openai,
    default_models=lambda: [
        coder(
            "qwen2.5-coder-7b-instruct",
            4096,
            max_context_length=32768,
            capabilities=("completion", "tools"),
        ),
        coder(
            "meta-llama-3.1-8b-instruct",
            8192,
            max_context_length=131072,
            loaded=False,
            family="llama",
            parameter_size="8B",
        ),
    ],
    not_found=_lms_unknown,
    unauthorized=json_answer(
        express_headers,
        401,
        b'{"error":{"message":"Invalid API token","type":"invalid_request_error",'
        b'"param":null,"code":"invalid_api_key"}}',
    ),
    version="0.3.30",
    extra_routes={
        ("GET", "/api/v0/models"): _lms_route(_lms_v0),
        ("GET", "/api/v1/models"): _lms_route(_lms_v1),
        **_LMS_V0_CHAT,
    },
    description="LM Studio (Express)",
)


# --- Jan, GPT4All, generic, routerd ------------------------------------------------------------


def _plain_headers(
    fake: FakeServer, request: Request, status: int, length: int, ctype: str = "application/json"
) -> Headers:
    return [("Content-Type", ctype), ("Content-Length", str(length))]


def _plain_sse(fake: FakeServer, request: Request) -> Headers:
    return [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")]


def _ids(owner: str) -> ModelsBody:
    def body(fake: FakeServer) -> Any:
        return {
            "object": "list",
            "data": [
                {"id": m.id, "object": "model", "created": int(fake.started_at), "owned_by": owner}
                for m in fake.models
            ],
        }

    return body


def _openai_401(headers: JsonHeaders) -> Route:
    body = compact(
        {
            "error": {
                "message": "Invalid API key",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
    )
    return json_answer(headers, 401, body)


def _openai_404(headers: JsonHeaders) -> Route:
    async def route(fake: FakeServer, request: Request, ex: Exchange) -> None:
        value = {
            "error": {
                "message": f"Not found: {request.method} {request.path}",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        await send_json(fake, request, ex, headers, value, status=404)

    return route


JAN = openai_kind(
    "jan",
    dialect=StandardDialect(_plain_headers, _plain_sse),
    models_body=lambda fake: {
        "object": "list",
        "data": [{"id": m.id, "object": "model"} for m in fake.models],
    },
    default_models=lambda: [coder("jan-v1-4b", 8192, family="qwen3", parameter_size="4B")],
    not_found=_openai_404(_plain_headers),
    unauthorized=_openai_401(_plain_headers),
    default_api_key="jan-fake-key",
    description="Jan local API server (an API key is required)",
)


def _sorted_compact(value: Any) -> bytes:
    # Qt's QJsonDocument writes object keys sorted.
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


class _QtDialect(StandardDialect):
    sse_encode = staticmethod(_sorted_compact)
    body_encode = staticmethod(_sorted_compact)


def _gpt4all_models(fake: FakeServer) -> Any:
    return {
        "object": "list",
        "data": [
            {
                "id": m.id,
                "object": "model",
                "created": 0,
                "owned_by": "humanity",
                "root": m.id,
                "parent": None,
                "permissions": [{"allow_sampling": True, "allow_view": True, "organization": "*"}],
            }
            for m in fake.models
        ],
    }


GPT4ALL = openai_kind(
    "gpt4all",
    dialect=_QtDialect(_plain_headers, _plain_sse),
    models_body=_gpt4all_models,
    default_models=lambda: [
        FakeModel(
            "Llama 3 8B Instruct", context_length=2048, max_context_length=8192, quantization="Q4_0"
        )
    ],
    not_found=json_answer(_plain_headers, 404, b""),
    unauthorized=_openai_401(_plain_headers),
    encode=_sorted_compact,
    description="GPT4All API server (Qt)",
)


OPENAI_COMPAT = openai_kind(
    "openai_compat",
    dialect=StandardDialect(_plain_headers, _plain_sse),
    models_body=_ids("organization"),
    default_models=lambda: [coder("coder-7b")],
    not_found=_openai_404(_plain_headers),
    unauthorized=_openai_401(_plain_headers),
    description="an OpenAI-compatible server that shows no brand",
)


def _routerd_headers(
    fake: FakeServer, request: Request, status: int, length: int, ctype: str = "application/json"
) -> Headers:
    return [
        ("content-type", ctype),
        ("content-length", str(length)),
        (ROUTERD_INSTANCE_HEADER, fake.instance_id),
    ]


def _routerd_sse(fake: FakeServer, request: Request) -> Headers:
    return [
        ("content-type", "text/event-stream"),
        (ROUTERD_INSTANCE_HEADER, fake.instance_id),
        ("transfer-encoding", "chunked"),
    ]


ROUTERD = openai_kind(
    "routerd",
    dialect=StandardDialect(_routerd_headers, _routerd_sse),
    models_body=_ids("routerd"),
    default_models=lambda: [coder("auto")],
    not_found=_openai_404(_routerd_headers),
    unauthorized=_openai_401(_routerd_headers),
    description="another routerd's OpenAI-style front (X-Routerd-Instance on every answer)",
)
