"""Counters the daemon reports in ``status``: connections, requests, error codes, methods.

Invariants:

* ``requests_in_flight == started - finished`` and never goes negative; a request that is
  answered before it runs (unknown method, bad params, ``busy``) is counted in ``total`` and
  its outcome, never in ``in_flight``.
* ``requests_failed`` counts requests whose final frame is an ``error`` other than
  ``cancelled``; ``requests_cancelled`` counts those ended by a client's ``cancel`` or by the
  client going away.
* ``errors`` counts every ``error`` frame sent, including those without a request id.
* ``methods`` is keyed only by the names of registered methods, so a client sending random
  method names cannot grow it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from routerd_client.protocol import ErrorCode

__all__ = ["Counters"]


@dataclass
class Counters:
    """Mutable tallies owned by one daemon process. Pure: no clock, no I/O."""

    connections_open: int = 0
    connections_total: int = 0
    connections_refused: int = 0
    requests_total: int = 0
    requests_in_flight: int = 0
    requests_failed: int = 0
    requests_cancelled: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    methods: dict[str, int] = field(default_factory=dict)

    def connection_opened(self) -> None:
        self.connections_open += 1
        self.connections_total += 1

    def connection_closed(self) -> None:
        if self.connections_open <= 0:
            raise ValueError("connection_closed without a matching connection_opened")
        self.connections_open -= 1

    def connection_refused(self) -> None:
        self.connections_refused += 1
        self.error_sent(ErrorCode.BUSY)

    def request_received(self, method: str | None) -> None:
        """A ``request`` frame with a valid id; ``method`` is its name if it is registered."""
        self.requests_total += 1
        if method is not None:
            self.methods[method] = self.methods.get(method, 0) + 1

    def request_started(self) -> None:
        self.requests_in_flight += 1

    def request_finished(self) -> None:
        if self.requests_in_flight <= 0:
            raise ValueError("request_finished without a matching request_started")
        self.requests_in_flight -= 1

    def request_outcome(self, code: str | None) -> None:
        """Record how a request ended: ``None`` for success, else its final error code."""
        if code is None:
            return
        if code == ErrorCode.CANCELLED:
            self.requests_cancelled += 1
        else:
            self.requests_failed += 1

    def request_dropped(self) -> None:
        """A request ended without a final frame because its connection went away."""
        self.requests_cancelled += 1

    def error_sent(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def connections_map(self) -> dict[str, int]:
        return {
            "open": self.connections_open,
            "total": self.connections_total,
            "refused": self.connections_refused,
        }

    def requests_map(self) -> dict[str, int]:
        return {
            "total": self.requests_total,
            "in_flight": self.requests_in_flight,
            "failed": self.requests_failed,
            "cancelled": self.requests_cancelled,
        }
