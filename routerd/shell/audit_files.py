"""The audit log on disk: the key file, appending with rotation, and reading it back.

Blocking code, run in worker threads (``trio.to_thread``) by :mod:`routerd.shell.audit`.

Files: ``audit.log`` is written; rotation renames it ``audit.log.1`` (older ones shift up to
``audit.log.<backups>``; beyond that they are deleted) and starts a new ``audit.log`` whose
first record is an ``audit:file_start`` header carrying the previous line's mac. Every file
and the key are created 0600.

Invariants:

* One :class:`AuditFileWriter` per log, used by one thread at a time; its ``lock`` is held for
  each batch and for :meth:`AuditFileWriter.snapshot`, so readers never see a torn batch or a
  half-done rotation.
* A line is sealed (seq and mac assigned) only when it is about to be written, so seq numbers
  have no gaps and the chain has no holes, across rotations too.
* A batch is written and ``fsync``-ed before :meth:`AuditFileWriter.write` returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from routerd.core.audit import (
    FILE_START,
    GENESIS,
    KEY_BYTES,
    AuditEvent,
    AuditKeys,
    AuditOptions,
    ChainReport,
    ChainVerifier,
    build_record,
    parse_key,
    parse_line,
    seal,
)

from .osdeps import O_BINARY, O_CLOEXEC, make_private, others_may_access

__all__ = [
    "KEY_FILE",
    "AuditFileWriter",
    "Snapshot",
    "find_hash",
    "iter_lines",
    "last_lines",
    "load_or_create_key",
    "log_files",
    "tail_lines",
    "verify_files",
]

log = logging.getLogger(__name__)

KEY_FILE = "audit.key"
_BLOCK = 64 * 1024


def load_or_create_key(path: Path) -> tuple[bytes, list[str]]:
    """The secret in ``path``, created (0600, random) if missing; plus notes for the log.

    A key file readable by others is made 0600 and noted (a security event for the caller).
    Raises ValueError if the file exists but holds no key, OSError if it cannot be read.
    """
    notes: list[str] = []
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CLOEXEC | O_BINARY, 0o600)
    except FileExistsError:
        st = os.stat(path)
        if others_may_access(st.st_mode):
            os.chmod(path, 0o600)
            notes.append(
                f"audit key {path} was readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                "made 0600: anyone who read it can forge audit lines, so rotate it"
            )
        return parse_key(path.read_bytes()), notes
    secret = secrets.token_bytes(KEY_BYTES)
    try:
        os.write(fd, secret.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    notes.append(f"generated a new audit key at {path}")
    return secret, notes


def log_files(path: Path) -> list[Path]:
    """The log's files that exist, oldest first (``audit.log.N`` ... ``audit.log.1``, ``audit.log``)."""
    rotated: list[tuple[int, Path]] = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    files = [p for _, p in sorted(rotated, reverse=True)]
    if path.exists():
        files.append(path)
    return files


