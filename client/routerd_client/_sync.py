"""The blocking routerd client: standard-library sockets around the sans-IO connection.

A :class:`Client` owns one Unix socket connection. It is not thread-safe: use one per thread.
Requests made while a stream is open are fine; events of the other requests are kept until
their reader asks for them.
"""

from __future__ import annotations

import socket
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Final, TypeVar, overload

import msgspec

from ._conn import (
    ClientConnection,
    ConnectionBroken,
    ConnectionErrorEvent,
    ConnEvent,
    ErrorReply,
    Reply,
    StreamEnd,
    StreamEvent,
)
from ._pipe import PIPE_PREFIX, Transport, connect_pipe, describe_pipe_error, is_pipe_name
from ._version import __version__
from .agent import detect_agent
from .errors import (
    ConnectionLost,
    DaemonUnreachable,
    ProtocolViolation,
    RemoteError,
    RequestTimeout,
)
from .paths import default_socket_path, describe_connect_error
from .protocol import (
    PROTOCOL_VERSION,
    AgentInfo,
    ClientInfo,
    HelloParams,
    HelloResult,
    PingResult,
    ReloadResult,
    StatusResult,
)

__all__ = ["Client", "Stream", "DEFAULT_TIMEOUT", "typed_result"]

T = TypeVar("T")

#: Seconds a call waits for its answer unless told otherwise.
DEFAULT_TIMEOUT: Final = 30.0

_RECV_SIZE: Final = 65536


class _Default:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<client default>"


#: "Use the client's own timeout" (``None`` means "wait forever").
_DEFAULT: Final = _Default()


def typed_result(value: Any, result_type: type[T], method: str) -> T:
    """Convert a decoded ``result`` to ``result_type``; a mismatch is a
    :class:`ProtocolViolation` naming the method and the field."""
    try:
        return msgspec.convert(value, result_type)
    except msgspec.ValidationError as exc:
        raise ProtocolViolation(f"routerd's answer to {method!r} does not fit: {exc}") from None


def _streaming_error(method: str) -> ProtocolViolation:
    return ProtocolViolation(f"method {method!r} answers with a stream; use stream() for it")


class _ClientCommon:
    """What the blocking and the trio client share: who they are, and the ``hello``
    exchange around their own ``call``."""

    def __init__(
        self,
        path: str | None,
        timeout: float | None,
        client_name: str,
        client_version: str,
        agent: AgentInfo | None,
    ) -> None:
        self.path: str = path if path is not None else default_socket_path()
        self.timeout = timeout
        self.client_info = ClientInfo(name=client_name, version=client_version)
        self.agent = agent
        #: The daemon's answer to the last ``hello``, if any.
        self.hello_result: HelloResult | None = None
        #: Connection-level error replies (``error`` frames with a nil id), oldest first.
        self.connection_errors: deque[RemoteError] = deque(maxlen=16)
        self._conn = ClientConnection()

    def _hello_params(self, agent: AgentInfo | None, client: ClientInfo | None) -> HelloParams:
        if agent is None:
            agent = self.agent if self.agent is not None else detect_agent()
        return HelloParams(protocol=PROTOCOL_VERSION, client=client or self.client_info,
                           agent=agent)  # fmt: skip

    def _hello_done(self, result: HelloResult) -> HelloResult:
        self.hello_result = result
        self._conn.max_send_size = result.max_frame_size
        return result


