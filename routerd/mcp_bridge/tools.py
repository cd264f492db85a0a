"""The tools routerd-mcp offers, their arguments, and how answers become MCP tool results.

Each fixed tool's arguments are one msgspec Struct: it validates what the agent sent and its
JSON Schema is the tool's ``inputSchema``, so the two cannot drift apart. ``null`` for an
optional argument means "not given" (agents send that); an unknown argument is an error, so a
misspelt one is reported instead of ignored.

Results: a tool that answers with data gives its JSON as text and as ``structuredContent``.
A failure is a result with ``isError`` (the agent sees it and can act on it), never an MCP
protocol error: its text reads ``routerd error <code>: <message>`` and ``structuredContent``
is ``{"error": {"code", "message", "data"}}``. Codes are the daemon's (docs/protocol.md §6)
plus the bridge's own: ``unreachable``, ``connection_lost``, ``bad_arguments``.

Nothing here does I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec
from mcp_types import CallToolResult, TextContent, Tool, ToolAnnotations
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "AskArgs",
    "ClassifyArgs",
    "ModelsArgs",
    "SerenaCallArgs",
    "SerenaToolsArgs",
    "StatusArgs",
    "STATIC_TOOLS",
    "SERENA_PREFIX",
    "ToolSpec",
    "ask_result",
    "data_result",
    "decode_args",
    "error_result",
    "serena_result",
    "serena_tool",
]

#: Serena's tool ``find_symbol`` is offered as ``serena_find_symbol``.
SERENA_PREFIX: Final = "serena_"

Category = Literal["coding", "reasoning", "analysis", "documentation"]


class _Args(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Tool arguments: strict (unknown names are errors), optional fields left out when unset."""


# Argument types with their descriptions, which become the tools' JSON Schemas.
_Query = Annotated[
    str,
    Meta(min_length=1, description="The request, as you would put it to a colleague; include "
         "the code it is about."),
]  # fmt: skip
_Session = Annotated[
    str,
    Meta(description='"new" starts a fresh conversation, "none" asks without one, or a '
         "session id from an earlier answer continues that one. Default: this server's own "
         "conversation (the previous asks' context is kept)."),
]  # fmt: skip
_Category = Annotated[
    Category, Meta(description="The kind of request, instead of the classifier's.")
]
_Model = Annotated[
    str,
    Meta(description="Use exactly this model (see the models tool); the ask fails rather than "
         "use another."),
]  # fmt: skip
_File = Annotated[
    str,
    Meta(description="A file the request is about (absolute, or relative to the workspace): "
         "routerd adds code context about it from Serena."),
]  # fmt: skip
_Line = Annotated[int, Meta(ge=0, description="0-based line in file.")]
_Character = Annotated[int, Meta(ge=0, description="0-based column in line.")]
_Symbol = Annotated[str, Meta(description="A symbol the request is about: Circle/area.")]
_Workspace = Annotated[
    str, Meta(description="The project directory (default: this server's workspace).")
]
_MaxTokens = Annotated[int, Meta(ge=1, description="Longest answer, in tokens.")]
_Temperature = Annotated[
    float, Meta(ge=0.0, le=2.0, description="Sampling temperature (default: the server's).")
]
_MinConfidence = Annotated[
    float,
    Meta(ge=0.0, le=1.0, description="Below this the default category is used (default: "
         "routerd's routing.min_confidence)."),
]  # fmt: skip
_Service = Annotated[str, Meta(description="Only this model server's models (a name in status).")]
_Available = Annotated[
    bool, Meta(description="Only models whose server takes requests now (default true).")
]
_Tool = Annotated[str, Meta(description="Serena's tool name, e.g. find_symbol.")]
_ToolArguments = Annotated[
    dict[str, Any], Meta(description="The tool's arguments (see serena_tools).")
]
_InFile = Annotated[str, Meta(description="A file inside the project, to find the workspace by.")]
_Timeout = Annotated[
    float, Meta(gt=0.0, description="Seconds (default: routerd's serena.call_timeout).")
]


class AskArgs(_Args):
    query: _Query
    session: _Session | UnsetType = UNSET
    category: _Category | UnsetType = UNSET
    model: _Model | UnsetType = UNSET
    file: _File | UnsetType = UNSET
    line: _Line | UnsetType = UNSET
    character: _Character | UnsetType = UNSET
    symbol: _Symbol | UnsetType = UNSET
    workspace: _Workspace | UnsetType = UNSET
    max_tokens: _MaxTokens | UnsetType = UNSET
    temperature: _Temperature | UnsetType = UNSET


class ClassifyArgs(_Args):
    text: Annotated[str, Meta(description="The request to classify.")]
    min_confidence: _MinConfidence | UnsetType = UNSET


class StatusArgs(_Args):
    pass


class ModelsArgs(_Args):
    service: _Service | UnsetType = UNSET
    available: _Available = True


class SerenaToolsArgs(_Args):
    workspace: _Workspace | UnsetType = UNSET


class SerenaCallArgs(_Args):
    tool: _Tool
    arguments: _ToolArguments = {}
    workspace: _Workspace | UnsetType = UNSET
    file: _InFile | UnsetType = UNSET
    timeout: _Timeout | UnsetType = UNSET


@dataclass(frozen=True)
class ToolSpec:
    """A fixed tool: its name, what it does, and its argument type."""

    name: str
    description: str
    args: type[_Args]
    read_only: bool = True

    def tool(self) -> Tool:
        return Tool(
            name=self.name,
            description=self.description,
            input_schema=schema_of(self.args),
            annotations=ToolAnnotations(read_only_hint=self.read_only, open_world_hint=False),
        )


