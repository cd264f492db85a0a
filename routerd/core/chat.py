"""One chat request to one model server: what to send, where, and how the answer is framed.

``plan_chat(target, request)`` turns routerd's request into a :class:`ChatCall` (URL, headers,
JSON body, framing) for the target's API flavour; the shell sends it and feeds the answer to
``chat_answer.new_decoder``. Flavours:

========== ============================ ======================================================
flavour    path (streaming / not)        notes
========== ============================ ======================================================
ollama     /api/chat                     NDJSON; ``options.num_ctx`` always sent (stable per
                                         model: a change reloads the model); ``keep_alive``
openai     /v1/chat/completions          SSE; ``stream_options.include_usage`` (LM Studio, Jan,
                                         vLLM, llama.cpp, LocalAI, GPT4All, Kobold.cpp's /v1)
textgen    /v1/chat/completions          text-generation-webui's OpenAI-compatible API
openwebui  /api/chat/completions         Open WebUI; OpenAI-compatible, bearer API key
kobold     /api/extra/generate/stream,   Kobold.cpp's native prompt API: messages rendered to
           /api/v1/generate              one prompt (``render_prompt``); no tools
========== ============================ ======================================================

Invariants:

* Pure: the same target and request always give byte-identical bodies (keys in a fixed order).
* Ollama always gets ``options.num_ctx``: the target's, or ``DEFAULT_OLLAMA_NUM_CTX`` when it
  has none; nothing in ``options`` can override it.
* Tool definitions and tool calls pass through to every flavour that has tools; a request with
  tools for the ``kobold`` flavour is refused (``StreamError("unsupported")``), never silently
  stripped, because a coding agent would wait forever for a call that cannot come.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import msgspec

from routerd.core.jsonpick import decode_json
from routerd.core.services import ChatFlavor, ServiceKind
from routerd.core.streams import StreamError

__all__ = [
    "Flavor",
    "FLAVORS",
    "Framing",
    "PromptStyle",
    "ChatTarget",
    "ChatRequest",
    "ChatCall",
    "DEFAULT_OLLAMA_NUM_CTX",
    "DEFAULT_KOBOLD_MAX_LENGTH",
    "flavor_for",
    "chat_url",
    "plan_chat",
    "ollama_chat_body",
    "ollama_messages",
    "openai_chat_body",
    "kobold_generate_body",
    "render_prompt",
]

#: The API a target is spoken to in (finer than ``services.ChatFlavor``).
Flavor = Literal["ollama", "openai", "textgen", "openwebui", "kobold"]
FLAVORS: Final[tuple[Flavor, ...]] = ("ollama", "openai", "textgen", "openwebui", "kobold")

#: How the answer body is framed: SSE events, NDJSON lines, or one JSON document.
Framing = Literal["sse", "ndjson", "json"]

#: How ``render_prompt`` writes a conversation as one prompt (see there).
PromptStyle = Literal["chatml", "plain"]

#: ``options.num_ctx`` sent to Ollama when the target names none. Any fixed value would do; the
#: point is that it never changes between requests (a change reloads the model).
DEFAULT_OLLAMA_NUM_CTX: Final = 4096
#: Kobold.cpp's ``max_length`` when the request sets no ``max_tokens``.
DEFAULT_KOBOLD_MAX_LENGTH: Final = 512

_PATHS: Final[dict[Flavor, tuple[str, str]]] = {
    "ollama": ("/api/chat", "/api/chat"),
    "openai": ("/v1/chat/completions", "/v1/chat/completions"),
    "textgen": ("/v1/chat/completions", "/v1/chat/completions"),
    "openwebui": ("/api/chat/completions", "/api/chat/completions"),
    "kobold": ("/api/extra/generate/stream", "/api/v1/generate"),
}


class ChatTarget(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how to run a request: one model on one server.

    ``base_url`` has no trailing path beyond an optional ``/v1`` (``http://127.0.0.1:8080``).
    ``api_key`` is sent as ``Authorization: Bearer``; ``headers`` are added as given.
    ``num_ctx``: Ollama's ``options.num_ctx`` (keep it the same for a model across requests)
    and Kobold.cpp's ``max_context_length``. ``keep_alive``: Ollama only (``"5m"``, ``-1``
    keeps loaded, ``0`` unloads). ``include_usage`` asks OpenAI-style servers for a usage
    chunk. ``options``: extra Ollama ``options``, or extra body fields for the other flavours.
    ``path`` overrides the flavour's usual path.
    """

    base_url: str
    flavor: Flavor
    model: str
    headers: dict[str, str] = {}
    api_key: str | None = None
    num_ctx: int | None = None
    keep_alive: str | int | None = None
    include_usage: bool = True
    prompt_style: PromptStyle = "chatml"
    options: dict[str, Any] = {}
    path: str | None = None


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What the client asked for, in OpenAI chat terms (``messages`` as OpenAI shapes them).

    ``think``: ask Ollama thinking models to think (``None``: the server's default; ``True``
    fails on models that cannot). ``seed``: OpenAI's ``seed``, Ollama's ``options.seed``,
    Kobold.cpp's ``sampler_seed``. ``response_format``: OpenAI's (checked with
    :func:`response_format_problem`); Ollama gets it as ``format`` (``"json"``, or the schema),
    Kobold.cpp's prompt API cannot honour it. ``extra``: more body fields, passed through as
    given (OpenAI flavours) or merged into ``options`` (Ollama).
    """

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    stream: bool = True
    think: bool | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    extra: dict[str, Any] = {}


class ChatCall(msgspec.Struct, frozen=True):
    """One HTTP POST to make: the shell sends it exactly as given."""

    url: str
    headers: dict[str, str]
    body: bytes
    framing: Framing


def flavor_for(kind: ServiceKind, api_style: ChatFlavor) -> Flavor:
    """The flavour to speak to a server of ``kind`` configured with ``api_style``.

    Kobold.cpp is spoken to through its OpenAI-compatible API (it applies the model's own chat
    template and supports tools); its native prompt API is the ``kobold`` flavour, chosen only
    explicitly.
    """
    if api_style == "ollama":
        return "ollama"
    if kind == "openwebui":
        return "openwebui"
    if kind == "textgen":
        return "textgen"
    return "openai"


def chat_url(base_url: str, path: str) -> str:
    """``base_url`` joined with ``path``; a base already ending in ``/v1`` is not doubled."""
    base = base_url.rstrip("/")
    if path.startswith("/v1/") and urlsplit(base).path.endswith("/v1"):
        path = path[3:]
    return base + path


_encoder: Final = msgspec.json.Encoder()


def response_format_problem(value: Any) -> str | None:
    """Why ``value`` is not an OpenAI ``response_format`` routerd can pass on (None: it is)."""
    if not isinstance(value, dict):
        return "response_format must be an object"
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return None
    if kind != "json_schema":
        return "response_format.type must be text, json_object or json_schema"
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        return "response_format.json_schema.schema must be a JSON schema object"
    return None


def ollama_format(response_format: Mapping[str, Any] | None) -> str | dict[str, Any] | None:
    """Ollama's ``format`` for an OpenAI ``response_format``: ``"json"``, the schema, or None
    (plain text)."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return dict(schema) if isinstance(schema, Mapping) else "json"
    return None


