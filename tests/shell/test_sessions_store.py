"""routerd.shell.sessions and sessions_db: the manager over a real SQLite file in a tmp dir."""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from routerd.core.compaction import CompactionPolicy, handoff
from routerd.core.config import SessionsConfig
from routerd.core.context import Message
from routerd.core.errors import BadRequest, Forbidden, NotFound, Unavailable
from routerd.core.streams import Usage
from routerd.shell.sessions import Session, SessionManager
from routerd.shell.sessions_db import DB_NAME, SCHEMA_VERSION

OWNER = 1000
OTHER = 1001
DAEMON_UID = 999


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running(
    state_dir: Path, clock: Clock | None = None, policy: CompactionPolicy | None = None,
    **settings: Any,
) -> AsyncIterator[SessionManager]:
    mgr = SessionManager(state_dir, SessionsConfig(**settings), policy=policy,
                         daemon_uid=DAEMON_UID, clock=clock or Clock())
    async with trio.open_nursery() as nursery:
        await nursery.start(mgr.run)
        yield mgr
        nursery.cancel_scope.cancel()


async def say(mgr: SessionManager, session: Session, text: str, *, answer: str | None = None,
              model: str | None = "qwen2.5-coder:7b", partial: bool = False) -> None:
    await mgr.commit_turn(
        session,
        request_messages=[Message("user", text)],
        answer=Message("assistant", answer if answer is not None else f"answer to {text}"),
        model=model,
        service="ollama",
        usage=Usage(prompt_tokens=50, completion_tokens=7),
        partial=partial,
    )


def put_file(state_dir: Path, data: bytes, mode: int) -> Path:
    """``state_dir/sessions.db`` with ``data`` and ``mode``, in a 0700 directory."""
    state_dir.chmod(0o700)
    db = state_dir / DB_NAME
    db.write_bytes(data)
    db.chmod(mode)
    return db


def moved_aside(state_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in state_dir.iterdir() if p.name.startswith(f"{DB_NAME}.broken-")]


def file_bytes(state_dir: Path) -> bytes:
    out = b""
    for suffix in ("", "-wal", "-shm"):
        path = state_dir / f"{DB_NAME}{suffix}"
        if path.exists():
            out += path.read_bytes()
    return out


# --- the file -----------------------------------------------------------------------------------


async def test_database_settings_and_file_modes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with running(state) as mgr:
        await say(mgr, mgr.open(None, uid=OWNER, agent="aider"), "hello")
        facts = await mgr.store.facts()
        assert facts.journal_mode == "wal"
        assert facts.synchronous == 2  # FULL
        assert facts.secure_delete == 1
        assert facts.auto_vacuum == 2  # INCREMENTAL
        assert facts.schema_version == SCHEMA_VERSION
        assert facts.mode == 0o600
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        for suffix in ("-wal", "-shm"):
            side = state / f"{DB_NAME}{suffix}"
            assert side.exists() and stat.S_IMODE(side.stat().st_mode) == 0o600, suffix


async def test_a_wider_mode_is_narrowed_to_0600(tmp_path: Path) -> None:
    put_file(tmp_path, b"", 0o644)
    async with running(tmp_path) as mgr:
        assert (await mgr.store.facts()).mode == 0o600


async def test_turns_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock) as mgr:
        a = mgr.open(None, uid=OWNER, agent="aider")
        b = mgr.open(None, uid=OTHER, agent="continue")
        await say(mgr, a, "first")
        clock.now += 10
        await say(mgr, b, "other user")
        await say(mgr, a, "second", model="llama3.1:8b", partial=True)
        mgr.observe_usage("llama3.1:8b", [Message("user", "word " * 400)], 700)
        await say(mgr, a, "third", model="llama3.1:8b")
        before = {s.id: s for s in mgr.visible(0, every_user=True)}
    async with running(tmp_path, clock) as mgr:
        after = {s.id: s for s in mgr.visible(0, every_user=True)}
        assert after == before
        s = after[a.id]
        assert [m.content for m in s.messages] == [
            "first", "answer to first", "second", "answer to second", "third", "answer to third"
        ]
        assert s.partial_turns == [2]
        assert s.messages[3].metadata == {"partial": True}
        assert s.active_model == "llama3.1:8b" and s.models_used == ("qwen2.5-coder:7b",)
        assert mgr.calibration("llama3.1:8b").samples == 1
        assert mgr.calibration("llama3.1:8b").scale != 1.0
        again = mgr.open(a.id, uid=OWNER, agent="aider")
        assert not again.new and again.messages == s.messages


