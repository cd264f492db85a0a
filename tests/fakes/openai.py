"""OpenAI-style answers: the ``Dialect`` base (OpenAI's own spelling) and its variants.

A dialect decides every byte of a chat/completion answer: chunk and body layout, first delta,
whether ``stream_options.include_usage`` is honoured, how an unknown model is answered, and
the error bodies. ``StandardDialect`` is OpenAI's order (LM Studio, Jan, LocalAI, GPT4All,
...): first delta ``{"role":"assistant","content":""}``, a usage chunk only when asked.
``VllmDialect`` adds ``stop_reason``. The llama.cpp-based servers' spellings, taken from
real captures, are in ``llama_dialects``; header sets are in ``headers``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from fakes.headers import JsonHeaders, SseHeaders, uvicorn_headers
from fakes.http import Exchange, Request
from fakes.state import Failure, FakeServer, Script, ToolCall, estimate_prompt_tokens
from fakes.wire import (
    Encoder,
    compact,
    hex_id,
)

__all__ = [
    "Gen",
    "Dialect",
    "StandardDialect",
    "VllmDialect",
    "UnknownModel",
    "make_gen",
    "send_failure",
    "tool_call_id",
]

UnknownModel = Literal["loaded", "echo", "404"]


# --- one generation ----------------------------------------------------------------------------


@dataclass
class Gen:
    """What one chat/completion request is answered with."""

    fake: FakeServer
    request: Request
    body: dict[str, Any]
    model: str
    script: Script
    cid: str
    created: int
    prompt_tokens: int
    include_usage: bool

    @property
    def completion_tokens(self) -> int:
        return self.script.completion_count()

    @property
    def usage(self) -> dict[str, int]:
        p, c = self.prompt_tokens, self.completion_tokens
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    @property
    def max_tokens(self) -> int:
        value = self.body.get("max_tokens") or self.body.get("max_completion_tokens")
        return value if isinstance(value, int) else 16


def tool_call_id(call: ToolCall, index: int) -> str:
    return call.id or f"call_{index}"


class Dialect:
    """How one server family writes OpenAI-style answers. Subclasses override pieces."""

    name = "standard"
    sse_encode: Encoder = staticmethod(compact)
    body_encode: Encoder = staticmethod(compact)
    unknown_model: UnknownModel = "404"
    honours_include_usage = True
    role_chunk = True
    chat_prefix = "chatcmpl-"
    completion_prefix = "cmpl-"

    def __init__(self, json_headers: JsonHeaders, sse_headers: SseHeaders) -> None:
        self.json_headers = json_headers
        self.sse_headers = sse_headers

    # ids and names

    def new_id(self, prefix: str) -> str:
        return hex_id(prefix)

    def resolve_model(self, fake: FakeServer, asked: Any) -> str | None:
        """The model name the answer reports, or ``None`` for "no such model"."""
        loaded = fake.models[0].id if fake.models else "default"
        if self.unknown_model == "loaded":
            return loaded
        if self.unknown_model == "echo":
            return asked if isinstance(asked, str) and asked else loaded
        if isinstance(asked, str) and fake.model(asked) is not None:
            return asked
        if not isinstance(asked, str) or not asked:
            return loaded if len(fake.models) == 1 else None
        return None

    # chunks

    def role_delta(self) -> dict[str, Any]:
        return {"role": "assistant", "content": ""}

    def deltas(self, gen: Gen) -> list[dict[str, Any]]:
        """One delta per piece of the script: reasoning, content, tool calls."""
        out: list[dict[str, Any]] = [{"reasoning_content": r} for r in gen.script.reasoning]
        out += [{"content": c} for c in gen.script.chunks]
        out += [
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": tool_call_id(call, i),
                        "type": "function",
                        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                    }
                ]
            }
            for i, call in enumerate(gen.script.tool_calls)
        ]
        return out

    def chunk(self, gen: Gen, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self.envelope(gen, "chat.completion.chunk", choices=[choice])

    def final_chunks(self, gen: Gen, finish: str | None) -> list[dict[str, Any]]:
        out = [self.chunk(gen, {}, finish)] if finish is not None else []
        if gen.include_usage and self.honours_include_usage:
            out.append(self.usage_chunk(gen))
        return out

    def usage_chunk(self, gen: Gen) -> dict[str, Any]:
        return self.envelope(gen, "chat.completion.chunk", choices=[], usage=gen.usage)

    @staticmethod
    def envelope(gen: Gen, obj: str, **rest: Any) -> dict[str, Any]:
        """OpenAI's leading fields (``id``, ``object``, ``created``, ``model``), then ``rest``."""
        return {"id": gen.cid, "object": obj, "created": gen.created, "model": gen.model, **rest}

    def sse(self, value: Any) -> bytes:
        return b"data: " + self.sse_encode(value) + b"\n\n"

    # whole bodies

    def message(self, gen: Gen) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": gen.script.text}
        if gen.script.reasoning:
            message["reasoning_content"] = "".join(gen.script.reasoning)
        if gen.script.tool_calls:
            message["tool_calls"] = self.tool_calls(gen.script.tool_calls)
        return message

    def tool_calls(self, calls: Any) -> list[dict[str, Any]]:
        return [
            {
                "id": tool_call_id(call, i),
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for i, call in enumerate(calls)
        ]

    def chat_body(self, gen: Gen) -> dict[str, Any]:
        choice = {
            "index": 0,
            "message": self.message(gen),
            "logprobs": None,
            "finish_reason": gen.script.finish(),
        }
        return self.envelope(gen, "chat.completion", choices=[choice], usage=gen.usage)

    def text_choice(self, text: str, finish: str | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    def text_body(self, gen: Gen) -> dict[str, Any]:
        choice = self.text_choice(gen.script.text, gen.script.finish())
        return self.envelope(gen, "text_completion", choices=[choice], usage=gen.usage)

    def text_chunk(self, gen: Gen, text: str, finish: str | None) -> dict[str, Any]:
        return self.envelope(gen, "text_completion", choices=[self.text_choice(text, finish)])

    # errors

    def error(self, status: int, message: str, type_: str, **extra: Any) -> bytes:
        error = {"message": message, "type": type_, "param": None, "code": status}
        error.update(extra)
        return self.body_encode({"error": error})

    def model_not_found(self, asked: Any) -> Failure:
        return Failure(
            404,
            self.error(
                404,
                f"The model `{asked}` does not exist.",
                "invalid_request_error",
                param="model",
                code="model_not_found",
            ),
        )

    def bad_json(self, detail: str) -> Failure:
        return Failure(400, self.error(400, f"Invalid JSON: {detail}", "invalid_request_error"))

    def context_overflow(self, gen: Gen, n_ctx: int, stream: bool) -> Failure | None:
        return Failure(
            400,
            self.error(
                400,
                f"This model's maximum context length is {n_ctx} tokens. However, your "
                f"messages resulted in {gen.prompt_tokens} tokens. Please reduce the length "
                "of the messages.",
                "invalid_request_error",
                param="messages",
                code="context_length_exceeded",
            ),
        )

    def server_error(self) -> Failure:
        return Failure(500, self.error(500, "Internal server error", "server_error"))

    def busy(self, status: int) -> Failure:
        message = "Server busy" if status == 503 else "Too many requests"
        return Failure(status, self.error(status, message, "server_error"))


class StandardDialect(Dialect):
    """OpenAI's own spelling, for the servers that copy it."""


class VllmDialect(Dialect):
    """vLLM (pydantic, ``exclude_unset``): ``stop_reason`` beside ``finish_reason``."""

    name = "vllm"

    def final_chunks(self, gen: Gen, finish: str | None) -> list[dict[str, Any]]:
        out = []
        if finish is not None:
            chunk = self.chunk(gen, {"content": ""}, finish)
            chunk["choices"][0]["stop_reason"] = None
            out.append(chunk)
        if gen.include_usage:
            out.append(self.usage_chunk(gen))
        return out

    def model_not_found(self, asked: Any) -> Failure:
        return Failure(
            404,
            self.error(404, f"The model `{asked}` does not exist.", "NotFoundError", param="model"),
        )

    def context_overflow(self, gen: Gen, n_ctx: int, stream: bool) -> Failure | None:
        return Failure(
            400,
            self.error(
                400,
                f"This model's maximum context length is {n_ctx} tokens. However, you "
                f"requested {gen.prompt_tokens + gen.max_tokens} tokens "
                f"({gen.prompt_tokens} in the messages, {gen.max_tokens} in the completion). "
                "Please reduce the length of the messages or completion.",
                "BadRequestError",
            ),
        )


def make_gen(
    fake: FakeServer, request: Request, body: dict[str, Any], model: str, dialect: Dialect
) -> Gen:
    script = fake.next_script()
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    prompt = script.prompt_tokens or estimate_prompt_tokens(body)
    return Gen(
        fake,
        request,
        body,
        model,
        script,
        dialect.new_id(dialect.chat_prefix),
        int(fake.now()),
        prompt,
        include_usage,
    )


async def send_failure(
    fake: FakeServer, request: Request, ex: Exchange, dialect: Dialect, failure: Failure
) -> None:
    headers = failure.headers
    if headers is None and failure.content_type is not None:
        headers = uvicorn_headers(
            fake, request, failure.status, len(failure.body), failure.content_type
        )
    if headers is None:
        headers = dialect.json_headers(fake, request, failure.status, len(failure.body))
    await ex.respond(failure.status, headers, failure.body)
