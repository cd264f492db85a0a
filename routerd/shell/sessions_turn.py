"""One turn's view of a session, and what a new session's system prompt is made of.

:class:`Session` is what ``SessionManager.open`` hands out: the state committed when it was
opened plus what the turn stages (replaced messages, a compaction) until ``commit_turn``.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Protocol

from routerd.core.compaction import CompactionPolicy, CompactionResult
from routerd.core.config import Config, ContextConfig
from routerd.core.context import Message, SerenaState
from routerd.core.sessions import SessionState

from .app import App

__all__ = ["Session", "UsageLike", "compaction_policy", "os_name", "serena_state_of"]


class UsageLike(Protocol):
    """What :meth:`SessionManager.commit_turn` reads from a usage report
    (``routerd.core.streams.Usage`` is one)."""

    @property
    def prompt_tokens(self) -> int | None: ...

    @property
    def completion_tokens(self) -> int | None: ...


def compaction_policy(context: ContextConfig) -> CompactionPolicy:
    """The ``context`` section as a compaction policy (the core's lower limits applied)."""
    return CompactionPolicy(
        compaction_threshold=context.compaction_threshold,
        compaction_target=context.compaction_target,
        preserve_recent_messages=max(1, context.preserve_recent_messages),
        preserve_recent_tool_calls=context.preserve_recent_tool_calls,
        max_tool_output_tokens=max(16, context.max_tool_output_tokens),
    )


# A compaction waiting for commit_turn: the result, the version and request it was made for,
# and the model it fitted the context to.
_Staged = tuple[CompactionResult, int, tuple[Message, ...], str | None]


class Session:
    """One turn's view of a session: the state committed when it was opened, plus what this
    turn changes (replaced messages, a compaction) until :meth:`SessionManager.commit_turn`
    stores it. Obtain it from :meth:`SessionManager.open`; do not share it between turns."""

    def __init__(self, state: SessionState, *, new: bool) -> None:
        self.state = state
        #: True when ``open`` created it (no turn committed yet).
        self.new = new
        self._history: tuple[Message, ...] | None = None
        # (version, request) of the last context_for; a compaction is stored only for that.
        self._context: tuple[int, tuple[Message, ...]] | None = None
        self._compaction: _Staged | None = None

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def owner_uid(self) -> int:
        return self.state.owner_uid

    @property
    def system_prompt(self) -> str:
        return self.state.system_prompt

    @property
    def messages(self) -> tuple[Message, ...]:
        """The history the next request builds on (replaced ones, if this turn replaced it)."""
        return self.state.messages if self._history is None else self._history

    @property
    def active_model(self) -> str | None:
        return self.state.active_model

    @property
    def models_used(self) -> tuple[str, ...]:
        return self.state.models_used

    @property
    def token_total(self) -> int:
        return self.state.token_total

    @property
    def partial_turns(self) -> list[int]:
        return self.state.partial_turns

    def _committed(self, state: SessionState) -> None:
        self.state = state
        self.new = False
        self._history = None
        self._context = None
        self._compaction = None


def os_name() -> str:
    """``Linux (Debian GNU/Linux 12 (bookworm))``, ``Darwin 23.4.0``, ..."""
    system = platform.system() or "unknown"
    try:
        pretty = platform.freedesktop_os_release().get("PRETTY_NAME")
    except OSError:
        pretty = None
    return f"{system} ({pretty})" if pretty else f"{system} {platform.release()}".strip()


def serena_state_of(app: App) -> Callable[[], SerenaState]:
    """Serena's state for new system prompts: ``ready`` when a workspace's Serena is ready,
    ``starting`` while one starts, ``unavailable`` when all are failing, else ``disabled``."""

    def state() -> SerenaState:
        config: Config = app.config
        if not config.serena.enabled:
            return "disabled"
        from .serena import get_serena  # the feature may be absent; import only when asked

        pool = get_serena(app)
        if pool is None:
            return "disabled"
        states = {w.get("state") for w in pool.status().get("workspaces", [])}
        if "ready" in states:
            return "ready"
        if states and states <= {"backoff", "stopped"}:
            return "unavailable"
        return "starting"

    return state