# --- opening and ownership ------------------------------------------------------------------------


async def test_open_issues_ids_and_checks_owners(tmp_path: Path) -> None:
    async with running(tmp_path) as mgr:
        s = mgr.open(None, uid=OWNER, agent=None)
        assert s.new and len(s.id) == 32 and int(s.id, 16) >= 0
        assert "Coding agent: unknown" in s.system_prompt
        assert mgr.open(None, uid=OWNER, agent=None).id != s.id
        await say(mgr, s, "mine")
        with pytest.raises(Forbidden, match="another user"):
            mgr.open(s.id, uid=OTHER, agent=None)
        with pytest.raises(Forbidden):
            mgr.open(s.id, uid=0, agent=None)  # root reads it, but does not continue it
        with pytest.raises(Forbidden):
            mgr.open(s.id, uid=None, agent=None)
        with pytest.raises(BadRequest):
            mgr.open("not-an-id", uid=OWNER, agent=None)
        proposed = secrets.token_hex(16)
        with pytest.raises(NotFound):
            mgr.open(proposed, uid=OWNER, agent=None, create=False)
        fresh = mgr.open(proposed.upper(), uid=OTHER, agent="continue")
        assert fresh.new and fresh.id == proposed
        # Nothing is stored until a turn is committed.
        assert [x.id for x in mgr.visible(OTHER)] == []
        await say(mgr, fresh, "theirs")
        assert [x.id for x in mgr.visible(OTHER)] == [proposed]
        assert [x.id for x in mgr.visible(OWNER)] == [s.id]
        with pytest.raises(Forbidden):
            mgr.visible(OWNER, every_user=True)
        assert len(mgr.visible(DAEMON_UID, every_user=True)) == 2
        with pytest.raises(Forbidden):
            mgr.readable(s.id, OTHER)
        assert mgr.readable(s.id, 0).id == s.id


async def test_two_new_handles_for_one_proposed_id_cannot_cross_users(tmp_path: Path) -> None:
    async with running(tmp_path) as mgr:
        sid = secrets.token_hex(16)
        mine = mgr.open(sid, uid=OWNER, agent=None)
        theirs = mgr.open(sid, uid=OTHER, agent=None)
        await say(mgr, mine, "first")
        with pytest.raises(Forbidden):
            await say(mgr, theirs, "sneaky")
        assert [m.content for m in mgr.readable(sid, OWNER).messages] == [
            "first", "answer to first"
        ]


# --- context, replacement, compaction ---------------------------------------------------------


async def test_context_is_system_prompt_history_and_new(tmp_path: Path) -> None:
    async with running(tmp_path) as mgr:
        s = mgr.open(None, uid=OWNER, agent="aider")
        await say(mgr, s, "one")
        ctx = mgr.context_for(s, [Message("user", "two")])
        assert [m.role for m in ctx] == ["system", "user", "assistant", "user"]
        assert ctx[0].content == s.system_prompt and ctx[-1].content == "two"

        mgr.replace_messages(s, [Message("user", "client's own", tokens=5),
                                 Message("assistant", "their answer")])
        assert [m.content for m in mgr.context_for(s, [])][1:] == ["client's own", "their answer"]
        await say(mgr, s, "three")
        assert [m.content for m in mgr.readable(s.id, OWNER).messages] == [
            "client's own", "their answer", "three", "answer to three"
        ]


POLICY = CompactionPolicy(preserve_recent_messages=2)


async def long_session(mgr: SessionManager) -> Session:
    """A session of ten long turns: more than a 1500-token window holds."""
    s = mgr.open(None, uid=OWNER, agent="aider")
    for i in range(10):
        await say(mgr, s, f"step {i} in src/mod{i}.py " + "detail " * 60)
    return s


async def test_a_recorded_compaction_is_stored_with_the_turn(tmp_path: Path) -> None:
    async with running(tmp_path, policy=POLICY) as mgr:
        s = await long_session(mgr)
        request = [Message("user", "now refactor")]
        result = handoff(mgr.context_for(s, request), "llama", 1500, mgr.policy,
                         to_calib=mgr.calibration("llama3.1:8b"))
        assert result.ok and result.compacted
        mgr.record_compaction(s, result, model="llama3.1:8b")
        await mgr.commit_turn(s, request_messages=request, answer=Message("assistant", "done"),
                              model="llama3.1:8b", service="ollama", usage=None, partial=False)
    async with running(tmp_path, policy=POLICY) as mgr:
        stored = mgr.readable(s.id, OWNER)
        contents = [m.content for m in stored.messages]
        assert contents[-2:] == ["now refactor", "done"] and contents.count("now refactor") == 1
        assert stored.messages[0].metadata.get("summary") is True
        assert "src/mod0.py" in stored.messages[0].content  # the summary keeps file names
        assert len(stored.messages) < 20
        (record,) = stored.compactions
        assert record.turn == 11 and record.summarised > 0 and record.model == "llama3.1:8b"
        assert record.tokens_after < record.tokens_before


