"""One client connection: read frames, run requests concurrently, write replies.

Per connection there is one reader (this module's ``run``), one writer (``Outbound.run``) and
one task per request in flight, each in its own cancel scope inside the connection's nursery
(methods registered ``inline`` never wait, and run in the reader itself).

Invariants (from docs/protocol.md):

* Every request with a valid id gets exactly one final frame while the connection is usable:
  ``result``, ``error`` or an ``end`` event. A request that ends because the connection went
  away (EOF, broken pipe, a fatal framing error) gets none.
* Requests leave ``_requests`` when their final frame is queued, so the client may reuse an id as
  soon as it has read the final frame.
* The reader decodes no new frame while the outbound backlog is over the high-water mark, and
  the parser never holds more than one frame plus one receive chunk. So whatever the client
  does, a connection's memory stays under: one frame + one receive chunk + the high-water mark
  + one final frame per request in flight (``max_in_flight``) + ``stream_queue`` events per
  stream.
* Bad input produces an ``error`` frame and never an exception out of ``run``; only a broken
  length prefix closes the connection.
"""

from __future__ import annotations

import logging
import socket
import struct
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from routerd.core.config import DaemonConfig
from routerd_client import framing
from routerd_client.protocol import (
    MAX_ID,
    Envelope,
    ErrorCode,
    ParamsError,
    decode_params,
)
from routerd_client.trio_pipe import PipeStream

from .dispatch import ConnectionInfo, RequestContext
from .osdeps import SELF_UID
from .outbound import DEFAULT_HIGH_WATER, Outbound
from .requests import INTERNAL_MESSAGE, InFlight, RequestStream, error_frame, invoke

if TYPE_CHECKING:
    from .server import Server

__all__ = ["Connection", "RECEIVE_SIZE", "CLOSE_FLUSH_TIMEOUT"]

log = logging.getLogger(__name__)

#: Bytes asked of the kernel per receive.
RECEIVE_SIZE = 64 * 1024

#: Seconds allowed to write a last ``error`` frame before closing after a framing error.
CLOSE_FLUSH_TIMEOUT = 5.0

_envelope_decoder = msgspec.msgpack.Decoder(Envelope)


class _IdOnly(msgspec.Struct):
    id: Any = None


_id_decoder = msgspec.msgpack.Decoder(_IdOnly)


def _valid_id(value: Any) -> bool:
    # bool is an int subclass; msgpack true is not an id.
    return type(value) is int and 0 <= value < MAX_ID


def _salvage_id(body: bytes) -> int | None:
    """The id of a map that failed envelope validation, if it has a usable one."""
    try:
        rid = _id_decoder.decode(body).id
    except (msgspec.DecodeError, RecursionError):
        return None
    return rid if _valid_id(rid) else None


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _peer_credentials(stream: trio.abc.Stream) -> tuple[int | None, int | None, int | None]:
    """(pid, uid, gid) of the peer. A Unix socket says with SO_PEERCRED (None without it: an
    unknown user). A named pipe gives the pid; its security descriptor admitted only the
    daemon's own user, whose uid there is the stand-in ``osdeps.SELF_UID`` (no gid: Windows
    has no groups)."""
    if isinstance(stream, PipeStream):
        return stream.peer_pid, SELF_UID, None
    if not isinstance(stream, trio.SocketStream):
        return None, None, None
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None, None, None
    try:
        raw = stream.socket.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    except OSError:
        return None, None, None
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


