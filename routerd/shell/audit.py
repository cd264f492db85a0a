"""The audit writer: a bounded queue drained by one task, off the request path.

Features report through ``app.audit`` (an :class:`~routerd.core.audit.AuditSink`)::

    app.audit.record_nowait(AuditEvent(event_type="query", ...))   # never blocks
    await app.audit.record(AuditEvent(...))   # waits for room if audit_queue_full = "block"
    app.audit.security("refused_peer", "uid 65534 may not ...", uid=65534, pid=4242)

``record`` is what the routing feature should use for each routed request: with the default
``block`` policy a full queue slows requests down rather than losing their trail; with ``drop``
it never waits, and what it drops is counted and written later as a ``security:audit_dropped``
record. ``record_nowait`` drops (and counts) when the queue is full, whatever the policy.
Security events are never dropped: they skip the bound (a separate overflow, itself bounded by
the queue size; beyond that they are counted as dropped too).
Every security event is also logged (journal field ``ROUTERD_EVENT=security``).

One writer thread, for the log's lifetime, seals and appends batches (``AuditFileWriter``),
fsyncs each batch, and has the written lines handed to ``audit.tail --follow`` subscribers.
Requests never wait for it: ``record`` returns at once while the queue has room (under
``block`` it waits only when the bounded queue is full), queueing wakes the thread without
a trip through trio's scheduler, and the thread calls back into trio only when a task waits
for it (``flush``, room in a full queue) or a subscriber follows the log. Records gather for
``GATHER`` seconds after the first (none when a task waits): one wake-up and one fsync per
batch rather than per request, so a record is on disk within about ``GATHER`` plus one
fsync of being queued. On shutdown it writes what is queued, then an ``audit:stop`` record.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import trio

from routerd import __version__
from routerd.core.audit import (
    AuditEvent,
    AuditKeys,
    AuditOptions,
    ChainReport,
    security_event,
    text_hash,
)
from routerd.core.config import Config

from .audit_files import AuditFileWriter, find_hash, tail_lines, verify_files
from .logs import event as log_event
from .transport import StartupError

__all__ = ["AuditLog", "AuditSettings", "JournalOnlyAudit", "Subscription", "options_of"]

log = logging.getLogger(__name__)

#: Events per write batch at most (one write, one fsync).
BATCH = 1024
#: Seconds the writer lets records gather after the first one before writing them (unless a
#: task waits for it): one wake-up and one fsync for all of them, instead of one per request.
GATHER = 0.05
#: Lines buffered per ``audit.tail --follow`` subscriber before it is cut off.
SUBSCRIBER_BUFFER = 4096


def options_of(config: Config) -> AuditOptions:
    s = config.security
    return AuditOptions(
        log_queries=s.log_queries, log_query_text=s.log_query_text, log_responses=s.log_responses
    )


@dataclass(frozen=True)
class AuditSettings:
    path: Path
    key_path: Path
    queue_size: int
    queue_full: str  # "block" | "drop"
    max_bytes: int
    backups: int
    options: AuditOptions

    @classmethod
    def from_config(cls, config: Config, state_dir: Path) -> AuditSettings:
        s = config.security
        return cls(
            path=Path(s.audit_log_path) if s.audit_log_path else state_dir / "audit.log",
            key_path=state_dir / "audit.key",
            queue_size=s.audit_queue,
            queue_full=s.audit_queue_full,
            max_bytes=s.audit_max_bytes,
            backups=s.audit_backups,
            options=options_of(config),
        )


def _log_security(kind: str, reason: str, details: dict[str, Any]) -> None:
    shown = {k: v for k, v in details.items() if v is not None}
    log.warning(
        "security event %s: %s%s", kind, reason,
        f" ({', '.join(f'{k}={v}' for k, v in shown.items())})" if shown else "",
        extra=log_event("security", kind=kind),
    )  # fmt: skip


class JournalOnlyAudit:
    """The sink when ``security.audit_enabled`` is false: security events reach the log only."""

    def record_nowait(self, event: AuditEvent) -> None:
        return None

    async def record(self, event: AuditEvent) -> None:
        return None

    def security(self, kind: str, reason: str, **details: Any) -> None:
        _log_security(kind, reason, details)


class Subscription:
    """Lines as they are written, for ``audit.tail --follow``. ``lost`` once it fell behind."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[bytes](SUBSCRIBER_BUFFER)
        self.lost = False