def last_lines(f: BinaryIO, size: int, n: int) -> list[bytes]:
    """The last ``n`` complete lines in the first ``size`` bytes of ``f``, oldest first."""
    if n <= 0 or size <= 0:
        return []
    buf = b""
    pos = size
    while pos > 0 and buf.count(b"\n") <= n:
        step = min(_BLOCK, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
    lines = buf.split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first piece may be a partial line
    lines = [ln for ln in lines if ln.strip()]
    return lines[-n:]


def iter_lines(f: BinaryIO, size: int) -> Iterator[tuple[int, bytes]]:
    """``(line_number, line)`` for the first ``size`` bytes of ``f``."""
    f.seek(0)
    remaining = size
    lineno = 0
    pending = b""
    while remaining > 0:
        chunk = f.read(min(_BLOCK * 16, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        parts = (pending + chunk).split(b"\n")
        pending = parts.pop()
        for part in parts:
            lineno += 1
            yield lineno, part
    if pending:
        yield lineno + 1, pending


@dataclass
class Snapshot:
    """The log's files opened at one instant, with the sizes to read and the writer's end."""

    files: list[tuple[str, BinaryIO, int]]
    last_seq: int
    last_mac: str

    def close(self) -> None:
        for _, f, _ in self.files:
            f.close()


class AuditFileWriter:
    """Appends sealed lines to the log, rotating by size. Blocking; one thread at a time."""

    def __init__(
        self, path: Path, keys: AuditKeys, *, max_bytes: int, backups: int, pid: int
    ) -> None:
        self.path = path
        self.keys = keys
        self.max_bytes = max_bytes
        self.backups = backups
        self.lock = threading.Lock()
        self.seq = 0
        self.mac = GENESIS
        self.rotations = 0
        self._pid = pid
        self._fd: int | None = None
        self._size = 0

    # --- opening ------------------------------------------------------------------------------

    def open(self, now: float, options: AuditOptions) -> list[str]:
        """Find where the chain ends, open the log for appending; return notes for the log."""
        with self.lock:
            notes = self._recover()
            if self.path.exists() and self.path.stat().st_size > 0:
                self._fd = self._open_fd()
                self._size = os.fstat(self._fd).st_size
            else:
                self._start_file(now, options, reason="created" if self.seq == 0 else "start")
            return notes

    def _open_fd(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | O_CLOEXEC | O_BINARY
        fd = os.open(self.path, flags, 0o600)
        if others_may_access(os.fstat(fd).st_mode):
            make_private(fd)
        return fd

    def _recover(self) -> list[str]:
        notes: list[str] = []
        for p in reversed(log_files(self.path)):
            with p.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    continue
                f.seek(size - 1)
                torn = f.read(1) != b"\n"
                for line in reversed(last_lines(f, size, 50)):
                    try:
                        parsed = parse_line(line)
                    except ValueError:
                        continue
                    self.seq, self.mac = parsed.record.seq, parsed.mac
                    break
                else:
                    notes.append(f"no readable audit line at the end of {p}; a new chain starts")
            if torn and p == self.path:
                # A crash mid-line: end it, so the next line starts clean. Never truncate.
                with p.open("ab") as f:
                    f.write(b"\n")
                notes.append(f"{p} ended in an incomplete line (a crash?); it is kept as is")
            return notes
        return notes

    # --- writing ------------------------------------------------------------------------------

    def _seal(self, event: AuditEvent, now: float, options: AuditOptions) -> bytes:
        record = build_record(event, seq=self.seq + 1, now=now, keys=self.keys, options=options)
        line, mac = seal(record, self.mac, self.keys)
        self.seq += 1
        self.mac = mac
        return line

    def _start_file(self, now: float, options: AuditOptions, *, reason: str) -> bytes:
        self._fd = self._open_fd()
        self._size = os.fstat(self._fd).st_size
        header = AuditEvent(
            event_type=FILE_START,
            pid=self._pid,
            details={"prev_mac": self.mac, "reason": reason},
        )
        line = self._seal(header, now, options)
        self._write_all([line])
        return line

    def _write_all(self, lines: Sequence[bytes]) -> None:
        assert self._fd is not None
        data = b"".join(lines)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(data)

    def write(
        self, events: Sequence[tuple[AuditEvent, float]], options: AuditOptions
    ) -> list[bytes]:
        """Seal and append ``(event, time)`` pairs in order; return every line written."""
        with self.lock:
            written: list[bytes] = []
            pending: list[bytes] = []
            pending_size = 0
            for event, now in events:
                before = self.seq, self.mac
                line = self._seal(event, now, options)
                used = self._size + pending_size
                if used > 0 and used + len(line) > self.max_bytes:
                    # It does not fit: un-seal it, so the new file's header comes first in the
                    # chain as it does in the files, then seal it again after the header.
                    self.seq, self.mac = before
                    if pending:
                        self._write_all(pending)
                        written += pending
                        pending, pending_size = [], 0
                    written.append(self._rotate(now, options))
                    line = self._seal(event, now, options)
                pending.append(line)
                pending_size += len(line)
            if pending:
                self._write_all(pending)
                written += pending
            if self._fd is not None:
                os.fsync(self._fd)
            return written

    def _rotate(self, now: float, options: AuditOptions) -> bytes:
        """Close the full file, shift the old ones (dropping the oldest beyond ``backups``),
        start a new file; return its header line (already written)."""
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        for p in log_files(self.path):
            suffix = p.name[len(self.path.name) + 1 :]
            if suffix.isdigit() and int(suffix) >= self.backups:
                p.unlink()
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                src.rename(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self.rotations += 1
        return self._start_file(now, options, reason="rotation")

    def close(self) -> None:
        with self.lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None

    # --- reading ------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Every file opened now, oldest first, with the size to read of each."""
        with self.lock:
            opened: list[tuple[str, BinaryIO, int]] = []
            try:
                for p in log_files(self.path):
                    handle: BinaryIO = p.open("rb")
                    opened.append((p.name, handle, os.fstat(handle.fileno()).st_size))
            except OSError:
                for _, g, _ in opened:
                    g.close()
                raise
            return Snapshot(opened, self.seq, self.mac)


# --- reading the whole log (blocking; the daemon runs these in a worker thread) ---------------


def tail_lines(writer: AuditFileWriter, n: int) -> tuple[list[bytes], int]:
    """``(lines, seq)``: the last ``n`` lines written, and the seq of the last one."""
    snap = writer.snapshot()
    try:
        out: list[bytes] = []
        for _, f, size in reversed(snap.files):
            out = last_lines(f, size, n - len(out)) + out
            if len(out) >= n:
                break
        return out, snap.last_seq
    finally:
        snap.close()


def verify_files(writer: AuditFileWriter, keys: AuditKeys) -> tuple[ChainReport, list[str]]:
    """Verify every file with ``keys``; the chain must end where the writer is."""
    snap = writer.snapshot()
    try:
        verifier = ChainVerifier(keys)
        for name, f, size in snap.files:
            for lineno, line in iter_lines(f, size):
                verifier.feed(name, lineno, line)
        report = verifier.finish(expected_last_seq=snap.last_seq, expected_last_mac=snap.last_mac)
        return report, [name for name, _, _ in snap.files]
    finally:
        snap.close()


def find_hash(writer: AuditFileWriter, digest: str, limit: int) -> list[dict[str, Any]]:
    """The records (at most ``limit``) whose query or response hash is ``digest``."""
    needle = digest.encode("ascii")
    snap = writer.snapshot()
    found: list[dict[str, Any]] = []
    try:
        for name, f, size in snap.files:
            for lineno, line in iter_lines(f, size):
                if needle not in line:
                    continue
                try:
                    rec = parse_line(line).record
                except ValueError:
                    continue
                field = "query" if rec.query_hash == digest else "response"
                if field == "response" and rec.response_hash != digest:
                    continue
                found.append({
                    "file": name, "line": lineno, "seq": rec.seq,
                    "timestamp": rec.timestamp, "event_type": rec.event_type,
                    "field": field, "session_id": rec.session_id, "model": rec.model,
                    "service": rec.service, "uid": rec.uid, "agent": rec.agent,
                })  # fmt: skip
                if len(found) >= limit:
                    return found
        return found
    finally:
        snap.close()