async def test_a_compaction_of_a_stale_context_is_not_stored(tmp_path: Path) -> None:
    async with running(tmp_path, policy=POLICY) as mgr:
        s = await long_session(mgr)
        slow = mgr.open(s.id, uid=OWNER, agent="aider")
        request = [Message("user", "late")]
        result = handoff(mgr.context_for(slow, request), "llama", 1500, mgr.policy)
        mgr.record_compaction(slow, result)
        await say(mgr, mgr.open(s.id, uid=OWNER, agent="aider"), "meanwhile")
        await mgr.commit_turn(slow, request_messages=request, answer=None, model=None,
                              service=None, usage=None, partial=True)
        stored = mgr.readable(s.id, OWNER)
        assert stored.compactions == ()
        contents = [m.content for m in stored.messages]
        assert "meanwhile" in contents and contents[-1] == "late" and len(contents) == 23


async def test_commit_from_a_cancelled_request_still_stores_the_turn(tmp_path: Path) -> None:
    async with running(tmp_path) as mgr:
        s = mgr.open(None, uid=OWNER, agent=None)
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.sleep(1)
            except trio.Cancelled:
                await say(mgr, s, "cut off", answer="half", partial=True)
                raise
        assert mgr.readable(s.id, OWNER).partial_turns == [1]


async def test_a_turn_after_a_reset_starts_the_session_afresh(tmp_path: Path) -> None:
    async with running(tmp_path) as mgr:
        s = mgr.open(None, uid=OWNER, agent=None)
        await say(mgr, s, "before")
        turn = mgr.open(s.id, uid=OWNER, agent=None)
        assert await mgr.reset(s.id, uid=OWNER) == 2
        await say(mgr, turn, "after")
        stored = mgr.readable(s.id, OWNER)
        assert [m.content for m in stored.messages] == ["after", "answer to after"]
        assert len(stored.turns) == 1


# --- deletion really removes the text ---------------------------------------------------------


async def test_reset_removes_the_text_from_the_file_and_the_wal(tmp_path: Path) -> None:
    gone, kept = (f"MARKER-{secrets.token_hex(8)}".encode() for _ in range(2))
    async with running(tmp_path) as mgr:
        a = mgr.open(None, uid=OWNER, agent=None)
        b = mgr.open(None, uid=OWNER, agent=None)
        for i in range(3):
            await say(mgr, a, f"{gone.decode()} secret {i} " + "x" * 3000)  # overflow pages too
            await say(mgr, b, f"{kept.decode()} keep {i}")
        assert gone in file_bytes(tmp_path)  # the test can see text when it is there
        await mgr.store.checkpoint()
        assert gone in (tmp_path / DB_NAME).read_bytes()
        with pytest.raises(Forbidden):
            await mgr.reset(a.id, uid=OTHER)
        assert await mgr.reset(a.id, uid=OWNER) == 6
        assert gone not in file_bytes(tmp_path)
        assert kept in file_bytes(tmp_path)
        with pytest.raises(NotFound):
            mgr.readable(a.id, OWNER)
    assert gone not in file_bytes(tmp_path)
    async with running(tmp_path) as mgr:
        assert [s.id for s in mgr.visible(OWNER)] == [b.id]


async def test_expiry_uses_idle_time_and_removes_the_text(tmp_path: Path) -> None:
    clock = Clock()
    marker = f"EXPIRING-{secrets.token_hex(8)}"
    async with running(tmp_path, clock, idle_expiry=3600.0) as mgr:
        old = mgr.open(None, uid=OWNER, agent=None)
        await say(mgr, old, marker)
        clock.now += 1800
        new = mgr.open(None, uid=OWNER, agent=None)
        await say(mgr, new, "recent")
        assert await mgr.sweep(now=clock.now + 1799) == {"expired": 0, "evicted": 0}
        assert await mgr.sweep(now=clock.now + 1800) == {"expired": 1, "evicted": 0}
        assert [s.id for s in mgr.visible(OWNER)] == [new.id]
        assert marker.encode() not in file_bytes(tmp_path)
        assert mgr.status()["expired"] == 1
        assert await mgr.sweep(now=clock.now + 10**9) == {"expired": 1, "evicted": 0}


