"""Run one chat request on one model server and stream routerd's events back.

``run_chat(client, target, request, timeouts)`` is an async generator of
:data:`~routerd.core.streams.StreamEvent`. What to send and how to read the answer are decided
by the pure core (``routerd.core.chat.plan_chat``, ``routerd.core.chat_answer.new_decoder``);
this module only moves the bytes, keeps the clocks and translates httpx's exceptions.

Contract:

* The last event is exactly one of ``Done`` (success, with time to first token and tokens/s)
  or ``StreamError``; nothing follows it. Content events (``Chunk``, ``Reasoning``,
  ``ToolCallDelta``) and ``ModelReported``/``Usage``/``Finish`` come as the server sends them.
* Failures are values, never exceptions: refused, timeouts, HTTP errors, garbage, truncation
  all arrive as a ``StreamError``. Only cancellation (and bugs) raise.
* Timeouts: ``connect`` through the client; ``first_token`` is a deadline from sending the request
  to the first content event (response headers included); ``idle`` bounds each read after
  that. Time the consumer spends between events does not count against ``idle``.
* The upstream request is closed at once when the generator is closed or cancelled: use
  ``async with contextlib.aclosing(run_chat(...)) as events`` so that breaking out of the loop
  closes it immediately (the server sees the disconnect and stops generating).
* The connection is let go before ``Done`` is yielded, and letting go never holds up the
  answer: what may follow the answer's end marker is read in the background (lean client)
  or within ``DRAIN_GRACE`` (httpx), to keep the connection alive.
* The client is the caller's: an ``httpx.AsyncClient`` (anything, in tests) or a
  :class:`~routerd.shell.backends.upstream.ChatTransport` (the daemon's ``WireTransport``
  over ``routerd.shell.http``'s egress policy); this module never creates one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Protocol

import httpx
import trio

from routerd.core.chat import ChatRequest, ChatTarget, Framing, plan_chat
from routerd.core.chat_answer import new_decoder
from routerd.core.chat_decode import Decoder
from routerd.core.chat_outcome import StreamTally, http_failure
from routerd.core.fallback import Timeouts
from routerd.core.streams import StreamError, StreamEvent

from .errors import before_answer
from .upstream import CLOSE_GRACE, ChatTransport, HttpxTransport, Upstream, read_some
from .wire import DRAIN_GRACE

__all__ = [
    "ChatBackend",
    "HttpChatBackend",
    "run_chat",
    "ERROR_BODY_MAX",
    "CLOSE_GRACE",
    "DRAIN_GRACE",
]

#: The most of an error answer's body read to classify it (bytes).
ERROR_BODY_MAX = 64 * 1024


class ChatBackend(Protocol):
    """Runs chat requests: the seam the route executor depends on (fakes implement it too)."""

    def run_chat(
        self,
        target: ChatTarget,
        request: ChatRequest,
        timeouts: Timeouts,
        *,
        first_token_deadline: float | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Events of one request (see ``run_chat``)."""
        ...