def _openai_extra(target: ChatTarget, request: ChatRequest) -> dict[str, Any]:
    extra = {**target.options, **request.extra}
    if request.seed is not None:
        extra["seed"] = request.seed
    if request.response_format is not None:
        extra["response_format"] = request.response_format
    return extra


def plan_chat(target: ChatTarget, request: ChatRequest) -> ChatCall | StreamError:
    """The HTTP call that runs ``request`` on ``target``, or why it cannot run there."""
    stream_path, whole_path = _PATHS[target.flavor]
    path = target.path or (stream_path if request.stream else whole_path)
    headers = {
        "Content-Type": "application/json",
        "Accept": _accept(target.flavor, request.stream),
    }
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    headers.update(target.headers)
    framing: Framing = "json"
    if target.flavor == "ollama":
        body = ollama_chat_body(
            target.model,
            request.messages,
            target.num_ctx or DEFAULT_OLLAMA_NUM_CTX,
            target.keep_alive,
            _tools(request),
            _ollama_options(target, request),
            stream=request.stream,
            think=request.think,
        )
        fmt = ollama_format(request.response_format)
        if fmt is not None:
            body["format"] = fmt
        framing = "ndjson" if request.stream else "json"
    elif target.flavor == "kobold":
        if request.tools:
            return StreamError(
                "unsupported", "Kobold.cpp's prompt API cannot call tools; use its /v1 API"
            )
        if request.response_format is not None and request.response_format.get("type") != "text":
            return StreamError(
                "unsupported", "Kobold.cpp's prompt API cannot hold an answer to JSON; "
                "use its /v1 API"
            )  # fmt: skip
        prompt, stops = render_prompt(request.messages, target.prompt_style)
        body = kobold_generate_body(
            prompt,
            max_length=request.max_tokens or DEFAULT_KOBOLD_MAX_LENGTH,
            max_context_length=target.num_ctx,
            temperature=request.temperature,
            top_p=request.top_p,
            stop_sequence=[*stops, *(request.stop or ())],
            extra={**target.options, **request.extra,
                   **({"sampler_seed": request.seed} if request.seed is not None else {})},
        )  # fmt: skip
        framing = "sse" if request.stream else "json"
    else:
        body = openai_chat_body(
            target.model,
            request.messages,
            stream=request.stream,
            include_usage=target.include_usage,
            tools=request.tools,
            tool_choice=request.tool_choice,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop,
            extra=_openai_extra(target, request),
        )
        framing = "sse" if request.stream else "json"
    return ChatCall(chat_url(target.base_url, path), headers, _encoder.encode(body), framing)


