"""The fair queue in front of each (server, model), with trio waits around the sans-IO core.

``routerd.core.queueing.FairQueue`` decides who may start; this module only waits. Contract:

* ``async with queue.slot(server, model, client=..., deadline=...) as grant`` waits for a
  grant (``grant`` is None if ``deadline``, trio time, passed first) and releases the slot
  when the block ends, however it ends. A request cancelled while waiting leaves the queue at
  once; one granted at the instant it was cancelled is released.
* ``dispatch`` runs after every change (enqueue, release, cancel, a new fact about a server)
  and at the core's ``next_deadline``: each waiting request is its own timer, so no
  background task is needed and a due swap is granted even when nothing else happens.
* Nothing here reads the configuration; the router sets policy and facts.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any

import trio

from routerd.core.queueing import FairQueue, Grant, QueuePolicy, ServerLimits

__all__ = ["SlotQueue", "Slot"]


class SlotQueue:
    """Waiting for and holding request slots (see the module docstring)."""

    def __init__(
        self, policy: QueuePolicy | None = None, *, clock: Callable[[], float] = trio.current_time
    ) -> None:
        self.core = FairQueue(policy)
        self._clock = clock
        self._waiters: dict[str, trio.Event] = {}
        self._grants: dict[str, Grant] = {}
        self._ids = itertools.count(1)

    # --- facts and policy ------------------------------------------------------------------

    def set_policy(self, policy: QueuePolicy) -> None:
        self.core.policy = policy
        self.dispatch()

    def set_limits(self, server: str, limits: ServerLimits) -> None:
        self.core.set_limits(server, limits)
        self.dispatch()

    def set_resident(self, server: str, models: Iterable[str] | None) -> None:
        self.core.set_resident(server, models, now=self._clock())
        self.dispatch()

    def set_slots(self, server: str, total_slots: int | None) -> None:
        """The server's own slot count (llama.cpp ``/slots``). Busy counts are not passed on:
        a probe's figure, read later, would still count our own finished requests as other
        clients' work and hold the queue back until the next probe."""
        self.core.set_occupancy(server, busy_slots=None, total_slots=total_slots)
        self.dispatch()

    # --- waiting ---------------------------------------------------------------------------

    def slot(
        self,
        server: str,
        model: str,
        *,
        client: str | None,
        deadline: float,
        before_wait: Callable[[], Awaitable[None]] | None = None,
    ) -> Slot:
        """A context manager that waits for a grant on ``(server, model)`` (see the module
        docstring); ``client`` names the connection for round-robin turns. ``before_wait``
        is awaited once if the grant does not come at once, before the wait."""
        return Slot(self, server, model, client, deadline, before_wait)

    def dispatch(self) -> None:
        """Grant whatever may start now and wake its waiters."""
        if not self._waiters:  # nothing waits (and outside trio, e.g. at install, no clock)
            return
        for grant in self.core.dispatch(self._clock()):
            self._grants[grant.request_id] = grant
            event = self._waiters.get(grant.request_id)
            if event is not None:
                event.set()

    async def _acquire(
        self,
        server: str,
        model: str,
        client: str | None,
        deadline: float,
        before_wait: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[str, Grant | None]:
        rid = str(next(self._ids))
        event = trio.Event()
        self._waiters[rid] = event
        core = self.core
        try:
            core.enqueue(rid, server, model, now=self._clock(), client=client)
            self.dispatch()
            if before_wait is not None and not event.is_set():
                await before_wait()
            while not event.is_set():
                wake = deadline
                due = core.next_deadline()
                if due is not None and due < wake:
                    wake = due
                with trio.move_on_at(wake):
                    await event.wait()
                if event.is_set():
                    break
                if self._clock() >= deadline:
                    core.cancel(rid)
                    self.dispatch()
                    return rid, None
                self.dispatch()
        except BaseException:
            self._grants.pop(rid, None)
            if core.cancel(rid):
                self.dispatch()
            raise
        finally:
            self._waiters.pop(rid, None)
        return rid, self._grants.pop(rid)

    def _release(self, rid: str) -> None:
        if self.core.release(rid):
            self.dispatch()

    # --- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For the ``routing`` status component: totals and the busy (server, model)s."""
        stats = self.core.snapshot()
        return {
            "in_flight": sum(s.in_flight for s in stats),
            "waiting": sum(s.waiting for s in stats),
            "queues": [
                {
                    "server": s.server,
                    "model": s.model,
                    "in_flight": s.in_flight,
                    "waiting": s.waiting,
                    "capacity": s.capacity,
                }
                for s in stats
            ],
        }


class Slot:
    """``async with`` a request slot: the grant (None: the deadline passed first)."""

    __slots__ = ("_before_wait", "_client", "_deadline", "_model", "_queue", "_rid", "_server")

    def __init__(
        self,
        queue: SlotQueue,
        server: str,
        model: str,
        client: str | None,
        deadline: float,
        before_wait: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._before_wait = before_wait
        self._queue = queue
        self._server = server
        self._model = model
        self._client = client
        self._deadline = deadline
        self._rid: str | None = None

    async def __aenter__(self) -> Grant | None:
        rid, grant = await self._queue._acquire(
            self._server, self._model, self._client, self._deadline, self._before_wait
        )
        self._rid = rid if grant is not None else None
        return grant

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._rid is not None:
            self._queue._release(self._rid)
            self._rid = None
