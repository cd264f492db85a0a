"""Sessions: conversation context kept across requests, model switches and restarts.

For the route executor::

    mgr = sessions_of(app)
    session = mgr.open(params.session_id, uid=ctx.conn.peer_uid, agent=agent_name)
    if params.messages:                          # the client sent its whole conversation
        mgr.replace_messages(session, params.messages[:-1])
    new = params.messages[-1:] or [user_message]
    context = mgr.context_for(session, new)      # system prompt + history + new
    result = handoff(context, token_family(model), window, mgr.policy,
                     to_calib=mgr.calibration(model))
    if result.compacted:
        mgr.record_compaction(session, result, model=model)
    ... send result.messages, stream the answer ...
    mgr.observe_usage(model, result.messages, usage.prompt_tokens, window=window)
    await mgr.commit_turn(session, request_messages=new, answer=answer, model=model,
                          service=service, usage=usage, partial=False)
    ... only now send ``end`` ...

A turn cut off by a failure or a cancellation is committed with ``partial=True`` (``answer`` is
what arrived, or None); :meth:`SessionManager.commit_turn` shields itself, so it can be awaited
from an ``except trio.Cancelled`` block. A compaction recorded for the context of this turn's
request is stored with the turn: the next turn builds on the compacted messages.

A session exists once its first turn is committed: until then ``open`` hands out a fresh
:class:`Session` and nothing is stored. Its :attr:`Session.id` is what the client sends next.

Modules: ``routerd.core.sessions`` decides (ids, ownership, turns, expiry, eviction, exports);
:mod:`~routerd.shell.sessions_turn` is the :class:`Session` a turn holds;
:mod:`~routerd.shell.sessions_db` stores (one thread, one connection) and
:mod:`~routerd.shell.sessions_schema` keeps the file (schema, pragmas, mode);
:mod:`~routerd.shell.sessions_methods` serves ``sessions.*``.
"""

from __future__ import annotations

import logging
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import trio

from routerd.core.compaction import CompactionPolicy, CompactionResult
from routerd.core.config import Config, SessionsConfig
from routerd.core.context import Counter, Message, SerenaState, estimate_counter, system_prompt
from routerd.core.errors import Forbidden, NotFound, RouterdError, Unavailable
from routerd.core.sessions import (
    Footprint,
    SessionState,
    TurnInput,
    check_continue,
    check_read,
    choose_evictions,
    compaction_record,
    expired,
    is_operator,
    new_session,
    parse_session_id,
    plan_turn,
    token_family,
)
from routerd.core.tokens import Calibration, MessageLike, observe_prompt, observe_text

from .app import App
from .osdeps import effective_uid
from .sessions_db import SessionStore, StoreError
from .sessions_methods import register_methods
from .sessions_turn import Session, UsageLike, compaction_policy, os_name, serena_state_of
from .state_dir import resolve_state_dir

__all__ = [
    "install",
    "Session",
    "SessionManager",
    "UsageLike",
    "compaction_policy",
    "sessions_of",
    "token_family",
]

log = logging.getLogger(__name__)

#: Seconds between sweeps (expiry, size bound, calibration flush).
SWEEP_INTERVAL: Final = 300.0

_MANAGERS: weakref.WeakKeyDictionary[App, SessionManager] = weakref.WeakKeyDictionary()


def sessions_of(app: App) -> SessionManager:
    """The manager :func:`install` gave ``app``; LookupError if none."""
    try:
        return _MANAGERS[app]
    except KeyError:
        raise LookupError("sessions are not installed in this app") from None


def attach(app: App, manager: SessionManager) -> None:
    """Make ``manager`` what :func:`sessions_of` returns for ``app``."""
    _MANAGERS[app] = manager


Phase = Literal["starting", "ready", "unavailable", "stopped"]


