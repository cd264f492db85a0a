"""The client side of one routerd connection, as a sans-IO state machine.

Bytes from the socket go in through :meth:`ClientConnection.receive_data`; typed events come
out. Requests and cancels come out as bytes for the caller to write. The blocking and the trio
clients share this class and add only the I/O.

Invariants:

* Ids are allocated here: each request gets an integer in ``[0, 2**53)`` that no other request
  in flight holds. An id is in flight from :meth:`request` until its final event.
* Every request in flight ends with exactly one final event: :class:`Reply`,
  :class:`ErrorReply` or :class:`StreamEnd`. :class:`StreamEvent` is never final.
* A frame for an id that is not in flight (never sent, or already finished) breaks the
  connection, as do bytes that are not a valid frame or message: the events that came before
  it are returned, then an :class:`ErrorReply` carrying the :class:`ProtocolViolation` for each
  request still in flight, then :class:`ConnectionBroken`. Nothing further is accepted.
* An ``error`` frame with a nil id belongs to the connection, not to a request, and comes out
  as :class:`ConnectionErrorEvent`; requests in flight carry on.
* :meth:`connection_closed` (or ``receive_data(b"")``) ends every request in flight with an
  :class:`ErrorReply` carrying :class:`ConnectionLost`.
* No I/O, no clocks, no threads: the same calls in give the same events out.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .errors import ConnectionLost, ProtocolViolation, RemoteError, RouterdError, error_from_reply
from .framing import FrameError, FrameParser, frame
from .protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    END_EVENT,
    MAX_ID,
    Cancel,
    Error,
    Event,
    Request,
    Result,
    decode_daemon_message,
    encode,
)

__all__ = [
    "ClientConnection",
    "ConnEvent",
    "Reply",
    "ErrorReply",
    "StreamEvent",
    "StreamEnd",
    "ConnectionErrorEvent",
    "ConnectionBroken",
]


class Reply(msgspec.Struct, frozen=True):
    """Request ``id`` succeeded with ``result`` (final)."""

    id: int
    result: Any


class ErrorReply(msgspec.Struct, frozen=True):
    """Request ``id`` failed (final). ``error`` is the :class:`RemoteError` mapped from the
    daemon's ``error`` frame, or :class:`ConnectionLost` / :class:`ProtocolViolation` when the
    connection ended first. Raise it."""

    id: int
    error: RouterdError


class StreamEvent(msgspec.Struct, frozen=True):
    """One event of the streaming reply to request ``id`` (not final)."""

    id: int
    event: str
    data: Any = None


class StreamEnd(msgspec.Struct, frozen=True):
    """The stream of request ``id`` ended normally (final). ``data`` is the ``end`` event's."""

    id: int
    data: Any = None


class ConnectionErrorEvent(msgspec.Struct, frozen=True):
    """An ``error`` frame with a nil id: a problem with the connection, not with a request
    (a frame the daemon could not decode, ``busy`` at connect, ``frame_too_large``)."""

    error: RemoteError


class ConnectionBroken(msgspec.Struct, frozen=True):
    """The daemon broke the protocol; the connection must be closed. Always the last event."""

    error: ProtocolViolation


ConnEvent = Reply | ErrorReply | StreamEvent | StreamEnd | ConnectionErrorEvent | ConnectionBroken

_EMPTY: Final = b""


