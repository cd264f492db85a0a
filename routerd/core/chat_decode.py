"""Stream decoders: a model server's streamed answer, as bytes arrive, to routerd events.

``chat_answer.new_decoder(flavor, framing)`` picks a :class:`Decoder`; the shell feeds it every
byte of a 2xx answer and calls ``close()`` at end of body. Invariants:

* Never raises, whatever the bytes; the events depend only on the concatenated input, never
  on how it was split (tests feed one byte at a time and random chunkings).
* At most one :class:`StreamError`, and nothing after it. Once ``finished`` is true (an end
  marker or an error was seen) ``feed`` ignores its input; ``close`` still reports a stream
  that ended badly.
* An answer ends well only when a finish reason was seen: Ollama ``done:true``; OpenAI a
  ``finish_reason`` (``[DONE]`` is optional, but ``[DONE]`` *without* a finish reason is
  ``truncated``: llama-cpp-python ends a stream that way when another request aborts it);
  Kobold.cpp a ``finish_reason``. Otherwise ``close`` reports ``empty_stream`` (no bytes at
  all: llama-cpp-python's answer to a prompt that is too long), ``bad_response`` (bytes but no
  message of the protocol) or ``truncated``.
* An error object inside a 2xx stream (llama.cpp, Ollama) becomes ``context_overflow`` when it
  says the prompt did not fit, else ``upstream_error``. A finish reason ``error`` (Kobold.cpp)
  is an ``upstream_error`` too.
* ``ModelReported`` comes at most once, from the first message naming a model. ``Usage`` may
  come more than once (llama.cpp's ``timings``, then its usage chunk); the last one counts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, Final, Generic, Protocol, TypeVar

import msgspec

from routerd.core.jsonpick import (
    decode_json,
    pick,
    pick_dict,
    pick_int,
    pick_list,
    pick_str,
)
from routerd.core.outcomes import is_context_overflow
from routerd.core.streams import (
    Chunk,
    Finish,
    LineTooLong,
    ModelReported,
    NdjsonParser,
    Reasoning,
    SseMessage,
    SseParser,
    StreamError,
    StreamEvent,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "Decoder",
    "OpenAIStreamDecoder",
    "OllamaStreamDecoder",
    "KoboldStreamDecoder",
    "error_message",
    "in_stream_error",
    "snippet",
    "text_events",
    "tool_arguments",
    "openai_usage",
]
_SNIPPET: Final = 120
_MESSAGE_MAX: Final = 300

_encoder: Final = msgspec.json.Encoder()
_Item = TypeVar("_Item")


class Decoder(Protocol):
    """Answer bytes in, events out (see the module docstring)."""

    @property
    def finished(self) -> bool:
        """An end marker or an error was seen: the rest of the body does not matter."""
        ...

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Events completed by ``data``."""
        ...

    def feed_iter(self, data: bytes) -> Iterator[StreamEvent]:
        """The same events as ``feed(data)``, each decoded when asked for: the first one can
        go on its way before the rest of ``data`` is decoded. Exhaust it before the next call."""
        ...

    def close(self) -> list[StreamEvent]:
        """End of body: the last events, and a ``StreamError`` if the answer ended badly."""
        ...


def error_message(value: Any, raw: bytes = b"") -> str:
    """One line saying what an error body or error object says (at most 300 characters)."""
    parts = [
        pick_str(value, "error", "message"),
        pick_str(value, "error", "detail"),  # Open WebUI
        pick_str(value, "error"),
        pick_str(value, "detail"),
        pick_str(value, "detail", "msg"),
        pick_str(value, "message"),
    ]
    text = next((p for p in parts if p), None) or raw[:_MESSAGE_MAX].decode("utf-8", "replace")
    line = " ".join(text.split())
    return (line[: _MESSAGE_MAX - 1] + "…") if len(line) > _MESSAGE_MAX else line or "no message"


def in_stream_error(value: Any, raw: bytes) -> StreamError:
    if is_context_overflow(raw):
        return StreamError("context_overflow", error_message(value, raw))
    return StreamError("upstream_error", error_message(value, raw))


def snippet(raw: bytes | str) -> str:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    return repr(text[:_SNIPPET])


class _Framer(Protocol[_Item]):
    def feed(self, data: bytes) -> list[_Item | LineTooLong]: ...

    def close(self) -> list[_Item | LineTooLong]: ...


