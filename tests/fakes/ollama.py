"""Ollama (``ollama``), from its ``docs/api.md`` and ``api/types.go``.

Paths: ``GET /`` ("Ollama is running"), ``/api/version``, ``/api/tags``, ``/api/ps``,
``POST /api/show``, ``/api/chat`` and ``/api/generate`` (NDJSON stream, or one object with
``"stream": false``), ``/api/embed``, and the OpenAI-compatible ``/v1/models``,
``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``.

Bytes: Go's ``encoding/json`` (``<``, ``>``, ``&`` escaped), field order of the Go structs,
Go's header order (handler headers, then ``Date``, ``Content-Length`` /
``Transfer-Encoding``), gin's ``404 page not found``. A stream's headers go out with its
first line, so a hang before the first token sends nothing at all.

Behaviour: ``"llama3.2"`` means ``"llama3.2:latest"``; an unknown model is a 404; a chat with
no messages (or a generate with no prompt) loads the model and answers ``done_reason:
"load"``; ``options.num_ctx`` becomes the loaded model's ``context_length`` in ``/api/ps``;
``keep_alive: 0`` unloads it after the answer. While ``loading``, ``/api/ps`` is empty and
generations wait for ``ready``.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from fakes.http import Exchange, Headers, Request
from fakes.kinds import KindSpec, register
from fakes.openai import Dialect, Gen, make_gen
from fakes.routes import embedding, openai_routes, stream_events
from fakes.state import Failure, FakeModel, FakeServer, Route
from fakes.wire import go, go_time, http_date

__all__ = ["OLLAMA", "go_headers", "ollama_models", "QUEUE_FULL"]

QUEUE_FULL = "server busy, please try again.  maximum pending requests exceeded"


def go_headers(
    fake: FakeServer,
    request: Request,
    status: int,
    length: int,
    ctype: str = "application/json; charset=utf-8",
) -> Headers:
    return [
        ("Content-Type", ctype),
        ("Date", http_date(fake.now())),
        ("Content-Length", str(length)),
    ]


def go_stream_headers(fake: FakeServer, ctype: str = "application/x-ndjson") -> Headers:
    return [
        ("Content-Type", ctype),
        ("Date", http_date(fake.now())),
        ("Transfer-Encoding", "chunked"),
    ]


def ollama_models() -> list[FakeModel]:
    return [
        FakeModel(
            "llama3.2:latest",
            context_length=4096,
            max_context_length=131072,
            size=2_019_393_189,
            family="llama",
            parameter_size="3.2B",
            quantization="Q4_K_M",
            capabilities=("completion", "tools"),
            n_params=3_212_749_888,
            embedding_length=3072,
        ),
        FakeModel(
            "qwen2.5-coder:7b",
            context_length=4096,
            max_context_length=32768,
            size=4_683_087_332,
            family="qwen2",
            parameter_size="7.6B",
            quantization="Q4_K_M",
            capabilities=("completion", "tools", "insert"),
            loaded=False,
            n_params=7_615_616_512,
            embedding_length=3584,
        ),
    ]


async def _json(fake: FakeServer, request: Request, ex: Exchange, status: int, value: Any) -> None:
    body = go(value)
    await ex.respond(status, go_headers(fake, request, status, len(body)), body)


async def _error(fake: FakeServer, request: Request, ex: Exchange, status: int, msg: str) -> None:
    await _json(fake, request, ex, status, {"error": msg})


def _find(fake: FakeServer, name: Any) -> FakeModel | None:
    if not isinstance(name, str) or not name:
        return None
    return fake.model(name) or (fake.model(f"{name}:latest") if ":" not in name else None)


def _details(m: FakeModel) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": m.family,
        "families": [m.family],
        "parameter_size": m.parameter_size,
        "quantization_level": m.quantization,
    }


# --- discovery ---------------------------------------------------------------------------------


async def _root(fake: FakeServer, request: Request, ex: Exchange) -> None:
    body = b"Ollama is running"
    await ex.respond(
        200, go_headers(fake, request, 200, len(body), "text/plain; charset=utf-8"), body
    )


async def _version(fake: FakeServer, request: Request, ex: Exchange) -> None:
    await _json(fake, request, ex, 200, {"version": fake.version})


async def _tags(fake: FakeServer, request: Request, ex: Exchange) -> None:
    models = [
        {
            "name": m.id,
            "model": m.id,
            "modified_at": m.modified_at,
            "size": m.size,
            "digest": m.digest,
            "details": _details(m),
        }
        for m in fake.models
    ]
    await _json(fake, request, ex, 200, {"models": models})


async def _ps(fake: FakeServer, request: Request, ex: Exchange) -> None:
    expires = go_time(fake.now() + 300)
    loaded = [] if fake.state == "loading" else [m for m in fake.models if m.loaded]
    models = [
        {
            "name": m.id,
            "model": m.id,
            "size": m.size,
            "digest": m.digest,
            "details": _details(m),
            "expires_at": expires,
            "size_vram": m.size_vram,
            "context_length": m.context_length,
        }
        for m in loaded
    ]
    await _json(fake, request, ex, 200, {"models": models})


async def _show(fake: FakeServer, request: Request, ex: Exchange) -> None:
    body = _body(request)
    name = body.get("model") or body.get("name") if isinstance(body, dict) else None
    m = _find(fake, name)
    if m is None:
        await _error(fake, request, ex, 404, f"model '{name}' not found")
        return
    arch = m.family or "llama"
    await _json(
        fake,
        request,
        ex,
        200,
        {
            "license": "",
            "modelfile": f'# Modelfile generated by "ollama show"\nFROM /models/blobs/'
            f"sha256-{m.digest}\n",
            "parameters": 'stop                           "<|eot_id|>"',
            "template": "{{ .Prompt }}",
            "details": _details(m),
            "model_info": {
                "general.architecture": arch,
                "general.file_type": 15,
                "general.parameter_count": m.n_params,
                "general.quantization_version": 2,
                f"{arch}.context_length": m.trained_context,
                f"{arch}.embedding_length": m.embedding_length,
            },
            "tensors": [],
            "capabilities": list(m.capabilities),
            "modified_at": m.modified_at,
        },
    )


def _body(request: Request) -> Any:
    try:
        return json.loads(request.body) if request.body else {}
    except ValueError:
        return None


# --- generation --------------------------------------------------------------------------------

_FAILURES = {
    "context_overflow": (400, "the input length exceeds the context length"),
    "server_error": (500, "llama runner process has terminated: exit status 2"),
    "queue_full": (503, QUEUE_FULL),
    "rate_limited": (429, "too many requests, please try again later"),
}


def _metrics(gen: Gen) -> dict[str, int]:
    prompt_ns = gen.prompt_tokens * 3_000_000
    eval_ns = gen.completion_tokens * 20_000_000
    load_ns = 21_300_000
    return {
        "total_duration": load_ns + prompt_ns + eval_ns,
        "load_duration": load_ns,
        "prompt_eval_count": gen.prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": gen.completion_tokens,
        "eval_duration": eval_ns,
    }


def _tool_calls(gen: Gen) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id or f"call_{i}",
            "function": {"index": i, "name": call.name, "arguments": call.arguments},
        }
        for i, call in enumerate(gen.script.tool_calls)
    ]


class _Shape:
    """Where ``/api/chat`` and ``/api/generate`` differ."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat

    def piece(self, gen: Gen, *, content: str = "", thinking: str = "", tools: Any = None) -> Any:
        head = {"model": gen.model, "created_at": go_time(gen.fake.now())}
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if tools:
                message["tool_calls"] = tools
            return {**head, "message": message, "done": False}
        out: dict[str, Any] = {**head, "response": content}
        if thinking:
            out["thinking"] = thinking
        out["done"] = False
        return out

    def final(self, gen: Gen, reason: str | None, whole: bool, metrics: bool = True) -> Any:
        script = gen.script
        text = script.text if whole else ""
        thinking = "".join(script.reasoning) if whole else ""
        out = self.piece(
            gen, content=text, thinking=thinking, tools=_tool_calls(gen) if whole else None
        )
        del out["done"]
        if self.chat:
            if reason:
                out["done_reason"] = reason
            out["done"] = True
        else:
            out["done"] = True
            if reason:
                out["done_reason"] = reason
            if metrics:
                out["context"] = [128006, 882, 128007, 271]
        if metrics:
            out.update(_metrics(gen))
        return out


