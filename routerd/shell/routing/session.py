"""A routed request's session (``routerd.shell.sessions``): the context it builds on, the
compaction it keeps, and the turn it stores.

Contract:

* A request with ``session_id`` continues that session (``"new"`` starts one with a fresh id,
  which the ``end`` record carries); without one nothing is stored. Only the user who
  created a session continues it (``forbidden`` otherwise).
* The context is the session's system prompt, its history and the new message. A client that
  sends ``messages`` sends its whole conversation: it replaces the stored history, and its
  last message is the new one.
* :meth:`TurnSession.commit` stores the turn durably and returns only then; the ``end`` event
  goes out after it. A turn cut short (incomplete, failed, cancelled) is stored ``partial``
  with what arrived.
* When the sessions feature is not part of the daemon, a request with a session id is
  answered without history, and its ``selected`` event says so.
"""

from __future__ import annotations

from typing import Any

import msgspec

from routerd.core.compaction import CompactionResult
from routerd.core.context import Message
from routerd.core.streams import Usage
from routerd.shell.app import App
from routerd.shell.dispatch import ConnectionInfo
from routerd.shell.sessions import Session, SessionManager, sessions_of

__all__ = ["NEW_SESSION", "TurnSession", "manager_of", "open_turn_session"]

#: The ``session_id`` that asks for a new session.
NEW_SESSION = "new"


def manager_of(app: App) -> SessionManager | None:
    """The app's session manager, or None when sessions are not installed."""
    try:
        return sessions_of(app)
    except LookupError:
        return None


class TurnSession:
    """One turn of one session (see the module docstring)."""

    __slots__ = ("enriched", "manager", "new", "session")

    def __init__(self, manager: SessionManager, session: Session, new: list[Message]) -> None:
        self.manager = manager
        self.session = session
        self.new = new  # the request's own messages, stored with the answer
        self.enriched: str | None = None  # the last user message as sent, with Serena's context

    @property
    def id(self) -> str:
        return self.session.id

    def info(self) -> dict[str, Any]:
        """The ``selected`` event's ``session``."""
        return {
            "id": self.session.id,
            "kept": True,
            "new": self.session.new,
            "history": len(self.session.messages),
        }

    def record_compaction(self, result: CompactionResult, model: str) -> None:
        """Keep ``result``'s messages as the session's history, with the request's own last
        user message in place of the one enriched with Serena's context: that context was
        for this turn, and would go stale (and fill the window) in the history."""
        if self.enriched is not None:
            result = msgspec.structs.replace(
                result, messages=_unenriched(result.messages, self.enriched, self.new)
            )
        self.manager.record_compaction(self.session, result, model=model)

    async def commit(
        self,
        answer: str | None,
        *,
        model: str | None,
        service: str | None,
        usage: Usage | None,
        partial: bool,
    ) -> None:
        """Store the turn; durable when this returns (shielded from cancellation)."""
        await self.manager.commit_turn(
            self.session,
            request_messages=self.new,
            answer=Message("assistant", answer) if answer else None,
            model=model,
            service=service,
            usage=usage,
            partial=partial,
        )


def _unenriched(messages: list[Message], enriched: str, new: list[Message]) -> list[Message]:
    original = next((m for m in reversed(new) if m.role == "user"), None)
    if original is None:
        return messages
    out = list(messages)
    for i in range(len(out) - 1, -1, -1):
        if out[i].role == "user":
            if out[i].content == enriched:
                out[i] = original
            break
    return out


def open_turn_session(
    app: App,
    conn: ConnectionInfo,
    session_id: str,
    core: list[Message],
    *,
    replace: bool,
    agent: str | None,
) -> tuple[TurnSession | None, list[Message], dict[str, Any]]:
    """The session for this turn, the context to send, and the event's view of it.

    ``core`` is the request's messages; with ``replace`` (the client sent ``messages``) all
    but the last replace the stored history. Raises BadRequest, Forbidden or Unavailable as
    ``SessionManager.open`` does.
    """
    manager = manager_of(app)
    if manager is None:
        reason = "sessions are not part of this daemon: answered without history"
        return None, core, {"id": session_id, "kept": False, "reason": reason}
    wanted = None if session_id == NEW_SESSION else session_id
    session = manager.open(wanted, uid=conn.peer_uid, agent=agent)
    new = core[-1:] if replace else core
    if replace:
        manager.replace_messages(session, core[:-1])
    turn = TurnSession(manager, session, new)
    return turn, manager.context_for(session, new), turn.info()