class _Base(ABC, Generic[_Item]):
    """A stream decoder: a framing parser, and the bookkeeping every protocol shares.
    Subclasses say what one message (``_item``) means."""

    def __init__(self, parser: _Framer[_Item]) -> None:
        self._parser = parser
        self._finished = False
        self._failed = False
        self._bytes = 0
        self._messages = 0
        self._finish: str | None = None
        self._model_seen = False
        self._tool_calls = 0

    @property
    def finished(self) -> bool:
        return self._finished

    def feed(self, data: bytes) -> list[StreamEvent]:
        return list(self.feed_iter(data))

    def feed_iter(self, data: bytes) -> Iterator[StreamEvent]:
        if self._finished:
            return iter(())
        self._bytes += len(data)
        return self._iter_run(self._parser.feed(data))

    def close(self) -> list[StreamEvent]:
        out = [] if self._finished else self._run(self._parser.close())
        out.extend(self._end("eof"))
        return out

    def _run(self, items: list[_Item | LineTooLong]) -> list[StreamEvent]:
        return list(self._iter_run(items))

    def _iter_run(self, items: list[_Item | LineTooLong]) -> Iterator[StreamEvent]:
        out: list[StreamEvent] = []
        for item in items:
            if self._finished:
                break
            if isinstance(item, LineTooLong):
                limit = item.limit
                self._fail(out, StreamError("bad_response", f"a line is over {limit} bytes long"))
            else:
                self._item(item, out)
            if out:
                yield from out
                out.clear()

    @abstractmethod
    def _item(self, item: _Item, out: list[StreamEvent]) -> None:
        """Turn one framed item into events (each wire format's own decoding)."""

    def _object(self, raw: bytes, out: list[StreamEvent]) -> dict[str, Any] | None:
        """One message as a JSON object; ``None`` after reporting it as garbage or as the
        server's error object."""
        self._messages += 1
        value = decode_json(raw)
        if not isinstance(value, dict):
            self._fail(out, StreamError("bad_response", f"not a JSON object: {snippet(raw)}"))
            return None
        if value.get("error") is not None:
            self._fail(out, in_stream_error(value, raw))
            return None
        return value

    def _fail(self, out: list[StreamEvent], error: StreamError) -> None:
        out.append(error)
        self._finished = self._failed = True

    def _model(self, value: Any, out: list[StreamEvent]) -> None:
        model = pick_str(value, "model")
        if model and not self._model_seen:
            self._model_seen = True
            out.append(ModelReported(model))

    def _finish_with(self, reason: str, out: list[StreamEvent]) -> None:
        if self._finish is not None:
            return
        self._finish = reason
        if reason == "error":
            message = "the server ended generation with an error"
            self._fail(out, StreamError("upstream_error", message))
        else:
            out.append(Finish(reason))

    def _end(self, marker: str) -> list[StreamEvent]:
        """The verdict when the body ends (``eof``) or the protocol's end marker comes."""
        out: list[StreamEvent] = []
        self._finished = True
        if self._failed or self._finish is not None:
            return out
        if self._bytes == 0 or (self._messages == 0 and marker == "[DONE]"):
            self._fail(out, StreamError("empty_stream", "the server answered 200 with no events"))
        elif self._messages == 0:
            message = f"no events in {self._bytes} bytes of answer"
            self._fail(out, StreamError("bad_response", message))
        else:
            message = f"the stream ended ({marker}) with no finish reason"
            self._fail(out, StreamError("truncated", message))
        return out


class _SseDecoder(_Base[SseMessage]):
    def __init__(self) -> None:
        super().__init__(SseParser())

    def _item(self, item: SseMessage, out: list[StreamEvent]) -> None:
        if item.data.strip() == "[DONE]":
            out.extend(self._end("[DONE]"))
            return
        value = self._object(item.data.encode(), out)
        if value is not None:
            self._message(value, out)

    @abstractmethod
    def _message(self, value: dict[str, Any], out: list[StreamEvent]) -> None:
        """Turn one decoded JSON message into events (each API flavour's own fields)."""


