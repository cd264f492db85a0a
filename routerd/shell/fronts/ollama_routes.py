"""The Ollama-compatible front: ``/``, ``/api/version``, ``/api/tags``, ``/api/ps``,
``/api/show``, ``/api/chat`` and ``/api/generate`` (NDJSON streams, or one object with
``"stream": false``), ``/api/embed`` and the older ``/api/embeddings``, so tools that speak
only Ollama reach every server behind routerd. Embeddings go to an embedding model through its
server's OpenAI-compatible ``/v1/embeddings`` (every kind that embeds has one), and come back
in Ollama's shape.

``/api/chat`` and ``/api/generate`` run through routing like the socket's ``route``; a
generate with a ``suffix`` is fill-in-the-middle and goes to a FIM-capable model's
``/v1/completions``. A request without messages (or prompt) is Ollama's "load the model":
answered at once with ``done_reason: "load"``, routing nothing. Answers echo the model name
asked for, as Ollama does; the ``X-Routerd-*`` headers say which model answered.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio

from routerd.core.errors import BadRequest, NotFound, RouterdError, Unavailable
from routerd.core.fronts.models import AUTO_MODEL, ModelFacts, parse_model
from routerd.core.fronts.ollama_api import (
    OLLAMA_VERSION,
    ChatBody,
    EmbedBody,
    GenerateBody,
    Lines,
    chat_params,
    embed_answer,
    embed_inputs,
    embed_request,
    fim_answer,
    fim_request,
    generate_params,
    ps,
    show,
    tags,
)
from routerd.core.fronts.wire import decode_body, ndjson
from routerd.shell.dispatch import ConnectionInfo
from routerd.shell.routing.executor import Answer
from routerd_client.protocol_route import RouteEnd, RouteParams

from .asgi import HttpRequest, Reply
from .engine import (
    CollectSink,
    Passthrough,
    close_quietly,
    end_headers,
    model_facts,
    passthrough,
    route,
    routed_headers,
    stream_route,
)

if TYPE_CHECKING:
    from .front import Handler, HttpFront

__all__ = ["OLLAMA_ROUTES"]

NDJSON: Final = "application/x-ndjson"
#: Most bytes of a fill-in-the-middle answer read back from the model server.
FIM_BODY_MAX: Final = 16 * 1024 * 1024


async def root(front: HttpFront, req: HttpRequest, reply: Reply, conn: ConnectionInfo) -> None:
    # Tools probe "/" for Ollama's greeting; the header says it is routerd all the same.
    text = b"Ollama is running (routerd)" if front.app.config.http.ollama else b"routerd"
    await reply.whole(200, b"" if req.method == "HEAD" else text, "text/plain; charset=utf-8")


async def version(front: HttpFront, req: HttpRequest, reply: Reply, conn: ConnectionInfo) -> None:
    await reply.json(200, {"version": OLLAMA_VERSION})


async def list_tags(front: HttpFront, req: HttpRequest, reply: Reply,
                    conn: ConnectionInfo) -> None:  # fmt: skip
    await reply.json(200, tags(model_facts(front.app), started=front.app.started_at))


async def list_ps(front: HttpFront, req: HttpRequest, reply: Reply, conn: ConnectionInfo) -> None:
    await reply.json(200, ps(model_facts(front.app)))


class _ShowBody(msgspec.Struct):
    model: str | None = None
    name: str | None = None  # the older spelling


def _find(facts: list[ModelFacts], name: str) -> ModelFacts | None:
    names = {name, name.removesuffix(":latest"), f"{name}:latest"}
    return next((f for f in facts if f.id in names), None)


async def show_model(front: HttpFront, req: HttpRequest, reply: Reply,
                     conn: ConnectionInfo) -> None:  # fmt: skip
    body = decode_body(req.body, _ShowBody)
    name = (body.model or body.name or "").strip()
    if not name:
        raise BadRequest("model is required")
    facts = model_facts(front.app)
    started = front.app.started_at
    if parse_model(name).virtual or name.lower().startswith("routerd/"):
        widest = max((f.context_length or 0 for f in facts), default=0) or None
        await reply.json(200, show(None, name, started=started, context_length=widest))
        return
    found = _find(facts, name)
    if found is None:
        await reply.json(404, {"error": f"model '{name}' not found"})
        return
    await reply.json(200, show(found, name, started=started))


class _Ndjson:
    """``route`` events as Ollama's NDJSON lines."""

    content_type = NDJSON

    def __init__(self, lines: Lines) -> None:
        self.lines = lines

    def event(self, event: str, data: Any) -> bytes:
        if event == "chunk":
            return ndjson(self.lines.content(data.text, time.time()))
        if event == "reasoning":
            return ndjson(self.lines.reasoning(data.text, time.time()))
        return b""  # tool calls go out whole at the end, as Ollama sends them

    def closing(self, end: RouteEnd, answer: Answer) -> bytes:
        calls = [answer.calls[i] for i in sorted(answer.calls)]
        return b"".join(ndjson(x) for x in self.lines.end(end, calls, time.time()))

    def failure(self, exc: RouterdError) -> bytes:
        return ndjson({"error": exc.message})


async def _answer(front: HttpFront, reply: Reply, conn: ConnectionInfo, params: RouteParams,
                  lines: Lines, stream: bool, method: str) -> None:  # fmt: skip
    if stream:
        await stream_route(front.app, conn, params, reply, _Ndjson(lines), method)
        return
    end, answer = await route(front.app, conn, params, CollectSink(), method)
    calls = [answer.calls[i] for i in sorted(answer.calls)]
    whole = lines.whole(end, "".join(answer.text), "".join(answer.reasoning), calls, time.time())
    await reply.json(200, whole, end_headers(end))


