"""The trio routerd client (``pip install routerd-client[trio]``).

:class:`AsyncClient` has the blocking :class:`~routerd_client.Client`'s methods, as coroutines.
A background task reads the socket and hands each event to the task waiting for it, so many
tasks can share one client: their requests run concurrently on the one connection.

::

    async with AsyncClient() as client:
        status = await client.status()
        async with client.stream("events.subscribe") as events:
            async for event in events:
                ...

On Windows the connection is the named pipe ``\\\\.\\pipe\\routerd``
(:mod:`routerd_client.trio_pipe`); elsewhere the Unix socket. ``opener`` replaces that choice.

This module and :mod:`~routerd_client.trio_pipe` are the only ones of the package that import
trio.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Final, TypeVar, overload

import msgspec
import trio

from ._conn import (
    ConnectionErrorEvent,
    ConnEvent,
    ErrorReply,
    Reply,
    StreamEnd,
    StreamEvent,
)
from ._pipe import describe_pipe_error
from ._sync import (
    _DEFAULT,
    DEFAULT_TIMEOUT,
    _ClientCommon,
    _Default,
    _streaming_error,
    typed_result,
)
from ._version import __version__
from .errors import (
    ConnectionLost,
    DaemonUnreachable,
    ProtocolViolation,
    RequestTimeout,
)
from .paths import describe_connect_error, is_pipe_name
from .protocol import (
    AgentInfo,
    ClientInfo,
    HelloResult,
    PingResult,
    ReloadResult,
    StatusResult,
)

__all__ = ["AsyncClient", "AsyncStream", "StreamOpener", "default_opener"]

T = TypeVar("T")

_RECV_SIZE: Final = 65536
#: Longest a write may block before the connection is given up (the daemon is not reading).
_WRITE_TIMEOUT: Final = 30.0

_FINAL = (Reply, ErrorReply, StreamEnd)

#: Opens a connection to routerd at an address (a socket path or a pipe name).
StreamOpener = Callable[[str], Awaitable[trio.abc.Stream]]


def default_opener(platform: str = sys.platform) -> StreamOpener:
    """How :class:`AsyncClient` connects on ``platform``: the named pipe on Windows
    (:func:`~routerd_client.trio_pipe.open_pipe_stream`), the Unix socket elsewhere."""
    if platform == "win32":
        from .trio_pipe import open_pipe_stream

        return open_pipe_stream
    return trio.open_unix_socket


def _describe(path: str, exc: OSError) -> str:
    if is_pipe_name(path):
        return describe_pipe_error(exc)
    return describe_connect_error(path, exc)


class AsyncClient(_ClientCommon):
    """A trio connection to routerd. Use it with ``async with``, which connects, starts the
    reader task, and sends ``hello`` unless ``hello`` is false; leaving the block closes the
    connection (the daemon cancels what is still in flight).

    Parameters as for :class:`~routerd_client.Client`, plus ``opener``: how to connect
    (default: :func:`default_opener`). ``async with`` raises :class:`DaemonUnreachable` when
    nothing accepts the connection. Enter and leave it in the same task (it holds a nursery); a
    client is entered once.
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        client_name: str = "routerd-client",
        client_version: str = __version__,
        agent: AgentInfo | None = None,
        hello: bool = True,
        opener: StreamOpener | None = None,
    ) -> None:
        super().__init__(path, timeout, client_name, client_version, agent)
        self._opener = opener if opener is not None else default_opener()
        self._send_hello = hello
        self._waiters: dict[int, trio.MemorySendChannel[ConnEvent]] = {}
        self._send_lock = trio.Lock()
        self._stream: trio.abc.Stream | None = None
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._entered = False
        self._closing = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        if self._entered:
            raise RuntimeError("an AsyncClient can be entered only once")
        self._entered = True
        self._stream = await self._connect()
        try:
            self._nursery_cm = trio.open_nursery()
            self._nursery = await self._nursery_cm.__aenter__()
            self._nursery.start_soon(self._reader, self._stream)
            if self._send_hello:
                await self.hello()
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown()

    @property
    def closed(self) -> bool:
        return self._closing or self._conn.closed

    async def _connect(self) -> trio.abc.Stream:
        try:
            with trio.fail_after(math.inf if self.timeout is None else self.timeout):
                return await self._opener(self.path)
        except trio.TooSlowError:
            raise DaemonUnreachable(self.path, "timed out connecting") from None
        except OSError as exc:
            raise DaemonUnreachable(self.path, _describe(self.path, exc)) from None
        except RuntimeError as exc:  # pragma: no cover - no AF_UNIX on this platform
            raise DaemonUnreachable(self.path, str(exc)) from None

    async def _shutdown(self) -> None:
        self._closing = True
        self._dispatch(self._conn.connection_closed("the client closed the connection"))
        try:
            if self._nursery is not None and self._nursery_cm is not None:
                self._nursery.cancel_scope.cancel()
                # The body's exception (if any) is not handed to the nursery: it would come
                # back wrapped in an ExceptionGroup. Our own tasks never raise.
                await self._nursery_cm.__aexit__(None, None, None)
        finally:
            self._nursery = None
            stream, self._stream = self._stream, None
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    # --- methods -------------------------------------------------------------------------------

    async def hello(
        self, *, agent: AgentInfo | None = None, client: ClientInfo | None = None
    ) -> HelloResult:
        """As :meth:`routerd_client.Client.hello`."""
        params = self._hello_params(agent, client)
        return self._hello_done(await self.call("hello", params, HelloResult))

    async def ping(self) -> PingResult:
        return await self.call("ping", None, PingResult)

    async def status(self) -> StatusResult:
        return await self.call("status", None, StatusResult)

    async def reload(self) -> ReloadResult:
        return await self.call("config.reload", None, ReloadResult)

    @overload
    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | msgspec.Struct | None = None,
        result_type: None = None,
        *,
        timeout: float | _Default | None = _DEFAULT,
    ) -> Any: ...

    @overload
    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | msgspec.Struct | None,
        result_type: type[T],
        *,
        timeout: float | _Default | None = _DEFAULT,
    ) -> T: ...

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | msgspec.Struct | None = None,
        result_type: type[Any] | None = None,
        *,
        timeout: float | _Default | None = _DEFAULT,
    ) -> Any:
        """As :meth:`routerd_client.Client.call`. If the calling task is cancelled while it
        waits, the request is cancelled on the daemon too."""
        request_id, events = await self._start(method, params)
        try:
            event = await self._receive(events, request_id, self._timeout(timeout))
        except BaseException:
            self._abandon(request_id)
            raise
        if isinstance(event, Reply):
            if result_type is None:
                return event.result
            return typed_result(event.result, result_type, method)
        if isinstance(event, ErrorReply):
            raise event.error
        self._abandon(request_id)
        raise _streaming_error(method)

    def stream(
        self,
        method: str,
        params: Mapping[str, Any] | msgspec.Struct | None = None,
        *,
        timeout: float | _Default | None = _DEFAULT,
    ) -> AsyncStream:
        """Call a streaming ``method``; return an :class:`AsyncStream` of its events.

        The request is sent on entering ``async with`` (or at the first ``async for`` step).
        ``timeout`` bounds the wait for each next event (default: the client's).
        """
        return AsyncStream(self, method, params, self._timeout(timeout))

    # --- machinery -----------------------------------------------------------------------------

    def _timeout(self, timeout: float | _Default | None) -> float | None:
        return self.timeout if isinstance(timeout, _Default) else timeout

    async def _start(
        self, method: str, params: Any
    ) -> tuple[int, trio.MemoryReceiveChannel[ConnEvent]]:
        if self._stream is None or self._closing:
            raise ConnectionLost("the client is not connected (use `async with AsyncClient()`)")
        async with self._send_lock:
            request_id, data = self._conn.request(method, params)
            send, receive = trio.open_memory_channel[ConnEvent](math.inf)
            self._waiters[request_id] = send
            await self._send_all(data)
        return request_id, receive

    async def _send_all(self, data: bytes) -> None:
        """Write ``data`` whole. Shielded from cancellation: a frame cut short would leave the
        byte stream out of step. A write blocked for long means the daemon stopped reading;
        the connection is then given up."""
        stream = self._stream
        if stream is None:
            raise ConnectionLost("the client closed the connection")
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _WRITE_TIMEOUT
            try:
                await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                reason = f"the connection to routerd broke: {exc}"
                self._dispatch(self._conn.connection_closed(reason))
                raise ConnectionLost(reason) from None
        if scope.cancelled_caught:
            reason = "timed out writing to routerd (it is not reading)"
            self._dispatch(self._conn.connection_closed(reason))
            raise ConnectionLost(reason)

    async def _receive(
        self,
        events: trio.MemoryReceiveChannel[ConnEvent],
        request_id: int,
        timeout: float | None,
    ) -> ConnEvent:
        with trio.move_on_after(math.inf if timeout is None else timeout):
            try:
                return await events.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise ConnectionLost("the client closed the connection") from None
        method = self._conn.method_of(request_id) or "request"
        raise RequestTimeout(f"routerd sent no answer to {method!r} in time")

    def _abandon(self, request_id: int) -> None:
        """Stop waiting for ``request_id``; cancel it on the daemon if it is in flight. Never
        blocks: the cancel frame is written by a task of the client's nursery."""
        send = self._waiters.pop(request_id, None)
        if send is not None:
            send.close()
        data = self._conn.cancel(request_id)
        if data and self._nursery is not None and not self._closing:
            self._nursery.start_soon(self._send_quietly, data)

    async def _send_quietly(self, data: bytes) -> None:
        try:
            async with self._send_lock:
                await self._send_all(data)
        except ConnectionLost:
            pass

    async def _reader(self, stream: trio.abc.Stream) -> None:
        while not self._conn.closed:
            try:
                data = await stream.receive_some(_RECV_SIZE)
            except trio.ClosedResourceError:
                return
            except (trio.BrokenResourceError, OSError) as exc:
                events = self._conn.connection_closed(f"the connection to routerd broke: {exc}")
            else:
                events = self._conn.receive_data(data)
            self._dispatch(events)

    def _dispatch(self, events: list[ConnEvent]) -> None:
        for event in events:
            if isinstance(event, ConnectionErrorEvent):
                self.connection_errors.append(event.error)
            elif isinstance(event, (Reply, ErrorReply, StreamEvent, StreamEnd)):
                send = self._waiters.get(event.id)
                if send is None:
                    continue  # abandoned: late frames are dropped
                send.send_nowait(event)
                if isinstance(event, _FINAL):
                    del self._waiters[event.id]
                    send.close()
            # ConnectionBroken: every request in flight already got its ErrorReply.


