"""The Ollama-compatible front's translations (Ollama's docs/api.md shapes).

Requests: ``/api/chat`` and ``/api/generate`` become ``route`` params (the same engine as the
socket's ``route``); ``options.temperature``, ``top_p``, ``num_predict`` and ``stop`` pass
through; ``options.num_ctx`` and ``keep_alive`` are routerd's to decide and are ignored.
Ollama messages become OpenAI ones: ``images`` (base64) become ``image_url`` parts, tool
calls get ids and JSON-text arguments, a ``tool`` message answers the latest call of its
``tool_name``.

Answers: NDJSON lines ``{"model", "created_at", "message"|"response", "done": false}``, tool
calls whole in one message at the end (Ollama never streams a call in pieces), then the final
line with ``done: true``, ``done_reason`` and the durations in nanoseconds. An answer cut
short ends with an ``{"error": ...}`` line, as Ollama's own do. ``stream: false`` answers
one object.

Invariants: pure; times are parameters (``now``, epoch seconds); unknown facts are left out,
never made up (a digest routerd does not know is a hash of the service and name, marked as
such by ``details.format = "routerd"``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from routerd.core.errors import BadRequest
from routerd_client.protocol_route import FINISH_INCOMPLETE, RouteEnd, RouteParams, ToolCallInfo

from .models import ModelFacts, parse_model, virtual_models
from .openai_api import RouterdExtras, stop_list, with_extras
from .wire import iso_time

__all__ = [
    "ChatBody",
    "GenerateBody",
    "Lines",
    "OLLAMA_VERSION",
    "chat_params",
    "fim_answer",
    "fim_request",
    "generate_params",
    "ps",
    "show",
    "tags",
    "tool_calls",
]

#: The Ollama API version routerd answers ``/api/version`` with: tools that gate features on
#: Ollama's version (tool calls, thinking) must find every one they use.
OLLAMA_VERSION: Final = "0.12.0"

_IMAGE_MAGIC: Final = (
    ("iVBOR", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lGOD", "image/gif"),
    ("UklGR", "image/webp"),
)


class Options(msgspec.Struct):
    temperature: float | None = None
    top_p: float | None = None
    num_predict: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None


class ChatBody(msgspec.Struct):
    """``POST /api/chat`` (fields routerd does not use are ignored)."""

    model: str | None = None
    messages: list[dict[str, Any]] = msgspec.field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    routerd: RouterdExtras | None = None


class GenerateBody(msgspec.Struct):
    """``POST /api/generate``. With ``suffix`` it is fill-in-the-middle (passthrough)."""

    model: str | None = None
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    images: list[str] | None = None
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    routerd: RouterdExtras | None = None


def _image_part(data: str) -> dict[str, Any]:
    mime = next((m for prefix, m in _IMAGE_MAGIC if data.startswith(prefix)), "image/png")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def _content(text: Any, images: Any) -> Any:
    text = text if isinstance(text, str) else ""
    if not isinstance(images, list) or not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts.extend(_image_part(i) for i in images if isinstance(i, str))
    return parts


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def openai_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ollama chat messages as OpenAI ones (see the module docstring)."""
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (id, name) of calls not answered yet
    n = 0
    for m in messages:
        role = m.get("role")
        msg: dict[str, Any] = {"role": role, "content": _content(m.get("content"), m.get("images"))}
        calls = m.get("tool_calls")
        if role == "assistant" and isinstance(calls, list) and calls:
            converted = []
            pending = []
            for call in calls:
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict):
                    continue
                n += 1
                cid = call.get("id") if isinstance(call.get("id"), str) else f"call_{n}"
                name = str(fn.get("name") or "")
                converted.append({"id": cid, "type": "function",
                                  "function": {"name": name,
                                               "arguments": _arguments(fn.get("arguments", {}))}})  # fmt: skip
                pending.append((cid, name))
            msg["tool_calls"] = converted
        elif role == "tool":
            given = m.get("tool_name") or m.get("name")
            if isinstance(given, str) and given:
                msg["name"] = given
            match = next((p for p in pending if p[1] == given), pending[0] if pending else None)
            if match is not None:
                msg["tool_call_id"] = match[0]
                pending.remove(match)
        out.append(msg)
    return out


