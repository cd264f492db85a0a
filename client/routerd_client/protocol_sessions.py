"""Wire types of the ``sessions.*`` methods (docs/protocol.md, section "sessions.*").

Like every wire type, these ignore unknown fields. A session id is 32 lowercase hexadecimal
digits (128 random bits). Times are epoch seconds. ``owner_uid`` is the uid of the user whose
connection created the session: only that user continues it; the daemon's own user and root
may also list, show, export and reset it.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "SessionCompaction",
    "SessionDetail",
    "SessionExport",
    "SessionIdParams",
    "SessionInfo",
    "SessionMessage",
    "SessionResetResult",
    "SessionShowParams",
    "SessionTurn",
    "SessionsListParams",
    "SessionsListResult",
]

#: ``SessionExport.format`` and ``.version``: what ``sessions.export`` produces.
EXPORT_FORMAT: Final = "routerd-session"
EXPORT_VERSION: Final = 1


class SessionsListParams(msgspec.Struct, omit_defaults=True):
    all: bool = False  # every user's sessions (the daemon's own user and root only)


class SessionIdParams(msgspec.Struct):
    id: str  # required


class SessionShowParams(msgspec.Struct, omit_defaults=True):
    id: str  # required
    messages: int = 20  # the last N messages; 0: none, -1: all


class SessionMessage(msgspec.Struct, omit_defaults=True):
    """One stored message. ``tokens``: its cost under the session's active model, as last
    counted. ``metadata`` flags: ``partial`` (an answer cut off by a failure), ``summary`` (a
    compaction summary), ``truncated`` (cut by compaction, ``original_tokens`` before)."""

    role: str
    content: str
    tokens: int = 0
    name: str | None = None
    tool_call_id: str | None = None
    metadata: dict[str, Any] = {}


class SessionTurn(msgspec.Struct, omit_defaults=True):
    """One committed turn: the model and service that answered, and the server's counts."""

    turn: int
    at: float
    model: str | None = None
    service: str | None = None
    partial: bool = False
    messages: int = 0  # messages the turn added (its request and its answer)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class SessionCompaction(msgspec.Struct, omit_defaults=True):
    """One compaction: what it did, counted in messages of the context it compacted."""

    at: float
    turn: int  # the turn it was stored with
    model: str | None = None  # the model the context was fitted to
    tokens_before: int = 0
    tokens_after: int = 0
    window_tokens: int = 0
    summary_source: str = "none"  # none | extractive | model
    summarised: int = 0  # messages folded into the summary
    dropped: int = 0  # messages removed with no room for a summary
    truncated: int = 0  # messages cut in the middle


class SessionInfo(msgspec.Struct, omit_defaults=True):
    """A session in a listing."""

    id: str
    owner_uid: int
    created_at: float
    updated_at: float
    turns: int
    messages: int
    tokens: int  # system prompt and messages under the active model
    agent: str | None = None
    active_model: str | None = None
    models_used: list[str] = []  # models used before the active one, oldest first
    partial_turns: int = 0
    compactions: int = 0
    bytes: int = 0  # stored text, about
    expires_at: float | None = None  # when it expires if left idle (None: never)


class SessionsListResult(msgspec.Struct):
    sessions: list[SessionInfo]  # most recently used first


class SessionDetail(msgspec.Struct, omit_defaults=True):
    """``sessions.show``: the listing's fields, the system prompt, the turns, the compactions
    and the last messages."""

    info: SessionInfo
    system_prompt: str
    turns: list[SessionTurn] = []
    compactions: list[SessionCompaction] = []
    messages: list[SessionMessage] = []
    messages_omitted: int = 0  # older messages not sent (see ``SessionShowParams.messages``)


class SessionExport(msgspec.Struct):
    """``sessions.export``: everything the daemon holds about one session."""

    format: str  # EXPORT_FORMAT
    version: int  # EXPORT_VERSION
    exported_at: float
    session: SessionInfo
    system_prompt: str
    messages: list[SessionMessage]
    turns: list[SessionTurn]
    compactions: list[SessionCompaction]


class SessionResetResult(msgspec.Struct):
    id: str
    removed_messages: int