class AsyncStream:
    """The events of one streaming request, as an async iterator of :class:`StreamEvent`.

    Use ``async with``: leaving the block early cancels the request. Iteration stops at the
    stream's ``end`` (its data then in :attr:`end_data`); an ``error`` frame is raised.
    """

    def __init__(
        self, client: AsyncClient, method: str, params: Any, timeout: float | None
    ) -> None:
        self.method = method
        self.id: int | None = None
        self.end_data: Any = None
        #: Set if a non-streaming method answered with a ``result`` instead of events.
        self.result: Any = None
        self._client = client
        self._params = params
        self._timeout = timeout
        self._events: trio.MemoryReceiveChannel[ConnEvent] | None = None
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    async def start(self) -> None:
        """Send the request (once). ``async with`` and the first ``async for`` step call it."""
        if self._events is None and not self._done:
            self.id, self._events = await self._client._start(self.method, self._params)

    async def __aenter__(self) -> AsyncStream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._done:
            raise StopAsyncIteration
        await self.start()
        assert self._events is not None and self.id is not None
        try:
            event = await self._client._receive(self._events, self.id, self._timeout)
        except BaseException:
            self._stop()
            raise
        if isinstance(event, StreamEvent):
            return event
        self._done = True
        if isinstance(event, StreamEnd):
            self.end_data = event.data
            raise StopAsyncIteration
        if isinstance(event, Reply):
            self.result = event.result
            raise StopAsyncIteration
        if isinstance(event, ErrorReply):
            raise event.error
        raise ProtocolViolation(f"unexpected event {event!r}")  # pragma: no cover

    def _stop(self) -> None:
        if not self._done:
            self._done = True
            if self.id is not None:
                self._client._abandon(self.id)

    async def aclose(self) -> None:
        """Stop the stream: cancel the request if it is still running. Idempotent."""
        self._stop()
        await trio.lowlevel.cancel_shielded_checkpoint()
