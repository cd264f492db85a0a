"""routerd's own chat stream events, and push parsers for the two wire framings servers use.

Events are what every backend adapter turns a model server's answer into, whatever its API:

* content: :class:`Chunk` (answer text), :class:`Reasoning` (thinking text, kept apart from the
  answer), :class:`ToolCallDelta` (OpenAI-style pieces of a tool call);
* facts about the answer: :class:`ModelReported` (the model the *answer* says it came from),
  :class:`Usage`, :class:`Finish`;
* terminal: :class:`Done` (success, with timing figures) or :class:`StreamError`.

The framing parsers are sans-IO push parsers: ``feed(bytes)`` as bytes arrive, ``close()`` at
end of body. Invariants:

* Output depends only on the concatenated input, never on how it was split into ``feed`` calls
  (tests feed one byte at a time and random chunkings).
* They never raise on any input. A line longer than ``max_line`` bytes yields one
  :class:`LineTooLong` and the parser ignores everything after it.
* Lines are split on bytes (``\\n``, ``\\r``, ``\\r\\n``) before UTF-8 decoding, so a multi-byte
  character split across chunks is never mangled; invalid UTF-8 decodes with U+FFFD.
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

import msgspec

__all__ = [
    "Chunk",
    "Reasoning",
    "ToolCallDelta",
    "Usage",
    "ModelReported",
    "Finish",
    "Done",
    "StreamError",
    "StreamErrorKind",
    "STREAM_ERROR_KINDS",
    "StreamEvent",
    "CONTENT_EVENTS",
    "SseMessage",
    "LineTooLong",
    "SseParser",
    "NdjsonParser",
    "DEFAULT_MAX_LINE",
]


class Chunk(msgspec.Struct, frozen=True, tag="chunk"):
    """A piece of the answer's text, in order."""

    text: str


class Reasoning(msgspec.Struct, frozen=True, tag="reasoning"):
    """A piece of the model's reasoning (Ollama ``message.thinking``, ``reasoning_content``)."""

    text: str


class ToolCallDelta(msgspec.Struct, frozen=True, tag="tool_call"):
    """A piece of tool call number ``index`` (OpenAI streaming style).

    Concatenating ``arguments_delta`` of every delta with one ``index`` gives the call's
    arguments as JSON text; ``id`` and ``name`` come on the first delta of a call (``None`` on
    later ones). Servers that send whole calls (Ollama) give one delta per call.
    """

    index: int
    id: str | None
    name: str | None
    arguments_delta: str


class Usage(msgspec.Struct, frozen=True, tag="usage"):
    """Token counts as the server reported them (``None``: not reported)."""

    prompt_tokens: int | None
    completion_tokens: int | None


class ModelReported(msgspec.Struct, frozen=True, tag="model"):
    """The model the answer says it came from, which may differ from the one asked for:
    llama.cpp-based servers answer any model name with whatever model is loaded."""

    model: str


class Finish(msgspec.Struct, frozen=True, tag="finish"):
    """Why generation stopped: ``stop``, ``length``, ``tool_calls``, ``load``, ... (the server's
    word, except that Ollama's ``stop`` after a tool call is reported as ``tool_calls``)."""

    reason: str


class Done(msgspec.Struct, frozen=True, tag="done"):
    """The answer ended well. Always the last event of a successful stream.

    ``first_token_s``: seconds from sending the request to the first content event (``None``
    if there was none). ``tokens_per_second``: generation speed after the first token, from
    the server's completion token count when reported, else from the number of content
    events (one per token on every server we know); ``None`` with fewer than two.
    """

    finish_reason: str
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    first_token_s: float | None
    total_s: float
    tokens_per_second: float | None


#: Why an answer failed. Transport and timeout kinds come from the shell; the others from the
#: decoders and from ``classify_failure`` for non-2xx answers. Names shared with
#: ``routerd.core.fallback.ErrorClass`` mean the same; ``chat_outcome.fallback_outcome`` maps
#: the rest (``egress_refused``, ``truncated``, ``upstream_error``, ``unsupported``).
StreamErrorKind = Literal[
    "refused",  # connection refused / unreachable / name does not resolve
    "egress_refused",  # routerd's egress policy forbade the connection (nothing was sent)
    "timeout_connect",
    "timeout_first_token",
    "timeout_idle",
    "http_5xx",
    "http_4xx",
    "unauthorized",  # 401/403
    "busy",  # 429, Ollama's queue-full 503, llama.cpp's 503 "Loading model"
    "context_overflow",  # the prompt does not fit the model's context
    "bad_response",  # not the protocol we speak (garbage, wrong JSON)
    "empty_stream",  # 200 but no event at all
    "truncated",  # ended without a finish reason (or [DONE] without one)
    "upstream_error",  # the server reported an error inside a 200 stream
    "unsupported",  # this target cannot serve this request (e.g. tools on a plain prompt API)
    "cancelled",  # the client went away; never produced by the adapters themselves
]

STREAM_ERROR_KINDS: Final[tuple[StreamErrorKind, ...]] = get_args(StreamErrorKind)