_CHAT = _Shape(chat=True)
_GENERATE = _Shape(chat=False)


def _generation_route(shape: _Shape) -> Route:
    async def route(fake: FakeServer, request: Request, ex: Exchange) -> None:
        body = _body(request)
        if not isinstance(body, dict):
            await _error(
                fake, request, ex, 400, "invalid character 'x' looking for beginning of value"
            )
            return
        name = body.get("model")
        if not name:
            await _error(fake, request, ex, 400, "model is required")
            return
        m = _find(fake, name)
        if m is None:
            await _error(fake, request, ex, 404, f'model "{name}" not found, try pulling it first')
            return
        gen = make_gen(fake, request, body, str(name), _OLLAMA_V1)
        options = body.get("options")
        num_ctx = options.get("num_ctx") if isinstance(options, dict) else None
        with fake.generating() as epoch:
            await fake.until_ready(ex)
            if isinstance(num_ctx, int) and num_ctx > 0:
                m.context_length = num_ctx
            m.loaded = True
            await _answer(fake, request, ex, shape, gen, body, epoch)
            if body.get("keep_alive") in (0, "0", "0s"):
                m.loaded = False

    return route


async def _answer(
    fake: FakeServer,
    request: Request,
    ex: Exchange,
    shape: _Shape,
    gen: Gen,
    body: dict[str, Any],
    epoch: int,
) -> None:
    script = gen.script
    wanted = script.fail_before_first_token
    if isinstance(wanted, Failure):
        await ex.respond(
            wanted.status,
            wanted.headers or go_headers(fake, request, wanted.status, len(wanted.body)),
            wanted.body,
        )
        return
    if wanted is not None:
        status, message = _FAILURES[wanted]
        await _error(fake, request, ex, status, message)
        return
    empty = not body.get("messages") if shape.chat else not body.get("prompt")
    if empty:  # a warm-up: load the model, generate nothing
        await _json(fake, request, ex, 200, shape.final(gen, "load", False, metrics=False))
        return
    if body.get("stream") is False:
        if script.hang_before_first_token:
            await ex.hang()
        await ex.pause(script.first_token_delay + script.chunk_delay * script.pieces)
        await _json(fake, request, ex, 200, shape.final(gen, script.finish_reason, True))
        return
    pieces = [go(shape.piece(gen, thinking=t)) + b"\n" for t in script.reasoning]
    pieces += [go(shape.piece(gen, content=c)) + b"\n" for c in script.chunks]
    if script.tool_calls and shape.chat:
        pieces.append(go(shape.piece(gen, tools=_tool_calls(gen))) + b"\n")
    finish = script.finish_reason  # Ollama says "stop" after tool calls too
    await stream_events(
        fake,
        ex,
        gen,
        epoch,
        headers=go_stream_headers(fake),
        head_first=False,
        preamble=[],
        pieces=pieces,
        finals=[go(shape.final(gen, finish, False)) + b"\n"],
        done=None,
    )


