"""One request in flight: its cancel scope, its stream credits, and running its handler.

Invariants:

* A request is cancelled at most once with a code: the first ``cancel`` decides the final
  error (``cancelled``, ``slow_consumer``, ``unavailable``) or that there is none (peer gone).
* A stream has at most ``stream_queue`` event frames queued; ``emit`` waits for a credit and,
  after ``slow_consumer_timeout`` seconds without one, cancels the request with
  ``slow_consumer``. ``emit`` is a cancellation point; it lets other tasks run after an
  event it wrote at once, and not after one it left for later (``flush=False``).
* :func:`invoke` turns every outcome but cancellation into one encoded final frame; only a
  :class:`~routerd.core.errors.RouterdError` reaches the client with its own message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import trio

from routerd.core.errors import RouterdError
from routerd_client import framing
from routerd_client.protocol import END_EVENT, Error, ErrorCode, Event, Result, encode

from .dispatch import Method, RequestContext
from .outbound import Outbound

__all__ = ["InFlight", "RequestStream", "invoke", "error_frame", "INTERNAL_MESSAGE"]

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error in routerd; the daemon log has the details"


def error_frame(
    rid: int | None, code: str, message: str, data: dict[str, Any] | None = None
) -> bytes:
    """An encoded ``error`` frame, length prefix included."""
    return framing.frame(encode(Error(id=rid, code=code, message=message, data=data)))


class InFlight:
    """A request whose handler runs (or is about to) and has no final frame yet."""

    __slots__ = (
        "cancel_code",
        "cancel_message",
        "credits",
        "finished",
        "id",
        "method",
        "scope",
        "silent",
    )

    def __init__(self, rid: int, method: Method, stream_queue: int) -> None:
        self.id = rid
        self.method = method
        self.scope = trio.CancelScope()
        self.credits = trio.Semaphore(stream_queue) if method.streaming else None
        self.cancel_code: str | None = None
        self.cancel_message = ""
        self.silent = False
        self.finished = False

    def cancel(self, code: str | None, message: str = "") -> None:
        """Cancel with final error ``code``; ``None`` means no final frame (peer gone)."""
        if self.cancel_code is None and not self.silent:
            if code is None:
                self.silent = True
            else:
                self.cancel_code = code
                self.cancel_message = message
        self.scope.cancel()


class RequestStream:
    """The ``dispatch.Stream`` a streaming handler emits into."""

    __slots__ = ("_outbound", "_req", "_timeout")

    def __init__(self, req: InFlight, outbound: Outbound, slow_consumer_timeout: float) -> None:
        self._req = req
        self._outbound = outbound
        self._timeout = slow_consumer_timeout

    async def emit(self, event: str, data: Any = None, *, flush: bool = True) -> None:
        req = self._req
        if event == END_EVENT:
            raise ValueError("'end' is sent by returning from the handler, not by emit")
        if req.finished:
            raise RuntimeError(f"request {req.id} has already ended")
        body = framing.frame(encode(Event(id=req.id, event=event, data=data)))
        credits = req.credits
        assert credits is not None
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            credits.acquire_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(self._timeout) as waited:
                await credits.acquire()
            if waited.cancelled_caught:
                req.cancel(
                    ErrorCode.SLOW_CONSUMER,
                    f"the client did not read stream {req.id} for {self._timeout:g} s",
                )
                await trio.lowlevel.checkpoint()  # raises Cancelled: our scope is cancelled
                raise RuntimeError("slow consumer cancellation was shielded") from None
        self._outbound.put(body, credits, soon=not flush)
        if flush:
            # After the write, not before it: the event is not held up by other tasks.
            await trio.lowlevel.cancel_shielded_checkpoint()


    def emit_nowait(self, event: str, data: Any = None) -> bool:
        """Queue one non-final ``event`` frame to go out with the next one (``flush=False``),
        without waiting; False (nothing queued) when the stream has no room for it now."""
        req = self._req
        if event == END_EVENT:
            raise ValueError("'end' is sent by returning from the handler, not by emit")
        if req.finished:
            raise RuntimeError(f"request {req.id} has already ended")
        credits = req.credits
        assert credits is not None
        try:
            credits.acquire_nowait()
        except trio.WouldBlock:
            return False
        body = framing.frame(encode(Event(id=req.id, event=event, data=data)))
        self._outbound.put(body, credits, soon=True)
        return True


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            yield from _leaves(sub)
    else:
        yield exc


def _log_internal(ctx: RequestContext, exc: BaseException) -> None:
    log.error(
        "method %r (request %d on connection %d) failed",
        ctx.method, ctx.request_id, ctx.conn.id, exc_info=exc,
    )


async def invoke(
    req: InFlight, ctx: RequestContext, params: Any, stream: RequestStream | None
) -> tuple[bytes, str | None]:
    """Run the handler; return its encoded final frame and error code (``None``: success).

    ``trio.Cancelled`` propagates; every other exception becomes an error frame. An exception
    group made only of RouterdErrors answers with the first of them.
    """
    method = req.method
    try:
        if method.streaming:
            end = await method.handler(ctx, params, stream)
            return framing.frame(encode(Event(id=req.id, event=END_EVENT, data=end))), None
        result = await method.handler(ctx, params)
        return framing.frame(encode(Result(id=req.id, result=result))), None
    except RouterdError as exc:
        return error_frame(req.id, exc.code, exc.message, exc.data), exc.code
    except BaseExceptionGroup as group:
        cancelled, rest = group.split(trio.Cancelled)
        if rest is None:
            raise
        errors = list(_leaves(rest))
        first = errors[0]
        if not all(isinstance(e, RouterdError) for e in errors):
            _log_internal(ctx, rest)
            first = RouterdError(INTERNAL_MESSAGE)
        if cancelled is not None:
            raise cancelled from None
        assert isinstance(first, RouterdError)
        return error_frame(req.id, first.code, first.message, first.data), first.code
    except Exception as exc:
        _log_internal(ctx, exc)
        return error_frame(req.id, ErrorCode.INTERNAL, INTERNAL_MESSAGE), ErrorCode.INTERNAL
