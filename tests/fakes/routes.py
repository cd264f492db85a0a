"""The generation routes every OpenAI-style fake shares, and the streaming loop Ollama reuses.

``chat_route(dialect)``, ``completions_route(dialect)`` and ``embeddings_route(dialect)``
build ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` handlers; the
dialect decides every byte. ``stream_events`` plays a ``Script``: first-token delay, slow
drip, hang, drop mid-stream, end without ``[DONE]``, empty 200, garbage, and counts the
stream in ``fake.generating()`` so an abandoned stream shows in ``fake.disconnects``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fakes.http import Exchange, Headers, Request
from fakes.openai import Dialect, Gen, make_gen, send_failure
from fakes.state import Failure, FakeServer, Route
from fakes.wire import GARBAGE, GARBAGE_STREAM

__all__ = [
    "stream_events",
    "chat_route",
    "completions_route",
    "embeddings_route",
    "scripted_failure",
    "read_body",
    "server_error_route",
    "openai_routes",
]

DONE = b"data: [DONE]\n\n"


async def stream_events(
    fake: FakeServer,
    ex: Exchange,
    gen: Gen,
    epoch: int,
    *,
    headers: Headers,
    head_first: bool,
    preamble: Sequence[bytes],
    pieces: Sequence[bytes],
    finals: Sequence[bytes],
    done: bytes | None,
) -> None:
    """Write one streamed answer as ``gen.script`` says.

    ``head_first``: the server sends its headers before the first token (OpenAI-style
    servers do; Ollama sends them with the first line). ``pieces`` count for
    ``fail_after_chunks``; ``preamble`` (the role chunk) does not.
    """
    script = gen.script
    if head_first or script.empty_200 or script.garbage_stream:
        await ex.start(200, headers)
    if script.empty_200:
        await ex.end()
        return
    if script.hang_before_first_token:
        await ex.hang()
    await ex.pause(script.first_token_delay)
    if script.garbage_stream:
        for junk in GARBAGE_STREAM:
            await ex.write(junk)
        await ex.end()
        return
    if not ex.head_sent:
        await ex.start(200, headers)
    for event in preamble:
        await ex.write(event)
    limit = script.fail_after_chunks
    for index, event in enumerate(pieces):
        if limit is not None and index >= limit:
            await ex.abort()
            return
        if fake.interrupted(epoch):
            if done:
                await ex.write(done)
            await ex.end()
            return
        await ex.write(event)
        await ex.pause(script.chunk_delay)
    if limit is not None:
        await ex.abort()
        return
    if script.end_without_done:
        await ex.end()
        return
    for event in finals:
        await ex.write(event)
    if done:
        await ex.write(done)
    await ex.end()


def scripted_failure(gen: Gen, dialect: Dialect, stream: bool) -> Failure | bool | None:
    """The failure ``gen.script`` asks for: a ``Failure``, ``None`` (an empty 200 stream,
    llama-cpp-python's context overflow) or ``False`` (no failure)."""
    wanted = gen.script.fail_before_first_token
    if wanted is None:
        return False
    if isinstance(wanted, Failure):
        return wanted
    if wanted == "context_overflow":
        model = gen.fake.model(gen.model) or (gen.fake.models[0] if gen.fake.models else None)
        return dialect.context_overflow(gen, model.context_length if model else 2048, stream)
    if wanted == "server_error":
        return dialect.server_error()
    if wanted == "queue_full":
        return dialect.busy(503)
    return dialect.busy(429)


async def read_body(
    fake: FakeServer, request: Request, ex: Exchange, dialect: Dialect
) -> dict[str, Any] | None:
    """The JSON object body, or ``None`` after answering the server's bad-request error."""
    try:
        body = json.loads(request.body)
    except ValueError as exc:
        await send_failure(fake, request, ex, dialect, dialect.bad_json(str(exc)))
        return None
    if not isinstance(body, dict):
        await send_failure(fake, request, ex, dialect, dialect.bad_json("not an object"))
        return None
    return body


async def _generate(
    fake: FakeServer, request: Request, ex: Exchange, dialect: Dialect, chat: bool
) -> None:
    body = await read_body(fake, request, ex, dialect)
    if body is None:
        return
    model = dialect.resolve_model(fake, body.get("model"))
    if model is None:
        await send_failure(fake, request, ex, dialect, dialect.model_not_found(body.get("model")))
        return
    stream = body.get("stream") is True
    gen = make_gen(fake, request, body, model, dialect)
    if not chat:
        gen.cid = dialect.new_id(dialect.completion_prefix)
    with fake.generating() as epoch:
        await fake.until_ready(ex)
        failure = scripted_failure(gen, dialect, stream)
        if isinstance(failure, Failure):
            await send_failure(fake, request, ex, dialect, failure)
            return
        if failure is None:
            await ex.start(200, dialect.sse_headers(fake, request))
            await ex.end()
            return
        if not stream:
            await _whole(fake, request, ex, dialect, gen, chat)
            return
        finish = gen.script.finish()
        if chat:
            role = dialect.sse(dialect.chunk(gen, dialect.role_delta(), None))
            preamble = [role] if dialect.role_chunk else []
            pieces = [dialect.sse(dialect.chunk(gen, d, None)) for d in dialect.deltas(gen)]
            finals = [dialect.sse(c) for c in dialect.final_chunks(gen, finish)]
        else:
            preamble = []
            pieces = [dialect.sse(dialect.text_chunk(gen, c, None)) for c in gen.script.chunks]
            finals = [dialect.sse(dialect.text_chunk(gen, "", finish))] if finish else []
            if gen.include_usage and dialect.honours_include_usage:
                finals.append(dialect.sse(dialect.usage_chunk(gen)))
        await stream_events(
            fake,
            ex,
            gen,
            epoch,
            headers=dialect.sse_headers(fake, request),
            head_first=True,
            preamble=preamble,
            pieces=pieces,
            finals=finals,
            done=DONE,
        )


async def _whole(
    fake: FakeServer, request: Request, ex: Exchange, dialect: Dialect, gen: Gen, chat: bool
) -> None:
    script = gen.script
    if script.hang_before_first_token:
        await ex.hang()
    await ex.pause(script.first_token_delay + script.chunk_delay * script.pieces)
    if script.garbage_stream:
        body = GARBAGE
    elif script.empty_200:
        body = b""
    else:
        body = dialect.body_encode(dialect.chat_body(gen) if chat else dialect.text_body(gen))
    await ex.respond(200, dialect.json_headers(fake, request, 200, len(body)), body)


def chat_route(dialect: Dialect) -> Route:
    async def route(fake: FakeServer, request: Request, ex: Exchange) -> None:
        await _generate(fake, request, ex, dialect, chat=True)

    return route


def completions_route(dialect: Dialect) -> Route:
    async def route(fake: FakeServer, request: Request, ex: Exchange) -> None:
        await _generate(fake, request, ex, dialect, chat=False)

    return route


def embedding(text: str, size: int = 8) -> list[float]:
    """A deterministic unit-ish vector for ``text``."""
    seed = sum(text.encode()) or 1
    return [round(((seed * (i + 7)) % 97) / 97 - 0.5, 6) for i in range(size)]


def embeddings_route(dialect: Dialect) -> Route:
    async def route(fake: FakeServer, request: Request, ex: Exchange) -> None:
        body = await read_body(fake, request, ex, dialect)
        if body is None:
            return
        model = dialect.resolve_model(fake, body.get("model"))
        if model is None:
            failure = dialect.model_not_found(body.get("model"))
            await send_failure(fake, request, ex, dialect, failure)
            return
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs or ()]
        tokens = sum(max(1, len(t) // 4) for t in texts)
        answer = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": embedding(t)}
                for i, t in enumerate(texts)
            ],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        data = dialect.body_encode(answer)
        await ex.respond(200, dialect.json_headers(fake, request, 200, len(data)), data)

    return route


def server_error_route(dialect: Dialect) -> Route:
    """The dialect's own 500, for ``KindSpec.server_error``."""

    async def route(fake: FakeServer, request: Request, ex: Exchange) -> None:
        await send_failure(fake, request, ex, dialect, dialect.server_error())

    return route


def openai_routes(dialect: Dialect, prefix: str = "/v1") -> dict[tuple[str, str], Route]:
    """``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` for ``dialect``."""
    return {
        ("POST", f"{prefix}/chat/completions"): chat_route(dialect),
        ("POST", f"{prefix}/completions"): completions_route(dialect),
        ("POST", f"{prefix}/embeddings"): embeddings_route(dialect),
    }
