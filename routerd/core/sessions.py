"""Sessions as values: ids, ownership, committed turns, expiry, the size bound, and exports.

The shell (``routerd.shell.sessions``) keeps one :class:`SessionState` per session in memory and
in SQLite; every change is planned here (:func:`plan_turn`) and carried out there.

Invariants:

* A session id is 32 lowercase hexadecimal digits (128 bits). :func:`parse_session_id` accepts
  upper case too and returns the lowercase form; anything else is ``BadRequest``.
* Only the owner (the uid that created the session) continues it (:func:`check_continue`); the
  owner, the daemon's own user and root may read, export and reset it (:func:`check_read`).
  An unknown peer uid is never an owner and never an operator.
* :func:`plan_turn` is the only way a state changes: ``version`` grows by exactly one, ``turns``
  gains exactly one :class:`TurnRecord` numbered ``len(turns) + 1``, ``updated_at`` is the
  ``now`` given, and every message of the result carries a token count (> 0) for the active
  model. A turn cut off by a failure is recorded ``partial`` and its answer, if any, carries
  ``metadata["partial"] = True``.
* ``models_used`` never holds the active model and never holds a model twice.
* Expiry and eviction are decisions on :class:`Footprint` values and an explicit ``now``:
  :func:`expired` picks sessions idle for at least ``idle_expiry`` seconds; :func:`choose_evictions`
  picks the least recently used first and never a protected one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

import msgspec

from routerd.core.compaction import CompactionResult
from routerd.core.context import Counter, Message
from routerd.core.errors import BadRequest, Forbidden
from routerd.core.tokens import resolve_family
from routerd_client.protocol_sessions import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    SessionCompaction,
    SessionDetail,
    SessionExport,
    SessionInfo,
    SessionMessage,
    SessionTurn,
)

__all__ = [
    "SESSION_ID_DIGITS",
    "MESSAGE_OVERHEAD_BYTES",
    "LOW_WATER",
    "EXACT_MARGIN",
    "TurnRecord",
    "CompactionRecord",
    "SessionState",
    "TurnInput",
    "TurnPlan",
    "Footprint",
    "parse_session_id",
    "is_operator",
    "check_continue",
    "check_read",
    "new_session",
    "token_family",
    "compaction_record",
    "plan_turn",
    "text_bytes",
    "expired",
    "choose_evictions",
    "needs_exact_count",
    "info_of",
    "detail_of",
    "export_of",
]

#: Hexadecimal digits of a session id (128 bits).
SESSION_ID_DIGITS: Final = 32
_ID = re.compile(r"[0-9a-f]{32}")

#: Bytes a stored message costs besides its text (row, key, encoding), for the size estimate.
MESSAGE_OVERHEAD_BYTES: Final = 64

#: An estimate within this fraction of the window (either side) is worth an exact count.
EXACT_MARGIN: Final = 0.15

#: Once the database is over its size bound, sessions are evicted until it is at most this
#: fraction of the bound, so that eviction does not run again at every turn.
LOW_WATER: Final = 0.9


# --- values -----------------------------------------------------------------------------------


class TurnRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One committed turn (see ``routerd_client.protocol_sessions.SessionTurn``)."""

    turn: int
    at: float
    model: str | None = None
    service: str | None = None
    partial: bool = False
    messages: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class CompactionRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What one stored compaction did (``SessionCompaction`` on the wire)."""

    at: float
    turn: int
    model: str | None = None
    tokens_before: int = 0
    tokens_after: int = 0
    window_tokens: int = 0
    summary_source: str = "none"
    summarised: int = 0
    dropped: int = 0
    truncated: int = 0


class SessionState(msgspec.Struct, frozen=True, kw_only=True):
    """A session as committed. ``messages`` is the context the next turn builds on (after any
    compaction), without the system prompt; ``token_total`` counts the system prompt and the
    messages under ``active_model``; ``bytes`` estimates the stored size; ``version`` is 0 for a
    session never committed and grows by one per committed turn."""

    id: str
    owner_uid: int
    created_at: float
    updated_at: float
    system_prompt: str
    agent: str | None = None
    messages: tuple[Message, ...] = ()
    active_model: str | None = None
    models_used: tuple[str, ...] = ()
    token_total: int = 0
    bytes: int = 0
    version: int = 0
    turns: tuple[TurnRecord, ...] = ()
    compactions: tuple[CompactionRecord, ...] = ()

    @property
    def partial_turns(self) -> list[int]:
        """Numbers of the turns stored partial."""
        return [t.turn for t in self.turns if t.partial]


class TurnInput(msgspec.Struct, frozen=True, kw_only=True):
    """What one turn adds. ``history``, when given, replaces the stored messages first: the
    client's own full conversation, or a compaction's result (without the system prompt). When
    ``request_in_history`` is true, ``history`` already ends with this turn's request (as a
    compaction of ``system prompt + messages + request`` does), so ``request`` is not appended
    again; it still counts in the turn record."""

    request: tuple[Message, ...] = ()
    answer: Message | None = None
    history: tuple[Message, ...] | None = None
    request_in_history: bool = False
    model: str | None = None
    service: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    partial: bool = False
    compaction: CompactionRecord | None = None


class TurnPlan(msgspec.Struct, frozen=True, kw_only=True):
    """The new state, and how to store it: ``rewrite`` replaces every stored message of the
    session with ``state.messages``; otherwise ``added`` go after the stored ones."""

    state: SessionState
    rewrite: bool
    added: tuple[Message, ...]
    turn: TurnRecord
    compaction: CompactionRecord | None = None


class Footprint(NamedTuple):
    """What expiry and eviction look at."""

    id: str
    updated_at: float
    bytes: int


# --- ids and ownership ------------------------------------------------------------------------


def parse_session_id(value: str) -> str:
    """The canonical (lowercase) form of session id ``value``; ``BadRequest`` if malformed."""
    if isinstance(value, str) and len(value) == SESSION_ID_DIGITS:
        lowered = value.lower()
        if _ID.fullmatch(lowered):
            return lowered
    shown = value[:40] if isinstance(value, str) else type(value).__name__
    raise BadRequest(
        f"invalid session id {shown!r}: a session id is {SESSION_ID_DIGITS} hexadecimal digits"
    )


def is_operator(uid: int | None, daemon_uid: int) -> bool:
    """Root and the daemon's own user operate the daemon (and could read its database)."""
    return uid is not None and uid in (0, daemon_uid)


