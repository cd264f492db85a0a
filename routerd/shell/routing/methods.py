"""The routing methods: ``route`` (streaming), ``route.complete``, ``classify``, ``resolve``.

``route`` streams ``selected``, ``chunk``, ``reasoning``, ``tool_call`` and ``usage`` events
and ends with the :class:`~routerd_client.protocol_route.RouteEnd` record;
``route.complete`` runs the same request and answers with the whole
:class:`~routerd_client.protocol_route.RouteResult`. Both write one ``query`` audit record per
request, whatever its outcome (a cancelled one included). See docs/protocol.md, "route".
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from routerd.core.classify import Category, classify
from routerd.core.errors import BadRequest, RouterdError, Unavailable
from routerd.core.resolve import resolve_all
from routerd.shell.dispatch import Registry, RequestContext, Stream
from routerd_client.protocol_route import (
    FINISH_INCOMPLETE,
    ClassifyParams,
    ClassifyResult,
    ResolveEntry,
    ResolveParams,
    ResolveResult,
    RouteEnd,
    RouteParams,
    RouteResult,
)

from .executor import Answer, Sink, Turn, execute
from .router import Router
from .turns import audit_event, prepare_turn

__all__ = ["register_methods", "run_route"]

log = logging.getLogger("routerd.routing")


#: Events that go out with what follows them rather than at once (``outbound.LINGER``):
#: ``selected`` with the first chunk (or shortly after, if the model is slow to answer),
#: ``usage`` with the end.
_WITH_NEXT = frozenset({"selected", "usage"})


class _StreamSink:
    """Events go to the client as they come (content at once, the rest with what follows)."""

    __slots__ = ("_emit", "_stream")
    streams = True

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._emit = stream.emit

    async def emit(self, event: str, data: Any) -> None:
        await self._emit(event, data, flush=event not in _WITH_NEXT)

    def emit_soon(self, event: str, data: Any) -> bool:
        return self._stream.emit_nowait(event, data)


class _Collect:
    """Nothing goes out until the end (``route.complete``)."""

    __slots__ = ()
    streams = False

    async def emit(self, event: str, data: Any) -> None:
        return None

    def emit_soon(self, event: str, data: Any) -> bool:
        return True


async def run_route(router: Router, ctx: RequestContext, params: RouteParams, sink: Sink) -> (
        tuple[RouteEnd, Answer]):  # fmt: skip
    """Prepare, execute, store (session) and audit one request. The session's turn is
    durable before this returns, so the ``end`` event never precedes it. The one entry point
    of routed requests: ``route``, ``route.complete`` and the HTTP fronts call it."""
    if router.chat is None:
        raise Unavailable("routing is not running yet")
    audit = ctx.app.audit
    query = params.query or ""
    turn: Turn | None = None
    answer = Answer()
    end: RouteEnd | None = None
    stats = router.stats()
    try:
        turn, view, query = await prepare_turn(router, ctx, params)
        end = await execute(router, view, turn, sink, answer)
        await _commit(turn, end, answer, partial=end.finish_reason == FINISH_INCOMPLETE)
    except RouterdError as exc:
        if turn is not None or not isinstance(exc, BadRequest):  # a bad request was not routed
            await audit.record(audit_event(ctx, query, turn, end, answer, exc.message))
            if stats is not None:
                stats.route_finished("failed", category=_category(turn), reason=exc.message)
        if turn is not None and end is None:
            await _commit(turn, None, answer, partial=True)
        raise
    except trio.Cancelled:  # the client cancelled or went away: a trail, without waiting
        audit.record_nowait(audit_event(ctx, query, turn, end, answer, "cancelled"))
        if stats is not None:
            stats.route_finished("cancelled", category=_category(turn))
        if turn is not None:
            await _commit(turn, end, answer, partial=True)  # shielded by the manager
        raise
    except Exception:
        audit.record_nowait(audit_event(ctx, query, turn, end, answer, "internal error"))
        raise
    await audit.record(audit_event(ctx, query, turn, end, answer, None))
    if stats is not None:
        result = "incomplete" if end.finish_reason == FINISH_INCOMPLETE else "ok"
        stats.route_finished(result, category=end.category)
    return end, answer


def _category(turn: Turn | None) -> str | None:
    return turn.plan.category if turn is not None else None


async def _commit(turn: Turn, end: RouteEnd | None, answer: Answer, *, partial: bool) -> None:
    if turn.session is None:
        return
    text = "".join(answer.text)
    await turn.session.commit(
        text or None,
        model=end.model if end is not None else answer.model,
        service=end.service if end is not None else None,
        usage=answer.usage,
        partial=partial,
    )


def register_methods(registry: Registry, router: Router) -> None:
    """Add the routing methods to ``registry``."""

    async def route(ctx: RequestContext, params: RouteParams, stream: Stream) -> RouteEnd:
        end, _ = await run_route(router, ctx, params, _StreamSink(stream))
        return end

    async def route_complete(ctx: RequestContext, params: RouteParams) -> RouteResult:
        end, answer = await run_route(router, ctx, params, _Collect())
        fields = {f: getattr(end, f) for f in end.__struct_fields__}
        return RouteResult(
            **fields,
            text="".join(answer.text),
            reasoning="".join(answer.reasoning),
            tool_calls=[answer.calls[i] for i in sorted(answer.calls)],
            selected=answer.selected,
        )

    async def classify_method(ctx: RequestContext, params: ClassifyParams) -> ClassifyResult:
        rc = router.config.routing
        threshold = rc.min_confidence if params.min_confidence is None else params.min_confidence
        if not 0.0 <= threshold <= 1.0:
            raise BadRequest(f"min_confidence must be within [0, 1], not {threshold}")
        c = classify(params.text, default=Category(rc.default_category),
                     min_confidence=threshold)  # fmt: skip
        return ClassifyResult(
            category=c.category.value,
            confidence=round(c.confidence, 4),
            requires_serena=c.requires_serena,
            signals=c.signals,
            low_confidence=c.low_confidence,
        )

    async def resolve_method(ctx: RequestContext, params: ResolveParams) -> ResolveResult:
        catalog = router.catalog
        out = []
        for r in resolve_all(params.names, catalog):
            entry = catalog.get(r.model_id) if r.model_id is not None else None
            out.append(
                ResolveEntry(
                    name=r.name,
                    model_id=r.model_id,
                    reason=r.reason,
                    matched_by=r.matched_by,
                    family=r.family,
                    size=r.size,
                    variant=r.variant,
                    quant=r.quant,
                    context_length=entry.context_length if entry is not None else None,
                )
            )
        return ResolveResult(results=out)

    registry.add_stream("route", route, params=RouteParams)
    registry.add("route.complete", route_complete, params=RouteParams)
    registry.add("classify", classify_method, params=ClassifyParams, inline=True)
    registry.add("resolve", resolve_method, params=ResolveParams, inline=True)
