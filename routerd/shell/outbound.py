"""The outbound side of one connection: a queue of encoded frames and the task that writes it.

Invariants:

* Frames leave in the order they were queued (a stream's events before its ``end``).
* Writes never interleave mid-frame: the writer task (``run``) writes queued frames, and
  ``put`` writes directly (non-blocking, whatever the kernel takes at once) only when the
  writer is not in the middle of a write and nothing but lingering frames is queued.
* ``put(..., soon=True)`` never writes directly: the frame *lingers* up to ``LINGER`` seconds
  for the next frame written at once (``put`` without ``soon``), which takes it along in the
  same write; the writer task sends it when the time is up. So a stream's ``selected`` event
  and its first chunk reach the client in one write and one wake-up of the client, and a
  ``selected`` whose model is slow to answer still arrives within ``LINGER``.
* ``backlog`` counts the bytes queued plus those being written; ``credit`` semaphores given
  with a frame are released once that frame has been handed to the kernel, which is how each
  stream's queue stays at most ``stream_queue`` frames long.
* The reader pauses while ``backlog`` is above ``high_water`` (see ``wait_writable``), so a
  client that writes but never reads cannot grow the daemon's memory.
"""

from __future__ import annotations

import os
from collections import deque

import trio

__all__ = ["Outbound", "DEFAULT_HIGH_WATER", "LINGER", "WRITE_CHUNK"]

#: Bytes of queued output above which a connection stops reading new frames.
DEFAULT_HIGH_WATER = 1024 * 1024

#: Frames are coalesced into writes of about this size (fewer syscalls for small replies).
WRITE_CHUNK = 64 * 1024

#: Seconds a ``soon`` frame waits for a frame written at once to go out with (see above).
LINGER = 0.02

_Credits = tuple[trio.Semaphore, ...]


class Outbound:
    """Queue of frames for one connection, drained by :meth:`run`."""

    def __init__(
        self,
        stream: trio.abc.SendStream,
        high_water: int = DEFAULT_HIGH_WATER,
        *,
        fd: int | None = None,
        linger: float = LINGER,
    ) -> None:
        self._stream = stream
        self._linger = linger
        self._fd = fd  # the socket's descriptor, for the non-blocking fast path in put()
        self._sending = False
        self._queue: deque[tuple[bytes, _Credits]] = deque()
        self._lingering = False  # everything queued was put with soon=True (and may wait)
        self._backlog = 0
        self._high_water = high_water
        self._low_water = high_water // 2
        self._wake = trio.Event()
        self._below = trio.Event()
        self._below.set()
        self._flushed = trio.Event()
        self._flushed.set()
        self._failed = False

    @property
    def backlog(self) -> int:
        """Bytes queued or being written."""
        return self._backlog

    @property
    def over_high_water(self) -> bool:
        """True while the backlog is above the high-water mark (the reader should wait)."""
        return self._backlog > self._high_water

    @property
    def failed(self) -> bool:
        """True once a write failed (the peer is gone); later frames are dropped."""
        return self._failed

    def put(self, data: bytes, credit: trio.Semaphore | None = None, *, soon: bool = False) -> None:
        """Queue one encoded frame (prefix included). Never blocks.

        ``credit``, if given, was acquired by the caller and is released after the write.
        ``soon``: let the frame linger for the next one (see the module docstring).
        """
        credits: _Credits = () if credit is None else (credit,)
        if self._failed:
            for c in credits:
                c.release()
            return
        queue = self._queue
        wake = True
        if soon:
            if not queue:
                self._lingering = True  # the writer starts the clock
            elif self._lingering:
                wake = False  # the writer's clock runs already: this one lingers with the rest
        elif self._fd is not None and not self._sending and (not queue or self._lingering):
            # Nothing is being written and nothing queued must go first but lingering frames:
            # write them with this one now, non-blocking, and save a trip through the writer.
            if queue:
                data, credits = self._take_lingering(data, credits)
            try:
                written = os.write(self._fd, data)
            except OSError:
                written = 0  # EAGAIN, or a dead peer: the writer task finds out and fails
            if written == len(data):
                for c in credits:
                    c.release()
                self._update_events()
                return
            data = data[written:]
        else:
            self._lingering = False
        queue.append((data, credits))
        self._backlog += len(data)
        if self._backlog > self._high_water and self._below.is_set():
            self._below = trio.Event()
        if self._flushed.is_set():
            self._flushed = trio.Event()
        if wake:
            self._wake.set()

    def _take_lingering(self, data: bytes, credits: _Credits) -> tuple[bytes, _Credits]:
        """The lingering frames, then ``data``, as one write (and all their credits)."""
        chunks: list[bytes] = []
        taken: list[trio.Semaphore] = []
        for queued, queued_credits in self._queue:
            chunks.append(queued)
            taken.extend(queued_credits)
            self._backlog -= len(queued)
        self._queue.clear()
        self._lingering = False
        # The writer waits out the linger: let it go now, while the daemon is awake anyway,
        # rather than on its own timer later (a wake-up of an idle daemon per stream).
        self._wake.set()
        chunks.append(data)
        taken.extend(credits)
        return b"".join(chunks), tuple(taken)

    async def wait_writable(self) -> None:
        """Return once the backlog is at most the high-water mark (at once if it is)."""
        if self._backlog > self._high_water:
            await self._below.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def wait_flushed(self) -> None:
        """Return once everything queued so far has been written (or writing failed)."""
        await self._flushed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write queued frames until cancelled or until a write fails (then return)."""
        task_status.started()
        while True:
            while not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
            if self._lingering:
                # Only soon frames: give a frame written at once the chance to take them along.
                self._wake = trio.Event()
                with trio.move_on_after(self._linger):
                    await self._wake.wait()
                if not self._queue:
                    continue  # put() took them along
                self._lingering = False
            chunks: list[bytes] = []
            credits: list[trio.Semaphore] = []
            size = 0
            while self._queue and size < WRITE_CHUNK:
                data, frame_credits = self._queue.popleft()
                chunks.append(data)
                size += len(data)
                credits.extend(frame_credits)
            self._sending = True
            try:
                await self._stream.send_all(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self._fail(credits)
                return
            finally:
                self._sending = False
            self._backlog -= size
            for credit in credits:
                credit.release()
            self._update_events()

    def close(self) -> None:
        """The socket is about to be closed: drop everything, never write again.

        (Its descriptor number may be reused by another connection at once.)
        """
        self._fd = None
        self._fail([])

    def _update_events(self) -> None:
        if self._backlog <= self._low_water:
            self._below.set()
        if not self._queue:
            self._flushed.set()

    def _fail(self, credits: list[trio.Semaphore]) -> None:
        """The peer is gone: drop the queue, wake every waiter, release every credit."""
        self._failed = True
        for credit in credits:
            credit.release()
        while self._queue:
            _, queued_credits = self._queue.popleft()
            for credit in queued_credits:
                credit.release()
        self._lingering = False
        self._backlog = 0
        self._below.set()
        self._flushed.set()
