"""KoboldCpp, text-generation-webui and ``foreign`` (a web dev server).

* KoboldCpp (``koboldcpp.py``): ``/api/extra/version`` (``"result": "KoboldCpp"``),
  ``/api/v1/model`` (``koboldcpp/<name>``, ``inactive`` while loading),
  ``/api/extra/true_max_context_length``, ``/api/v1/generate``, and the OpenAI routes; a
  password guards only generation; unknown paths get its plain-text 404 sentence.
* text-generation-webui (OpenAI extension): ``/v1/internal/model/info`` (``"None"`` while
  loading) and ``/v1``; the model field is ignored (the loaded model answers).
* ``foreign``: HTML on ``/``, Express's HTML 404 ("Cannot GET /x") elsewhere.
"""

from __future__ import annotations

from typing import Any

from fakes.headers import uvicorn_headers, uvicorn_sse_headers
from fakes.http import Exchange, Headers, Request
from fakes.kinds import KindSpec, html_page, json_answer, json_route, register
from fakes.openai import StandardDialect, UnknownModel
from fakes.openai_kinds import send_json
from fakes.routes import openai_routes, read_body
from fakes.state import FakeModel, FakeServer, Route
from fakes.wire import compact, http_date

__all__ = ["KOBOLDCPP", "TEXTGEN", "FOREIGN"]


# --- KoboldCpp ---------------------------------------------------------------------------------


def _kobold_headers(
    fake: FakeServer, request: Request, status: int, length: int, ctype: str = "application/json"
) -> Headers:
    return [
        ("Server", "BaseHTTP/0.6 Python/3.11.9"),
        ("Date", http_date(fake.now())),
        ("Content-Type", ctype),
        ("Content-Length", str(length)),
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Methods", "*"),
        ("Access-Control-Allow-Headers", "*"),
    ]


def _kobold_sse(fake: FakeServer, request: Request) -> Headers:
    return [
        ("Server", "BaseHTTP/0.6 Python/3.11.9"),
        ("Date", http_date(fake.now())),
        ("Content-Type", "text/event-stream"),
        ("Cache-Control", "no-cache"),
        ("Access-Control-Allow-Origin", "*"),
        ("Transfer-Encoding", "chunked"),
    ]


class _KoboldDialect(StandardDialect):
    unknown_model: UnknownModel = "echo"


_KOBOLD = _KoboldDialect(_kobold_headers, _kobold_sse)


def _kobold_name(fake: FakeServer) -> str:
    if fake.state == "loading" or not fake.models:
        return "inactive"
    return f"koboldcpp/{fake.models[0].id}"


def _kobold_ctx(fake: FakeServer) -> Any:
    return {"value": fake.models[0].context_length if fake.models else 0}


async def _kobold_generate(fake: FakeServer, request: Request, ex: Exchange) -> None:
    body = await read_body(fake, request, ex, _KOBOLD)
    if body is None:
        return
    script = fake.next_script()
    with fake.generating():
        await fake.until_ready(ex)
        if script.hang_before_first_token:
            await ex.hang()
        await ex.pause(script.first_token_delay + script.chunk_delay * script.pieces)
        value = {"results": [{"text": script.text, "finish_reason": script.finish() or "length"}]}
        await send_json(fake, request, ex, _kobold_headers, value)


async def _kobold_not_found(fake: FakeServer, request: Request, ex: Exchange) -> None:
    body = b"Error: HTTP Server is running, but this endpoint does not exist. Please check the URL."
    await ex.respond(404, _kobold_headers(fake, request, 404, len(body), "text/html"), body)


async def _kobold_error(fake: FakeServer, request: Request, ex: Exchange) -> None:
    await send_json(fake, request, ex, _kobold_headers, {"detail": {"msg": "Server error"}}, 500)


def _kobold_routes() -> dict[tuple[str, str], Route]:
    routes: dict[tuple[str, str], Route] = {
        ("GET", "/api/extra/version"): json_route(
            lambda fake: {
                "result": "KoboldCpp",
                "version": fake.version,
                "protected": False,
                "txt2img": False,
            },
            _kobold_headers,
        ),
        ("GET", "/api/v1/model"): json_route(
            lambda fake: {"result": _kobold_name(fake)}, _kobold_headers
        ),
        ("GET", "/api/extra/true_max_context_length"): json_route(_kobold_ctx, _kobold_headers),
        ("GET", "/api/v1/config/max_context_length"): json_route(_kobold_ctx, _kobold_headers),
        ("GET", "/api/v1/info/version"): json_route({"result": "1.2.5"}, _kobold_headers),
        ("GET", "/v1/models"): json_route(
            lambda fake: {
                "object": "list",
                "data": [
                    {
                        "id": _kobold_name(fake),
                        "object": "model",
                        "created": 1,
                        "owned_by": "koboldcpp",
                        "permission": [],
                        "root": "koboldcpp",
                    }
                ],
            },
            _kobold_headers,
        ),
        ("POST", "/api/v1/generate"): _kobold_generate,
    }
    routes.update(openai_routes(_KOBOLD, "/v1"))
    return routes