def check_continue(state: SessionState, uid: int | None) -> None:
    """``Forbidden`` unless ``uid`` owns ``state``: only the owner adds turns, operators too
    would mix their requests into someone else's conversation."""
    if uid is None or uid != state.owner_uid:
        raise Forbidden(f"session {state.id} belongs to another user")


def check_read(state: SessionState, uid: int | None, daemon_uid: int) -> None:
    """``Forbidden`` unless ``uid`` owns ``state`` or is an operator (:func:`is_operator`)."""
    if uid is not None and (uid == state.owner_uid or is_operator(uid, daemon_uid)):
        return
    raise Forbidden(f"session {state.id} belongs to another user")


# --- turns ------------------------------------------------------------------------------------


def new_session(
    session_id: str, *, owner_uid: int, agent: str | None, system_prompt: str, now: float
) -> SessionState:
    """A session with no turn yet (``version`` 0), created at ``now``."""
    return SessionState(
        id=session_id,
        owner_uid=owner_uid,
        created_at=now,
        updated_at=now,
        system_prompt=system_prompt,
        agent=agent,
        bytes=len(system_prompt.encode("utf-8", "surrogatepass")),
    )


def token_family(model_id: str | None) -> str:
    """The token-estimate family of a model id (``routerd.core.tokens.resolve_family``): the
    last path segment decides, so ``Qwen/Qwen2.5-Coder-7B`` and ``qwen2.5-coder:7b`` are both
    ``qwen``."""
    if not model_id:
        return "default"
    return resolve_family(model_id.rsplit("/", 1)[-1])