async def test_idle_expiry_zero_never_expires(tmp_path: Path) -> None:
    async with running(tmp_path, idle_expiry=0) as mgr:
        await say(mgr, mgr.open(None, uid=OWNER, agent=None), "forever")
        assert (await mgr.sweep(now=1e15))["expired"] == 0


async def test_the_session_count_is_bounded_oldest_first(tmp_path: Path) -> None:
    clock = Clock()
    async with running(tmp_path, clock, max_sessions=3) as mgr:
        ids = []
        for i in range(5):
            clock.now += 1
            s = mgr.open(None, uid=OWNER, agent=None)
            await say(mgr, s, f"session {i}")
            ids.append(s.id)
        assert {s.id for s in mgr.visible(OWNER)} == set(ids[2:])
        assert mgr.status()["evicted"] == 2


async def test_the_database_size_is_bounded(tmp_path: Path) -> None:
    clock = Clock()
    limit = 1024 * 1024
    async with running(tmp_path, clock, max_db_bytes=limit) as mgr:
        ids = []
        for i in range(12):
            clock.now += 1
            s = mgr.open(None, uid=OWNER, agent=None)
            await say(mgr, s, f"big {i} " + secrets.token_hex(60_000))  # ~120 KB each
            ids.append(s.id)
        await mgr.sweep()
        await mgr.store.checkpoint()
        facts = await mgr.store.facts()
        assert facts.db_bytes <= limit and facts.wal_bytes == 0
        left = [s.id for s in mgr.visible(OWNER)]
        assert 0 < len(left) < 12
        assert ids[-1] in left and ids[0] not in left
        assert set(left) == set(ids[len(ids) - len(left):])  # the most recent ones


# --- damaged and newer files --------------------------------------------------------------------


async def test_an_unreadable_file_is_moved_aside(tmp_path: Path) -> None:
    put_file(tmp_path, b"this is not a database" * 100, 0o600)
    async with running(tmp_path) as mgr:
        assert mgr.phase == "ready"
        assert "moved" in mgr.status()["problem"]
        await say(mgr, mgr.open(None, uid=OWNER, agent=None), "works")
    (broken,) = moved_aside(tmp_path)
    assert broken.startswith(b"this is not")


async def test_a_newer_schema_is_left_alone_and_sessions_are_unavailable(tmp_path: Path) -> None:
    db = put_file(tmp_path, b"", 0o600)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = file_bytes(tmp_path)
    async with running(tmp_path) as mgr:
        assert mgr.phase == "unavailable"
        assert "schema version" in mgr.status()["problem"]
        with pytest.raises(Unavailable):
            mgr.open(None, uid=OWNER, agent=None)
    assert file_bytes(tmp_path) == before


def test_no_other_user_can_read_the_state_dir(tmp_path: Path) -> None:
    # The directory is what keeps the -wal/-shm files private while SQLite creates them.
    from routerd.shell.state_dir import ensure_private_dir

    d = ensure_private_dir(tmp_path / "new" / "routerd")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


async def test_an_unusable_state_dir_makes_sessions_unavailable(tmp_path: Path) -> None:
    blocker = put_file(tmp_path, b"a file where the directory should be", 0o600)
    async with running(blocker / "state") as mgr:
        assert mgr.phase == "unavailable"
        assert "session database failed" in mgr.status()["problem"]
        with pytest.raises(Unavailable):
            mgr.open(None, uid=OWNER, agent=None)


async def test_a_turn_that_cannot_be_stored_is_not_acknowledged(tmp_path: Path) -> None:
    async with running(tmp_path) as mgr:
        s = mgr.open(None, uid=OWNER, agent=None)
        await say(mgr, s, "stored")
        store = mgr.store

        def break_connection() -> None:
            assert store._conn is not None
            store._conn.close()

        await store._worker.call(break_connection)
        with pytest.raises(Unavailable, match="session database failed"):
            await say(mgr, mgr.open(s.id, uid=OWNER, agent=None), "lost")
        assert [m.content for m in mgr.readable(s.id, OWNER).messages] == [
            "stored", "answer to stored"
        ]