class StreamError(msgspec.Struct, frozen=True, tag="error"):
    """The answer failed. Always the last event of a failed stream.

    ``message`` is one line for people; ``status`` is the HTTP status when there was one.
    """

    kind: StreamErrorKind
    message: str
    status: int | None = None


StreamEvent = (
    Chunk | Reasoning | ToolCallDelta | Usage | ModelReported | Finish | Done | StreamError
)

#: Events that are part of the answer itself: the first of them is "the first token".
CONTENT_EVENTS: Final = (Chunk, Reasoning, ToolCallDelta)


# --- Framing -----------------------------------------------------------------------------------

#: The longest line a parser accepts (bytes). A tool call's whole arguments fit easily.
DEFAULT_MAX_LINE: Final = 8 * 1024 * 1024

_EOL: Final = re.compile(rb"[\r\n]")


class SseMessage(msgspec.Struct, frozen=True):
    """One server-sent event: ``data`` lines joined with ``\\n``; ``event`` defaults to
    ``message``."""

    data: str
    event: str = "message"


class LineTooLong(msgspec.Struct, frozen=True):
    """A line exceeded the parser's limit; the parser stopped there."""

    limit: int


class _LineSplitter:
    """Bytes in, complete lines out; CR, LF and CRLF all end a line (CRLF split across feeds
    included)."""

    def __init__(self, max_line: int) -> None:
        self._buf = bytearray()
        self._after_cr = False
        self._max = max_line
        self.failed = False

    def feed(self, data: bytes) -> tuple[list[bytes], bool]:
        """Lines completed by ``data`` (with what was buffered), and whether a line was too
        long. After a too-long line nothing more comes out."""
        if self.failed or not data:
            return [], False
        start = 0
        if self._after_cr:
            self._after_cr = False
            if data[:1] == b"\n":
                start = 1
        buf = self._buf
        scan = len(buf)
        buf += memoryview(data)[start:]
        lines: list[bytes] = []
        pos = 0
        while (m := _EOL.search(buf, scan)) is not None:
            end = m.start()
            if end - pos > self._max:
                break
            lines.append(bytes(buf[pos:end]))
            nxt = end + 1
            if buf[end] == 0x0D:  # CR: swallow a following LF, now or in the next feed
                if nxt < len(buf):
                    if buf[nxt] == 0x0A:
                        nxt += 1
                else:
                    self._after_cr = True
            pos = scan = nxt
        del buf[:pos]
        if len(buf) > self._max:
            self.failed = True
            buf.clear()
            return lines, True
        return lines, False

    def rest(self) -> bytes:
        """The unterminated last line (end of body); empties the buffer."""
        if self.failed:
            return b""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace")


class SseParser:
    """Push parser for ``text/event-stream`` (WHATWG HTML, "Interpreting an event stream").

    Follows the standard: ``field: value`` with one optional space removed, ``data`` lines of one
    event joined by ``\\n``, ``:`` comments, ``id`` and ``retry`` ignored, a blank line
    dispatches, an event without ``data`` is dropped, a leading BOM is skipped. One deliberate
    difference: at end of body (``close``) an unterminated last line and an event not yet
    followed by a blank line are still dispatched, because Kobold.cpp writes its final
    ``data: [DONE]`` with no newline at all.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._lines = _LineSplitter(max_line)
        self._limit = max_line
        self._data: list[str] = []
        self._event = ""
        self._first = True

    def feed(self, data: bytes) -> list[SseMessage | LineTooLong]:
        """Events completed by ``data``."""
        lines, too_long = self._lines.feed(data)
        out: list[SseMessage | LineTooLong] = []
        for line in lines:
            self._line(_text(line), out)
        if too_long:
            out.append(LineTooLong(self._limit))
        return out

    def close(self) -> list[SseMessage | LineTooLong]:
        """End of body: whatever complete-enough event remains (see the class docstring)."""
        out: list[SseMessage | LineTooLong] = []
        if self._lines.failed:
            return out
        rest = self._lines.rest()
        if rest:
            self._line(_text(rest), out)
        self._line("", out)
        return out

    def _line(self, line: str, out: list[SseMessage | LineTooLong]) -> None:
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")
        if not line:
            if self._data:
                out.append(SseMessage("\n".join(self._data), self._event or "message"))
            self._data = []
            self._event = ""
            return
        if line.startswith(":"):
            return
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value


class NdjsonParser:
    """Push parser for newline-delimited JSON (Ollama): yields each non-blank line's bytes.

    A trailing CR is dropped with the LF; blank lines are skipped; ``close`` yields an
    unterminated last line. JSON decoding is the caller's job, so one bad line can be reported
    as exactly that.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._lines = _LineSplitter(max_line)
        self._limit = max_line

    def feed(self, data: bytes) -> list[bytes | LineTooLong]:
        """Lines completed by ``data``."""
        lines, too_long = self._lines.feed(data)
        out: list[bytes | LineTooLong] = [line for line in lines if line.strip()]
        if too_long:
            out.append(LineTooLong(self._limit))
        return out

    def close(self) -> list[bytes | LineTooLong]:
        """End of body: the unterminated last line, if it is not blank."""
        rest = self._lines.rest()
        return [rest] if rest.strip() else []