async def chat(front: HttpFront, req: HttpRequest, reply: Reply, conn: ConnectionInfo) -> None:
    body = decode_body(req.body, ChatBody)
    lines = Lines(model=body.model or AUTO_MODEL, chat=True)
    if not body.messages:
        parse_model(body.model)  # a bad routerd/ name is still an error
        await reply.json(200, lines.loaded(time.time()))
        return
    await _answer(front, reply, conn, chat_params(body), lines, body.stream, "http:ollama.chat")


async def generate(front: HttpFront, req: HttpRequest, reply: Reply, conn: ConnectionInfo) -> None:
    body = decode_body(req.body, GenerateBody)
    lines = Lines(model=body.model or AUTO_MODEL, chat=False)
    if body.suffix:
        await _fill_in(front, reply, conn, body, lines)
        return
    if not body.prompt and not body.images:
        parse_model(body.model)
        await reply.json(200, lines.loaded(time.time()))
        return
    params = generate_params(body)
    await _answer(front, reply, conn, params, lines, body.stream, "http:ollama.generate")


async def _json_answer(sent: Passthrough, limit: int) -> Any:
    """The decoded JSON body of a passthrough answer (closed here); raises NotFound when the
    server refused the request, Unavailable when the answer is too big or not JSON."""
    response = sent.response
    try:
        data = bytearray()
        async for piece in response.aiter_bytes():
            data += piece
            if len(data) > limit:
                raise Unavailable(f"{sent.service} answered more than {limit} bytes")
    finally:
        await close_quietly(response)
    if response.status_code >= 400:
        raise NotFound(f"{sent.service} refused the request: HTTP {response.status_code}")
    try:
        return msgspec.json.decode(bytes(data))
    except msgspec.DecodeError:
        raise Unavailable(f"{sent.service} answered something that is not JSON") from None


async def _fill_in(front: HttpFront, reply: Reply, conn: ConnectionInfo, body: GenerateBody,
                   lines: Lines) -> None:  # fmt: skip
    """Fill-in-the-middle through a FIM-capable model's ``/v1/completions``."""
    client = front.client
    if client is None:
        raise Unavailable("the HTTP front is not serving")
    started = trio.current_time()
    sent = await passthrough(
        front.app, client, conn, path="/v1/completions", body=fim_request(body),
        purpose="completion", needs_fim=True, audit_text=body.prompt,
    )  # fmt: skip
    decoded = await _json_answer(sent, FIM_BODY_MAX)
    text, end = fim_answer(decoded, model=sent.model, service=sent.service,
                           total_s=trio.current_time() - started)  # fmt: skip
    headers = routed_headers(sent.model, sent.service, end.category, None)
    now = time.time()
    if not body.stream:
        await reply.json(200, lines.whole(end, text, "", (), now), headers)
        return
    await reply.start(200, NDJSON, headers)
    if text:
        await reply.write(ndjson(lines.content(text, now)))
    await reply.finish(b"".join(ndjson(x) for x in lines.end(end, (), now)))


#: Most bytes of an embeddings answer read back from the model server.
EMBED_BODY_MAX: Final = 64 * 1024 * 1024


async def _embed(front: HttpFront, req: HttpRequest, reply: Reply, conn: ConnectionInfo,
                 *, legacy: bool) -> None:  # fmt: skip
    body = decode_body(req.body, EmbedBody)
    if not (body.model or "").strip():
        raise BadRequest("model is required (routerd/auto lets routerd choose)")
    try:
        inputs = embed_inputs(body, legacy=legacy)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    client = front.client
    if client is None:
        raise Unavailable("the HTTP front is not serving")
    started = trio.current_time()
    sent = await passthrough(
        front.app, client, conn, path="/v1/embeddings", body=embed_request(body, inputs),
        purpose="embedding", audit_text="\n".join(inputs),
    )  # fmt: skip
    decoded = await _json_answer(sent, EMBED_BODY_MAX)
    try:
        vectors, tokens = embed_answer(decoded, model=sent.model, count=len(inputs))
    except ValueError as exc:
        raise Unavailable(f"{sent.service}: {exc}") from None
    headers = [("x-routerd-model", sent.model), ("x-routerd-service", sent.service)]
    if legacy:
        await reply.json(200, {"embedding": vectors[0]}, headers)
        return
    out: dict[str, Any] = {"model": body.model, "embeddings": vectors,
                           "total_duration": int((trio.current_time() - started) * 1e9)}  # fmt: skip
    if tokens is not None:
        out["prompt_eval_count"] = tokens
    await reply.json(200, out, headers)


async def embed(front: HttpFront, req: HttpRequest, reply: Reply, conn: ConnectionInfo) -> None:
    await _embed(front, req, reply, conn, legacy=False)


async def embeddings(front: HttpFront, req: HttpRequest, reply: Reply,
                     conn: ConnectionInfo) -> None:  # fmt: skip
    await _embed(front, req, reply, conn, legacy=True)


OLLAMA_ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/"): root,
    ("HEAD", "/"): root,
    ("GET", "/api/version"): version,
    ("GET", "/api/tags"): list_tags,
    ("GET", "/api/ps"): list_ps,
    ("POST", "/api/show"): show_model,
    ("POST", "/api/chat"): chat,
    ("POST", "/api/generate"): generate,
    ("POST", "/api/embed"): embed,
    ("POST", "/api/embeddings"): embeddings,
}
