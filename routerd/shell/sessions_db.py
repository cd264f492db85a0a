"""The session database: SQLite in one worker thread, one connection, one job at a time.

File: ``<state dir>/sessions.db`` (with SQLite's ``-wal`` and ``-shm`` beside it), mode 0600 in
a 0700 directory. It holds the plaintext of conversations, which the audit log leaves out.

Invariants:

* Every statement runs in the thread :class:`SessionStore` starts, on the one connection it
  opened there; jobs run in submission order (a FIFO queue), so a job sees every earlier one.
* Journal ``WAL``, ``synchronous=FULL``: a transaction is on disk (WAL fsync-ed) before
  :meth:`SessionStore.commit` returns. ``secure_delete=ON``: deleted text is overwritten with
  zeros; after a deletion the WAL is checkpointed and truncated, so the text is gone from the
  WAL too. ``temp_store=MEMORY``: no temporary file ever holds text. ``auto_vacuum=INCREMENTAL``
  (set when the file is created): freed pages are given back to the file system.
* The schema version is ``PRAGMA user_version``; a newer file than this code knows is never
  touched (:class:`NewerDatabase`). A file SQLite cannot read is moved aside (mode kept) and a
  new one is started, so a damaged file never stops the daemon.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import trio

from routerd.core.context import Message
from routerd.core.errors import Unavailable
from routerd.core.sessions import CompactionRecord, SessionState, TurnPlan, TurnRecord
from routerd.core.tokens import Calibration

from .sessions_schema import (
    SCHEMA_VERSION,
    UNREADABLE,
    NewerDatabase,
    StoreError,
    connect,
    quarantine,
    transaction,
)
from .state_dir import ensure_private_dir

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "DbFacts",
    "Loaded",
    "NewerDatabase",
    "SessionStore",
    "StoreError",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DB_NAME: Final = "sessions.db"
#: Longest wait for one database job before the caller is told the database is unavailable.
JOB_TIMEOUT: Final = 60.0

_encode = msgspec.msgpack.Encoder().encode
_message = msgspec.msgpack.Decoder(Message)
_turn = msgspec.msgpack.Decoder(TurnRecord)
_compaction = msgspec.msgpack.Decoder(CompactionRecord)
_calibration = msgspec.msgpack.Decoder(Calibration)
_names = msgspec.msgpack.Decoder(tuple[str, ...])


class Loaded(msgspec.Struct):
    """What :meth:`SessionStore.start` read back."""

    sessions: list[SessionState]
    calibrations: dict[str, Calibration]
    skipped: int = 0  # sessions that could not be decoded (left in the file)
    quarantined: str | None = None  # where an unreadable file was moved


class DbFacts(msgspec.Struct):
    """Sizes and settings, for status and tests."""

    path: str
    db_bytes: int  # the main file
    wal_bytes: int
    journal_mode: str
    synchronous: int  # 2 = FULL
    secure_delete: int
    auto_vacuum: int  # 2 = INCREMENTAL
    schema_version: int
    mode: int  # the main file's permission bits


# --- the worker thread ------------------------------------------------------------------------

#: What a job ended with: its value, or the exception it raised.
_Result = tuple[Any, BaseException | None]
_Job = tuple[Callable[[], Any], Callable[[_Result], None]]


class _Worker:
    """One thread running jobs from a FIFO queue; results go back through the trio token."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, done = job
            try:
                result: _Result = (fn(), None)
            except BaseException as exc:  # handed to the waiting task, which raises it
                result = (None, exc)
            done(result)

    async def call(self, fn: Callable[[], T], *, timeout: float = JOB_TIMEOUT) -> T:
        """Run ``fn()`` in the worker and return its result (or raise its exception).

        Shielded from cancellation: a job once queued runs anyway, and its caller learns how
        it went (a turn committed from a cancelled request is still acknowledged). Raises
        :class:`Unavailable` when no answer comes within ``timeout`` seconds.
        """
        token = trio.lowlevel.current_trio_token()
        box: list[_Result] = []
        finished = trio.Event()

        def deliver(result: _Result) -> None:
            box.append(result)
            finished.set()

        def done(result: _Result) -> None:
            try:
                token.run_sync_soon(deliver, result)
            except trio.RunFinishedError:
                pass  # nobody is waiting any more

        self._jobs.put((fn, done))
        with trio.CancelScope(shield=True):
            with trio.move_on_after(timeout):
                await finished.wait()
        if not box:
            raise Unavailable(f"the session database did not answer within {timeout:g} s")
        value, exc = box[0]
        if exc is not None:
            raise exc
        out: T = value
        return out

    async def stop(self) -> None:
        """Run the jobs queued so far, then end the thread."""
        if not self._thread.is_alive():
            return
        self._jobs.put(None)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._thread.join)