class AuditLog:
    """The audit sink and its writer task (``run``). See the module docstring."""

    def __init__(
        self,
        settings: AuditSettings,
        keys: AuditKeys | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.gather = GATHER
        self._clock = clock
        self._writer: AuditFileWriter | None = None
        self._keys: AuditKeys | None = None
        if keys is not None:
            self.set_keys(keys)
        # One queue, in arrival order, appended here and emptied by the writer thread. Each
        # counter has one writer: ``*_in`` the trio thread, ``*_out`` the writer thread, so
        # no lock is needed. Security events may exceed the bound by one more queue's worth
        # (``_urgent_*``), other events may not (``_normal_*``); an event counts against the
        # bound until it is written.
        self._queue: deque[tuple[AuditEvent, float]] = deque()
        self._normal_in = self._normal_out = 0
        self._urgent_in = self._urgent_out = 0
        self._enqueued = 0  # events queued so far (trio thread)
        self._done = 0  # queued events written so far (writer thread)
        self._kick = threading.Event()  # something to write, or time to stop
        self._hurry = threading.Event()  # someone waits for the writer: no gathering
        self._stop = threading.Event()
        self._waiters = 0  # trio tasks waiting for a write (flush, room): the thread calls back
        self._room = trio.Event()
        self._written = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self.dropped = 0
        self._dropped_reported = 0  # writer thread
        self.write_errors = 0  # writer thread
        self._subscribers: set[Subscription] = set()
        self.running = False

    def set_keys(self, keys: AuditKeys) -> None:
        """Give the log its keys (loaded from the key file); needed before :meth:`run`."""
        self._keys = keys
        self._writer = AuditFileWriter(
            self.settings.path, keys, max_bytes=self.settings.max_bytes,
            backups=self.settings.backups, pid=os.getpid(),
        )  # fmt: skip

    @property
    def keys(self) -> AuditKeys:
        if self._keys is None:
            raise RuntimeError("the audit log has no key yet")
        return self._keys

    @property
    def writer(self) -> AuditFileWriter:
        if self._writer is None:
            raise RuntimeError("the audit log has no key yet")
        return self._writer

    def apply(self, options: AuditOptions, security: Any) -> None:
        """Reload: take the new text options, queue policy and rotation limits.

        The log's path and key stay as they were at start (a restart moves them).
        """
        new = replace(
            self.settings,
            options=options,
            queue_size=security.audit_queue,
            queue_full=security.audit_queue_full,
            max_bytes=security.audit_max_bytes,
            backups=security.audit_backups,
        )
        wanted = security.audit_log_path
        if wanted and Path(wanted) != self.settings.path:
            log.warning("security.audit_log_path cannot change while routerd runs; restart it")
        self.settings = new
        if self._writer is not None:
            self._writer.max_bytes = new.max_bytes
            self._writer.backups = new.backups
        if not self._full():
            self._room.set()
            self._room = trio.Event()

    # --- the sink -----------------------------------------------------------------------------

    def _put(self, event: AuditEvent) -> None:
        self._queue.append((event, self._clock()))
        if _is_security(event):
            self._urgent_in += 1
        else:
            self._normal_in += 1
        self._enqueued += 1
        if 2 * (self._normal_in - self._normal_out) >= self.settings.queue_size:
            self._hurry_up()  # half full: gathering longer would only make requests wait
        elif not self._kick.is_set():  # set() takes a lock even when set: skip it when it is
            self._kick.set()

    def _hurry_up(self) -> None:
        """A task waits for the writer: write now, without gathering."""
        self._hurry.set()
        self._kick.set()

    def _full(self) -> bool:
        return self._normal_in - self._normal_out >= self.settings.queue_size

    def record_nowait(self, event: AuditEvent) -> None:
        """Queue ``event``; if the queue is full, drop it and count it. Never blocks."""
        if self._full():
            self.dropped += 1
            self._kick.set()  # the writer reports drops
            return
        self._put(event)

    async def record(self, event: AuditEvent) -> None:
        """Queue ``event``; when the queue is full, wait for room (``block``) or drop it.
        Returns at once when there is room: nothing here waits for the disk."""
        if self.settings.queue_full == "block" and self._full():
            self._hurry_up()
            self._waiters += 1  # before looking again: the writer calls back if it sees it
            try:
                while self._full():
                    await self._room.wait()
            finally:
                self._waiters -= 1
        self.record_nowait(event)

    def security(self, kind: str, reason: str, **details: Any) -> None:
        """Log a security event and queue it; never dropped while the overflow has room."""
        _log_security(kind, reason, details)
        if self._urgent_in - self._urgent_out >= self.settings.queue_size:
            self.dropped += 1
            self._kick.set()
            return
        self._put(security_event(kind, reason, details))

    # --- the writer ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the log, then write until cancelled; on the way out write what is queued.

        The writing is done by one thread for the log's lifetime (seal, append, fsync, in
        batches of whatever queued meanwhile); it calls back into trio only when a task
        waits for it (``flush``, a full queue) or follows the log (``audit.tail --follow``).
        """
        try:
            notes = await trio.to_thread.run_sync(
                self.writer.open, self._clock(), self.settings.options
            )
        except OSError as exc:
            raise StartupError(
                f"cannot open the audit log {self.settings.path}: {exc.strerror or exc}"
            ) from None
        for note in notes:
            self.security("audit_recovered", note)
        self._put(
            AuditEvent(
                event_type="audit:start",
                pid=os.getpid(),
                details={"version": __version__, "key_id": text_hash(self.keys, "key-id")[:16]},
            ),
        )
        self._token = trio.lowlevel.current_trio_token()
        self._stop.clear()
        try:
            async with trio.open_nursery() as nursery:
                # Not cancellable: on the way out the thread writes what is queued, then ends.
                nursery.start_soon(
                    partial(trio.to_thread.run_sync, self._thread, limiter=trio.CapacityLimiter(1))
                )
                self.running = True
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    self.running = False
                    self._put(AuditEvent(event_type="audit:stop", pid=os.getpid()))
                    self._stop.set()
                    self._hurry_up()
        finally:
            self._token = None
            for sub in list(self._subscribers):
                sub.send.close()

    def _thread(self) -> None:
        """The writer thread: write batches until told to stop, then what is left, close."""
        try:
            while True:
                self._kick.wait()
                if not self._hurry.is_set():
                    self._hurry.wait(self.gather)  # let the records of this moment gather
                self._hurry.clear()
                self._kick.clear()
                stopping = self._stop.is_set()
                while self._queue or self._dropped_pending():
                    if self._write_batch():
                        continue
                    if stopping:
                        return  # on the way out a failing disk gets one try, not a hang
                    # A failing disk: the events stay queued; retry after a pause, never spin.
                    stopping = self._stop.wait(1.0)
                if stopping:
                    return
        finally:
            self.writer.close()
            self._call_back([])  # whoever still waits sees the writer gone

    def _dropped_pending(self) -> bool:
        return self.dropped > self._dropped_reported

    def _write_batch(self) -> bool:
        """Write up to BATCH queued events (writer thread); False if the disk failed (the
        events stay queued, in order)."""
        batch: list[tuple[AuditEvent, float]] = []
        drop: tuple[AuditEvent, float] | None = None
        if self._dropped_pending():
            dropped = self.dropped
            count = dropped - self._dropped_reported
            reason = f"the audit queue was full: {count} record(s) dropped"
            drop = (security_event("audit_dropped", reason, {"count": count}), self._clock())
            batch.append(drop)
        queue = self._queue
        taken = 0
        while queue and taken < BATCH:
            batch.append(queue.popleft())
            taken += 1
        try:
            lines = self.writer.write(batch, self.settings.options)
        except OSError as exc:
            self.write_errors += 1
            log.error("cannot write the audit log %s: %s", self.settings.path, exc)
            queue.extendleft(reversed(batch[1:] if drop is not None else batch))
            return False
        if drop is not None:
            self._dropped_reported = dropped
            _log_security("audit_dropped", reason, {"count": count})
        urgent = sum(1 for event, _ in batch[1 if drop is not None else 0 :] if _is_security(event))
        self._urgent_out += urgent
        self._normal_out += taken - urgent
        self._done += taken
        self._call_back(lines)
        return True

    def _call_back(self, lines: list[bytes]) -> None:
        """From the writer thread: run ``_after_write`` in trio, if anyone needs it."""
        token = self._token
        if token is not None and (self._waiters or self._subscribers):
            try:
                token.run_sync_soon(self._after_write, lines)
            except trio.RunFinishedError:
                pass

    def _after_write(self, lines: list[bytes]) -> None:
        """In trio: wake whoever waits for the writer, and pass the lines to followers."""
        self._written.set()
        self._written = trio.Event()
        if not self._full():
            self._room.set()
            self._room = trio.Event()
        self._publish(lines)

    def _publish(self, lines: list[bytes]) -> None:
        for sub in list(self._subscribers):
            for line in lines:
                try:
                    sub.send.send_nowait(line)
                except trio.WouldBlock:
                    sub.lost = True
                    sub.send.close()
                    self._subscribers.discard(sub)
                    break
                except trio.ClosedResourceError:
                    self._subscribers.discard(sub)
                    break

    async def flush(self) -> None:
        """Return once every event queued before this call has been written (or the writer
        stopped)."""
        target = self._enqueued
        if self._done < target:
            self._hurry_up()
        self._waiters += 1  # before looking: the writer calls back if it sees it
        try:
            while self._done < target and self.running:
                await self._written.wait()
        finally:
            self._waiters -= 1

    # --- reading ------------------------------------------------------------------------------

    def subscribe(self) -> Subscription:
        sub = Subscription()
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        sub.send.close()

    async def tail(self, n: int) -> list[bytes]:
        """The last ``n`` lines written (after writing what is queued)."""
        return (await self.tail_upto(n))[0]

    async def tail_upto(self, n: int) -> tuple[list[bytes], int]:
        """``(lines, seq)``: the last ``n`` lines and the seq of the last line written then."""
        await self.flush()
        return await trio.to_thread.run_sync(tail_lines, self.writer, n)

    async def verify_chain(self) -> tuple[ChainReport, list[str]]:
        """Verify every file with the daemon's key; the end must be where the writer is."""
        await self.flush()
        return await trio.to_thread.run_sync(verify_files, self.writer, self.keys)

    async def find_text(self, text: str, *, limit: int = 100) -> tuple[str, list[dict[str, Any]]]:
        """``(hash, matches)``: the logged records whose query or response hash is ``text``'s."""
        await self.flush()
        digest = text_hash(self.keys, text)
        return digest, await trio.to_thread.run_sync(find_hash, self.writer, digest, limit)

    def status(self) -> dict[str, Any]:
        """For ``status.components.audit`` (cheap: no I/O)."""
        w = self._writer
        return {
            "enabled": True,
            "state": "on" if self.running else "starting",
            "path": str(self.settings.path),
            "last_seq": w.seq if w is not None else None,
            "queued": len(self._queue),
            "queue_size": self.settings.queue_size,
            "queue_full": self.settings.queue_full,
            "dropped": self.dropped,
            "rotations": w.rotations if w is not None else 0,
            "write_errors": self.write_errors,
        }


def _is_security(event: AuditEvent) -> bool:
    return event.event_type.startswith("security:")
