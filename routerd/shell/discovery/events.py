"""Broadcast of discovery events to any number of subscribers, none of whom can slow it.

Invariants:

* ``publish`` never waits: each subscriber has a bounded queue, and a subscriber whose queue
  is full is dropped on the spot (its iteration then raises :class:`SubscriberDropped`). The
  probing loops that publish are never held up by a client that does not read.
* Events reach each subscriber in the order they were published.
* A closed subscription is forgotten at once; publishing to nobody costs nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio

__all__ = ["EventHub", "Subscription", "SubscriberDropped"]


class SubscriberDropped(Exception):
    """The subscriber fell ``queue_size`` events behind and was dropped."""


class Subscription:
    """One subscriber's queue. Iterate it for ``(event, data)``; close it when done."""

    def __init__(self, hub: EventHub, queue_size: int) -> None:
        self._hub = hub
        self.queue_size = queue_size
        self._send, self._recv = trio.open_memory_channel[tuple[str, Any]](queue_size)
        self.dropped = False

    def _offer(self, item: tuple[str, Any]) -> None:
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.dropped = True
            self._send.close()
            self._hub._forget(self)
        except trio.ClosedResourceError:
            self._hub._forget(self)

    def __aiter__(self) -> AsyncIterator[tuple[str, Any]]:
        return self

    async def __anext__(self) -> tuple[str, Any]:
        """The next event; raises SubscriberDropped once a full queue got this one dropped
        (after the events it did receive), StopAsyncIteration once closed."""
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self.dropped:
                raise SubscriberDropped(
                    f"fell {self.queue_size} events behind and was dropped"
                ) from None
            raise StopAsyncIteration from None

    def close(self) -> None:
        self._hub._forget(self)
        self._send.close()
        self._recv.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Publish ``(event, data)`` pairs to every current subscriber."""

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._subs: dict[int, Subscription] = {}

    def subscribe(self, queue_size: int | None = None) -> Subscription:
        """A new subscription; it sees events published from now on."""
        sub = Subscription(self, queue_size or self.queue_size)
        self._subs[id(sub)] = sub
        return sub

    def publish(self, event: str, data: Any) -> None:
        """Queue the event for every subscriber, dropping any whose queue is full."""
        for sub in list(self._subs.values()):
            sub._offer((event, data))

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def _forget(self, sub: Subscription) -> None:
        self._subs.pop(id(sub), None)