_KOBOLD_ROUTES = _kobold_routes()

KOBOLDCPP = register(
    KindSpec(
        name="koboldcpp",
        routes=_KOBOLD_ROUTES,
        not_found=_kobold_not_found,
        unauthorized=json_answer(
            _kobold_headers,
            401,
            compact(
                {
                    "detail": {
                        "error": "Unauthorized",
                        "msg": "Authentication key is missing or invalid.",
                        "type": "unauthorized",
                    }
                }
            ),
        ),
        server_error=_kobold_error,
        default_models=lambda: [
            FakeModel(
                "Qwen2.5-Coder-7B-Instruct-Q4_K_M", context_length=8192, max_context_length=32768
            )
        ],
        version="1.82.4",
        public_paths=frozenset(path for method, path in _KOBOLD_ROUTES if method == "GET"),
        description="KoboldCpp (Python http.server)",
    )
)


# --- text-generation-webui ---------------------------------------------------------------------


class _TextgenDialect(StandardDialect):
    unknown_model: UnknownModel = "loaded"


_TEXTGEN = _TextgenDialect(uvicorn_headers, uvicorn_sse_headers)


def _textgen_info(fake: FakeServer) -> Any:
    name = "None" if fake.state == "loading" or not fake.models else fake.models[0].id
    return {"model_name": name, "lora_names": []}


TEXTGEN = register(
    KindSpec(
        name="textgen",
        routes={
            ("GET", "/v1/models"): json_route(
                lambda fake: {
                    "object": "list",
                    "data": [
                        {"id": m.id, "object": "model", "created": 0, "owned_by": "user"}
                        for m in fake.models
                    ],
                }
            ),
            ("GET", "/v1/internal/model/info"): json_route(_textgen_info),
            **openai_routes(_TEXTGEN, "/v1"),
        },
        not_found=json_answer(uvicorn_headers, 404, b'{"detail":"Not Found"}'),
        unauthorized=json_answer(uvicorn_headers, 401, b'{"detail":"Unauthorized"}'),
        server_error=json_answer(uvicorn_headers, 500, b'{"detail":"Internal Server Error"}'),
        default_models=lambda: [
            FakeModel(
                "Qwen2.5-Coder-7B-Instruct-Q4_K_M.gguf",
                context_length=8192,
                max_context_length=32768,
            )
        ],
        version="3.4",
        description="text-generation-webui OpenAI extension (uvicorn)",
    )
)


# --- foreign: a web dev server -----------------------------------------------------------------


def _dev_headers(fake: FakeServer, length: int) -> Headers:
    return [
        ("X-Powered-By", "Express"),
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(length)),
        ("Date", http_date(fake.now())),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
    ]


async def _dev_index(fake: FakeServer, request: Request, ex: Exchange) -> None:
    body = html_page("Vite + React + TS")
    await ex.respond(200, _dev_headers(fake, len(body)), body)


async def _dev_404(fake: FakeServer, request: Request, ex: Exchange) -> None:
    body = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Error</title>\n</head>\n<body>\n<pre>Cannot {request.method} "
        f"{request.path}</pre>\n</body>\n</html>\n"
    ).encode()
    await ex.respond(404, _dev_headers(fake, len(body)), body)


async def _dev_500(fake: FakeServer, request: Request, ex: Exchange) -> None:
    body = b"<!DOCTYPE html><html><body><pre>Internal Server Error</pre></body></html>\n"
    await ex.respond(500, _dev_headers(fake, len(body)), body)


FOREIGN = register(
    KindSpec(
        name="foreign",
        routes={("GET", "/"): _dev_index, ("GET", "/index.html"): _dev_index},
        not_found=_dev_404,
        unauthorized=_dev_404,
        server_error=_dev_500,
        default_models=list,
        description="a web dev server: HTML on /, HTML 404 elsewhere",
    )
)