def response_format(fmt: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's ``response_format`` for Ollama's ``format`` (``"json"`` or a JSON schema);
    raises BadRequest for anything else."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    raise BadRequest(f'format must be "json" or a JSON schema, not {fmt!r}')


def _options(params: RouteParams, options: Options | None,
             fmt: str | dict[str, Any] | None) -> RouteParams:  # fmt: skip
    params = msgspec.structs.replace(params, response_format=response_format(fmt))
    if options is None:
        return params
    predict = options.num_predict
    return msgspec.structs.replace(
        params,
        temperature=options.temperature,
        top_p=options.top_p,
        max_tokens=predict if predict is not None and predict > 0 else None,
        stop=stop_list(options.stop),
        seed=options.seed,
    )


def chat_params(body: ChatBody) -> RouteParams:
    """``route`` params for ``/api/chat``; raises BadRequest for a bad model name."""
    choice = parse_model(body.model)
    params = RouteParams(
        messages=openai_messages(body.messages),
        model=choice.model,
        category=choice.category,
        tools=body.tools or None,
    )
    return with_extras(_options(params, body.options, body.format), body.routerd)


def generate_params(body: GenerateBody) -> RouteParams:
    """``route`` params for ``/api/generate``: the prompt as one user message (as ``query``,
    with routerd's system prompt, unless the request brings ``system`` or images)."""
    choice = parse_model(body.model)
    if body.system is None and not body.images:
        params = RouteParams(query=body.prompt, model=choice.model, category=choice.category)
    else:
        messages = [{"role": "user", "content": _content(body.prompt, body.images)}]
        if body.system:
            messages.insert(0, {"role": "system", "content": body.system})
        params = RouteParams(messages=messages, model=choice.model, category=choice.category)
    return with_extras(_options(params, body.options, body.format), body.routerd)


def fim_request(body: GenerateBody) -> dict[str, Any]:
    """The OpenAI ``/v1/completions`` body for a fill-in-the-middle ``/api/generate``."""
    out: dict[str, Any] = {"model": body.model or "", "prompt": body.prompt,
                           "suffix": body.suffix or "", "stream": False}  # fmt: skip
    o = body.options
    if o is not None:
        if o.num_predict is not None and o.num_predict > 0:
            out["max_tokens"] = o.num_predict
        for key in ("temperature", "top_p", "seed"):
            if getattr(o, key) is not None:
                out[key] = getattr(o, key)
        if (stop := stop_list(o.stop)) is not None:
            out["stop"] = stop
    return out


class EmbedBody(msgspec.Struct):
    """``/api/embed`` (``input``: a string or a list of them) and the older
    ``/api/embeddings`` (``prompt``: one string)."""

    model: str | None = None
    input: str | list[str] | None = None
    prompt: str | None = None
    dimensions: int | None = None
    truncate: bool | None = None
    options: dict[str, Any] | None = None
    keep_alive: str | int | float | None = None


def embed_inputs(body: EmbedBody, *, legacy: bool) -> list[str]:
    """The texts to embed; raises ValueError saying what is missing."""
    if legacy:
        if body.prompt is None:
            raise ValueError("prompt is required")
        return [body.prompt]
    if body.input is None:
        raise ValueError("input is required (a string or a list of strings)")
    return [body.input] if isinstance(body.input, str) else list(body.input)


def embed_request(body: EmbedBody, inputs: list[str]) -> dict[str, Any]:
    """The OpenAI ``/v1/embeddings`` body for an Ollama embedding request."""
    out: dict[str, Any] = {"model": body.model or "", "input": inputs}
    if body.dimensions is not None:
        out["dimensions"] = body.dimensions
    return out


def embed_answer(data: Any, *, model: str, count: int) -> tuple[list[list[float]], int | None]:
    """The vectors of a ``/v1/embeddings`` answer in input order, and its prompt token count;
    raises ValueError when it is not one vector of numbers per input."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list) or len(items) != count:
        raise ValueError(f"{model} did not answer one embedding per input")
    ordered = sorted(items, key=lambda e: e.get("index", 0) if isinstance(e, dict) else 0)
    vectors: list[list[float]] = []
    for item in ordered:
        vector = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(vector, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector
        ):
            raise ValueError(f"{model} answered an embedding that is not a list of numbers")
        vectors.append([float(x) for x in vector])
    usage = data.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return vectors, tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None


def fim_answer(data: Any, *, model: str, service: str, total_s: float) -> tuple[str, RouteEnd]:
    """The text and end record of a ``/v1/completions`` answer (its first choice)."""
    choice = {}
    if isinstance(data, dict) and isinstance(data.get("choices"), list) and data["choices"]:
        first = data["choices"][0]
        choice = first if isinstance(first, dict) else {}
    usage = data.get("usage") if isinstance(data, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    text = choice.get("text")
    end = RouteEnd(
        finish_reason=str(choice.get("finish_reason") or "stop"),
        model=str(data.get("model") or model) if isinstance(data, dict) else model,
        requested_model=model,
        service=service,
        category="coding",
        fallback_level=0,
        prompt_tokens=usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int)
        else None,
        completion_tokens=usage.get("completion_tokens")
        if isinstance(usage.get("completion_tokens"), int) else None,
        total_s=total_s,
        first_token_s=total_s,
    )  # fmt: skip
    return text if isinstance(text, str) else "", end


def tool_calls(calls: Sequence[ToolCallInfo]) -> list[dict[str, Any]]:
    """Whole tool calls in Ollama's shape (arguments as an object)."""
    out = []
    for c in calls:
        try:
            args = json.loads(c.arguments) if c.arguments.strip() else {}
        except ValueError:
            args = None
        if not isinstance(args, dict):
            args = {"arguments": c.arguments}  # keep what the model wrote, in a valid shape
        call: dict[str, Any] = {"function": {"index": c.index, "name": c.name or "",
                                             "arguments": args}}  # fmt: skip
        if c.id:
            call["id"] = c.id
        out.append(call)
    return out


def _ns(seconds: float | None) -> int:
    return int(max(0.0, seconds or 0.0) * 1e9)


def _metrics(end: RouteEnd) -> dict[str, int]:
    first, total = end.first_token_s or 0.0, end.total_s or 0.0
    return {
        "total_duration": _ns(total),
        "load_duration": 0,
        "prompt_eval_count": end.prompt_tokens or 0,
        "prompt_eval_duration": _ns(first),
        "eval_count": end.completion_tokens or 0,
        "eval_duration": _ns(total - first),
    }


class Lines:
    """``route`` events as Ollama's NDJSON objects, for ``/api/chat`` (``chat``) or
    ``/api/generate``."""

    def __init__(self, *, model: str, chat: bool) -> None:
        self.model = model
        self.chat = chat

    def _piece(self, now: float, text: str = "", thinking: str = "",
               calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
        out: dict[str, Any] = {"model": self.model, "created_at": iso_time(now)}
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            out["message"] = message
        else:
            out["response"] = text
            if thinking:
                out["thinking"] = thinking
        out["done"] = False
        return out

    def content(self, text: str, now: float) -> dict[str, Any]:
        return self._piece(now, text=text)

    def reasoning(self, text: str, now: float) -> dict[str, Any]:
        return self._piece(now, thinking=text)

    def end(self, end: RouteEnd, calls: Sequence[ToolCallInfo], now: float) -> list[dict[str, Any]]:
        """The closing lines: the tool calls (chat), then the final line; or an error line
        for an answer cut short."""
        if end.finish_reason == FINISH_INCOMPLETE:
            return [{"error": f"the answer broke off: {end.reason or 'the model server stopped'}"}]
        out = []
        if calls and self.chat:
            out.append(self._piece(now, calls=tool_calls(calls)))
        out.append(self.whole(end, "", "", (), now))
        return out

    def whole(self, end: RouteEnd, text: str, thinking: str, calls: Sequence[ToolCallInfo],
              now: float) -> dict[str, Any]:  # fmt: skip
        """The one object of a ``stream: false`` answer (and the final line of a stream)."""
        out = self._piece(now, text, thinking, tool_calls(calls) if calls else None)
        del out["done"]
        out["done_reason"] = "length" if end.finish_reason == "length" else "stop"
        out["done"] = True
        out.update(_metrics(end))
        return out

    def loaded(self, now: float) -> dict[str, Any]:
        """The answer to an empty request (Ollama: "load the model"): nothing to route."""
        out = self._piece(now)
        del out["done"]
        out["done_reason"] = "load"
        out["done"] = True
        return out


# --- listings -----------------------------------------------------------------------------


def _digest(f: ModelFacts) -> str:
    return f.digest or hashlib.sha256(f"{f.service}/{f.id}".encode()).hexdigest()


def _details(f: ModelFacts | None) -> dict[str, Any]:
    family = f.family if f is not None and f.family else "routerd"
    return {
        "parent_model": "",
        "format": "gguf" if f is not None and f.digest else "routerd",
        "family": family,
        "families": [family],
        "parameter_size": (f.parameter_size or "") if f is not None else "",
        "quantization_level": (f.quantization or "") if f is not None else "",
    }


def _virtual_entries(started: float) -> list[dict[str, Any]]:
    out = []
    for name in virtual_models():
        tagged = f"{name}:latest"
        out.append({"name": tagged, "model": tagged, "modified_at": iso_time(started), "size": 0,
                    "digest": hashlib.sha256(name.encode()).hexdigest(),
                    "details": _details(None)})  # fmt: skip
    return out


def tags(facts: Sequence[ModelFacts], *, started: float) -> dict[str, Any]:
    """``GET /api/tags``: the virtual models, then each routable model once."""
    models = _virtual_entries(started)
    models.extend(
        {"name": f.id, "model": f.id, "modified_at": iso_time(started), "size": f.size or 0,
         "digest": _digest(f), "details": _details(f)}
        for f in facts
    )  # fmt: skip
    return {"models": models}


def ps(facts: Sequence[ModelFacts]) -> dict[str, Any]:
    """``GET /api/ps``: the models a server reports as loaded."""
    out = []
    for f in facts:
        if f.loaded is not True:
            continue
        entry: dict[str, Any] = {"name": f.id, "model": f.id, "size": f.size or f.size_vram or 0,
                                 "digest": _digest(f), "details": _details(f)}  # fmt: skip
        if f.expires_at is not None:
            entry["expires_at"] = iso_time(f.expires_at)
        entry["size_vram"] = f.size_vram or 0
        if f.context_length is not None:
            entry["context_length"] = f.context_length
        out.append(entry)
    return {"models": out}


def show(f: ModelFacts | None, name: str, *, started: float,
         context_length: int | None = None) -> dict[str, Any]:  # fmt: skip
    """``POST /api/show`` for a routable model, or for a virtual one (``f`` None, with the
    largest window routerd can offer)."""
    ctx = f.context_length if f is not None else context_length
    arch = (f.family if f is not None and f.family else "routerd").replace(".", "_")
    info: dict[str, Any] = {"general.architecture": arch}
    if f is not None and f.params_b is not None:
        info["general.parameter_count"] = int(f.params_b * 1e9)
    if ctx is not None:
        info[f"{arch}.context_length"] = ctx
    where = f"on {f.service}" if f is not None else "chosen per request by routerd"
    return {
        "license": "",
        "modelfile": f"# {name}: routed by routerd, {where}\n",
        "parameters": f"num_ctx                        {ctx}" if ctx is not None else "",
        "template": "{{ .Prompt }}",
        "details": _details(f),
        "model_info": info,
        "capabilities": list(f.capabilities) if f is not None else ["completion", "tools"],
        "modified_at": iso_time(started),
    }
