"""Open WebUI and LocalAI: kinds with their own native APIs beside (or instead of) ``/v1``.

Shapes follow ``tests/data/servers/documented/`` and the sources its README names:

* Open WebUI: ``/health`` ``{"status":true}`` and ``/api/version`` (with ``deployment_id``)
  are public; ``/api/models`` and ``/api/chat/completions`` need a bearer key (401
  ``{"detail":"Not authenticated"}``); every other GET is the web app's ``index.html``
  (its SPA fallback answers 200 HTML on any path).
* LocalAI: ``/readyz`` and ``/healthz`` (empty 200), ``/version``,
  ``/.well-known/localai.json``, ``/v1/models``, and its Ollama imitation (``/api/version``
  says ``0.9.0``, ``/api/tags``, ``/api/show`` with ``general.context_length``); ``/`` is its
  web UI.
"""

from __future__ import annotations

from typing import Any

from fakes.headers import uvicorn_headers, uvicorn_sse_headers
from fakes.http import Exchange, Headers, Request
from fakes.kinds import KindSpec, html_page, json_answer, json_route, register
from fakes.ollama import go_headers
from fakes.openai import StandardDialect
from fakes.openai_kinds import coder, send_json
from fakes.routes import openai_routes, read_body, server_error_route
from fakes.state import Failure, FakeModel, FakeServer, Route
from fakes.wire import go, http_date

__all__ = ["OPENWEBUI", "LOCALAI"]


# --- Open WebUI --------------------------------------------------------------------------------

_INVALID_TOKEN = "Your session has expired or the token is invalid. Please sign in again."


class _OpenWebUIDialect(StandardDialect):
    def model_not_found(self, asked: Any) -> Failure:
        return Failure(400, b'{"detail":"Model not found"}')


_OPENWEBUI = _OpenWebUIDialect(uvicorn_headers, uvicorn_sse_headers)
_OPENWEBUI_PROTECTED = {("GET", "/api/models"), ("POST", "/api/chat/completions")}


def _openwebui_models(fake: FakeServer) -> Any:
    created = int(fake.started_at)
    return {
        "data": [
            {
                "id": m.id,
                "name": m.id,
                "object": "model",
                "created": created,
                "owned_by": "ollama",
                "ollama": {
                    "name": m.id,
                    "model": m.id,
                    "modified_at": m.modified_at,
                    "size": m.size,
                    "digest": m.digest,
                    "details": {
                        "format": "gguf",
                        "family": m.family,
                        "parameter_size": m.parameter_size,
                        "quantization_level": m.quantization,
                    },
                },
                "connection_type": "local",
            }
            for m in fake.models
        ]
    }


async def _openwebui_spa(fake: FakeServer, request: Request, ex: Exchange) -> None:
    if request.method not in ("GET", "HEAD"):
        await send_json(fake, request, ex, uvicorn_headers, {"detail": "Not Found"}, status=404)
        return
    body = html_page("Open WebUI")
    ctype = "text/html; charset=utf-8"
    await ex.respond(200, uvicorn_headers(fake, request, 200, len(body), ctype), body)


async def _openwebui_unauthorized(fake: FakeServer, request: Request, ex: Exchange) -> None:
    if (request.method, request.path) not in _OPENWEBUI_PROTECTED:
        await _openwebui_spa(fake, request, ex)
        return
    detail = "Not authenticated" if request.bearer is None else _INVALID_TOKEN
    await send_json(fake, request, ex, uvicorn_headers, {"detail": detail}, status=401)


async def _openwebui_version(fake: FakeServer, request: Request, ex: Exchange) -> None:
    value = {
        "version": fake.version,
        "deployment_id": fake.options.get("deployment_id", "d8a0c2e4"),
    }
    await send_json(fake, request, ex, uvicorn_headers, value)


async def _openwebui_error(fake: FakeServer, request: Request, ex: Exchange) -> None:
    await send_json(fake, request, ex, uvicorn_headers, {"detail": "Internal Server Error"}, 500)


OPENWEBUI = register(
    KindSpec(
        name="openwebui",
        routes={
            ("GET", "/health"): json_route({"status": True}),
            ("GET", "/health/db"): json_route({"status": True}),
            ("GET", "/api/version"): _openwebui_version,
            ("GET", "/api/models"): json_route(_openwebui_models),
            ("POST", "/api/chat/completions"): openai_routes(_OPENWEBUI, "/api")[
                ("POST", "/api/chat/completions")
            ],
        },
        not_found=_openwebui_spa,
        unauthorized=_openwebui_unauthorized,
        server_error=_openwebui_error,
        default_models=lambda: [
            FakeModel(
                "llama3.2:latest",
                context_length=4096,
                max_context_length=131072,
                size=2_019_393_189,
                parameter_size="3.2B",
            )
        ],
        version="0.6.5",
        public_paths=frozenset({"/health", "/health/db", "/api/version", "/api/config"}),
        default_api_key="sk-openwebui-fake",
        description="Open WebUI (uvicorn; /api needs a bearer key)",
    )
)