class Connection:
    """Serves one accepted stream (a Unix socket's or a named pipe's) until the peer goes
    away or the daemon closes it."""

    def __init__(
        self,
        server: Server,
        stream: trio.abc.Stream,
        info: ConnectionInfo,
        *,
        high_water: int = DEFAULT_HIGH_WATER,
    ) -> None:
        self._server = server
        self._app = server.app
        self._stream = stream
        self.info = info
        self.info.peer_pid, self.info.peer_uid, self.info.peer_gid = _peer_credentials(stream)
        self.info.max_frame_size = self.limits.max_frame_size
        self._parser = framing.FrameParser(self.info.max_frame_size)
        # A socket's descriptor lets small replies skip the writer task (Outbound.put).
        fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None
        self.outbound = Outbound(stream, high_water, fd=fd)
        self._requests: dict[int, InFlight] = {}
        self._nursery: trio.Nursery | None = None
        self._spawned = False  # a request task was started since the reader last yielded

    @property
    def limits(self) -> DaemonConfig:
        """The daemon section of the configuration in force (read live: reloads apply)."""
        return self._app.config.daemon

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until EOF, a broken socket, a fatal framing error or cancellation."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._write)
                await self._read()
                self.cancel_requests(None)
                nursery.cancel_scope.cancel()
        finally:
            self.outbound.close()
            await trio.aclose_forcefully(self._stream)

    async def _write(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.outbound.run(task_status=task_status)
        # A write failed: the peer is gone, nothing more can reach it.
        self.cancel_requests(None)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def cancel_requests(self, code: str | None, message: str = "") -> None:
        """Cancel every request in flight; each ends with error ``code`` (``None``: no frame)."""
        for req in list(self._requests.values()):
            req.cancel(code, message)

    async def wait_flushed(self) -> None:
        await self.outbound.wait_flushed()

    # --- reading ------------------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            try:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data:
                return  # EOF: the client closed; everything in flight is cancelled
            self._parser.feed(data)
            while True:
                # Frames are handled without yielding (receive_some is the checkpoint), except
                # to let the writer drain a large backlog, to let the requests in flight
                # finish before a new one would be answered "busy", or to let a request task
                # just started run before the next frame (below).
                if self.outbound.over_high_water:
                    await self.outbound.wait_writable()
                if len(self._requests) >= self.limits.max_in_flight:
                    await trio.lowlevel.checkpoint()
                try:
                    body = self._parser.next_frame()
                except framing.FrameTooLarge as exc:
                    await self._fatal(ErrorCode.FRAME_TOO_LARGE, str(exc))
                    return
                except framing.FrameError:
                    await self._fatal(ErrorCode.BAD_FRAME, "frame length is zero")
                    return
                if body is framing.NEED_DATA:
                    break
                assert isinstance(body, bytes)
                try:
                    inline = self._on_frame(body)
                except Exception:
                    # A bug here must cost one frame, not the connection or the daemon.
                    log.exception("connection %d: failed to handle a frame", self.info.id)
                    self._send_error(None, ErrorCode.INTERNAL, INTERNAL_MESSAGE)
                    continue
                if inline is not None:
                    # A method registered inline=True never waits: run it right here, which
                    # saves a task and a trip through the scheduler (ping latency).
                    await self._run_request(*inline)
                elif self._spawned:
                    self._spawned = False
                    if self._parser.buffered:
                        # More frames wait: let the request just started run (up to its first
                        # wait) before the next one starts, so that a burst is served as it
                        # comes rather than all of it prepared first and answered last.
                        await trio.lowlevel.cancel_shielded_checkpoint()

    async def _fatal(self, code: str, message: str) -> None:
        """The byte stream is out of sync: say why, then let ``run`` close the connection."""
        self.cancel_requests(None)
        self._send_error(None, code, message + "; closing the connection")
        with trio.move_on_after(CLOSE_FLUSH_TIMEOUT):
            await self.outbound.wait_flushed()

    def _on_frame(self, body: bytes) -> tuple[InFlight, Any] | None:
        """Handle one frame; return an inline request for the caller to run, if any."""
        try:
            env = _envelope_decoder.decode(body)
        except msgspec.ValidationError as exc:
            # Valid msgpack, but not a map with a string "type".
            self._send_error(
                _salvage_id(body),
                ErrorCode.BAD_REQUEST,
                f"a message must be a map with a string 'type': {exc}",
            )
            return None
        except msgspec.DecodeError:
            self._send_error(None, ErrorCode.BAD_FRAME, "frame body is not valid msgpack")
            return None
        except RecursionError:  # msgspec's answer to very deep nesting
            self._send_error(None, ErrorCode.BAD_FRAME, "frame body is nested too deeply")
            return None
        rid: int | None = env.id if _valid_id(env.id) else None
        if env.type == "request":
            if rid is None:
                self._send_error(
                    None, ErrorCode.BAD_REQUEST,
                    "a request needs an 'id': an integer from 0 to 2**53 - 1",
                )
            elif not isinstance(env.method, str):
                self._app.counters.request_received(None)
                self._reply_error(rid, ErrorCode.BAD_REQUEST, "a request needs a string 'method'")
            else:
                return self._on_request(rid, env.method, env.params)
        elif env.type == "cancel":
            if rid is None:
                self._send_error(
                    None, ErrorCode.BAD_REQUEST,
                    "a cancel needs an 'id': an integer from 0 to 2**53 - 1",
                )
            elif (req := self._requests.get(rid)) is not None:
                req.cancel(ErrorCode.CANCELLED, "request cancelled by the client")
        else:
            self._send_error(
                rid, ErrorCode.BAD_REQUEST,
                f"unknown message type {_short(env.type)}; expected 'request' or 'cancel'",
            )
        return None

    def _on_request(
        self, rid: int, name: str, raw_params: msgspec.Raw
    ) -> tuple[InFlight, Any] | None:
        """Answer at once, start a request task, or return an inline request to run."""
        method = self._server.registry.get(name)
        self._app.counters.request_received(method.name if method is not None else None)
        if rid in self._requests:
            self._reply_error(
                rid, ErrorCode.BAD_REQUEST, f"request id {rid} is already in flight",
                {"duplicate": True},
            )
            return None
        if method is None:
            self._reply_error(rid, ErrorCode.UNKNOWN_METHOD, f"unknown method {_short(name)}")
            return None
        access = self._app.access
        if access is not None and (refusal := access.authorize(self.info, method.name)):
            self._reply_error(rid, ErrorCode.FORBIDDEN, refusal)
            return None
        if self._server.draining:
            self._reply_error(rid, ErrorCode.UNAVAILABLE, "routerd is shutting down")
            return None
        limit = self.limits.max_in_flight
        if len(self._requests) >= limit:
            self._reply_error(
                rid, ErrorCode.BUSY,
                f"too many requests in flight on this connection (limit {limit})",
            )
            return None
        try:
            params = decode_params(raw_params, method.params)
        except ParamsError as exc:
            self._reply_error(
                rid, ErrorCode.BAD_REQUEST, f"invalid params for {method.name!r}: {exc}"
            )
            return None
        req = InFlight(rid, method, self.limits.stream_queue)
        self._requests[rid] = req
        self._app.counters.request_started()
        self._server.request_started()
        if method.inline:
            return req, params
        assert self._nursery is not None
        self._nursery.start_soon(self._run_request, req, params)
        self._spawned = True
        return None

    # --- running requests ---------------------------------------------------------------------

    async def _run_request(self, req: InFlight, params: Any) -> None:
        final: bytes | None = None
        code: str | None = None
        try:
            ctx = RequestContext(self._app, self.info, req.id, req.method.name)
            stream = None
            if req.method.streaming:
                timeout = self.limits.slow_consumer_timeout
                stream = RequestStream(req, self.outbound, timeout)
            if req.method.inline:
                # It never waits, so nothing can cancel it midway: no cancel scope to enter.
                final, code = await invoke(req, ctx, params, stream)
            else:
                with req.scope:
                    final, code = await invoke(req, ctx, params, stream)
            if final is None and req.cancel_code is not None:
                code = req.cancel_code
                final = error_frame(req.id, code, req.cancel_message)
        finally:
            req.finished = True
            if self._requests.get(req.id) is req:
                del self._requests[req.id]
            self._app.counters.request_finished()
            self._server.request_finished()
            if final is not None and not req.silent:
                self._app.counters.request_outcome(code)
                if code is not None:
                    self._app.counters.error_sent(code)
                self.outbound.put(final)
            else:
                self._app.counters.request_dropped()

    # --- replies ------------------------------------------------------------------------------

    def _send_error(
        self, rid: int | None, code: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        self._app.counters.error_sent(code)
        self.outbound.put(error_frame(rid, code, message, data))

    def _reply_error(
        self, rid: int, code: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        """Answer a request that never ran (it was not in flight)."""
        self._app.counters.request_outcome(code)
        self._send_error(rid, code, message, data)