async def _embed(fake: FakeServer, request: Request, ex: Exchange) -> None:
    body = _body(request)
    name = body.get("model") if isinstance(body, dict) else None
    if _find(fake, name) is None:
        await _error(fake, request, ex, 404, f'model "{name}" not found, try pulling it first')
        return
    inputs = body.get("input") if isinstance(body, dict) else None
    texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs or ()]
    answer = {
        "model": name,
        "embeddings": [embedding(t) for t in texts],
        "total_duration": 14_143_917,
        "load_duration": 1_019_500,
        "prompt_eval_count": sum(max(1, len(t) // 4) for t in texts),
    }
    await _json(fake, request, ex, 200, answer)


# --- the OpenAI-compatible /v1 -----------------------------------------------------------------


class OllamaOpenAIDialect(Dialect):
    """Ollama's ``/v1``: Go JSON, ``system_fingerprint: "fp_ollama"``, the role in every delta,
    no ``logprobs`` key."""

    name = "ollama"
    sse_encode = staticmethod(go)
    body_encode = staticmethod(go)

    role_chunk = False

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{secrets.randbelow(1000)}"

    def resolve_model(self, fake: FakeServer, asked: Any) -> str | None:
        return str(asked) if _find(fake, asked) is not None else None

    def deltas(self, gen: Gen) -> list[dict[str, Any]]:
        out = [{"role": "assistant", "content": "", "reasoning": r} for r in gen.script.reasoning]
        out += [{"role": "assistant", "content": c} for c in gen.script.chunks]
        return out

    def chunk(self, gen: Gen, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return self.envelope(
            gen, "chat.completion.chunk", system_fingerprint="fp_ollama", choices=[choice]
        )

    def final_chunks(self, gen: Gen, finish: str | None) -> list[dict[str, Any]]:
        out = []
        if finish is not None:
            out.append(self.chunk(gen, {"role": "assistant", "content": ""}, finish))
        if gen.include_usage:
            out.append(self.usage_chunk(gen))
        return out

    def model_not_found(self, asked: Any) -> Failure:
        message = f'model "{asked}" not found, try pulling it first'
        body = go({"error": {"message": message, "type": "api_error", "param": None, "code": None}})
        return Failure(404, body)


def _sse_headers(fake: FakeServer, request: Request) -> Headers:
    return go_stream_headers(fake, "text/event-stream")


_OLLAMA_V1 = OllamaOpenAIDialect(go_headers, _sse_headers)


async def _v1_models(fake: FakeServer, request: Request, ex: Exchange) -> None:
    data = [
        {"id": m.id, "object": "model", "created": int(fake.started_at), "owned_by": "library"}
        for m in fake.models
    ]
    await _json(fake, request, ex, 200, {"object": "list", "data": data})


async def _not_found(fake: FakeServer, request: Request, ex: Exchange) -> None:
    body = b"404 page not found"
    await ex.respond(404, go_headers(fake, request, 404, len(body), "text/plain"), body)


async def _unauthorized(fake: FakeServer, request: Request, ex: Exchange) -> None:
    await _error(fake, request, ex, 401, "unauthorized")


async def _server_error(fake: FakeServer, request: Request, ex: Exchange) -> None:
    await _error(fake, request, ex, 500, _FAILURES["server_error"][1])


def _routes() -> dict[tuple[str, str], Route]:
    routes: dict[tuple[str, str], Route] = {
        ("GET", "/"): _root,
        ("GET", "/api/version"): _version,
        ("GET", "/api/tags"): _tags,
        ("GET", "/api/ps"): _ps,
        ("POST", "/api/show"): _show,
        ("POST", "/api/chat"): _generation_route(_CHAT),
        ("POST", "/api/generate"): _generation_route(_GENERATE),
        ("POST", "/api/embed"): _embed,
        ("GET", "/v1/models"): _v1_models,
    }
    routes.update(openai_routes(_OLLAMA_V1, "/v1"))
    return routes


OLLAMA = register(
    KindSpec(
        name="ollama",
        routes=_routes(),
        not_found=_not_found,
        unauthorized=_unauthorized,
        server_error=_server_error,
        default_models=ollama_models,
        version="0.12.6",
        description="Ollama",
    )
)