def compaction_record(
    result: CompactionResult, *, at: float, turn: int, model: str | None
) -> CompactionRecord:
    """The stored summary of ``result``: its counts, and its report counted by action."""
    actions = [entry.action for entry in result.report]
    return CompactionRecord(
        at=at,
        turn=turn,
        model=model,
        tokens_before=result.tokens_before,
        tokens_after=result.tokens_after,
        window_tokens=result.window_tokens,
        summary_source=result.summary_source,
        summarised=actions.count("summarised"),
        dropped=actions.count("dropped"),
        truncated=actions.count("truncated_tool_output") + actions.count("truncated_to_fit"),
    )


def text_bytes(messages: Iterable[Message]) -> int:
    """Estimated stored size of ``messages``: their text plus ``MESSAGE_OVERHEAD_BYTES`` each."""
    total = 0
    for m in messages:
        total += len(m.content.encode("utf-8", "surrogatepass")) + MESSAGE_OVERHEAD_BYTES
    return total


def _counted(messages: Iterable[Message], count: Counter, everything: bool) -> list[Message]:
    out = []
    for m in messages:
        if everything or m.tokens <= 0:
            m = msgspec.structs.replace(m, tokens=max(1, count(m)))
        out.append(m)
    return out


def _switch(
    used: tuple[str, ...], active: str | None, model: str | None
) -> tuple[tuple[str, ...], str | None]:
    if model is None or model == active:
        return used, active
    kept = [m for m in used if m not in (model, active)]
    if active is not None:
        kept.append(active)
    return tuple(kept), model


def plan_turn(state: SessionState, turn: TurnInput, count: Counter, now: float) -> TurnPlan:
    """Commit ``turn`` onto ``state`` (see the module invariants).

    ``count`` counts tokens for the model active after the turn (``turn.model``, else the
    session's active model). When the active model changes every message is recounted, since
    stored counts belong to the old model, and the stored messages are rewritten.
    """
    models_used, active = _switch(state.models_used, state.active_model, turn.model)
    switched = active != state.active_model
    answer = turn.answer
    if answer is not None and turn.partial:
        meta = dict(answer.metadata)
        meta["partial"] = True
        answer = msgspec.structs.replace(answer, metadata=meta)
    tail = [] if turn.request_in_history and turn.history is not None else list(turn.request)
    if answer is not None:
        tail.append(answer)
    # Stored counts belong to the old model: a switch rewrites whatever is stored.
    rewrite = (switched and bool(state.messages)) or turn.history is not None
    if rewrite:
        base = state.messages if turn.history is None else turn.history
        messages = tuple(_counted([*base, *tail], count, everything=switched))
        added: tuple[Message, ...] = ()
        size = text_bytes(messages)
    else:
        added = tuple(_counted(tail, count, everything=switched))
        messages = state.messages + added
        size = state.bytes - len(state.system_prompt.encode("utf-8", "surrogatepass"))
        size += text_bytes(added)
    size += len(state.system_prompt.encode("utf-8", "surrogatepass"))
    system = count(Message("system", state.system_prompt)) if state.system_prompt else 0
    number = len(state.turns) + 1
    record = TurnRecord(
        turn=number,
        at=now,
        model=turn.model,
        service=turn.service,
        partial=turn.partial,
        messages=len(turn.request) + (answer is not None),
        prompt_tokens=turn.prompt_tokens,
        completion_tokens=turn.completion_tokens,
    )
    compaction = None
    if turn.compaction is not None:
        compaction = msgspec.structs.replace(turn.compaction, turn=number)
    new = msgspec.structs.replace(
        state,
        updated_at=now,
        messages=messages,
        active_model=active,
        models_used=models_used,
        token_total=system + sum(m.tokens for m in messages),
        bytes=size,
        version=state.version + 1,
        turns=(*state.turns, record),
        compactions=state.compactions if compaction is None else (*state.compactions, compaction),
    )
    return TurnPlan(state=new, rewrite=rewrite, added=added, turn=record, compaction=compaction)


# --- expiry and the size bound ----------------------------------------------------------------


def expired(footprints: Iterable[Footprint], *, now: float, idle_expiry: float | None) -> list[str]:
    """Ids of the sessions idle for ``idle_expiry`` seconds or more at ``now`` (none when
    ``idle_expiry`` is None), least recently used first."""
    if idle_expiry is None:
        return []
    old = [f for f in footprints if now - f.updated_at >= idle_expiry]
    return [f.id for f in sorted(old, key=lambda f: (f.updated_at, f.id))]