class HttpChatBackend:
    """:class:`ChatBackend` over HTTP with the given client or transport."""

    def __init__(self, client: httpx.AsyncClient | ChatTransport) -> None:
        self._transport = _transport(client)

    def run_chat(
        self,
        target: ChatTarget,
        request: ChatRequest,
        timeouts: Timeouts,
        *,
        first_token_deadline: float | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        return run_chat(
            self._transport, target, request, timeouts, first_token_deadline=first_token_deadline,
            on_sent=on_sent,
        )


def _transport(client: httpx.AsyncClient | ChatTransport) -> ChatTransport:
    return HttpxTransport(client) if isinstance(client, httpx.AsyncClient) else client


async def run_chat(
    client: httpx.AsyncClient | ChatTransport,
    target: ChatTarget,
    request: ChatRequest,
    timeouts: Timeouts,
    *,
    first_token_deadline: float | None = None,
    on_sent: Callable[[], None] | None = None,
) -> AsyncGenerator[StreamEvent, None]:
    """Send ``request`` to ``target`` through ``client`` (an httpx client or a
    :class:`~routerd.shell.backends.upstream.ChatTransport`) and yield routerd's events
    (module docstring). ``on_sent`` is called once the request is on its way (see
    ``ChatTransport.open``).

    ``timeouts.overall`` is not used here; pass ``first_token_deadline`` (trio time, e.g.
    ``fallback.first_byte_deadline(...)``) to end the wait for the first token earlier than
    ``timeouts.first_token`` after sending.
    """
    call = plan_chat(target, request)
    if isinstance(call, StreamError):
        yield call
        return
    transport = _transport(client)
    started = trio.current_time()
    first_deadline = started + timeouts.first_token
    if first_token_deadline is not None:
        first_deadline = min(first_deadline, first_token_deadline)
    upstream: Upstream | None = None
    failure: StreamError | None = None
    with trio.move_on_at(first_deadline) as waiting:
        try:
            upstream = await transport.open(call, timeouts, on_sent)
        except (httpx.RequestError, httpx.InvalidURL) as exc:
            failure = before_answer(exc, call.url)
    if waiting.cancelled_caught:
        failure = StreamError(
            "timeout_first_token", f"no answer within {first_deadline - started:.3g} s"
        )
    if upstream is None:
        yield failure or StreamError("refused", f"no answer from {call.url}")
        return
    chunks = aiter(upstream)
    ended_well = False
    try:
        if not 200 <= upstream.status_code < 300:
            body = await read_some(chunks, ERROR_BODY_MAX, timeouts.idle)
            yield http_failure(upstream.status_code, body)
            return
        decoder = new_decoder(target.flavor, _framing(call.framing, upstream))
        tally = StreamTally(started)
        async with aclosing(_events(chunks, decoder, tally, timeouts, first_deadline)) as events:
            async for event in events:
                yield event
                if isinstance(event, StreamError):
                    return
        ended_well = True
        done = tally.done(trio.current_time())
        # Let go of the connection before the last event: the consumer may take its time
        # with it, and the connection is not needed for it.
        await upstream.aclose(drain=True)
        upstream = None
        yield done
    finally:
        if upstream is not None:
            await upstream.aclose(drain=ended_well)


def _framing(planned: Framing, upstream: Upstream) -> Framing:
    """The planned framing, unless the server ignored ``stream`` and answered plain JSON."""
    media = upstream.header("content-type").split(";")[0].strip().lower()
    return "json" if media == "application/json" else planned


async def _events(
    chunks: AsyncIterator[bytes],
    decoder: Decoder,
    tally: StreamTally,
    timeouts: Timeouts,
    first_deadline: float,
) -> AsyncGenerator[StreamEvent, None]:
    """Decoded events of the answer body, with timeouts; ends with a ``StreamError`` on
    failure (the caller adds ``Done`` otherwise)."""
    broken: str | None = None
    while not decoder.finished:
        waiting_first = tally.first_token_at is None
        deadline = first_deadline if waiting_first else trio.current_time() + timeouts.idle
        data: bytes | None = None
        with trio.move_on_at(deadline) as scope:
            try:
                data = await anext(chunks, None)
            except httpx.RequestError as exc:
                broken = " ".join(str(exc).split()) or type(exc).__name__
        if scope.cancelled_caught:
            if waiting_first:
                yield StreamError(
                    "timeout_first_token",
                    f"no first token within {first_deadline - tally.started:.3g} s",
                )
            else:
                yield StreamError("timeout_idle", f"no data for {timeouts.idle:g} s mid-answer")
            return
        if data is None:
            break
        now = trio.current_time()
        for event in decoder.feed_iter(data):
            tally.observe(event, now)
            yield event
    now = trio.current_time()
    for event in decoder.close():
        if isinstance(event, StreamError) and broken is not None:
            event = StreamError(event.kind, f"{event.message}; the connection broke: {broken}")
        tally.observe(event, now)
        yield event