# --- the store --------------------------------------------------------------------------------


class SessionStore:
    """The session database at ``state_dir / DB_NAME``. Call :meth:`start` first and
    :meth:`stop` last (from trio); every other method is one job in the worker thread."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / DB_NAME
        self._worker = _Worker("routerd-sessions-db")
        self._conn: sqlite3.Connection | None = None
        self._started = False

    async def start(self) -> Loaded:
        """Start the worker, open (or create, or migrate) the file and read everything back.

        Raises :class:`StoreError` (:class:`NewerDatabase` for a newer schema), or
        ``Unavailable`` when SQLite or the file system fails (as every method here does).
        """
        self._worker.start()
        self._started = True
        return await self._call(self._open_and_load, timeout=max(JOB_TIMEOUT, 600.0))

    async def stop(self) -> None:
        """Let queued jobs finish, close the connection, end the thread. Never raises for the
        database's sake (a failure to checkpoint is logged; the WAL is replayed next start)."""
        if not self._started:
            return
        try:
            await self._call(self._close)
        except Unavailable:
            pass  # logged by _call
        finally:
            await self._worker.stop()
            self._started = False

    # -- jobs (each one call into the worker) --

    async def commit(
        self, plan: TurnPlan, calibrations: dict[str, Calibration] | None = None
    ) -> None:
        """Store one planned turn (and calibrations changed since the last save) in one
        transaction; durable when this returns."""
        await self._call(lambda: self._commit(plan, calibrations or {}))

    async def delete(self, ids: Sequence[str]) -> int:
        """Remove sessions and every row of theirs, overwrite the text, shrink the file and
        truncate the WAL. Returns how many messages were removed."""
        return await self._call(lambda: self._delete(list(ids)))

    async def save_calibrations(self, table: dict[str, Calibration]) -> None:
        await self._call(lambda: self._save_calibrations(table))

    async def facts(self) -> DbFacts:
        return await self._call(self._facts)

    async def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it."""
        await self._call(self._checkpoint)

    async def _call(self, fn: Callable[[], T], *, timeout: float = JOB_TIMEOUT) -> T:
        """Run ``fn`` in the worker; SQLite's and the file system's errors become
        ``Unavailable`` (the message says what failed; the log has it too)."""
        try:
            return await self._worker.call(fn, timeout=timeout)
        except (sqlite3.Error, OSError) as exc:
            log.error("the session database %s failed: %s", self.path, exc)
            raise Unavailable(f"the session database failed: {exc}") from exc

    # -- inside the worker --

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise Unavailable("the session database is not open")
        return self._conn

    def _open_and_load(self) -> Loaded:
        ensure_private_dir(self.state_dir)
        try:
            self._conn = connect(self.path)
            return self._load()
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorname", None) not in UNREADABLE:
                raise
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            moved = quarantine(self.path)
            log.error(
                "the session database %s cannot be read (%s); moved it to %s and started a new "
                "one", self.path, exc, moved,
            )  # fmt: skip
            self._conn = connect(self.path)
            loaded = self._load()
            loaded.quarantined = str(moved)
            return loaded

    def _load(self) -> Loaded:
        db = self._db
        rows: dict[str, list[Any]] = {}
        for kind, table in (("m", "messages"), ("t", "turns"), ("c", "compactions")):
            key = "turn" if table == "turns" else "seq"
            for sid, body in db.execute(
                f"SELECT session_id, body FROM {table} ORDER BY session_id, {key}"
            ):
                rows.setdefault(f"{kind}:{sid}", []).append(body)
        sessions: list[SessionState] = []
        skipped = 0
        for row in db.execute(
            "SELECT id, owner_uid, created_at, updated_at, agent, system_prompt, active_model, "
            "models_used, token_total, bytes, version FROM sessions"
        ):
            sid = row[0]
            try:
                sessions.append(
                    SessionState(
                        id=sid,
                        owner_uid=row[1],
                        created_at=row[2],
                        updated_at=row[3],
                        agent=row[4],
                        system_prompt=row[5],
                        active_model=row[6],
                        models_used=_names.decode(row[7]),
                        token_total=row[8],
                        bytes=row[9],
                        version=row[10],
                        messages=tuple(_message.decode(b) for b in rows.get(f"m:{sid}", ())),
                        turns=tuple(_turn.decode(b) for b in rows.get(f"t:{sid}", ())),
                        compactions=tuple(
                            _compaction.decode(b) for b in rows.get(f"c:{sid}", ())
                        ),
                    )
                )
            except (msgspec.DecodeError, TypeError) as exc:
                skipped += 1
                log.error("session %s in %s cannot be decoded (%s); skipped", sid, self.path, exc)
        calibrations: dict[str, Calibration] = {}
        for model, body in db.execute("SELECT model, body FROM calibrations"):
            try:
                calibrations[model] = _calibration.decode(body)
            except msgspec.DecodeError:
                log.warning("calibration of %r is unreadable; starting it afresh", model)
        return Loaded(sessions=sessions, calibrations=calibrations, skipped=skipped)

    def _commit(self, plan: TurnPlan, calibrations: dict[str, Calibration]) -> None:
        s = plan.state
        db = self._db
        with transaction(db):
            db.execute(
                "INSERT OR REPLACE INTO sessions (id, owner_uid, created_at, updated_at, agent, "
                "system_prompt, active_model, models_used, token_total, bytes, version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (s.id, s.owner_uid, s.created_at, s.updated_at, s.agent, s.system_prompt,
                 s.active_model, _encode(s.models_used), s.token_total, s.bytes, s.version),
            )  # fmt: skip
            if plan.rewrite:
                db.execute("DELETE FROM messages WHERE session_id = ?", (s.id,))
                _insert_messages(db, s.id, 0, s.messages)
            else:
                _insert_messages(db, s.id, len(s.messages) - len(plan.added), plan.added)
            db.execute(
                "INSERT OR REPLACE INTO turns (session_id, turn, body) VALUES (?, ?, ?)",
                (s.id, plan.turn.turn, _encode(plan.turn)),
            )
            if plan.compaction is not None:
                db.execute(
                    "INSERT OR REPLACE INTO compactions (session_id, seq, body) VALUES (?, ?, ?)",
                    (s.id, len(s.compactions), _encode(plan.compaction)),
                )
            _upsert_calibrations(db, calibrations)

    def _delete(self, ids: list[str]) -> int:
        db = self._db
        removed = 0
        with transaction(db):
            for sid in ids:
                cur = db.execute("DELETE FROM messages WHERE session_id = ?", (sid,))
                removed += max(0, cur.rowcount)
                for table in ("turns", "compactions"):
                    db.execute(f"DELETE FROM {table} WHERE session_id = ?", (sid,))
                db.execute("DELETE FROM sessions WHERE id = ?", (sid,))
        # It frees one page per step, and execute() steps a statement without result columns
        # only once; executescript() steps it to the end.
        db.executescript("PRAGMA incremental_vacuum;")
        self._checkpoint()
        return removed

    def _save_calibrations(self, table: dict[str, Calibration]) -> None:
        db = self._db
        with transaction(db):
            _upsert_calibrations(db, table)

    def _checkpoint(self) -> None:
        row = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if row is not None and row[0]:
            log.warning("the session database's WAL could not be truncated (busy)")

    def _facts(self) -> DbFacts:
        db = self._db

        def pragma(name: str) -> Any:
            return db.execute(f"PRAGMA {name}").fetchone()[0]

        return DbFacts(
            path=str(self.path),
            db_bytes=_size(self.path),
            wal_bytes=_size(Path(f"{self.path}-wal")),
            journal_mode=str(pragma("journal_mode")),
            synchronous=int(pragma("synchronous")),
            secure_delete=int(pragma("secure_delete")),
            auto_vacuum=int(pragma("auto_vacuum")),
            schema_version=int(pragma("user_version")),
            mode=stat.S_IMODE(os.stat(self.path).st_mode),
        )

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._checkpoint()
            finally:
                self._conn.close()
                self._conn = None


# --- helpers (worker thread) ------------------------------------------------------------------


def _insert_messages(db: sqlite3.Connection, sid: str, first: int, msgs: Iterable[Message]) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO messages (session_id, seq, body) VALUES (?, ?, ?)",
        ((sid, first + i, _encode(m)) for i, m in enumerate(msgs)),
    )


def _upsert_calibrations(db: sqlite3.Connection, table: dict[str, Calibration]) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO calibrations (model, body) VALUES (?, ?)",
        ((model, _encode(calib)) for model, calib in table.items()),
    )


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


