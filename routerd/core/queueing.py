"""The fair queue in front of each (server, model): a sans-IO state machine.

The shell enqueues a request before sending it to a model server, calls ``dispatch(now)``
after every change (enqueue, release, cancel, a new residency or occupancy report) and when
``next_deadline()`` comes, starts each granted request, and calls ``release`` when it ends.
Nothing here waits, reads a clock or does I/O; trio events live in the shell.

Invariants:

* Capacity: a (server, model) never has more granted requests than ``capacity(server,
  model)``; a server never has more than its total limit, counting the occupancy the server
  reports for other machines' clients (``set_occupancy``).
* Fairness: within one (server, model) requests are granted in arrival order; with
  ``round_robin`` the order is by turns between clients (connections), and arrival order
  within each client.
* Grouping by resident model: while a server's resident model has work, a request for a model
  that is not resident waits, but at most ``swap_wait`` seconds from its arrival or from the
  last swap, whichever is later. Then it is due: the server takes no new work for other
  models, and the swap is granted once their requests have finished. Without a residency
  report (``resident`` None) nothing is grouped.
* Liveness: once capacity frees (requests are released and reported occupancy falls), every
  waiting request is granted or cancelled; ``next_deadline`` names the next time at which
  ``dispatch`` may grant something without any other change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import msgspec

from routerd.core.config import ConcurrencyConfig

__all__ = [
    "QueuePolicy",
    "ServerLimits",
    "Grant",
    "QueueStat",
    "FairQueue",
    "limits_for",
    "KIND_PER_MODEL",
]

#: Requests at once per model by server kind, when neither config nor server says. Ollama
#: runs one at a time per model (``OLLAMA_NUM_PARALLEL``); vLLM batches continuously;
#: llama.cpp is absent because it reports its slots.
KIND_PER_MODEL: Final[Mapping[str, int]] = {"vllm": 8}


class QueuePolicy(msgspec.Struct, frozen=True, kw_only=True):
    swap_wait: float = 10.0
    default_capacity: int = 1
    round_robin: bool = True


class ServerLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Configured limits of one server; None leaves it to the server's report or the default."""

    per_model: int | None = None
    total: int | None = None
    models: dict[str, int] = {}


class Grant(msgspec.Struct, frozen=True):
    """Start ``request_id`` now. ``swap``: it loads a model that was not resident."""

    request_id: str
    server: str
    model: str
    swap: bool
    waited: float


class QueueStat(msgspec.Struct, frozen=True):
    server: str
    model: str
    waiting: int
    in_flight: int
    capacity: int
    resident: bool | None


def limits_for(kind: str | None, cfg: ConcurrencyConfig | None) -> ServerLimits:
    """A server's limits from its ``routing.concurrency`` entry and its kind's default."""
    per_model = cfg.per_model if cfg is not None else None
    if per_model is None and kind is not None:
        per_model = KIND_PER_MODEL.get(kind)
    return ServerLimits(
        per_model=per_model,
        total=cfg.total if cfg is not None else None,
        models=dict(cfg.models) if cfg is not None else {},
    )


class _Req:
    __slots__ = ("arrival", "client", "id", "model", "seq", "server")

    def __init__(
        self, rid: str, server: str, model: str, client: str, arrival: float, seq: int
    ) -> None:
        self.id, self.server, self.model = rid, server, model
        self.client, self.arrival, self.seq = client, arrival, seq


