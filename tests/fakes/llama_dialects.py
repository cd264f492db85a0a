"""The OpenAI-style spellings of llama-server and llama-cpp-python, from real captures.

* ``LlamaCppDialect`` (llama-server): compact JSON, ``choices`` first, first delta
  ``{"role":"assistant","content":null}``, ``timings`` on the final chunk (on the usage
  chunk when ``stream_options.include_usage`` is set), always the loaded model's id.
* ``LlamaCppPythonDialect``: SSE events written by ``json.dumps`` (spaces after separators),
  first delta ``{"role": "assistant"}``, never a usage chunk, echoes the asked model name,
  no reasoning parser (thinking arrives inside ``<think>`` in the content).
"""

from __future__ import annotations

import json
from typing import Any

from fakes.openai import Dialect, Gen, UnknownModel, tool_call_id
from fakes.state import Failure
from fakes.wire import Encoder, alnum_id, compact, spaced, uuid_id

__all__ = ["LlamaCppDialect", "LlamaCppPythonDialect", "timings"]


def timings(prompt_n: int, predicted_n: int) -> dict[str, Any]:
    """llama-server's ``timings`` block, with plausible CPU-speed figures."""
    prompt_ms = round(prompt_n * 3.766, 3)
    predicted_ms = round(predicted_n * 8.108, 3)
    return {
        "cache_n": 0,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / prompt_n,
        "prompt_per_second": 1000.0 * prompt_n / prompt_ms,
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / predicted_n,
        "predicted_per_second": 1000.0 * predicted_n / predicted_ms,
    }


class LlamaCppDialect(Dialect):
    """llama-server, byte for byte as in ``tests/data/servers/llama-server/``."""

    name = "llamacpp"
    unknown_model: UnknownModel = "loaded"

    def new_id(self, prefix: str) -> str:
        return alnum_id("chatcmpl-")  # even /v1/completions ids start with chatcmpl-

    def role_delta(self) -> dict[str, Any]:
        return {"role": "assistant", "content": None}

    def _envelope(self, gen: Gen, choices: list[Any], obj: str) -> dict[str, Any]:
        return {
            "choices": choices,
            "created": gen.created,
            "id": gen.cid,
            "model": gen.model,
            "system_fingerprint": gen.fake.version,
            "object": obj,
        }

    def chunk(self, gen: Gen, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"finish_reason": finish, "index": 0, "delta": delta}
        return self._envelope(gen, [choice], "chat.completion.chunk")

    def _usage(self, gen: Gen) -> dict[str, Any]:
        return {
            "completion_tokens": gen.completion_tokens,
            "prompt_tokens": gen.prompt_tokens,
            "total_tokens": gen.completion_tokens + gen.prompt_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
        }

    def final_chunks(self, gen: Gen, finish: str | None) -> list[dict[str, Any]]:
        usage = gen.include_usage
        out = []
        if finish is not None:
            last = self.chunk(gen, {}, finish)
            if not usage:
                last["timings"] = timings(gen.prompt_tokens, gen.completion_tokens)
            out.append(last)
        if usage:
            chunk = self._envelope(gen, [], "chat.completion.chunk")
            chunk["usage"] = self._usage(gen)
            chunk["timings"] = timings(gen.prompt_tokens, gen.completion_tokens)
            out.append(chunk)
        return out

    def tool_calls(self, calls: Any) -> list[dict[str, Any]]:
        return [
            {
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                "id": tool_call_id(call, i),
            }
            for i, call in enumerate(calls)
        ]

    def _whole(self, gen: Gen, choice: dict[str, Any], obj: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "choices": [choice],
            "created": gen.created,
            "model": gen.model,
            "system_fingerprint": gen.fake.version,
            "object": obj,
            "usage": self._usage(gen),
            "id": gen.cid,
            "timings": timings(gen.prompt_tokens, gen.completion_tokens),
        }
        return body

    def chat_body(self, gen: Gen) -> dict[str, Any]:
        choice = {"finish_reason": gen.script.finish(), "index": 0, "message": self.message(gen)}
        return self._whole(gen, choice, "chat.completion")

    def text_choice(self, text: str, finish: str | None) -> dict[str, Any]:
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}

    def text_body(self, gen: Gen) -> dict[str, Any]:
        choice = self.text_choice(gen.script.text, gen.script.finish())
        return self._whole(gen, choice, "text_completion")

    def error(self, status: int, message: str, type_: str, **extra: Any) -> bytes:
        return compact({"error": {"code": status, "message": message, "type": type_, **extra}})

    def bad_json(self, detail: str) -> Failure:
        return Failure(
            500,
            self.error(
                500,
                f"[json.exception.parse_error.101] parse error at line 1, column 1: {detail}",
                "server_error",
            ),
        )

    def context_overflow(self, gen: Gen, n_ctx: int, stream: bool) -> Failure | None:
        message = (
            f"request ({gen.prompt_tokens} tokens) exceeds the available context size "
            f"({n_ctx} tokens), try increasing it"
        )
        body = self.error(
            400,
            message,
            "exceed_context_size_error",
            n_prompt_tokens=gen.prompt_tokens,
            n_ctx=n_ctx,
        )
        return Failure(400, body)

    def server_error(self) -> Failure:
        return Failure(500, self.error(500, "Internal server error", "server_error"))

    def busy(self, status: int) -> Failure:
        return Failure(status, self.error(status, "server is busy", "unavailable_error"))


