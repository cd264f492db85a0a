"""The ``sessions.*`` methods (docs/protocol.md, "sessions.*").

Who may do what: a user lists, shows, exports and resets the sessions it owns; root and the
daemon's own user (who can read the database file anyway) may also list every user's sessions
(``all``) and show, export or reset any of them, and each such access to another user's session
is recorded in the audit log. Anyone else gets ``forbidden``, also recorded.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from routerd.core.audit import AuditEvent
from routerd.core.errors import Forbidden
from routerd.core.sessions import SessionState, detail_of, export_of, info_of
from routerd_client.protocol_sessions import (
    SessionDetail,
    SessionExport,
    SessionIdParams,
    SessionResetResult,
    SessionShowParams,
    SessionsListParams,
    SessionsListResult,
)

from .dispatch import Registry, RequestContext

if TYPE_CHECKING:
    from .sessions import SessionManager

__all__ = ["register_methods"]


def _idle(mgr: SessionManager) -> float | None:
    return mgr.settings.idle_expiry or None


def _readable(ctx: RequestContext, mgr: SessionManager, session_id: str, what: str) -> SessionState:
    uid = ctx.conn.peer_uid
    try:
        state = mgr.readable(session_id, uid)
    except Forbidden as exc:
        ctx.app.audit.security("session_refused", exc.message, uid=uid, pid=ctx.conn.peer_pid,
                               action=what)
        raise
    if state.owner_uid != uid:
        ctx.app.audit.security(
            "session_operator_access", f"uid {uid} used {what} on a session of uid "
            f"{state.owner_uid}", uid=uid, pid=ctx.conn.peer_pid, owner_uid=state.owner_uid,
            session_id=state.id, action=what,
        )  # fmt: skip
    return state


async def sessions_list(
    ctx: RequestContext, params: SessionsListParams, *, mgr: SessionManager
) -> SessionsListResult:
    states = mgr.visible(ctx.conn.peer_uid, every_user=params.all)
    idle = _idle(mgr)
    return SessionsListResult(sessions=[info_of(s, idle_expiry=idle) for s in states])


async def sessions_show(
    ctx: RequestContext, params: SessionShowParams, *, mgr: SessionManager
) -> SessionDetail:
    state = _readable(ctx, mgr, params.id, "sessions.show")
    return detail_of(state, last=params.messages, idle_expiry=_idle(mgr))


async def sessions_export(
    ctx: RequestContext, params: SessionIdParams, *, mgr: SessionManager
) -> SessionExport:
    state = _readable(ctx, mgr, params.id, "sessions.export")
    ctx.app.audit.record_nowait(
        AuditEvent(event_type="session:export", session_id=state.id, uid=ctx.conn.peer_uid,
                   pid=ctx.conn.peer_pid)
    )  # fmt: skip
    return export_of(state, now=time.time(), idle_expiry=_idle(mgr))


async def sessions_reset(
    ctx: RequestContext, params: SessionIdParams, *, mgr: SessionManager
) -> SessionResetResult:
    state = _readable(ctx, mgr, params.id, "sessions.reset")
    removed = await mgr.reset(state.id, uid=ctx.conn.peer_uid)
    ctx.app.audit.record_nowait(
        AuditEvent(event_type="session:reset", session_id=state.id, uid=ctx.conn.peer_uid,
                   pid=ctx.conn.peer_pid, details={"messages": removed})
    )  # fmt: skip
    return SessionResetResult(id=state.id, removed_messages=removed)


def register_methods(registry: Registry, mgr: SessionManager) -> None:
    """Add ``sessions.list``, ``.show``, ``.export`` and ``.reset`` bound to ``mgr``."""
    registry.add("sessions.list", functools.partial(sessions_list, mgr=mgr),
                 params=SessionsListParams)
    registry.add("sessions.show", functools.partial(sessions_show, mgr=mgr),
                 params=SessionShowParams)
    registry.add("sessions.export", functools.partial(sessions_export, mgr=mgr),
                 params=SessionIdParams)
    registry.add("sessions.reset", functools.partial(sessions_reset, mgr=mgr),
                 params=SessionIdParams)