class SessionManager:
    """Every session of one daemon, in memory and in the database at ``state_dir``.

    Reads are served from memory (loaded when :meth:`run` starts); each change is one job of
    the database thread, in memory only once it is on disk. Run :meth:`run` as a service.
    """

    def __init__(
        self,
        state_dir: Path,
        settings: SessionsConfig,
        *,
        policy: CompactionPolicy | None = None,
        daemon_uid: int | None = None,
        serena_state: Callable[[], SerenaState] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = SessionStore(state_dir)
        self.settings = settings
        self.policy = policy or CompactionPolicy()
        # On Windows effective_uid() is osdeps.SELF_UID, every pipe peer's uid too: a pipe
        # peer owns its sessions and is an operator.
        self.daemon_uid = effective_uid() if daemon_uid is None else daemon_uid
        self._serena_state = serena_state or (lambda: "disabled")
        self._clock = clock
        self.phase: Phase = "starting"
        self.problem: str | None = None
        self._sessions: dict[str, SessionState] = {}
        self._calibrations: dict[str, Calibration] = {}
        self._dirty: set[str] = set()
        self._locks: dict[str, trio.Lock] = {}
        self._os_name = "unknown"
        self._bytes = 0
        self.db_bytes = 0
        self.expired_total = 0
        self.evicted_total = 0
        self.last_sweep: float | None = None

    # --- the service --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the database, report started, then sweep every :data:`SWEEP_INTERVAL` seconds
        until cancelled; on the way out save calibrations and close the database. When the
        database cannot be used, sessions are ``unavailable`` (``open`` raises) and the daemon
        runs on."""
        try:
            self._os_name = await trio.to_thread.run_sync(os_name)
            loaded = await self.store.start()
        except (StoreError, RouterdError) as exc:
            self.phase, self.problem = "unavailable", str(exc)
            log.error("sessions are unavailable: %s", exc)
            await self.store.stop()
            task_status.started()
            return
        self._sessions = {s.id: s for s in loaded.sessions}
        self._bytes = sum(s.bytes for s in loaded.sessions)
        self._calibrations = dict(loaded.calibrations)
        if loaded.quarantined:
            self.problem = f"an unreadable database was moved to {loaded.quarantined}"
        self.phase = "ready"
        log.info("sessions: %d loaded from %s", len(self._sessions), self.store.path)
        task_status.started()
        try:
            while True:
                try:
                    await self.sweep()
                except RouterdError as exc:
                    log.error("session sweep failed: %s", exc)
                await trio.sleep(SWEEP_INTERVAL)
        finally:
            self.phase = "stopped"
            with trio.CancelScope(shield=True):
                try:
                    await self._flush_calibrations()
                except RouterdError as exc:
                    log.error("calibrations not saved: %s", exc)
                await self.store.stop()

    def apply_settings(self, settings: SessionsConfig, policy: CompactionPolicy) -> None:
        """New limits from a reload; they apply from the next sweep or turn."""
        self.settings = settings
        self.policy = policy

    # --- opening and building context ----------------------------------------------------------

    def _ready(self) -> None:
        if self.phase != "ready":
            raise Unavailable(f"sessions are {self.phase}" + (f": {self.problem}"
                                                               if self.problem else ""))

    def open(
        self,
        session_id: str | None,
        *,
        uid: int | None,
        agent: str | None,
        create: bool = True,
        serena: SerenaState | None = None,
    ) -> Session:
        """The session ``session_id`` of user ``uid``, for one turn.

        ``None``: a new session with an id drawn here. A well-formed id nobody holds: a new
        session with that id (``NotFound`` instead when ``create`` is false). Raises
        ``BadRequest`` for a malformed id, ``Forbidden`` when another user owns it (or ``uid``
        is unknown), ``Unavailable`` when sessions are not loaded. The system prompt of a new
        session names the OS, ``agent`` and Serena's state (``serena``, else the pool's).
        """
        self._ready()
        if uid is None:
            raise Forbidden("routerd cannot tell which user this connection belongs to")
        if session_id is None:
            sid = secrets.token_hex(16)
            while sid in self._sessions:  # pragma: no cover - 2**-128
                sid = secrets.token_hex(16)
        else:
            sid = parse_session_id(session_id)
            state = self._sessions.get(sid)
            if state is not None:
                check_continue(state, uid)
                return Session(state, new=False)
            if not create:
                raise NotFound(f"no session {sid}")
        prompt = system_prompt(self._os_name, agent or "unknown", serena or self._serena_state())
        state = new_session(sid, owner_uid=uid, agent=agent, system_prompt=prompt,
                            now=self._clock())
        return Session(state, new=True)

    def replace_messages(self, session: Session, messages: Iterable[Message]) -> None:
        """The client sent its own conversation: it replaces the stored history when this
        turn commits. Token counts from the client are not trusted (recounted)."""
        session._history = tuple(msgspec.structs.replace(m, tokens=0) for m in messages)

    def context_for(self, session: Session, new_messages: Sequence[Message]) -> list[Message]:
        """System prompt + history + ``new_messages``: the context to fit and send."""
        session._context = (session.state.version, tuple(new_messages))
        out = [Message("system", session.system_prompt)] if session.system_prompt else []
        out.extend(session.messages)
        out.extend(new_messages)
        return out

    def record_compaction(
        self, session: Session, result: CompactionResult, *, model: str | None = None
    ) -> None:
        """Store ``result`` (a compaction of the last :meth:`context_for`) with this turn: the
        session keeps the compacted messages, and its record of what compaction did. A failed
        result, or one for another context, is ignored when the turn commits."""
        if not result.ok or session._context is None:
            return
        version, request = session._context
        session._compaction = (result, version, request, model)

    # --- committing ---------------------------------------------------------------------------

    async def commit_turn(
        self,
        session: Session,
        *,
        request_messages: Sequence[Message],
        answer: Message | None,
        model: str | None,
        service: str | None,
        usage: UsageLike | None,
        partial: bool,
    ) -> None:
        """Store one turn: ``request_messages`` (the new ones) and ``answer``, after any
        replacement and compaction staged on ``session``. Durable (committed with
        ``synchronous=FULL``) when this returns: only then may the turn be acknowledged.
        Shielded from cancellation. Raises ``Unavailable`` when it could not be stored,
        ``Forbidden`` when another user took the id meanwhile."""
        self._ready()
        sid = session.id
        with trio.CancelScope(shield=True):
            async with self._lock(sid):
                now = self._clock()
                base = self._base(session, now)
                turn = self._turn_input(session, base, request_messages, answer, model, now)
                turn = msgspec.structs.replace(
                    turn,
                    model=model,
                    service=service,
                    partial=partial,
                    prompt_tokens=getattr(usage, "prompt_tokens", None),
                    completion_tokens=getattr(usage, "completion_tokens", None),
                )
                plan = plan_turn(base, turn, self.counter(model or base.active_model), now)
                dirty = {m: self._calibrations[m] for m in self._dirty}
                self._dirty.clear()
                try:
                    await self.store.commit(plan, dirty)
                except BaseException:
                    self._dirty.update(dirty)
                    raise
                old = self._sessions.get(sid)
                self._bytes += plan.state.bytes - (old.bytes if old is not None else 0)
                self._sessions[sid] = plan.state
                session._committed(plan.state)
            if (len(self._sessions) > self.settings.max_sessions
                    or self._bytes > self.settings.max_db_bytes):
                await self._enforce_bounds(protect={sid})

    def _base(self, session: Session, now: float) -> SessionState:
        current = self._sessions.get(session.id)
        if current is not None:
            check_continue(current, session.owner_uid)
            return current
        if session.state.version == 0:
            return session.state
        # Reset or expired since this turn opened it: the turn starts it afresh.
        s = session.state
        return new_session(s.id, owner_uid=s.owner_uid, agent=s.agent,
                           system_prompt=s.system_prompt, now=now)

    def _turn_input(
        self,
        session: Session,
        base: SessionState,
        request: Sequence[Message],
        answer: Message | None,
        model: str | None,
        now: float,
    ) -> TurnInput:
        history = session._history
        staged = session._compaction
        if staged is not None:
            result, version, seen_request, fitted_for = staged
            if version == base.version == session.state.version and tuple(request) == seen_request:
                msgs = list(result.messages)
                if msgs and msgs[0].role == "system" and msgs[0].content == base.system_prompt:
                    msgs = msgs[1:]
                record = compaction_record(result, at=now, turn=0, model=fitted_for or model)
                return TurnInput(request=tuple(request), answer=answer, history=tuple(msgs),
                                 request_in_history=True, compaction=record)
            log.debug("session %s: compaction not stored (the session changed)", session.id)
        return TurnInput(request=tuple(request), answer=answer, history=history)

    @asynccontextmanager
    async def _lock(self, sid: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(sid, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(sid, None)

    # --- reading, resetting, expiring ----------------------------------------------------------

    def visible(self, uid: int | None, *, every_user: bool = False) -> list[SessionState]:
        """Sessions ``uid`` may list, most recently used first: its own; with ``every_user``
        (operators only, else ``Forbidden``) everyone's."""
        self._ready()
        if every_user:
            if not is_operator(uid, self.daemon_uid):
                raise Forbidden("only root and routerd's own user may list every user's sessions")
            chosen = list(self._sessions.values())
        else:
            chosen = [s for s in self._sessions.values() if uid is not None and s.owner_uid == uid]
        return sorted(chosen, key=lambda s: (-s.updated_at, s.id))

    def readable(self, session_id: str, uid: int | None) -> SessionState:
        """The session for ``sessions.show``/``export``: ``NotFound``, ``Forbidden``,
        ``BadRequest`` as apply."""
        self._ready()
        sid = parse_session_id(session_id)
        state = self._sessions.get(sid)
        if state is None:
            raise NotFound(f"no session {sid}")
        check_read(state, uid, self.daemon_uid)
        return state

    async def reset(self, session_id: str, *, uid: int | None) -> int:
        """Delete a session and its text (see :meth:`readable` for who may); returns how many
        messages were removed."""
        state = self.readable(session_id, uid)
        async with self._lock(state.id):
            return await self._remove([state.id], reason="reset")

    async def _remove(self, ids: Sequence[str], *, reason: str) -> int:
        ids = [sid for sid in ids if sid in self._sessions]
        if not ids:
            return 0
        removed = await self.store.delete(ids)
        for sid in ids:
            gone = self._sessions.pop(sid, None)
            if gone is not None:
                self._bytes -= gone.bytes
        log.info("sessions %s: %d (%d messages)", reason, len(ids), removed)
        return removed

    async def sweep(self, now: float | None = None) -> dict[str, int]:
        """Delete expired sessions, then the least recently used while over the size bounds,
        then save calibrations. Sessions with a turn being committed are left for later."""
        self._ready()
        now = self._clock() if now is None else now
        idle = self.settings.idle_expiry or None
        gone = await self._take(expired(self._footprints(), now=now, idle_expiry=idle), "expired")
        self.expired_total += gone
        evicted = await self._enforce_bounds(protect=set())
        await self._flush_calibrations()
        self.last_sweep = now
        return {"expired": gone, "evicted": evicted}

    async def _enforce_bounds(self, *, protect: set[str]) -> int:
        facts = await self.store.facts()
        self.db_bytes = facts.db_bytes
        busy = {sid for sid, lock in self._locks.items() if lock.locked()}
        # The main file, or the text's estimate while the newest pages are still in the WAL
        # (which has a bound of its own, sessions_schema.WAL_LIMIT).
        chosen = choose_evictions(
            self._footprints(),
            max_sessions=self.settings.max_sessions,
            max_bytes=self.settings.max_db_bytes,
            used_bytes=max(self.db_bytes, self._bytes),
            protect=protect | busy,
        )
        n = await self._take(chosen, "evicted")
        self.evicted_total += n
        if n:
            self.db_bytes = (await self.store.facts()).db_bytes
        return n

    async def _take(self, ids: Sequence[str], reason: str) -> int:
        """Remove the sessions of ``ids`` whose lock is free now; how many were removed."""
        held: list[trio.Lock] = []
        chosen: list[str] = []
        for sid in ids:
            lock = self._locks.setdefault(sid, trio.Lock())
            if lock.locked():
                continue
            lock.acquire_nowait()
            held.append(lock)
            chosen.append(sid)
        try:
            await self._remove(chosen, reason=reason)
        finally:
            for sid, lock in zip(chosen, held, strict=True):
                lock.release()
                if not lock.statistics().tasks_waiting:
                    self._locks.pop(sid, None)
        return len(chosen)

    def _footprints(self) -> list[Footprint]:
        return [Footprint(s.id, s.updated_at, s.bytes) for s in self._sessions.values()]

    # --- token counting -----------------------------------------------------------------------

    def calibration(self, model_id: str | None) -> Calibration:
        """What the servers' counts taught about ``model_id`` (a neutral one if nothing)."""
        if model_id is None:
            return Calibration()
        return self._calibrations.get(model_id) or Calibration()

    def counter(self, model_id: str | None) -> Counter:
        """Token counts for ``model_id``: its family's estimate, calibrated."""
        return estimate_counter(token_family(model_id), self.calibration(model_id))

    def observe_usage(
        self,
        model_id: str,
        messages: Iterable[MessageLike],
        prompt_tokens: int | None,
        *,
        window: int | None = None,
    ) -> Calibration:
        """Learn from a server's prompt token count for ``messages`` exactly as sent (see
        ``routerd.core.tokens.observe_prompt``); saved with the next turn or sweep."""
        calib = self.calibration(model_id)
        if prompt_tokens is None or prompt_tokens <= 0:
            return calib
        new = observe_prompt(calib, messages, token_family(model_id), prompt_tokens,
                             window=window)
        return self._learn(model_id, new)

    def observe_tokenized(self, model_id: str, text: str, tokens: int) -> Calibration:
        """Learn from an exact count of ``text`` (a ``/tokenize`` answer, no special tokens)."""
        new = observe_text(self.calibration(model_id), text, token_family(model_id), tokens)
        return self._learn(model_id, new)

    def _learn(self, model_id: str, calib: Calibration) -> Calibration:
        if calib != self._calibrations.get(model_id):
            self._calibrations[model_id] = calib
            self._dirty.add(model_id)
        return calib

    async def _flush_calibrations(self) -> None:
        if not self._dirty or self.phase not in ("ready", "stopped"):
            return
        dirty = {m: self._calibrations[m] for m in self._dirty}
        self._dirty.clear()
        try:
            await self.store.save_calibrations(dirty)
        except BaseException:
            self._dirty.update(dirty)
            raise

    # --- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The ``sessions`` status component (cached figures only)."""
        out: dict[str, Any] = {
            "state": self.phase,
            "sessions": len(self._sessions),
            "db_bytes": self.db_bytes,
            "max_db_bytes": self.settings.max_db_bytes,
            "max_sessions": self.settings.max_sessions,
            "idle_expiry_s": self.settings.idle_expiry or None,
            "expired": self.expired_total,
            "evicted": self.evicted_total,
            "calibrated_models": len(self._calibrations),
            "path": str(self.store.path),
        }
        if self.problem:
            out["problem"] = self.problem
        return out


def install(app: App, *, state_dir: Path | None = None, daemon_uid: int | None = None) -> None:
    """Plug sessions into ``app``: the manager (:func:`sessions_of`), its service (started
    before READY: a turn needs its session loaded), the ``sessions`` status component, the
    reload hook and the ``sessions.*`` methods. ``state_dir`` and ``daemon_uid`` (else
    ``osdeps.effective_uid()``): tests pass their own."""
    config = app.config
    if state_dir is None:
        state_dir = resolve_state_dir(config.daemon.state_dir, app.env, uid=effective_uid())
    mgr = SessionManager(
        state_dir,
        config.sessions,
        policy=compaction_policy(config.context),
        daemon_uid=daemon_uid,
        serena_state=serena_state_of(app),
    )
    attach(app, mgr)
    app.add_service("sessions", mgr.run)
    app.add_component("sessions", mgr.status)

    def on_reload(old: Config, new: Config) -> None:
        mgr.apply_settings(new.sessions, compaction_policy(new.context))

    app.add_reload_hook(on_reload)
    register_methods(app.registry, mgr)
