"""The OpenAI-compatible front's translations: a chat completion request to ``route`` params,
``route``'s events to ``chat.completion.chunk`` objects, its result to a ``chat.completion``.

Invariants:

* A request means what it would mean to OpenAI, routed: ``model`` may name a real model
  (used or failed, never replaced) or a virtual one (``routerd/auto``, ``routerd/<category>``);
  ``messages``, ``tools``, ``tool_choice``, ``max_tokens`` (or ``max_completion_tokens``),
  ``temperature``, ``top_p`` and ``stop`` pass through; the optional ``routerd`` object adds
  what OpenAI has no word for (``session_id``, ``category``, ``file_context``). Other fields
  are ignored; ``n`` other than 1 is refused.
* A stream is: content chunks (the first carries ``role``), a last chunk with
  ``finish_reason``, then a usage chunk (``choices: []``) when ``stream_options.include_usage``
  asks, then ``[DONE]`` (written by the caller). An answer cut short ends with an ``error``
  object instead, so the client knows it is incomplete.
* ``finish_reason`` is OpenAI's: ``stop``, ``length``, ``tool_calls`` (also when the server
  said ``stop`` after tool calls, as Ollama does) or ``content_filter``.
* Errors have OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from routerd.core.errors import BadRequest
from routerd_client.protocol_route import (
    FINISH_INCOMPLETE,
    FileContext,
    RouteEnd,
    RouteParams,
    SelectedEvent,
    ToolCallEvent,
    ToolCallInfo,
    UsageEvent,
)

from .models import ModelFacts, parse_model, virtual_models

__all__ = [
    "ChatBody",
    "ChatChunks",
    "RouterdExtras",
    "chat_completion",
    "error_body",
    "finish_reason",
    "models_list",
    "route_params",
]

_FINISH: Final = frozenset({"stop", "length", "tool_calls", "content_filter"})
_TYPES: Final = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class RouterdExtras(msgspec.Struct, omit_defaults=True):
    """The optional ``routerd`` object of a request body (both fronts)."""

    session_id: str | None = None
    category: str | None = None
    file_context: FileContext | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatBody(msgspec.Struct):
    """``POST /v1/chat/completions``: the fields routerd uses (others are ignored)."""

    messages: list[dict[str, Any]]
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    routerd: RouterdExtras | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def stop_list(stop: str | list[str] | None) -> list[str] | None:
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop) or None


def with_extras(params: RouteParams, extras: RouterdExtras | None) -> RouteParams:
    """``params`` with the ``routerd`` object's fields (its category wins over the model's)."""
    if extras is None:
        return params
    return msgspec.structs.replace(
        params,
        session_id=extras.session_id,
        category=extras.category or params.category,
        file_context=extras.file_context,
    )


def route_params(body: ChatBody) -> RouteParams:
    """The ``route`` params for a chat completion request; raises BadRequest."""
    if body.n not in (None, 1):
        raise BadRequest("n must be 1: routerd answers with one choice")
    choice = parse_model(body.model)
    params = RouteParams(
        messages=body.messages,
        model=choice.model,
        category=choice.category,
        tools=body.tools or None,
        tool_choice=body.tool_choice,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=stop_list(body.stop),
        seed=body.seed,
        response_format=body.response_format,
    )
    return with_extras(params, body.routerd)


def finish_reason(reason: str, has_tool_calls: bool) -> str:
    """OpenAI's ``finish_reason`` for a route's (see the module docstring)."""
    if has_tool_calls and reason in ("stop", "tool_calls"):
        return "tool_calls"
    return reason if reason in _FINISH else "stop"


def _usage(prompt: int | None, completion: int | None) -> dict[str, int]:
    p, c = prompt or 0, completion or 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def error_body(message: str, status: int, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object for ``status``."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class ChatChunks:
    """``route`` events to ``chat.completion.chunk`` objects, for one streamed answer."""

    def __init__(self, *, completion_id: str, created: int, model: str, include_usage: bool):
        self.id = completion_id
        self.created = created
        self.model = model
        self.include_usage = include_usage
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.estimated_prompt: int | None = None
        self.role_sent = False
        self.tool_calls = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self.role_sent:
            delta = {"role": "assistant", **delta}
            self.role_sent = True
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def selected(self, ev: SelectedEvent) -> None:
        """A model was chosen (again, on a fallback): chunks name it."""
        self.model = ev.model
        self.estimated_prompt = ev.prompt_tokens

    def content(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text})

    def reasoning(self, text: str) -> dict[str, Any]:
        # llama.cpp's and DeepSeek's name for thinking text, which OpenAI clients pass on.
        return self._chunk({"reasoning_content": text})

    def tool_call(self, ev: ToolCallEvent) -> dict[str, Any]:
        self.tool_calls = True
        call: dict[str, Any] = {"index": ev.index}
        if ev.id is not None:
            call["id"] = ev.id
            call["type"] = "function"
        function: dict[str, Any] = {"arguments": ev.arguments_delta}
        if ev.name is not None:
            function["name"] = ev.name
        call["function"] = function
        return self._chunk({"tool_calls": [call]})

    def usage(self, ev: UsageEvent) -> None:
        self.prompt_tokens = ev.prompt_tokens
        self.completion_tokens = ev.completion_tokens

    def end(self, end: RouteEnd) -> list[dict[str, Any]]:
        """The closing objects: the finish chunk and the usage chunk, or an error object for
        an answer cut short."""
        if end.finish_reason == FINISH_INCOMPLETE:
            message = f"the answer broke off: {end.reason or 'the model server stopped'}"
            return [error_body(message, 502, "incomplete")]
        out = [self._chunk({}, finish_reason(end.finish_reason, self.tool_calls))]
        if self.include_usage:
            prompt = end.prompt_tokens or self.prompt_tokens or self.estimated_prompt
            completion = end.completion_tokens or self.completion_tokens
            out.append(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": _usage(prompt, completion),
                }
            )
        return out


def chat_completion(
    end: RouteEnd,
    text: str,
    reasoning: str,
    calls: Sequence[ToolCallInfo],
    *,
    completion_id: str,
    created: int,
    estimated_prompt: int | None = None,
) -> dict[str, Any]:
    """The ``chat.completion`` object of a whole answer."""
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [
            {
                "id": c.id or f"call_{completion_id[-8:]}_{c.index}",
                "type": "function",
                "function": {"name": c.name or "", "arguments": c.arguments},
            }
            for c in calls
        ]
    elif not text:
        message["content"] = ""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": end.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(end.finish_reason, bool(calls)),
            }
        ],
        "usage": _usage(end.prompt_tokens or estimated_prompt, end.completion_tokens),
    }


def models_list(facts: Sequence[ModelFacts], *, created: int) -> dict[str, Any]:
    """``GET /v1/models``: the virtual models, then each routable model once."""
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": created, "owned_by": "routerd"}
        for name in virtual_models()
    ]
    data.extend(
        {"id": f.id, "object": "model", "created": created, "owned_by": f.service} for f in facts
    )
    return {"object": "list", "data": data}
