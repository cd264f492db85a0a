"""Wire types of routing: ``route``, ``route.complete``, ``classify`` and ``resolve``
(docs/protocol.md, section "route").

Like every wire type these ignore unknown fields, so either side may add fields. A ``route``
stream is::

    selected (one or more: again for each fallback, only before the first chunk)
    chunk | reasoning | tool_call | usage   (any number, in the order the model sent them)
    end      RouteEnd: how the answer ended and which model gave it

or an ``error`` frame when nothing reached the client. ``route.complete`` answers the same
request with one :class:`RouteResult`.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "FileContext",
    "RouteParams",
    "SelectedEvent",
    "ChunkEvent",
    "ToolCallEvent",
    "UsageEvent",
    "AttemptInfo",
    "RouteEnd",
    "ToolCallInfo",
    "RouteResult",
    "ClassifyParams",
    "ClassifyResult",
    "ResolveParams",
    "ResolveEntry",
    "ResolveResult",
    "FINISH_INCOMPLETE",
]

#: ``RouteEnd.finish_reason`` of an answer that broke off after its first chunk.
FINISH_INCOMPLETE = "incomplete"


class FileContext(msgspec.Struct, omit_defaults=True):
    """Where in the code the request is about (for Serena's context). ``file`` is absolute or
    relative to ``workspace``; ``line`` and ``character`` are 0-based; ``symbol`` is a name
    path such as ``Circle/area``."""

    file: str | None = None
    workspace: str | None = None
    line: int | None = None
    character: int | None = None
    symbol: str | None = None


class RouteParams(msgspec.Struct, omit_defaults=True):
    """A request to route. Give ``query`` (one user message) or ``messages`` (an OpenAI-style
    conversation; the last user message is what is classified), not both.

    ``category`` and ``model`` override the classifier and the model choice: an explicit
    model is used or the request fails, never replaced. ``tools``, ``tool_choice``,
    ``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed`` and ``response_format``
    (OpenAI's: ``{"type": "text" | "json_object"}`` or ``{"type": "json_schema",
    "json_schema": {"name": ..., "schema": {...}}}``) pass through to the model server.
    """

    query: str | None = None
    messages: list[dict[str, Any]] | None = None
    session_id: str | None = None
    category: str | None = None
    model: str | None = None
    file_context: FileContext | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None


class SelectedEvent(msgspec.Struct, omit_defaults=True):
    """The ``selected`` event: the model about to answer and why. Sent again for each
    fallback (``attempt`` 2, 3, ...) until the first chunk."""

    model: str  # as the service names it
    service: str
    category: str
    category_source: str  # explicit | classified | default
    fallback_level: int  # 0 primary, 1 fallback models, 2 reduced context, 3 smallest model
    level: str  # the level's name: PRIMARY, FALLBACK_MODELS, REDUCED_CONTEXT, SMALLEST_MODEL
    attempt: int  # 1 for the first choice
    reason: str
    window_tokens: int
    prompt_tokens: int  # estimated, as sent (after compaction)
    compacted: bool = False
    summary_source: str | None = None  # compacted: model | extractive | none (no summary)
    summary_model: str | None = None  # the model that wrote the summary (``model`` source)
    prompt_exact: bool = False  # prompt_tokens is the server's exact count (/tokenize)
    confidence: float | None = None  # the classifier's, when it classified
    serena: dict[str, Any] | None = None  # {"used": bool, "reason"?: str, "tokens"?: int}
    session: dict[str, Any] | None = None  # {"id": str, "kept": bool, "reason"?: str}
    previous_error: str | None = None  # why the attempt before this one failed
    explain: list[str] | None = None  # the whole plan, on the first ``selected`` only


class ChunkEvent(msgspec.Struct):
    """``chunk`` (answer text) and ``reasoning`` (thinking text) events."""

    text: str


class ToolCallEvent(msgspec.Struct, omit_defaults=True):
    """``tool_call``: a piece of tool call ``index`` (concatenate ``arguments_delta``)."""

    index: int
    arguments_delta: str
    id: str | None = None
    name: str | None = None


class UsageEvent(msgspec.Struct):
    """``usage``: token counts as the model server reported them."""

    prompt_tokens: int | None
    completion_tokens: int | None


class AttemptInfo(msgspec.Struct, omit_defaults=True):
    """One model tried before the answer (or before giving up), and why it failed."""

    service: str
    model: str
    error: str
    detail: str = ""


class RouteEnd(msgspec.Struct, omit_defaults=True):
    """The ``end`` event's data: how the answer ended.

    ``model`` is the model the *answer* says it came from (llama.cpp-based servers answer any
    name with the model they have loaded); ``requested_model`` is the one asked for.
    ``finish_reason`` is the server's (``stop``, ``length``, ``tool_calls``) or ``incomplete``
    with ``reason`` saying why the answer broke off.
    """

    finish_reason: str
    model: str
    requested_model: str
    service: str
    category: str
    fallback_level: int
    attempts: list[AttemptInfo] = []  # the failed attempts before this one
    reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token_s: float | None = None
    total_s: float | None = None
    tokens_per_second: float | None = None
    session_id: str | None = None


class ToolCallInfo(msgspec.Struct, omit_defaults=True):
    index: int
    arguments: str
    id: str | None = None
    name: str | None = None


class RouteResult(RouteEnd, omit_defaults=True):
    """``route.complete``'s result: the end record with the whole answer."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallInfo] = []
    selected: SelectedEvent | None = None  # the last selection (the model that answered)


class ClassifyParams(msgspec.Struct, omit_defaults=True):
    text: str = ""
    min_confidence: float | None = None  # None: routing.min_confidence


class ClassifyResult(msgspec.Struct):
    category: str
    confidence: float
    requires_serena: bool
    signals: list[str]
    low_confidence: bool


class ResolveParams(msgspec.Struct, omit_defaults=True):
    names: list[str] = []


class ResolveEntry(msgspec.Struct, omit_defaults=True):
    """What one name resolves to in the model database (``model_id`` None: not known)."""

    name: str
    model_id: str | None
    reason: str
    matched_by: str
    family: str | None = None
    size: str | None = None
    variant: str | None = None
    quant: str | None = None
    context_length: int | None = None  # the database's window for ``model_id``


class ResolveResult(msgspec.Struct):
    results: list[ResolveEntry]