class LlamaCppPythonDialect(Dialect):
    """llama-cpp-python's server, byte for byte as in ``tests/data/servers/llama-cpp-python/``."""

    name = "llama_cpp_python"
    sse_encode: Encoder = staticmethod(spaced)
    unknown_model: UnknownModel = "echo"
    honours_include_usage = False

    def new_id(self, prefix: str) -> str:
        return uuid_id(prefix)

    def role_delta(self) -> dict[str, Any]:
        return {"role": "assistant"}

    def deltas(self, gen: Gen) -> list[dict[str, Any]]:
        # No reasoning parser: thinking stays in the content, inside <think> tags.
        reasoning = list(gen.script.reasoning)
        if reasoning:
            reasoning[0] = "<think>" + reasoning[0]
            reasoning[-1] = reasoning[-1] + "</think>"
        out: list[dict[str, Any]] = [{"content": r} for r in reasoning]
        out += [{"content": c} for c in gen.script.chunks]
        out += super().deltas(gen)[len(gen.script.reasoning) + len(gen.script.chunks) :]
        return out

    def chunk(self, gen: Gen, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": gen.cid,
            "model": gen.model,
            "created": gen.created,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def message(self, gen: Gen) -> dict[str, Any]:
        text = gen.script.text
        if gen.script.reasoning:
            text = "<think>" + "".join(gen.script.reasoning) + "</think>" + text
        message: dict[str, Any] = {"content": text, "role": "assistant"}
        if gen.script.tool_calls:
            message["tool_calls"] = self.tool_calls(gen.script.tool_calls)
        return message

    def text_choice(self, text: str, finish: str | None) -> dict[str, Any]:
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}

    def bad_json(self, detail: str) -> Failure:
        # Starlette's bare 500: no request-id middleware headers, plain text.
        return Failure(500, b"Internal Server Error", content_type="text/plain; charset=utf-8")

    def context_overflow(self, gen: Gen, n_ctx: int, stream: bool) -> Failure | None:
        if stream:
            return None  # the real server answers 200 with an empty event stream
        asked = gen.prompt_tokens + gen.max_tokens
        return Failure(
            400,
            self.error(
                400,
                f"This model's maximum context length is {n_ctx} tokens. However, you "
                f"requested {asked} tokens ({gen.prompt_tokens} in the messages, "
                f"{gen.max_tokens} in the completion). Please reduce the length of the "
                "messages or completion.",
                "invalid_request_error",
                param="messages",
                code="context_length_exceeded",
            ),
        )

    def server_error(self) -> Failure:
        return Failure(
            500,
            self.error(500, "Internal server error", "internal_server_error", code=None),
        )
