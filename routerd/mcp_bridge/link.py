"""routerd-mcp's connection to the daemon: one :class:`~routerd_client.AsyncClient` shared by
every tool call, opened on first use and opened again once it broke (the daemon restarted).

The client holds a nursery, so it is entered and left by one task: a holder task in the
bridge's nursery, started with ``nursery.start`` so that a daemon that cannot be reached
raises :class:`~routerd_client.DaemonUnreachable` in the caller and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import trio

from routerd import __version__
from routerd_client import AgentInfo, AsyncClient, ConnectionLost

__all__ = ["DaemonLink"]

log = logging.getLogger("routerd.mcp")

#: Methods that change nothing: one that fails because the connection had broken unseen is
#: sent again on a fresh connection.
_IDEMPOTENT = frozenset({"status", "classify", "models.list", "serena.tools", "serena.status"})


class DaemonLink:
    """The shared connection. ``path`` is the daemon's socket; ``timeout`` bounds connecting
    and, unless a call says otherwise, the wait for an answer. ``agent`` is called at each
    connect for the coding agent to name in ``hello``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        path: str,
        *,
        timeout: float,
        agent: Callable[[], AgentInfo],
    ) -> None:
        self.path = path
        self.timeout = timeout
        self._agent = agent
        self._nursery = nursery
        self._lock = trio.Lock()
        self._client: AsyncClient | None = None
        self._release: trio.Event | None = None

    async def client(self) -> AsyncClient:
        """The open connection, connecting first if there is none. Raises
        ``DaemonUnreachable`` when nothing answers on the socket."""
        async with self._lock:
            if self._client is not None and not self._client.closed:
                return self._client
            self.close()
            client: AsyncClient
            release: trio.Event
            client, release = await self._nursery.start(self._hold)
            self._client, self._release = client, release
            return client

    async def call(
        self, method: str, params: Mapping[str, Any] | msgspec.Struct | None = None,
        *, timeout: float | None = -1.0,
    ) -> Any:  # fmt: skip
        """``method``'s result (``timeout`` -1: the link's; None: wait as long as the daemon
        works on it). Raises the client's exceptions; an idempotent method is retried once
        on a new connection when the old one turns out to be broken."""
        wait = self.timeout if timeout == -1.0 else timeout
        client = await self.client()
        try:
            return await client.call(method, params, timeout=wait)
        except ConnectionLost:
            if method not in _IDEMPOTENT:
                raise
            log.info("the connection to routerd broke; reconnecting for %s", method)
            client = await self.client()
            return await client.call(method, params, timeout=wait)

    def close(self) -> None:
        """Drop the current connection (its holder task closes it)."""
        if self._release is not None:
            self._release.set()
        self._client = self._release = None

    async def _hold(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        release = trio.Event()
        async with AsyncClient(
            self.path,
            timeout=self.timeout,
            client_name="routerd-mcp",
            client_version=__version__,
            agent=self._agent(),
        ) as client:
            log.info("connected to routerd at %s", self.path)
            task_status.started((client, release))
            await release.wait()
