"""The attempt loop: run a route plan's attempts, falling back as ``routerd.core.fallback``
says, and stream the answer to a sink.

Contract of :func:`execute`:

* Each attempt: the service must admit it (a degraded one gets its one trial); the prompt is
  recounted for the attempt's model (exactly, by the server, near the budget's edge: see
  ``fit``) and compacted (in a worker thread) when it exceeds the
  attempt's budget; the ``selected`` event goes out; the request waits for its slot in the
  fair queue (never past the budget's deadline); then it is sent through the
  :class:`~routerd.shell.backends.ChatBackend`.
* A streaming sink's first content event is the first byte: after it, no other model is
  tried, and a failure ends the answer ``incomplete``. A collecting sink (``route.complete``)
  shows the client nothing until the end, so any failure may fall back.
* Every attempt that reached a server reports its outcome to the discovery registry (health)
  and to the statistics (``routerd.shell.stats``), and a success with a prompt count
  calibrates the token estimate of that model. Failures that
  are routerd's own (queue wait, compaction, the egress policy) are not the server's and are
  not reported.
* Cancellation (the client cancelled or went away) propagates at once; leaving the backend's
  generator closes the upstream request, and leaving the queue's slot frees it.
* The model recorded is the one the answer says it came from, not the one asked for.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import trio

from routerd.core import fallback
from routerd.core.chat import ChatRequest, ChatTarget, flavor_for
from routerd.core.chat_outcome import fallback_outcome
from routerd.core.context import Message
from routerd.core.errors import Cancelled, NotFound, RouterdError, Timeout, Unavailable
from routerd.core.fallback import (
    Failed,
    FailedBeforeFirstByte,
    Finished,
    Incomplete,
    Outcome,
    Succeeded,
    TryAttempt,
)
from routerd.core.select import RouteFailure, RoutePlan
from routerd.core.sessions import needs_exact_count, token_family
from routerd.core.streams import (
    Chunk,
    Done,
    Finish,
    ModelReported,
    Reasoning,
    StreamError,
    ToolCallDelta,
    Usage,
)
from routerd.shell.backends import ChatBackend
from routerd_client.protocol_route import (
    FINISH_INCOMPLETE,
    AttemptInfo,
    ChunkEvent,
    RouteEnd,
    SelectedEvent,
    ToolCallEvent,
    ToolCallInfo,
    UsageEvent,
)

from .fit import TOKENIZERS, compact_prompt, exact_prompt
from .prepare import Key, count_prompt, from_core, tools_tokens
from .router import Router, View
from .session import TurnSession

__all__ = ["Sink", "Turn", "Answer", "execute", "failure_error"]

log = logging.getLogger("routerd.routing")


class Sink(Protocol):
    """Where an answer goes. ``streams``: events reach the client as they come (the first
    content event is then the first byte)."""

    @property
    def streams(self) -> bool: ...

    async def emit(self, event: str, data: Any) -> None: ...

    def emit_soon(self, event: str, data: Any) -> bool:
        """Queue a non-content event to go out with what follows, without waiting; False when
        it cannot be done now (the caller then awaits ``emit``)."""
        ...


class _Announce:
    """An attempt's ``selected`` event, sent once: as soon as the request is on its way to
    the model server (building and queueing it then overlaps the server's work, not the
    client's wait), before a wait for a queue slot, and at the latest before the attempt's
    first event or its failure."""

    __slots__ = ("_selected", "_sink", "done")

    def __init__(self, sink: Sink, selected: SelectedEvent) -> None:
        self._sink = sink
        self._selected = selected
        self.done = False

    def sent(self) -> None:
        """The transport's ``on_sent``: queue it without waiting, if the stream has room."""
        if not self.done and self._sink.emit_soon("selected", self._selected):
            self.done = True

    async def ensure(self) -> None:
        if not self.done:
            self.done = True
            await self._sink.emit("selected", self._selected)


@dataclass
class Turn:
    """One prepared request: what to send and the plan to run."""

    client: str  # the connection, for round-robin turns in the queue
    core: list[Message]  # the context, as counted and compacted
    originals: dict[Key, dict[str, Any]]  # the client's messages, sent as they came
    messages: list[dict[str, Any]]  # ``core`` to send, when it needs no compaction
    chat: ChatRequest  # everything but the messages
    plan: RoutePlan
    started_at: float  # trio time of arrival: the overall budget counts from here
    confidence: float | None = None
    serena: dict[str, Any] | None = None
    session: TurnSession | None = None
    session_info: dict[str, Any] | None = None
    session_id: str | None = None
    prompt_tokens: int = 0  # as planned
    summary: tuple[tuple[tuple[str, str], ...], str] | None = None  # a model's, for reuse


@dataclass
class Answer:
    """The answer of the current attempt, as it came (reset for each attempt)."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, ToolCallInfo] = field(default_factory=dict)
    usage: Usage | None = None
    model: str | None = None  # as the answer reported it
    selected: SelectedEvent | None = None

    def reset(self) -> None:
        self.text.clear()
        self.reasoning.clear()
        self.calls.clear()
        self.usage = None
        self.model = None

    def add_call(self, d: ToolCallDelta) -> None:
        call = self.calls.get(d.index)
        if call is None:
            self.calls[d.index] = ToolCallInfo(d.index, d.arguments_delta, d.id, d.name)
        else:
            call.arguments += d.arguments_delta
            call.id = call.id or d.id
            call.name = call.name or d.name


@dataclass
class _Tried:
    """What one attempt came to."""

    outcome: Outcome
    done: Done | None = None
    finish: str | None = None
    egress: bool = False  # the egress policy refused the connection: not the server's doing


def failure_error(failure: RouteFailure) -> RouterdError:
    """The error reply for a request that cannot be planned at all."""
    data = {"reason": failure.code, "explain": list(failure.explain)}
    if failure.code == "unknown_model":
        return NotFound(failure.message, data=data)
    return Unavailable(failure.message, data=data)


def _attempts(failures: tuple[fallback.AttemptRecord, ...]) -> list[AttemptInfo]:
    return [AttemptInfo(r.attempt.service, r.attempt.model, r.error, r.detail) for r in failures]


def _failed_error(step: Failed) -> RouterdError:
    data = {"reason": step.code, "attempts": msgspec.to_builtins(_attempts(step.failures))}
    if step.code == "budget_exhausted":
        return Timeout(step.reason, data=data)
    if step.code == "cancelled":
        return Cancelled(step.reason, data=data)
    return Unavailable(step.reason, data=data)


async def execute(router: Router, view: View, turn: Turn, sink: Sink, answer: Answer) -> RouteEnd:
    """Run ``turn``'s plan (module docstring); return the end record, or raise the
    RouterdError that says why no answer came (``timeout``: the budget ran out;
    ``unavailable``: every model failed)."""
    timeouts = router.timeouts
    state, step = fallback.start(
        turn.plan, started_at=turn.started_at, now=trio.current_time(), timeouts=timeouts
    )
    tried = _Tried(Succeeded())
    previous: str | None = None
    while isinstance(step, TryAttempt):
        tried = await _attempt(router, view, turn, step, sink, answer, previous)
        outcome = tried.outcome
        if isinstance(outcome, FailedBeforeFirstByte):
            previous = f"{step.attempt.candidate.label}: {outcome.error}" + (
                f" ({outcome.detail})" if outcome.detail else ""
            )
            log.info("route attempt %d failed: %s", step.number, previous)
        state, step = fallback.advance(state, outcome, now=trio.current_time(), timeouts=timeouts)
    if isinstance(step, Failed):
        log.warning("route failed: %s", step.reason)
        raise _failed_error(step)
    a = step.attempt
    c = a.candidate
    done = tried.done
    usage = answer.usage
    end = RouteEnd(
        finish_reason=FINISH_INCOMPLETE if isinstance(step, Incomplete) else "stop",
        model=answer.model or c.model,
        requested_model=c.model,
        service=c.service,
        category=turn.plan.category,
        fallback_level=int(a.level),
        attempts=_attempts(state.failures),
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        session_id=turn.session_id,
    )
    if isinstance(step, Incomplete):
        end.reason = step.reason
        log.warning("route ended incomplete: %s", step.reason)
    elif isinstance(step, Finished) and done is not None:
        end.finish_reason = done.finish_reason
        end.first_token_s = done.first_token_s
        end.total_s = done.total_s
        end.tokens_per_second = done.tokens_per_second
        if done.prompt_tokens is not None:
            end.prompt_tokens = done.prompt_tokens
        if done.completion_tokens is not None:
            end.completion_tokens = done.completion_tokens
    return end


def _local(error: fallback.ErrorClass, detail: str) -> _Tried:
    """A failure that is routerd's own: nothing reached the server."""
    return _Tried(FailedBeforeFirstByte(error, detail))


async def _attempt(
    router: Router,
    view: View,
    turn: Turn,
    step: TryAttempt,
    sink: Sink,
    answer: Answer,
    previous: str | None,
) -> _Tried:
    a = step.attempt
    c = a.candidate
    backend = view.backends.get(c.service)
    chat_backend = router.chat
    if backend is None or chat_backend is None or router.registry.admit(c.service) == "refuse":
        return _local("refused", f"service {c.service} takes no requests now")
    family = token_family(c.model)
    calib = router.calibration(c.model)
    tools = tools_tokens(turn.chat.tools, family)
    core, messages = turn.core, turn.messages
    if turn.prompt_tokens <= a.context_budget_tokens and (calib is None or calib.largest <= 1.0):
        # The plan counted with the family of the fewest characters per token: without a
        # calibration that counts higher, its figure bounds this model's, so it fits.
        tokens = turn.prompt_tokens
    else:
        tokens = count_prompt(core, family, calib, tools)
    exact = None
    if (
        backend.kind in TOKENIZERS
        and router.config.sessions.exact_tokenize
        and needs_exact_count(tokens, a.context_budget_tokens)
    ):
        exact = await exact_prompt(router, backend, c.model, core, family, tools)
        if exact is not None:
            tokens, calib = exact.tokens, exact.calib
    compacted = False
    summary_source = summary_model = None
    if tokens > a.context_budget_tokens:
        correction = exact.correction if exact is not None else 1.0
        fit, summary_model = await compact_prompt(
            router, view, turn, step, core, family, calib, tools, correction
        )
        if fit.error is not None:
            return _local("context_overflow", fit.error.message)
        core, messages, compacted = fit.messages, from_core(fit.messages, turn.originals), True
        tokens = count_prompt(core, family, calib, tools, correction)
        summary_source = fit.summary_source
        exact = None  # the count is of what was compacted away
        if turn.session is not None:
            turn.session.record_compaction(fit, c.model)
    answer.reset()
    selected = SelectedEvent(
        model=c.model,
        service=c.service,
        category=turn.plan.category,
        category_source=turn.plan.category_source,
        fallback_level=int(a.level),
        level=a.level.name,
        attempt=step.number,
        reason=a.reason,
        window_tokens=a.window_tokens,
        prompt_tokens=tokens,
        compacted=compacted,
        summary_source=summary_source,
        summary_model=summary_model,
        prompt_exact=exact is not None,
        confidence=turn.confidence,
        serena=turn.serena,
        session=turn.session_info,
        previous_error=previous,
        explain=list(turn.plan.explain) if step.number == 1 else None,
    )
    answer.selected = selected
    announce = _Announce(sink, selected)
    ollama = backend.chat_flavor == "ollama"
    target = ChatTarget(
        base_url=backend.base_url,
        flavor=flavor_for(backend.kind or "custom", backend.chat_flavor),
        model=c.model,
        headers=backend.credentials.headers(),
        num_ctx=a.window_tokens if ollama else None,
        keep_alive=router.config.routing.keep_alive if ollama else None,
    )
    request = msgspec.structs.replace(turn.chat, messages=messages)
    group = view.groups.get(c.service, c.service)
    stats = router.stats()
    queued_at = trio.current_time()
    async with router.queue.slot(group, c.model, client=turn.client, deadline=step.deadline,
                                 before_wait=announce.ensure) as g:  # fmt: skip
        if g is None:
            await announce.ensure()
            if stats is not None:
                stats.queue_timeout(c.service, c.model, trio.current_time() - queued_at)
            return _local("queue_timeout", f"no free slot on {group} for {c.model} in time")
        if stats is None:
            tried = await _send(router, chat_backend, target, request, step, sink, answer,
                                announce)  # fmt: skip
        else:
            with stats.attempt(c.service, c.model, category=turn.plan.category,
                               fallback_level=int(a.level), queue_wait=g.waited) as rec:  # fmt: skip
                tried = await _send(router, chat_backend, target, request, step, sink, answer,
                                    announce)  # fmt: skip
                rec.ended(tried.outcome, tried.done)
    _report(router, c.service, tried)
    done = tried.done
    usage = answer.usage
    if done is not None and usage is not None and usage.prompt_tokens and not turn.chat.tools:
        router.calibrate(c.model, core, usage.prompt_tokens, window=a.window_tokens)
    return tried


async def _send(
    router: Router,
    chat_backend: ChatBackend,
    target: ChatTarget,
    request: ChatRequest,
    step: TryAttempt,
    sink: Sink,
    answer: Answer,
    announce: _Announce,
) -> _Tried:
    """Send one request and pass its events on; the outcome says how it ended. The attempt's
    ``selected`` goes out before anything else of it (``_Announce``)."""
    streams = sink.streams
    answered = False
    finish: str | None = None
    events = chat_backend.run_chat(
        target, request, router.timeouts, first_token_deadline=step.deadline,
        on_sent=announce.sent,
    )  # fmt: skip
    async with aclosing(events):
        async for ev in events:
            if not announce.done:
                await announce.ensure()
            if isinstance(ev, Chunk):
                answer.text.append(ev.text)
                answered = streams
                await sink.emit("chunk", ChunkEvent(ev.text))
            elif isinstance(ev, Reasoning):
                answer.reasoning.append(ev.text)
                answered = streams
                await sink.emit("reasoning", ChunkEvent(ev.text))
            elif isinstance(ev, ToolCallDelta):
                answer.add_call(ev)
                answered = streams
                await sink.emit(
                    "tool_call", ToolCallEvent(ev.index, ev.arguments_delta, ev.id, ev.name)
                )
            elif isinstance(ev, ModelReported):
                answer.model = ev.model
            elif isinstance(ev, Usage):
                answer.usage = ev
                await sink.emit("usage", UsageEvent(ev.prompt_tokens, ev.completion_tokens))
            elif isinstance(ev, Finish):
                finish = ev.reason
            elif isinstance(ev, Done):
                return _Tried(Succeeded(), ev, finish)
            elif isinstance(ev, StreamError):
                out = fallback_outcome(ev, answered=answered)
                return _Tried(out, None, finish, egress=ev.kind == "egress_refused")
    await announce.ensure()
    return _Tried(fallback.FailedBeforeFirstByte("bad_response", "the answer ended without end"))


def _report(router: Router, service: str, tried: _Tried) -> None:
    """Tell the registry how the server did (not for failures that were routerd's own)."""
    out = tried.outcome
    if isinstance(out, Succeeded):
        latency = tried.done.first_token_s if tried.done is not None else None
        router.registry.report_outcome(service, "request_ok", latency=latency)
        return
    if tried.egress:
        return
    health = fallback.health_input(out.error)
    if health is not None:
        router.registry.report_outcome(service, health, detail=out.detail)
