"""Whole (non-streamed) answers, and the choice of decoder for an answer.

``new_decoder(flavor, framing)`` is what the shell calls for every 2xx answer: a stream
decoder from ``chat_decode`` for SSE and NDJSON, or a :class:`WholeBodyDecoder` for a JSON
document (a ``stream: false`` request, or a server that ignored ``stream: true``).

Invariants: the ``parse_*`` functions never raise; they give the same events a stream of the
same answer would (``ModelReported``, ``Reasoning``, ``Chunk``, ``ToolCallDelta``, ``Usage``,
then ``Finish``), or one ``StreamError`` last. An answer over ``MAX_BODY`` bytes is
``bad_response``; an empty one ``empty_stream``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

import msgspec

from routerd.core.chat import Flavor, Framing
from routerd.core.chat_decode import (
    Decoder,
    KoboldStreamDecoder,
    OllamaStreamDecoder,
    OpenAIStreamDecoder,
    error_message,
    in_stream_error,
    openai_usage,
    snippet,
    text_events,
    tool_arguments,
)
from routerd.core.jsonpick import (
    INVALID,
    decode_json,
    pick,
    pick_dict,
    pick_int,
    pick_list,
    pick_str,
)
from routerd.core.streams import (
    Chunk,
    Finish,
    ModelReported,
    StreamError,
    StreamEvent,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "new_decoder",
    "WholeBodyDecoder",
    "parse_openai_response",
    "parse_ollama_response",
    "parse_kobold_response",
    "MAX_BODY",
]

#: The largest non-streamed answer body read whole (bytes).
MAX_BODY: Final = 32 * 1024 * 1024

_encoder: Final = msgspec.json.Encoder()


def new_decoder(flavor: Flavor, framing: Framing) -> Decoder:
    """The decoder for an answer of ``flavor`` framed as ``framing``.

    ``json`` framing (a non-streamed answer, or a server that ignored ``stream: true`` and
    answered ``application/json``) reads the whole body, up to ``MAX_BODY``.
    """
    if framing == "json":
        parse = {"ollama": parse_ollama_response, "kobold": parse_kobold_response}.get(
            flavor, parse_openai_response
        )
        return WholeBodyDecoder(parse)
    if flavor == "ollama":
        return OllamaStreamDecoder()
    if flavor == "kobold":
        return KoboldStreamDecoder()
    return OpenAIStreamDecoder()


class WholeBodyDecoder:
    """Collects a whole answer (up to ``max_body`` bytes) and parses it at ``close``."""

    def __init__(
        self, parse: Callable[[bytes], list[StreamEvent]], max_body: int = MAX_BODY
    ) -> None:
        self._parse = parse
        self._max = max_body
        self._buf = bytearray()
        self._finished = False
        self._too_big = False

    @property
    def finished(self) -> bool:
        return self._finished

    def feed(self, data: bytes) -> list[StreamEvent]:
        if self._finished:
            return []
        self._buf += data
        if len(self._buf) > self._max:
            self._finished = self._too_big = True
            self._buf.clear()
            return [StreamError("bad_response", f"the answer is larger than {self._max} bytes")]
        return []

    def feed_iter(self, data: bytes) -> Iterator[StreamEvent]:
        return iter(self.feed(data))

    def close(self) -> list[StreamEvent]:
        if self._too_big:
            return []
        self._finished = True
        body = bytes(self._buf)
        self._buf.clear()
        if not body.strip():
            return [StreamError("empty_stream", "the server answered 200 with an empty body")]
        return self._parse(body)


def _whole(body: bytes) -> dict[str, Any] | StreamError:
    value = decode_json(body)
    if value is INVALID or not isinstance(value, dict):
        return StreamError("bad_response", f"not a JSON object: {snippet(body)}")
    if value.get("error") is not None:
        return in_stream_error(value, body)
    return value


def parse_openai_response(body: bytes) -> list[StreamEvent]:
    """Events of a ``chat.completion`` object (``stream: false``)."""
    value = _whole(body)
    if isinstance(value, StreamError):
        return [value]
    choice = pick(value, "choices", 0)
    message = pick_dict(choice, "message")
    if message is None:
        return [StreamError("bad_response", "a chat.completion without choices[0].message")]
    out: list[StreamEvent] = []
    model = pick_str(value, "model")
    if model:
        out.append(ModelReported(model))
    text_events(message, out)
    for index, call in enumerate(pick_list(message, "tool_calls") or ()):
        out.append(
            ToolCallDelta(
                index=index,
                id=pick_str(call, "id") or None,
                name=pick_str(call, "function", "name") or None,
                arguments_delta=tool_arguments(pick(call, "function", "arguments")),
            )
        )
    usage = openai_usage(value)
    if usage is not None:
        out.append(usage)
    return _finished(out, pick_str(choice, "finish_reason") or "stop")


def _finished(out: list[StreamEvent], reason: str) -> list[StreamEvent]:
    if reason == "error":
        out.append(StreamError("upstream_error", "the server ended generation with an error"))
    else:
        out.append(Finish(reason))
    return out


def parse_ollama_response(body: bytes) -> list[StreamEvent]:
    """Events of Ollama's ``stream: false`` answer (one object with ``done: true``)."""
    value = _whole(body)
    if isinstance(value, StreamError):
        return [value]
    decoder = OllamaStreamDecoder()
    return decoder.feed(_encoder.encode(value) + b"\n") + decoder.close()


def parse_kobold_response(body: bytes) -> list[StreamEvent]:
    """Events of Kobold.cpp's ``/api/v1/generate`` answer: ``{"results": [{"text": ...}]}``."""
    value = _whole(body)
    if isinstance(value, StreamError):
        return [value]
    if value.get("detail") is not None:  # Kobold.cpp's own error shape
        return [StreamError("upstream_error", error_message(value, body))]
    result = pick(value, "results", 0)
    text = pick_str(result, "text")
    if text is None:
        return [StreamError("bad_response", "a Kobold.cpp answer without results[0].text")]
    out: list[StreamEvent] = [Chunk(text)] if text else []
    prompt, completion = pick_int(result, "prompt_tokens"), pick_int(result, "completion_tokens")
    if prompt is not None or completion is not None:
        out.append(Usage(prompt, completion))
    return _finished(out, pick_str(result, "finish_reason") or "stop")
