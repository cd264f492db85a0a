"""Wire types of the ``serena.*`` methods (docs/protocol.md, section "serena.*").

Like every wire type, these ignore unknown fields. Lines and characters are 0-based (LSP);
``workspace`` and ``file`` are paths on the daemon's machine (absolute, or ``file`` relative to
the workspace). A ``workspace`` may be any directory inside a project: the daemon takes the
configured workspace that contains it, else the nearest enclosing directory holding ``.git``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "ProposedEdit",
    "SerenaApplyEditParams",
    "SerenaCallParams",
    "SerenaCallResult",
    "SerenaRestartResult",
    "SerenaStatusResult",
    "SerenaToolInfo",
    "SerenaToolsResult",
    "SerenaWorkspaceParams",
    "SerenaWorkspaceStatus",
]


class SerenaWorkspaceParams(msgspec.Struct, omit_defaults=True):
    """``serena.status``, ``serena.restart`` and ``serena.tools``: which workspace (None: for
    status and restart every running one; for tools the default workspace)."""

    workspace: str | None = None
    file: str | None = None


class SerenaCallParams(msgspec.Struct, omit_defaults=True):
    tool: str
    arguments: dict[str, Any] = {}
    workspace: str | None = None
    file: str | None = None  # a hint to find the workspace when none is given
    timeout: float | None = None  # seconds; None: serena.call_timeout


EditKind = Literal[
    "replace_symbol_body", "insert_after_symbol", "insert_before_symbol", "rename_symbol"
]


class ProposedEdit(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A symbol-level edit: routerd proposes these in answers; ``serena.apply_edit`` applies one.

    ``file`` is relative to the workspace (or absolute inside it); ``symbol`` is Serena's name
    path (``Circle/area``). ``body`` is the new code for the body and insert kinds; ``new_name``
    the new name for ``rename_symbol``.
    """

    kind: EditKind
    file: str
    symbol: str
    body: str | None = None
    new_name: str | None = None


class SerenaApplyEditParams(msgspec.Struct, omit_defaults=True):
    edit: ProposedEdit
    workspace: str | None = None
    timeout: float | None = None


class SerenaToolInfo(msgspec.Struct, omit_defaults=True):
    name: str
    description: str = ""
    writes: bool = False  # changes files (offered only where writing is allowed)
    input_schema: dict[str, Any] = {}


class SerenaToolsResult(msgspec.Struct):
    workspace: str
    writable: bool  # this client may use the writing tools here
    tools: list[SerenaToolInfo]


class SerenaCallResult(msgspec.Struct):
    workspace: str
    tool: str
    is_error: bool  # Serena ran the tool and it failed (the text says why)
    text: str
    data: Any  # ``text`` decoded, when it is JSON; else None
    elapsed_ms: float


class SerenaWorkspaceStatus(msgspec.Struct, omit_defaults=True):
    workspace: str
    state: str  # stopped | starting | warming | ready | backoff | stopping
    configured: bool
    writable: bool
    restarts: int
    pid: int | None = None
    uptime_s: float | None = None
    last_error: str | None = None
    next_retry_in_s: float | None = None
    tools: int = 0
    queued: int = 0
    idle_s: float = 0.0
    warmup_ms: float | None = None
    latency: dict[str, Any] = {}  # {calls, last_ms, p50_ms, p95_ms}


class SerenaStatusResult(msgspec.Struct):
    enabled: bool
    running: int
    max_running: int
    workspaces: list[SerenaWorkspaceStatus]
    leftovers_killed: int = 0


class SerenaRestartResult(msgspec.Struct):
    restarted: list[str]