# --- LocalAI -----------------------------------------------------------------------------------


def _localai_headers(
    fake: FakeServer, request: Request, status: int, length: int, ctype: str = "application/json"
) -> Headers:
    return go_headers(fake, request, status, length, ctype)


def _localai_sse(fake: FakeServer, request: Request) -> Headers:
    return [
        ("Cache-Control", "no-cache"),
        ("Connection", "keep-alive"),
        ("Content-Type", "text/event-stream"),
        ("Date", http_date(fake.now())),
        ("Transfer-Encoding", "chunked"),
    ]


class _LocalAIDialect(StandardDialect):
    sse_encode = staticmethod(go)
    body_encode = staticmethod(go)


_LOCALAI = _LocalAIDialect(_localai_headers, _localai_sse)


async def _empty_200(fake: FakeServer, request: Request, ex: Exchange) -> None:
    await ex.respond(200, [("Date", http_date(fake.now())), ("Content-Length", "0")], b"")


def _localai_json(value: Any) -> Route:
    async def route(fake: FakeServer, request: Request, ex: Exchange) -> None:
        data = go(value(fake) if callable(value) else value)
        await ex.respond(200, _localai_headers(fake, request, 200, len(data)), data)

    return route


def _localai_wellknown(fake: FakeServer) -> Any:
    return {
        "version": fake.version,
        "endpoints": {
            "models": "/v1/models",
            "chat_completions": "/v1/chat/completions",
            "completions": "/v1/completions",
            "embeddings": "/v1/embeddings",
        },
    }


def _localai_tags(fake: FakeServer) -> Any:
    return {
        "models": [
            {
                "name": m.id,
                "model": m.id,
                "modified_at": m.modified_at,
                "size": 0,
                "digest": "",
                "details": {"format": "gguf", "family": "llama-cpp", "families": ["llama-cpp"]},
            }
            for m in fake.models
        ]
    }


async def _localai_show(fake: FakeServer, request: Request, ex: Exchange) -> None:
    body = await read_body(fake, request, ex, _LOCALAI)
    if body is None:
        return
    m = fake.model(body.get("model") or body.get("name"))
    if m is None:
        data = go({"error": f"model {body.get('model')!r} not found"})
        await ex.respond(404, _localai_headers(fake, request, 404, len(data)), data)
        return
    value = {
        "modelfile": f"FROM {m.id}.gguf",
        "parameters": "",
        "template": "",
        "details": {"format": "gguf", "family": "llama-cpp", "families": ["llama-cpp"]},
        "model_info": {
            "general.architecture": "llama-cpp",
            "general.context_length": m.context_length,
        },
        "capabilities": list(m.capabilities),
    }
    data = go(value)
    await ex.respond(200, _localai_headers(fake, request, 200, len(data)), data)


async def _localai_root(fake: FakeServer, request: Request, ex: Exchange) -> None:
    body = html_page("LocalAI")
    ctype = "text/html; charset=utf-8"
    await ex.respond(200, _localai_headers(fake, request, 200, len(body), ctype), body)


def _localai_routes() -> dict[tuple[str, str], Route]:
    routes: dict[tuple[str, str], Route] = {
        ("GET", "/"): _localai_root,
        ("GET", "/readyz"): _empty_200,
        ("GET", "/healthz"): _empty_200,
        ("GET", "/version"): _localai_json(lambda fake: {"version": fake.version}),
        ("GET", "/.well-known/localai.json"): _localai_json(_localai_wellknown),
        ("GET", "/v1/models"): _localai_json(
            lambda fake: {
                "object": "list",
                "data": [{"id": m.id, "object": "model"} for m in fake.models],
            }
        ),
        ("GET", "/api/version"): _localai_json({"version": "0.9.0"}),
        ("GET", "/api/tags"): _localai_json(_localai_tags),
        ("POST", "/api/show"): _localai_show,
    }
    routes[("GET", "/models")] = routes[("GET", "/v1/models")]
    routes.update(openai_routes(_LOCALAI, "/v1"))
    return routes


LOCALAI = register(
    KindSpec(
        name="localai",
        routes=_localai_routes(),
        not_found=json_answer(_localai_headers, 404, b'{"message":"Not Found"}'),
        unauthorized=json_answer(
            _localai_headers,
            401,
            b'{"error":{"code":401,"message":"An authentication key is required",'
            b'"type":"invalid_request_error"}}',
        ),
        server_error=server_error_route(_LOCALAI),
        default_models=lambda: [coder("qwen2.5-coder-7b", 16384)],
        version="v3.1.0",
        public_paths=frozenset({"/readyz", "/healthz", "/"}),
        description="LocalAI (Go)",
    )
)