class _Server:
    __slots__ = (
        "busy_slots",
        "external",
        "in_flight",
        "limits",
        "name",
        "resident",
        "total_slots",
        "waiting",
        "window_start",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.limits = ServerLimits()
        self.resident: frozenset[str] | None = None
        self.window_start = float("-inf")
        self.total_slots: int | None = None
        self.busy_slots: int | None = None
        self.external = 0
        self.in_flight: dict[str, int] = {}
        self.waiting: dict[str, list[_Req]] = {}

    def ours(self) -> int:
        return sum(self.in_flight.values())

    def is_resident(self, model: str) -> bool:
        return self.resident is None or model in self.resident


class FairQueue:
    """The queues of every server (see the module invariants). Request ids are unique among
    requests waiting or granted; a released or cancelled id may be used again."""

    def __init__(self, policy: QueuePolicy | None = None) -> None:
        self.policy = policy or QueuePolicy()
        self._servers: dict[str, _Server] = {}
        self._waiting: dict[str, _Req] = {}
        self._granted: dict[str, _Req] = {}
        self._turns: dict[str, int] = {}  # client -> number of its last grant
        self._seq = 0
        self._grants = 0
        self._last_now = float("-inf")

    def _server(self, name: str) -> _Server:
        srv = self._servers.get(name)
        if srv is None:
            srv = self._servers[name] = _Server(name)
        return srv

    # --- Facts about servers -------------------------------------------------------------

    def set_limits(self, server: str, limits: ServerLimits) -> None:
        self._server(server).limits = limits

    def set_resident(self, server: str, models: Iterable[str] | None, *, now: float) -> None:
        """The models the server holds in memory (Ollama ``/api/ps``, LM Studio ``state``);
        None: it does not say, so requests are not grouped. A newly loaded model starts a
        swap window."""
        srv = self._server(server)
        new = None if models is None else frozenset(models)
        if new is not None and srv.resident is not None and not new <= srv.resident:
            srv.window_start = now
        srv.resident = new

    def set_occupancy(
        self,
        server: str,
        *,
        busy_slots: int | None,
        total_slots: int | None,
        ours_at_probe: int | None = None,
    ) -> None:
        """What the server says about its slots (llama.cpp ``/slots``). ``ours_at_probe`` is
        how many of routerd's requests were running there when the answer was produced
        (default: as many as now); the rest of ``busy_slots`` is other clients' work."""
        srv = self._server(server)
        srv.total_slots = total_slots if total_slots and total_slots > 0 else None
        srv.busy_slots = busy_slots
        ours = srv.ours() if ours_at_probe is None else ours_at_probe
        srv.external = max(0, (busy_slots or 0) - ours)

    def capacity(self, server: str, model: str) -> int:
        """Requests at once for ``model`` on ``server``: configured per model, else configured
        per server, else the server's reported slots, else the policy's default."""
        srv = self._server(server)
        lim = srv.limits
        cap = lim.models.get(model) or lim.per_model or srv.total_slots
        return max(1, cap or self.policy.default_capacity)

    def _server_limit(self, srv: _Server) -> int | None:
        return srv.limits.total or srv.total_slots

    # --- Requests --------------------------------------------------------------------------

    def enqueue(
        self, request_id: str, server: str, model: str, *, now: float, client: str | None = None
    ) -> None:
        """Queue a request. ``client`` names its connection for round-robin turns (None: a
        client of its own). Raises ValueError for an id already waiting or granted."""
        if request_id in self._waiting or request_id in self._granted:
            raise ValueError(f"request {request_id!r} is already queued")
        self._seq += 1
        req = _Req(request_id, server, model, client or f"\0{request_id}", now, self._seq)
        self._server(server).waiting.setdefault(model, []).append(req)
        self._waiting[request_id] = req

    def release(self, request_id: str) -> bool:
        """A granted request ended. False if it was not granted (unknown or waiting)."""
        req = self._granted.pop(request_id, None)
        if req is None:
            return False
        srv = self._servers[req.server]
        left = srv.in_flight.get(req.model, 0) - 1
        if left > 0:
            srv.in_flight[req.model] = left
        else:
            srv.in_flight.pop(req.model, None)
        return True

    def cancel(self, request_id: str) -> bool:
        """Withdraw a request: taken off its queue if waiting, released if granted. False
        if the id is unknown."""
        req = self._waiting.pop(request_id, None)
        if req is None:
            return self.release(request_id)
        srv = self._servers[req.server]
        queue = srv.waiting[req.model]
        queue.remove(req)
        if not queue:
            del srv.waiting[req.model]
        return True

    # --- Decisions -------------------------------------------------------------------------

    def dispatch(self, now: float) -> list[Grant]:
        """Every request that may start now, in grant order."""
        self._last_now = now
        grants: list[Grant] = []
        for srv in self._servers.values():
            while srv.waiting:
                picked = self._pick(srv, now)
                if picked is None:
                    break
                req, swap = picked
                grants.append(self._grant(srv, req, swap, now))
        return grants

    def next_deadline(self) -> float | None:
        """The next time a waiting swap becomes due (call ``dispatch`` then), or None.
        Relative to the ``now`` of the last ``dispatch``."""
        times = []
        for srv in self._servers.values():
            info = self._swap_candidate(srv)
            if info is not None and self._resident_work(srv):
                due = info[1]
                if due > self._last_now:
                    times.append(due)
        return min(times, default=None)

    def _grant(self, srv: _Server, req: _Req, swap: bool, now: float) -> Grant:
        queue = srv.waiting[req.model]
        queue.remove(req)
        if not queue:
            del srv.waiting[req.model]
        del self._waiting[req.id]
        self._granted[req.id] = req
        srv.in_flight[req.model] = srv.in_flight.get(req.model, 0) + 1
        self._grants += 1
        self._turns[req.client] = self._grants
        if swap:
            # Assume the load evicted the others until the server's next report says otherwise:
            # believing both resident would let the two models alternate again.
            srv.resident = frozenset({req.model})
            srv.window_start = now
        return Grant(req.id, req.server, req.model, swap, max(0.0, now - req.arrival))

    def _full(self, srv: _Server) -> bool:
        limit = self._server_limit(srv)
        return limit is not None and srv.ours() + srv.external >= limit

    def _has_room(self, srv: _Server, model: str) -> bool:
        return srv.in_flight.get(model, 0) < self.capacity(srv.name, model)

    def _pick(self, srv: _Server, now: float) -> tuple[_Req, bool] | None:
        if self._full(srv):
            return None
        swap = self._swap_candidate(srv)
        if swap is not None and (not self._resident_work(srv) or now >= swap[1]):
            model = swap[0]
            if any(n > 0 for m, n in srv.in_flight.items() if m != model):
                return None  # the swap is due: let the other models' requests finish first
            if not self._has_room(srv, model):
                return None
            return self._head(srv.waiting[model]), True
        heads = [
            self._head(reqs)
            for model, reqs in srv.waiting.items()
            if srv.is_resident(model) and self._has_room(srv, model)
        ]
        if not heads:
            return None
        return min(heads, key=lambda r: (r.arrival, r.seq)), False

    def _swap_candidate(self, srv: _Server) -> tuple[str, float] | None:
        """The model to load next on ``srv`` (its oldest request waited longest) and when its
        swap is due while the resident models have work; None if nothing needs a swap."""
        if srv.resident is None:
            return None
        oldest: _Req | None = None
        for model, reqs in srv.waiting.items():
            if model in srv.resident:
                continue
            first = min(reqs, key=lambda r: (r.arrival, r.seq))
            if oldest is None or (first.arrival, first.seq) < (oldest.arrival, oldest.seq):
                oldest = first
        if oldest is None:
            return None
        return oldest.model, max(oldest.arrival, srv.window_start) + self.policy.swap_wait

    def _resident_work(self, srv: _Server) -> bool:
        return any(srv.is_resident(m) for m in srv.waiting) or any(
            n > 0 and srv.is_resident(m) for m, n in srv.in_flight.items()
        )

    def _head(self, reqs: list[_Req]) -> _Req:
        """The next request of one (server, model): the first in arrival order, or with
        round-robin the first of the client whose last turn is oldest."""
        if not self.policy.round_robin:
            return reqs[0]
        best: _Req | None = None
        best_key: tuple[int, int] = (0, 0)
        seen: set[str] = set()
        for r in reqs:
            if r.client in seen:
                continue
            seen.add(r.client)
            key = (self._turns.get(r.client, 0), r.seq)
            if best is None or key < best_key:
                best, best_key = r, key
        assert best is not None  # reqs is never empty
        return best

    # --- Introspection ---------------------------------------------------------------------

    def in_flight(self, server: str, model: str | None = None) -> int:
        srv = self._servers.get(server)
        if srv is None:
            return 0
        return srv.ours() if model is None else srv.in_flight.get(model, 0)

    def waiting(self, server: str, model: str | None = None) -> int:
        srv = self._servers.get(server)
        if srv is None:
            return 0
        if model is None:
            return sum(len(q) for q in srv.waiting.values())
        return len(srv.waiting.get(model, ()))

    def is_waiting(self, request_id: str) -> bool:
        return request_id in self._waiting

    def is_granted(self, request_id: str) -> bool:
        return request_id in self._granted

    def snapshot(self) -> tuple[QueueStat, ...]:
        """Per (server, model) with work: waiting, in flight, capacity, residency."""
        out = []
        for name, srv in sorted(self._servers.items()):
            for model in sorted(srv.waiting.keys() | srv.in_flight.keys()):
                out.append(
                    QueueStat(
                        server=name,
                        model=model,
                        waiting=len(srv.waiting.get(model, ())),
                        in_flight=srv.in_flight.get(model, 0),
                        capacity=self.capacity(name, model),
                        resident=None if srv.resident is None else model in srv.resident,
                    )
                )
        return tuple(out)