def choose_evictions(
    footprints: Sequence[Footprint],
    *,
    max_sessions: int,
    max_bytes: int,
    used_bytes: int,
    protect: Iterable[str] = (),
) -> list[str]:
    """Sessions to remove, least recently used first, so that at most ``max_sessions`` remain
    and, when ``used_bytes`` (the database's size) exceeds ``max_bytes``, the estimated size
    falls to ``LOW_WATER * max_bytes``. ``protect``: ids never chosen (a session in use). The
    result may not reach the bound when protected sessions alone exceed it."""
    keep = set(protect)
    candidates = sorted(
        (f for f in footprints if f.id not in keep), key=lambda f: (f.updated_at, f.id)
    )
    count = len(footprints)
    over_bytes = used_bytes > max_bytes
    target = int(max_bytes * LOW_WATER)
    remaining = used_bytes
    chosen: list[str] = []
    for f in candidates:
        if count <= max_sessions and not (over_bytes and remaining > target):
            break
        chosen.append(f.id)
        count -= 1
        remaining -= f.bytes
    return chosen


def needs_exact_count(estimate: int, window: int, margin: float = EXACT_MARGIN) -> bool:
    """Whether an estimated prompt of ``estimate`` tokens is close enough to a ``window``-token
    context that an exact count (a ``/tokenize`` round trip) should decide: estimates err by a
    few percent once calibrated, more before."""
    if window <= 0:
        return False
    return abs(estimate - window) <= margin * window


# --- wire views -------------------------------------------------------------------------------


def _wire_message(m: Message) -> SessionMessage:
    return SessionMessage(
        role=m.role,
        content=m.content,
        tokens=m.tokens,
        name=m.name,
        tool_call_id=m.tool_call_id,
        metadata=dict(m.metadata),
    )


def _wire_turn(t: TurnRecord) -> SessionTurn:
    return SessionTurn(**msgspec.structs.asdict(t))


def _wire_compaction(c: CompactionRecord) -> SessionCompaction:
    return SessionCompaction(**msgspec.structs.asdict(c))


def info_of(state: SessionState, *, idle_expiry: float | None) -> SessionInfo:
    """The listing entry of ``state``."""
    return SessionInfo(
        id=state.id,
        owner_uid=state.owner_uid,
        created_at=state.created_at,
        updated_at=state.updated_at,
        turns=len(state.turns),
        messages=len(state.messages),
        tokens=state.token_total,
        agent=state.agent,
        active_model=state.active_model,
        models_used=list(state.models_used),
        partial_turns=len(state.partial_turns),
        compactions=len(state.compactions),
        bytes=state.bytes,
        expires_at=None if idle_expiry is None else state.updated_at + idle_expiry,
    )


def detail_of(state: SessionState, *, last: int, idle_expiry: float | None) -> SessionDetail:
    """``sessions.show``: everything but the older messages; ``last`` messages are included
    (all when negative)."""
    n = len(state.messages)
    shown = state.messages if last < 0 else state.messages[max(0, n - last) :]
    return SessionDetail(
        info=info_of(state, idle_expiry=idle_expiry),
        system_prompt=state.system_prompt,
        turns=[_wire_turn(t) for t in state.turns],
        compactions=[_wire_compaction(c) for c in state.compactions],
        messages=[_wire_message(m) for m in shown],
        messages_omitted=n - len(shown),
    )


def export_of(state: SessionState, *, now: float, idle_expiry: float | None) -> SessionExport:
    """The ``routerd-session`` export of ``state`` (format version ``EXPORT_VERSION``)."""
    return SessionExport(
        format=EXPORT_FORMAT,
        version=EXPORT_VERSION,
        exported_at=now,
        session=info_of(state, idle_expiry=idle_expiry),
        system_prompt=state.system_prompt,
        messages=[_wire_message(m) for m in state.messages],
        turns=[_wire_turn(t) for t in state.turns],
        compactions=[_wire_compaction(c) for c in state.compactions],
    )