class OpenAIStreamDecoder(_SseDecoder):
    """OpenAI ``chat.completion.chunk`` SSE streams (llama.cpp, LM Studio, vLLM, Open WebUI...)."""

    def __init__(self) -> None:
        super().__init__()
        self._call_ids: dict[str, int] = {}
        self._last_call = 0

    def _message(self, value: dict[str, Any], out: list[StreamEvent]) -> None:
        self._model(value, out)
        for choice in pick_list(value, "choices") or ():
            if pick_int(choice, "index") in (None, 0):
                self._choice(choice, out)
                if self._finished:
                    return
        usage = openai_usage(value)
        if usage is not None:
            out.append(usage)

    def _choice(self, choice: Any, out: list[StreamEvent]) -> None:
        delta = pick_dict(choice, "delta") or pick_dict(choice, "message") or {}
        text_events(delta, out)
        for call in pick_list(delta, "tool_calls") or ():
            if isinstance(call, dict):
                out.append(self._tool_delta(call))
        reason = pick_str(choice, "finish_reason")
        if reason:
            self._finish_with(reason, out)

    def _tool_delta(self, call: dict[str, Any]) -> ToolCallDelta:
        call_id = pick_str(call, "id") or None
        index = pick_int(call, "index")
        if index is None:  # servers that omit it: a new id starts a new call
            if call_id is not None and call_id not in self._call_ids:
                self._call_ids[call_id] = len(self._call_ids)
            index = self._call_ids[call_id] if call_id is not None else self._last_call
        elif call_id is not None:
            self._call_ids.setdefault(call_id, index)
        self._last_call = index
        return ToolCallDelta(
            index=index,
            id=call_id,
            name=pick_str(call, "function", "name") or None,
            arguments_delta=tool_arguments(pick(call, "function", "arguments")),
        )


def text_events(message: Any, out: list[StreamEvent]) -> None:
    reasoning = pick_str(message, "reasoning_content") or pick_str(message, "reasoning")
    if reasoning:
        out.append(Reasoning(reasoning))
    content = pick_str(message, "content")
    if content:
        out.append(Chunk(content))


def tool_arguments(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return _encoder.encode(value).decode()
    except (TypeError, ValueError, OverflowError):
        return ""


def openai_usage(value: Any) -> Usage | None:
    usage = pick_dict(value, "usage")
    if usage is not None:
        prompt, completion = pick_int(usage, "prompt_tokens"), pick_int(usage, "completion_tokens")
        if prompt is not None or completion is not None:
            return Usage(prompt, completion)
    # llama-server's final chunk carries ``timings`` even without include_usage.
    timings = pick_dict(value, "timings")
    predicted = pick_int(timings, "predicted_n")
    if timings is None or predicted is None:
        return None
    prompt_n = pick_int(timings, "prompt_n")
    prompt = None if prompt_n is None else prompt_n + (pick_int(timings, "cache_n") or 0)
    return Usage(prompt, predicted)


class KoboldStreamDecoder(_SseDecoder):
    """Kobold.cpp's native stream: ``event: message`` / ``data: {"token", "finish_reason"}``."""

    def _message(self, value: dict[str, Any], out: list[StreamEvent]) -> None:
        if value.get("detail") is not None:  # Kobold.cpp's own error shape
            self._fail(out, StreamError("upstream_error", error_message(value)))
            return
        token = pick_str(value, "token")
        if token:
            out.append(Chunk(token))
        reason = pick_str(value, "finish_reason")
        if reason:
            self._finish_with(reason, out)
            self._finished = True  # Kobold.cpp sends nothing after the finish reason


class OllamaStreamDecoder(_Base[bytes]):
    """Ollama's ``/api/chat`` NDJSON stream."""

    def __init__(self) -> None:
        super().__init__(NdjsonParser())

    def _item(self, item: bytes, out: list[StreamEvent]) -> None:
        value = self._object(item, out)
        if value is not None:
            self._line(value, out)

    def _line(self, value: dict[str, Any], out: list[StreamEvent]) -> None:
        self._model(value, out)
        message = pick_dict(value, "message") or {}
        thinking = pick_str(message, "thinking")
        if thinking:
            out.append(Reasoning(thinking))
        content = pick_str(message, "content")
        if content:
            out.append(Chunk(content))
        for call in pick_list(message, "tool_calls") or ():
            if isinstance(call, dict):
                out.append(
                    ToolCallDelta(
                        index=self._tool_calls,
                        id=pick_str(call, "id") or None,
                        name=pick_str(call, "function", "name") or None,
                        arguments_delta=tool_arguments(pick(call, "function", "arguments")),
                    )
                )
                self._tool_calls += 1
        if value.get("done") is True:
            prompt, completion = pick_int(value, "prompt_eval_count"), pick_int(value, "eval_count")
            if prompt is not None or completion is not None:
                out.append(Usage(prompt, completion))
            reason = pick_str(value, "done_reason") or "stop"
            if reason == "stop" and self._tool_calls:
                reason = "tool_calls"  # what OpenAI-style clients expect after a call
            self._finish_with(reason, out)
            self._finished = True
