"""The OpenAI-compatible front: ``/v1/models``, ``/v1/chat/completions`` (routed, streamed as
SSE or whole), ``/v1/completions`` and ``/v1/embeddings`` (passed through to a fitting model).

A streamed answer's response starts with its first content event, so a request that fails
before any (no model, every attempt failed) is answered with a proper error status; a failure
after it ends the stream with an ``error`` event. Routed answers carry ``X-Routerd-Model``,
``X-Routerd-Service``, ``X-Routerd-Category`` (and ``X-Routerd-Session``) headers.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from routerd.core.errors import BadRequest, NotFound, RouterdError
from routerd.core.fronts.models import Purpose, virtual_models
from routerd.core.fronts.openai_api import (
    ChatBody,
    ChatChunks,
    chat_completion,
    error_body,
    models_list,
    route_params,
)
from routerd.core.fronts.wire import SSE_DONE, decode_body, sse, status_for
from routerd.shell.dispatch import ConnectionInfo
from routerd.shell.routing.executor import Answer
from routerd_client.protocol_route import FINISH_INCOMPLETE, RouteEnd

from .asgi import HttpRequest, Reply
from .engine import (
    CollectSink,
    close_quietly,
    end_headers,
    model_facts,
    passthrough,
    route,
    stream_route,
)

if TYPE_CHECKING:
    from .front import Handler, HttpFront

__all__ = ["OPENAI_ROUTES", "OPENAI_PREFIXES"]


async def models(front: HttpFront, req: HttpRequest, reply: Reply, conn: ConnectionInfo) -> None:
    facts = model_facts(front.app)
    await reply.json(200, models_list(facts, created=int(front.app.started_at)))


async def model(front: HttpFront, req: HttpRequest, reply: Reply, conn: ConnectionInfo) -> None:
    name = req.path.removeprefix("/v1/models/")
    created = int(front.app.started_at)
    if name in virtual_models():
        await reply.json(200, {"id": name, "object": "model", "created": created,
                               "owned_by": "routerd"})  # fmt: skip
        return
    for f in model_facts(front.app):
        if f.id == name:
            await reply.json(200, {"id": f.id, "object": "model", "created": created,
                                   "owned_by": f.service})  # fmt: skip
            return
    await reply.json(404, error_body(f"the model {name!r} does not exist", 404, "model_not_found"))


async def chat(front: HttpFront, req: HttpRequest, reply: Reply, conn: ConnectionInfo) -> None:
    body = decode_body(req.body, ChatBody)
    params = route_params(body)
    created = int(time.time())
    cid = "chatcmpl-" + secrets.token_hex(12)
    if not body.stream:
        end, answer = await route(front.app, conn, params, CollectSink(), "http:chat")
        if end.finish_reason == FINISH_INCOMPLETE:  # a collecting sink falls back instead
            raise RouterdError(end.reason or "the answer broke off", code="unavailable")
        selected = answer.selected
        result = chat_completion(
            end, "".join(answer.text), "".join(answer.reasoning),
            [answer.calls[i] for i in sorted(answer.calls)],
            completion_id=cid, created=created,
            estimated_prompt=selected.prompt_tokens if selected is not None else None,
        )  # fmt: skip
        await reply.json(200, result, end_headers(end))
        return
    chunks = ChatChunks(completion_id=cid, created=created, model=body.model or "routerd/auto",
                        include_usage=body.include_usage)  # fmt: skip
    await stream_route(front.app, conn, params, reply, _Sse(chunks), "http:chat")


class _Sse:
    """``route`` events as OpenAI's server-sent events."""

    content_type = "text/event-stream; charset=utf-8"

    def __init__(self, chunks: ChatChunks) -> None:
        self.chunks = chunks

    def event(self, event: str, data: Any) -> bytes:
        chunks = self.chunks
        if event == "chunk":
            return sse(chunks.content(data.text))
        if event == "reasoning":
            return sse(chunks.reasoning(data.text))
        if event == "tool_call":
            return sse(chunks.tool_call(data))
        if event == "selected":
            chunks.selected(data)
        elif event == "usage":
            chunks.usage(data)
        return b""

    def closing(self, end: RouteEnd, answer: Answer) -> bytes:
        out = b"".join(sse(obj) for obj in self.chunks.end(end))
        return out if end.finish_reason == FINISH_INCOMPLETE else out + SSE_DONE

    def failure(self, exc: RouterdError) -> bytes:
        return sse(error_body(exc.message, status_for(exc.code), exc.code))


def _dict_body(req: HttpRequest) -> dict[str, Any]:
    body = decode_body(req.body, dict[str, Any])
    if not isinstance(body.get("model"), str) or not body["model"].strip():
        raise BadRequest("model is required (routerd/auto lets routerd choose)")
    return body


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(v for v in value if isinstance(v, str))
    return ""


async def _forward(front: HttpFront, req: HttpRequest, reply: Reply, conn: ConnectionInfo,
                   path: str, purpose: Purpose, key: str) -> None:  # fmt: skip
    body = _dict_body(req)
    if key not in body:
        raise BadRequest(f"{key} is required")
    client = front.client
    if client is None:
        raise NotFound("the HTTP front is not serving")
    suffix = body.get("suffix")
    sent = await passthrough(
        front.app, client, conn, path=path, body=body, purpose=purpose,
        needs_fim=isinstance(suffix, str) and bool(suffix), audit_text=_text(body.get(key)),
    )  # fmt: skip
    response = sent.response
    try:
        ctype = response.headers.get("content-type", "application/json")
        headers = [("x-routerd-model", sent.model), ("x-routerd-service", sent.service)]
        await reply.start(response.status_code, ctype, headers)
        async for data in response.aiter_bytes():
            await reply.write(data)
        await reply.finish()
    finally:
        await close_quietly(response)


async def completions(front: HttpFront, req: HttpRequest, reply: Reply,
                      conn: ConnectionInfo) -> None:  # fmt: skip
    await _forward(front, req, reply, conn, "/v1/completions", "completion", "prompt")


async def embeddings(front: HttpFront, req: HttpRequest, reply: Reply,
                     conn: ConnectionInfo) -> None:  # fmt: skip
    await _forward(front, req, reply, conn, "/v1/embeddings", "embedding", "input")


OPENAI_ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/v1/models"): models,
    ("POST", "/v1/chat/completions"): chat,
    ("POST", "/v1/completions"): completions,
    ("POST", "/v1/embeddings"): embeddings,
}
OPENAI_PREFIXES: dict[tuple[str, str], Handler] = {("GET", "/v1/models/"): model}
