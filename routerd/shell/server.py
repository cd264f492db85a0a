"""The accept loop: one :class:`Connection` per client, under a connection cap.

The server accepts from any ``trio.abc.Listener`` of streams: ``trio.SocketListener`` over the
Unix socket, or ``PipeListener`` over the named pipe on Windows (``routerd.shell.transport``
picks). Its behaviour is the same on both.

Invariants:

* ``run`` calls ``task_status.started()`` once the listener is accepting, and not
  before: the daemon signals READY after that.
* At most ``daemon.max_connections`` connections are served; one more is sent an ``error``
  ``busy`` (id nil) and closed.
* With ``app.access`` set, a Unix-socket peer it does not admit is sent an ``error``
  ``forbidden`` (id nil) and closed before anything it sent is read. A pipe peer was admitted
  by the pipe's security descriptor (only the daemon's user can open it), so it is not asked.
* After :meth:`stop_accepting` no connection is accepted and the listener is closed;
  connections already open carry on until the app cancels them (graceful shutdown).
"""

from __future__ import annotations

import errno
import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from routerd_client import framing
from routerd_client.protocol import Error, ErrorCode, encode

from .connection import Connection
from .dispatch import ConnectionInfo, Registry
from .outbound import DEFAULT_HIGH_WATER

if TYPE_CHECKING:
    from .app import App

__all__ = ["Server"]

log = logging.getLogger(__name__)

# Out of file descriptors or memory: wait a little and retry (as trio's serve_listeners does).
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
# The connection died before we accepted it: nothing to do.
_SKIP_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EAGAIN}

#: Seconds allowed to write the ``busy`` frame to a refused client.
REFUSE_TIMEOUT = 1.0


class Server:
    """Accepts connections from ``listener`` and serves them with the app's registry."""

    def __init__(
        self,
        app: App,
        listener: trio.abc.Listener[Any],
        registry: Registry,
        *,
        high_water: int = DEFAULT_HIGH_WATER,
    ) -> None:
        self.app = app
        self.registry = registry
        self._listener = listener
        self._high_water = high_water
        self._connections: set[Connection] = set()
        self._next_id = 1
        self._accept_scope = trio.CancelScope()
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()
        #: True once shutdown began: new requests are answered ``unavailable``.
        self.draining = False

    @property
    def connections(self) -> frozenset[Connection]:
        return frozenset(self._connections)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept until :meth:`stop_accepting`, then serve open connections until cancelled."""
        async with trio.open_nursery() as nursery:
            try:
                with self._accept_scope:
                    task_status.started()
                    await self._accept_loop(nursery)
            finally:
                await trio.aclose_forcefully(self._listener)

    def stop_accepting(self) -> None:
        self._accept_scope.cancel()

    async def _accept_loop(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream: trio.abc.Stream = await self._listener.accept()
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    log.error("cannot accept a connection (%s); retrying in 0.1 s", exc.strerror)
                    await trio.sleep(0.1)
                    continue
                if exc.errno in _SKIP_ERRNOS:
                    continue
                raise
            limit = self.app.config.daemon.max_connections
            if len(self._connections) >= limit:
                log.warning(
                    "refused a connection: %d connections open (daemon.max_connections)", limit
                )
                message = f"too many connections to routerd (limit {limit}); try again later"
                nursery.start_soon(self._refuse, stream, ErrorCode.BUSY, message)
                continue
            info = ConnectionInfo(id=self._next_id, opened_at=time.time())
            self._next_id += 1
            access = self.app.access
            if access is not None and isinstance(stream, trio.SocketStream):
                refusal = access.admit(info, stream.socket)
                if refusal is not None:
                    nursery.start_soon(self._refuse, stream, ErrorCode.FORBIDDEN, refusal)
                    continue
            conn = Connection(self, stream, info, high_water=self._high_water)
            self._connections.add(conn)
            self.app.counters.connection_opened()
            nursery.start_soon(self._serve, conn)

    async def _serve(self, conn: Connection) -> None:
        log.debug("connection %d opened (peer pid %s)", conn.info.id, conn.info.peer_pid)
        try:
            await conn.run()
        except Exception:
            # Never let one connection's bug take the daemon down.
            log.exception("connection %d failed", conn.info.id)
        finally:
            self._connections.discard(conn)
            self.app.counters.connection_closed()
            log.debug("connection %d closed", conn.info.id)

    async def _refuse(self, stream: trio.abc.Stream, code: str, message: str) -> None:
        """Send one ``error`` frame (id nil) and close: the connection is never served."""
        self.app.counters.connection_refused()
        body = framing.frame(encode(Error(id=None, code=code, message=message)))
        with trio.move_on_after(REFUSE_TIMEOUT):
            try:
                await stream.send_all(body)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await trio.aclose_forcefully(stream)

    # --- requests in flight (for graceful shutdown) -------------------------------------------

    def request_started(self) -> None:
        self._in_flight += 1
        if self._idle.is_set():
            self._idle = trio.Event()

    def request_finished(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def wait_idle(self) -> None:
        """Return once no request is in flight on any connection."""
        await self._idle.wait()

    def cancel_requests(self, code: str, message: str) -> None:
        for conn in list(self._connections):
            conn.cancel_requests(code, message)

    async def flush(self) -> None:
        """Wait until every connection has written what is queued for it."""
        async with trio.open_nursery() as nursery:
            for conn in list(self._connections):
                nursery.start_soon(conn.wait_flushed)