class Client(_ClientCommon):
    """A blocking connection to routerd.

    ``Client(path=None, *, timeout=30.0, client_name="routerd-client", client_version=...,
    agent=None, hello=True)`` connects at once; ``path`` defaults to
    :func:`~routerd_client.paths.default_socket_path`. Unless ``hello`` is false it then sends
    ``hello`` (with ``agent``, detected from the environment when ``None``) and keeps the answer
    in :attr:`hello_result`.

    ``timeout`` (seconds, ``None`` for no limit) bounds connecting and each call's wait for its
    answer; on a stream it bounds the wait for each next event.

    Raises :class:`DaemonUnreachable` when nothing accepts the connection, and whatever
    ``hello`` raises. Use as a context manager, or call :meth:`close`.
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
    ) -> None:
        super().__init__(path, timeout, client_name, client_version, agent)
        self._inbox: dict[int, deque[ConnEvent]] = {}
        self._sock: Transport | None = self._connect()
        if hello:
            try:
                self.hello()
            except BaseException:
                self.close()
                raise

    def _connect(self) -> Transport:
        if sys.platform == "win32":  # pragma: no cover - not yet run on Windows (operations.md)
            if not is_pipe_name(self.path):
                raise DaemonUnreachable(self.path, f"not a named pipe ({PIPE_PREFIX}NAME)")
            try:
                return connect_pipe(self.path, self.timeout)
            except OSError as exc:
                raise DaemonUnreachable(self.path, describe_pipe_error(exc)) from None
        if not hasattr(socket, "AF_UNIX"):  # pragma: no cover
            raise DaemonUnreachable(self.path, "Unix sockets are not available on this system")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise DaemonUnreachable(self.path, describe_connect_error(self.path, exc)) from None
        return sock

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._sock is None

    def close(self) -> None:
        """Close the connection (idempotent). The daemon cancels what is still in flight."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._dispatch(self._conn.connection_closed("the client closed the connection"))

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- methods -------------------------------------------------------------------------------

    def hello(
        self, *, agent: AgentInfo | None = None, client: ClientInfo | None = None
    ) -> HelloResult:
        """Identify this client and its coding agent; return the daemon's identity and limits.

        Raises :class:`~routerd_client.errors.UnsupportedVersion` if the daemon speaks another
        major protocol version.
        """
        params = self._hello_params(agent, client)
        return self._hello_done(self.call("hello", params, HelloResult))

    def ping(self) -> PingResult:
        """The cheapest round trip."""
        return self.call("ping", None, PingResult)

    def status(self) -> StatusResult:
        """The daemon's status: version, uptime, configuration, counters, components."""
        return self.call("status", None, StatusResult)

    def reload(self) -> ReloadResult:
        """Re-read and apply the daemon's configuration file (``config.reload``).

        Raises :class:`~routerd_client.errors.BadConfig` (the old configuration stays) when the
        file is invalid; its message names the file, the key and the problem.
        """
        return self.call("config.reload", None, ReloadResult)

    @overload
    def call(
        self,
        method: str,
        params: Mapping[str, Any] | msgspec.Struct | None = None,
        result_type: None = None,
        *,
        timeout: float | _Default | None = _DEFAULT,
    ) -> Any: ...

    @overload
    def call(
        self,
        method: str,
        params: Mapping[str, Any] | msgspec.Struct | None,
        result_type: type[T],
        *,
        timeout: float | _Default | None = _DEFAULT,
    ) -> T: ...

    def call(
        self,
        method: str,
        params: Mapping[str, Any] | msgspec.Struct | None = None,
        result_type: type[Any] | None = None,
        *,
        timeout: float | _Default | None = _DEFAULT,
    ) -> Any:
        """Call ``method`` with ``params`` and return its result: decoded msgpack as it came,
        or converted to ``result_type`` (a msgspec Struct, say).

        Raises the :class:`~routerd_client.errors.RemoteError` subclass for the daemon's error
        code, :class:`RequestTimeout` when no answer came in time (the request is cancelled),
        :class:`ConnectionLost`, or :class:`ProtocolViolation` (also when the method streams).
        """
        request_id = self._start(method, params)
        deadline = self._deadline(timeout)
        try:
            event = self._next_event(request_id, deadline)
        except BaseException:
            self._abandon(request_id)
            raise
        if isinstance(event, Reply):
            del self._inbox[request_id]
            if result_type is None:
                return event.result
            return typed_result(event.result, result_type, method)
        if isinstance(event, ErrorReply):
            del self._inbox[request_id]
            raise event.error
        self._abandon(request_id)
        raise _streaming_error(method)

    def stream(
        self,
        method: str,
        params: Mapping[str, Any] | msgspec.Struct | None = None,
        *,
        timeout: float | _Default | None = _DEFAULT,
    ) -> Stream:
        """Call a streaming ``method``; return a :class:`Stream` of its events.

        ``timeout`` bounds the wait for each next event (default: the client's). Close the
        stream (or leave its ``with`` block, or stop iterating and drop it) to cancel the request
        early.
        """
        request_id = self._start(method, params)
        per_event = self.timeout if isinstance(timeout, _Default) else timeout
        return Stream(self, request_id, method, per_event)

    # --- machinery -----------------------------------------------------------------------------

    def _deadline(self, timeout: float | _Default | None) -> float | None:
        if isinstance(timeout, _Default):
            timeout = self.timeout
        return None if timeout is None else time.monotonic() + timeout

    def _start(self, method: str, params: Any) -> int:
        # Once the socket is gone the connection has ended, and request() raises why.
        request_id, data = self._conn.request(method, params)
        self._inbox[request_id] = deque()
        self._send(data)
        return request_id

    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise ConnectionLost("the client closed the connection")
        try:
            sock.sendall(data)
        except TimeoutError:
            # Part of a frame may have gone out: the byte stream can no longer be trusted.
            reason = "timed out writing to routerd (it is not reading)"
            self._lose(reason)
            raise ConnectionLost(reason) from None
        except OSError as exc:
            reason = f"the connection to routerd broke: {exc.strerror or exc}"
            self._lose(reason)
            raise ConnectionLost(reason) from None

    def _lose(self, reason: str | None) -> None:
        """The connection is unusable: close the socket and fail everything in flight."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._dispatch(self._conn.connection_closed(reason))

    def _abandon(self, request_id: int) -> None:
        """Stop waiting for ``request_id``; cancel it if it is still in flight (best effort)."""
        self._inbox.pop(request_id, None)
        data = self._conn.cancel(request_id)
        if data and self._sock is not None:
            try:
                self._send(data)
            except ConnectionLost:
                pass

    def _next_event(self, request_id: int, deadline: float | None) -> ConnEvent:
        """Read from the socket until ``request_id`` has an event; return it."""
        box = self._inbox[request_id]
        while not box:
            sock = self._sock
            if sock is None:  # closed by the client (every box got its ErrorReply then)
                raise ConnectionLost("the client closed the connection")
            if deadline is None:
                sock.settimeout(None)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RequestTimeout(self._timeout_message(request_id))
                sock.settimeout(left)
            try:
                data = sock.recv(_RECV_SIZE)
            except TimeoutError:
                raise RequestTimeout(self._timeout_message(request_id)) from None
            except OSError as exc:
                self._lose(f"the connection to routerd broke: {exc.strerror or exc}")
                continue
            events = self._conn.receive_data(data)
            if not data:
                sock.close()
                self._sock = None
            self._dispatch(events)
        return box.popleft()

    def _timeout_message(self, request_id: int) -> str:
        method = self._conn.method_of(request_id) or "request"
        return f"routerd sent no answer to {method!r} in time"

    def _dispatch(self, events: list[ConnEvent]) -> None:
        for event in events:
            if isinstance(event, ConnectionErrorEvent):
                self.connection_errors.append(event.error)
            elif isinstance(event, ConnectionBroken):
                sock, self._sock = self._sock, None
                if sock is not None:
                    sock.close()
            else:
                box = self._inbox.get(event.id)
                if box is not None:  # else: abandoned; its late frames are dropped
                    box.append(event)


class Stream:
    """The events of one streaming request, as an iterator of :class:`StreamEvent`.

    Iteration stops at the stream's ``end`` (its data is then in :attr:`end_data`); an
    ``error`` frame is raised as its exception. :meth:`close` (also on leaving a ``with``
    block, or when the stream is dropped unfinished) sends ``cancel``.
    """

    def __init__(self, client: Client, request_id: int, method: str, timeout: float | None):
        self.id = request_id
        self.method = method
        self.end_data: Any = None
        #: Set if a non-streaming method answered with a ``result`` instead of events.
        self.result: Any = None
        self._client: Client | None = client
        self._timeout = timeout
        self._done = False

    def __iter__(self) -> Iterator[StreamEvent]:
        return self

    def __next__(self) -> StreamEvent:
        client = self._client
        if self._done or client is None:
            raise StopIteration
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        try:
            event = client._next_event(self.id, deadline)
        except BaseException:
            self.close()
            raise
        if isinstance(event, StreamEvent):
            return event
        self._finish()
        if isinstance(event, StreamEnd):
            self.end_data = event.data
            raise StopIteration
        if isinstance(event, Reply):
            self.result = event.result
            raise StopIteration
        if isinstance(event, ErrorReply):
            raise event.error
        raise ProtocolViolation(f"unexpected event {event!r}")  # pragma: no cover

    @property
    def done(self) -> bool:
        return self._done

    def _finish(self) -> None:
        self._done = True
        client, self._client = self._client, None
        if client is not None:
            client._inbox.pop(self.id, None)

    def close(self) -> None:
        """Stop the stream: cancel the request if it is still running. Idempotent."""
        if self._done:
            return
        self._done = True
        client, self._client = self._client, None
        if client is not None:
            client._abandon(self.id)

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A stream dropped mid-way (``for ev in client.stream(...): break``) must not keep the
        # daemon streaming into a buffer nobody reads.
        if not self._done and self._client is not None:
            try:
                self.close()
            except Exception:
                pass