STATIC_TOOLS: Final[tuple[ToolSpec, ...]] = (
    ToolSpec(
        "ask",
        "Ask a local model through routerd. routerd classifies the request, picks a suitable "
        "local model (falling back to others if one fails) and returns its answer, with the "
        "model and session it used. Asks continue one conversation unless `session` says "
        "otherwise. Name a file or symbol to have code context added from Serena.",
        AskArgs,
        # Only a stored conversation changes: nothing in the workspace.
        read_only=True,
    ),
    ToolSpec(
        "classify",
        "Classify a request the way routerd's router does: category (coding, reasoning, "
        "analysis, documentation), confidence, whether code intelligence would help.",
        ClassifyArgs,
    ),
    ToolSpec(
        "status",
        "routerd's status: version, uptime, model servers online, Serena, requests served.",
        StatusArgs,
    ),
    ToolSpec(
        "models",
        "The local models routerd can route to, with their server, context window and "
        "capabilities.",
        ModelsArgs,
    ),
    ToolSpec(
        "serena_tools",
        "The Serena code-intelligence tools routerd offers for a workspace, with their "
        "argument schemas (call them with serena_call, or as serena_<name> when listed).",
        SerenaToolsArgs,
    ),
    ToolSpec(
        "serena_call",
        "Run one Serena code-intelligence tool (find_symbol, find_referencing_symbols, "
        "get_symbols_overview, search_for_pattern, ...) in a workspace, through routerd's "
        "warm Serena.",
        SerenaCallArgs,
        read_only=False,  # routerd offers editing tools in writable workspaces
    ),
)


def schema_of(args: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON Schema object of ``args`` (a flat Struct), inlined at the root."""
    _, components = msgspec.json.schema_components([args])
    schema = dict(components[args.__name__])
    schema.pop("title", None)
    return schema


def decode_args(args: type[_Args], arguments: dict[str, Any] | None) -> Any:
    """Validate an agent's ``arguments`` as ``args``; ``None`` values count as not given.
    Raises ``msgspec.ValidationError`` naming the argument."""
    given = {k: v for k, v in (arguments or {}).items() if v is not None}
    return msgspec.convert(given, args)


def serena_tool(info: dict[str, Any], workspace: str) -> Tool:
    """The MCP tool for one of Serena's tools, as ``serena.tools`` describes it."""
    schema = info.get("input_schema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        schema = {"type": "object", "properties": {}}
    writes = bool(info.get("writes"))
    description = str(info.get("description") or "").strip()
    return Tool(
        name=SERENA_PREFIX + str(info["name"]),
        description=f"Serena, in {workspace}: {description}",
        input_schema=schema,
        annotations=ToolAnnotations(
            read_only_hint=not writes, destructive_hint=writes, open_world_hint=False
        ),
    )


# --- results ----------------------------------------------------------------------------------


def _text(text: str) -> TextContent:
    return TextContent(type="text", text=text)


def data_result(data: Any) -> CallToolResult:
    """A daemon result map, as JSON text and as structured content."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=True)
    structured = data if isinstance(data, dict) else {"result": data}
    return CallToolResult(content=[_text(text)], structured_content=structured)


def error_result(code: str, message: str, data: dict[str, Any] | None = None) -> CallToolResult:
    """A failed tool call: the code and message for the agent, plus the daemon's ``explain``
    lines (why each model was left out) when it sent them."""
    lines = [f"routerd error {code}: {message}"]
    explain = (data or {}).get("explain")
    if isinstance(explain, list):
        lines.extend(str(line) for line in explain)
    error = {"code": code, "message": message, "data": data or {}}
    return CallToolResult(
        content=[_text("\n".join(lines))], structured_content={"error": error}, is_error=True
    )


def ask_result(
    text: str, end: dict[str, Any], selected: dict[str, Any] | None, reasoning: str
) -> CallToolResult:
    """An answered ``ask``: the answer, then one line saying who answered (and, when the
    answer broke off, why)."""
    model, service = end.get("model"), end.get("service")
    footer = f"[answered by {model} on {service}, category {end.get('category')}"
    session_id = end.get("session_id")
    if session_id:
        footer += f", session {session_id}"
    footer += "]"
    if end.get("finish_reason") == "incomplete":
        footer += f" The answer broke off: {end.get('reason') or 'the model server stopped'}."
    record = {
        "text": text,
        "model": model,
        "service": service,
        "category": end.get("category"),
        "finish_reason": end.get("finish_reason"),
        "fallback_level": end.get("fallback_level"),
        "session_id": session_id,
        "prompt_tokens": end.get("prompt_tokens"),
        "completion_tokens": end.get("completion_tokens"),
        "attempts": end.get("attempts") or [],
        "serena": (selected or {}).get("serena"),
    }
    if reasoning:
        record["reasoning"] = reasoning
    return CallToolResult(content=[_text(text), _text(footer)], structured_content=record)


def serena_result(result: dict[str, Any]) -> CallToolResult:
    """A ``serena.call`` result: Serena's text; ``isError`` when Serena ran the tool and it
    failed (a missing file, an unknown symbol)."""
    text = str(result.get("text") or "")
    structured = {k: result.get(k) for k in ("workspace", "tool", "data", "elapsed_ms")}
    return CallToolResult(
        content=[_text(text)], structured_content=structured, is_error=bool(result.get("is_error"))
    )