class ClientConnection:
    """Sans-IO state of one client connection (see the module docstring for the contract).

    ``max_frame_size`` bounds the frames accepted from the daemon; ``max_send_size`` bounds the
    requests :meth:`request` will build (set it from ``hello``'s ``max_frame_size``).
    """

    __slots__ = (
        "_ended",
        "_last_conn_error",
        "_next_id",
        "_parser",
        "_pending",
        "max_send_size",
    )

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._parser = FrameParser(max_frame_size)
        self._pending: dict[int, str] = {}  # id -> method, for messages that name it
        self._next_id = 1
        self._ended: ConnectionLost | ProtocolViolation | None = None
        self._last_conn_error: RemoteError | None = None
        self.max_send_size = DEFAULT_MAX_FRAME_SIZE

    # --- state ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection has ended (closed, or broken by the daemon)."""
        return self._ended is not None

    @property
    def pending(self) -> frozenset[int]:
        """The ids of the requests in flight."""
        return frozenset(self._pending)

    def is_pending(self, request_id: int) -> bool:
        return request_id in self._pending

    def method_of(self, request_id: int) -> str | None:
        """The method of request ``request_id`` if it is in flight, else ``None``."""
        return self._pending.get(request_id)

    # --- client -> daemon ------------------------------------------------------------------------

    def request(self, method: str, params: Any = None) -> tuple[int, bytes]:
        """Start a request; return its id and the bytes to send.

        ``params`` is a map or a msgspec Struct (``None`` sends no params). Raises the error
        that ended the connection if it has ended, ``ValueError`` if the request would exceed
        ``max_send_size``, and ``TypeError`` if ``params`` cannot be encoded.
        """
        if self._ended is not None:
            raise type(self._ended)(str(self._ended))
        request_id = self._allocate_id()
        msg = Request(id=request_id, method=method) if params is None else Request(
            id=request_id, method=method, params=params
        )
        body = encode(msg)
        if len(body) > self.max_send_size:
            raise ValueError(
                f"request {method!r} is {len(body)} bytes; the daemon accepts at most "
                f"{self.max_send_size}"
            )
        self._pending[request_id] = method
        self._next_id = request_id + 1 if request_id + 1 < MAX_ID else 0
        return request_id, frame(body)

    def cancel(self, request_id: int) -> bytes:
        """Return the bytes that cancel request ``request_id``, or ``b""`` when it is not in
        flight (nothing to send). The request stays in flight until its final event, which
        is normally an :class:`ErrorReply` with code ``cancelled``."""
        if self._ended is not None or request_id not in self._pending:
            return _EMPTY
        return frame(encode(Cancel(id=request_id)))

    def _allocate_id(self) -> int:
        request_id = self._next_id
        while request_id in self._pending:  # only after 2**53 requests: skip ids still in use
            request_id = request_id + 1 if request_id + 1 < MAX_ID else 0
        return request_id

    # --- daemon -> client ------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ConnEvent]:
        """Take bytes received from the daemon; return the events they complete, in order.

        ``b""`` means the daemon closed the connection (as :meth:`connection_closed`). After
        the connection has ended, input is ignored and ``[]`` returned.
        """
        if self._ended is not None:
            return []
        if not data:
            return self.connection_closed()
        events: list[ConnEvent] = []
        try:
            self._parser.feed(data)
            while True:
                body = self._parser.next_frame()
                if not isinstance(body, bytes):
                    break
                events.append(self._handle(body))
        except FrameError as exc:
            events.extend(self._break(ProtocolViolation(f"bad frame from routerd: {exc}")))
        except ProtocolViolation as exc:
            events.extend(self._break(exc))
        return events

    def _handle(self, body: bytes) -> ConnEvent:
        try:
            msg = decode_daemon_message(body)
        except msgspec.DecodeError as exc:
            raise ProtocolViolation(
                f"routerd sent a message this client cannot read: {exc}"
            ) from None
        if isinstance(msg, Error) and msg.id is None:
            err = error_from_reply(msg.code, msg.message, msg.data)
            self._last_conn_error = err
            return ConnectionErrorEvent(err)
        request_id = msg.id
        assert request_id is not None
        if request_id not in self._pending:
            raise ProtocolViolation(
                f"routerd sent a {type(msg).__name__.lower()} frame for id {request_id}, "
                "which is not in flight"
            )
        if isinstance(msg, Event):
            if msg.event != END_EVENT:
                return StreamEvent(request_id, msg.event, msg.data)
            del self._pending[request_id]
            return StreamEnd(request_id, msg.data)
        del self._pending[request_id]
        if isinstance(msg, Result):
            return Reply(request_id, msg.result)
        return ErrorReply(request_id, error_from_reply(msg.code, msg.message, msg.data))

    def _break(self, violation: ProtocolViolation) -> list[ConnEvent]:
        events = self._end(ProtocolViolation, str(violation))
        events.append(ConnectionBroken(violation))
        return events

    def connection_closed(self, reason: str | None = None) -> list[ConnEvent]:
        """The connection is gone. Return an :class:`ErrorReply` for every request in flight,
        carrying a :class:`ConnectionLost` whose message is ``reason`` (for a close by the
        client) or else says the daemon closed it, naming the last connection-level error if
        there was one. Later calls return ``[]``."""
        if self._ended is not None:
            return []
        if reason is None:
            reason = "routerd closed the connection"
            if self._last_conn_error is not None:
                reason += f" after a connection error ({self._last_conn_error})"
            if self._parser.buffered:
                reason += " in the middle of a frame"
        return self._end(ConnectionLost, reason)

    def _end(
        self, kind: type[ConnectionLost] | type[ProtocolViolation], message: str
    ) -> list[ConnEvent]:
        self._ended = kind(message)
        # One exception object per request: each is raised in its own caller's frame.
        events: list[ConnEvent] = [ErrorReply(i, kind(message)) for i in self._pending]
        self._pending.clear()
        return events