def _accept(flavor: Flavor, stream: bool) -> str:
    if not stream:
        return "application/json"
    return "application/x-ndjson" if flavor == "ollama" else "text/event-stream"


def _tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    # Ollama has no tool_choice; "none" is honoured by not offering the tools at all.
    return None if request.tool_choice == "none" else request.tools


def _ollama_options(target: ChatTarget, request: ChatRequest) -> dict[str, Any]:
    options: dict[str, Any] = dict(target.options)
    for key, value in (
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("num_predict", request.max_tokens),
        ("stop", request.stop),
        ("seed", request.seed),
    ):
        if value is not None:
            options[key] = value
    options.update(request.extra)
    return options


# --- Body builders -----------------------------------------------------------------------------


def ollama_chat_body(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    num_ctx: int,
    keep_alive: str | int | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    stream: bool = True,
    think: bool | None = None,
) -> dict[str, Any]:
    """Body for Ollama's ``POST /api/chat``. ``num_ctx`` always wins over ``options``."""
    body: dict[str, Any] = {
        "model": model,
        "messages": ollama_messages(messages),
        "stream": stream,
        "options": {**(options or {}), "num_ctx": num_ctx},
    }
    if tools:
        body["tools"] = list(tools)
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    if think is not None:
        body["think"] = think
    return body


