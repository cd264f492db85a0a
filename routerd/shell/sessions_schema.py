"""The session database file: its schema and versions, its pragmas, its mode, and what
happens to a file that cannot be read. Blocking code, run in the session database's thread
(:mod:`routerd.shell.sessions_db`).

Invariants:

* The file is created 0600 (``O_CREAT`` with mode 0600 and ``O_NOFOLLOW``), and a wider mode
  found on it is narrowed; SQLite gives its ``-wal`` and ``-shm`` files the main file's mode.
  Anything but a regular file of the daemon's user is refused. (On Windows only "regular
  file" is checked: mode bits and owner uids do not apply there; the file is private by the
  ACL of the per-user state directory it is in.)
* ``secure_delete`` and ``synchronous=FULL`` are checked after they are set: a connection that
  does not have them is never used. ``auto_vacuum=INCREMENTAL`` is set on a new file only (it
  cannot change once a table exists).
* The schema version (``PRAGMA user_version``) is read before anything else, so a file of a
  newer schema is never even switched to WAL; migrations run in one transaction.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import sys
import time
from pathlib import Path
from typing import Final

from .osdeps import O_CLOEXEC, O_NOFOLLOW

__all__ = [
    "SCHEMA_VERSION",
    "UNREADABLE",
    "WAL_LIMIT",
    "NewerDatabase",
    "StoreError",
    "connect",
    "quarantine",
    "transaction",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
#: Bytes the WAL file is cut back to after a checkpoint (SQLite checkpoints at ~4 MiB).
WAL_LIMIT: Final = 4 * 1024 * 1024


class StoreError(Exception):
    """The database cannot be used as it is (the message says why); the file is left alone."""


class NewerDatabase(StoreError):
    """The file's schema is newer than this routerd knows."""


#: SQLite's words for a file that is not a (readable) database; only these move it aside.
UNREADABLE: Final = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})

_SCHEMA_V1: Final = (
    """CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        owner_uid INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        agent TEXT,
        system_prompt TEXT NOT NULL,
        active_model TEXT,
        models_used BLOB NOT NULL,
        token_total INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE messages (
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (session_id, seq)
    )""",
    """CREATE TABLE turns (
        session_id TEXT NOT NULL,
        turn INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (session_id, turn)
    )""",
    """CREATE TABLE compactions (
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (session_id, seq)
    )""",
    """CREATE TABLE calibrations (
        model TEXT PRIMARY KEY,
        body BLOB NOT NULL
    )""",
)


class transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")


def _private_file(path: Path) -> None:
    """Create ``path`` 0600 if missing; refuse anything but our own regular file; narrow a
    wider mode to 0600 (SQLite gives its ``-wal`` and ``-shm`` files the main file's mode)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if sys.platform == "win32":
            return  # no owner uid or mode bits there (the module docstring)
        if st.st_uid != os.geteuid():
            raise OSError(f"{path} belongs to uid {st.st_uid}, not to routerd's user")
        if stat.S_IMODE(st.st_mode) != 0o600:
            log.warning("%s had mode %o; set to 0600", path, stat.S_IMODE(st.st_mode))
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for extra in ("-wal", "-shm"):
        side = Path(f"{path}{extra}")
        try:
            if stat.S_IMODE(os.lstat(side).st_mode) != 0o600:
                os.chmod(side, 0o600, follow_symlinks=False)
        except FileNotFoundError:
            pass


def connect(path: Path) -> sqlite3.Connection:
    """A configured connection to the database at ``path`` (created 0600, migrated). Raises
    :class:`StoreError`, ``sqlite3.Error`` or ``OSError``."""
    _private_file(path)
    db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    try:
        _check_version(db)  # first: a newer file is not even switched to WAL
        _configure(db)
        _migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def _configure(db: sqlite3.Connection) -> None:
    def pragma(statement: str, expected: object) -> None:
        row = db.execute(f"PRAGMA {statement}").fetchone()
        got = row[0] if row is not None else None
        if got != expected:
            raise StoreError(f"PRAGMA {statement} gave {got!r}, not {expected!r}")

    db.execute("PRAGMA secure_delete = ON")
    pragma("secure_delete", 1)
    db.execute("PRAGMA temp_store = MEMORY")
    db.execute("PRAGMA trusted_schema = OFF")
    if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only possible before the first table
    pragma("journal_mode = WAL", "wal")
    db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
    db.execute("PRAGMA synchronous = FULL")
    pragma("synchronous", 2)


def _check_version(db: sqlite3.Connection) -> int:
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise NewerDatabase(
            f"the session database has schema version {version}; this routerd knows "
            f"{SCHEMA_VERSION} (a newer routerd wrote it)"
        )
    return version


def _migrate(db: sqlite3.Connection) -> None:
    version = _check_version(db)
    if version == SCHEMA_VERSION:
        return
    with transaction(db):
        if version == 0:
            for statement in _SCHEMA_V1:
                db.execute(statement)
        # Later versions: one step per version here, each inside this transaction.
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def quarantine(path: Path) -> Path:
    """Move the database at ``path`` (and its WAL and shared-memory files) aside as
    ``<name>.broken-<time>-<pid>``; returns the new name. Modes are kept (0600)."""
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    target = path.with_name(f"{path.name}.broken-{stamp}")
    for extra in ("", "-wal", "-shm"):
        try:
            os.replace(f"{path}{extra}", f"{target}{extra}")
        except FileNotFoundError:
            pass
    return target