def ollama_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-shaped messages as Ollama wants them.

    Content parts become one string plus ``images`` (base64 of ``data:`` URLs); assistant
    ``tool_calls`` get their JSON-text ``arguments`` as objects (left as text when they are not
    a JSON object, so Ollama rejects them visibly); a ``tool`` message gains ``tool_name``
    from the call it answers. Other keys pass through.
    """
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        m = dict(message)
        content = m.get("content")
        if isinstance(content, list):
            m["content"], images = _flatten_parts(content)
            if images:
                m["images"] = [*m.get("images", ()), *images]
        elif content is None:
            m["content"] = ""
        calls = m.get("tool_calls")
        if isinstance(calls, list):
            m["tool_calls"] = [_ollama_call(c, names) for c in calls]
        call_id = m.get("tool_call_id")
        if m.get("role") == "tool" and isinstance(call_id, str) and call_id in names:
            m.setdefault("tool_name", names[call_id])
        out.append(m)
    return out


def _flatten_parts(parts: list[Any]) -> tuple[str, list[str]]:
    texts: list[str] = []
    images: list[str] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if isinstance(url, str) and url.startswith("data:") and "," in url:
            images.append(url.partition(",")[2])
    return "\n".join(texts), images


def _ollama_call(call: Any, names: dict[str, str]) -> Any:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    function = dict(call["function"])
    if isinstance(call.get("id"), str) and isinstance(function.get("name"), str):
        names[call["id"]] = function["name"]
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        decoded = decode_json(arguments.encode())
        if isinstance(decoded, dict):
            function["arguments"] = decoded
    return {**call, "function": function}


def openai_chat_body(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    stream: bool = True,
    include_usage: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: Any = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    stop: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Body for ``POST .../chat/completions``. Messages pass through unchanged; ``extra`` may
    add fields but never replaces ``model``, ``messages`` or ``stream``."""
    body: dict[str, Any] = dict(extra or {})
    body.update(model=model, messages=[dict(m) for m in messages], stream=stream)
    if stream and include_usage:
        body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
    if tools:
        body["tools"] = list(tools)
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
    for key, value in (
        ("max_tokens", max_tokens),
        ("temperature", temperature),
        ("top_p", top_p),
        ("stop", list(stop) if stop else None),
    ):
        if value is not None:
            body[key] = value
    return body


def kobold_generate_body(
    prompt: str,
    *,
    max_length: int,
    max_context_length: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    stop_sequence: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Body for Kobold.cpp's ``/api/v1/generate`` and ``/api/extra/generate/stream``.

    ``trim_stop`` keeps the stop sequence out of the answer.
    """
    body: dict[str, Any] = dict(extra or {})
    body.update(prompt=prompt, max_length=max_length, trim_stop=True)
    if max_context_length is not None:
        body["max_context_length"] = max_context_length
    if temperature is not None:
        body["temperature"] = temperature
    if top_p is not None:
        body["top_p"] = top_p
    if stop_sequence:
        body["stop_sequence"] = list(dict.fromkeys(stop_sequence))
    return body


_CHATML_STOPS: Final = ("<|im_end|>", "<|im_start|>")
_PLAIN_ROLES: Final = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_prompt(
    messages: Sequence[Mapping[str, Any]], style: PromptStyle = "chatml"
) -> tuple[str, list[str]]:
    """A conversation as one prompt for a plain completion API, and the stop sequences that
    end the assistant's turn.

    ``chatml``: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then
    ``<|im_start|>assistant\\n`` (the format of Qwen, SmolLM, Hermes and many fine-tunes).
    ``plain``: ``User: ...`` / ``Assistant: ...`` lines (a system message first, as is),
    ending with ``Assistant:``; for models with no chat format at all. Content parts are
    reduced to their text.
    """
    if style == "chatml":
        parts = [
            f"<|im_start|>{_role(m)}\n{_content_text(m.get('content'))}<|im_end|>\n"
            for m in messages
        ]
        return "".join(parts) + "<|im_start|>assistant\n", list(_CHATML_STOPS)
    lines: list[str] = []
    for m in messages:
        role = _role(m)
        text = _content_text(m.get("content"))
        if role == "system":
            lines.append(f"{text}\n")
        else:
            lines.append(f"{_PLAIN_ROLES.get(role, role.capitalize())}: {text}\n")
    return "".join(lines) + "Assistant:", ["\nUser:", "\nSystem:"]


def _role(message: Mapping[str, Any]) -> str:
    role = message.get("role")
    return role if isinstance(role, str) and role else "user"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return _flatten_parts(content)[0]
    return ""
