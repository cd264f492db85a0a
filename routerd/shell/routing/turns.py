"""From a ``route`` request to a :class:`~routerd.shell.routing.executor.Turn`: check it,
classify it, gather Serena's context, count it and plan it; and its audit record.

Order: the messages, the classification (skipped when the client names the category),
Serena when the request names code, the session's context (or, for a bare ``query`` without
a session, routerd's system prompt), the token counts, then ``routerd.core.select.plan_route``
over the candidates of the moment. A request
that cannot be planned fails here with ``not_found`` (an explicit model no service offers)
or ``unavailable`` (no model can serve it), naming why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from routerd.core.audit import AuditEvent
from routerd.core.catalog import CATEGORIES
from routerd.core.chat import ChatRequest, response_format_problem
from routerd.core.classify import Classification, classify
from routerd.core.context import Message
from routerd.core.errors import BadRequest
from routerd.core.select import RouteFailure, RoutePlan, RouteRequest, plan_route
from routerd.shell.audit import options_of
from routerd.shell.dispatch import RequestContext
from routerd_client.protocol_route import FINISH_INCOMPLETE, RouteEnd, RouteParams

from .enrich import (
    SerenaOutcome,
    bare_system_prompt,
    gather_serena,
    names_code,
    no_file_outcome,
    serena_state,
    wants_serena,
)
from .executor import Answer, Turn, failure_error
from .prepare import (
    PLAN_FAMILY,
    count_prompt,
    enrich_last_user,
    from_core,
    last_user_text,
    min_prompt_tokens,
    originals,
    to_core,
    tools_tokens,
    wire_messages,
)
from .router import Router, View
from .session import TurnSession, open_turn_session

__all__ = ["prepare_turn", "audit_event"]


def _check(params: RouteParams) -> None:
    if params.category is not None and params.category not in CATEGORIES:
        raise BadRequest(
            f"category must be one of {', '.join(CATEGORIES)}, not {params.category!r}"
        )
    if params.max_tokens is not None and params.max_tokens < 1:
        raise BadRequest(f"max_tokens must be at least 1, not {params.max_tokens}")
    t = params.temperature
    if t is not None and not (math.isfinite(t) and t >= 0):
        raise BadRequest(f"temperature must be a number >= 0, not {t}")
    p = params.top_p
    if p is not None and not (math.isfinite(p) and 0 < p <= 1):
        raise BadRequest(f"top_p must be within (0, 1], not {p}")
    if params.model is not None and not params.model.strip():
        raise BadRequest("model is empty")
    if params.response_format is not None:
        problem = response_format_problem(params.response_format)
        if problem is not None:
            raise BadRequest(problem)


def _plan(
    router: Router,
    view: View,
    request: RouteRequest,
    core: list[Message],
    tools: list[dict[str, Any]] | None,
) -> tuple[RoutePlan | RouteFailure, int]:
    extra = tools_tokens(tools, PLAN_FAMILY)
    prompt = count_prompt(core, PLAN_FAMILY, None, extra)
    floor = min_prompt_tokens(core, router.compaction, extra)
    request = msgspec.structs.replace(request, prompt_tokens=prompt, min_prompt_tokens=floor)
    plan = plan_route(request, view.candidates, router.policy, catalog=router.catalog)
    return plan, prompt


async def _serena(
    router: Router,
    ctx: RequestContext,
    params: RouteParams,
    classification: Classification | None,
    first_plan: Callable[[], RoutePlan | RouteFailure],
    query: str,
) -> SerenaOutcome | None:
    """Serena's part (see ``enrich``): asked, noted as not asked, or not relevant (None)."""
    config = router.config
    fc = params.file_context
    want = wants_serena(config, fc, None)
    if want == "no" and names_code(fc) and config.serena.priority != "always_first":
        # on_demand: whether to ask depends on the category, which the plan decides.
        want = wants_serena(config, fc, first_plan().category)
    if want == "ask":
        category = params.category or (
            classification.category if classification else config.routing.default_category
        )
        return await gather_serena(ctx.app, ctx.conn, fc, str(category), query)
    if classification is not None and classification.requires_serena and not names_code(fc):
        return no_file_outcome(ctx.app)
    return None


async def prepare_turn(
    router: Router, ctx: RequestContext, params: RouteParams
) -> tuple[Turn, View, str]:
    """The turn to execute, the view it was planned on, and the query text (for the audit).

    Raises BadRequest for a malformed request, NotFound / Unavailable when it cannot be
    planned, and what opening its session raises.
    """
    started = trio.current_time()
    _check(params)
    messages = wire_messages(params)
    query = last_user_text(messages)
    classification: Classification | None = None
    if params.category is None:
        classification = classify(query, min_confidence=0.0)
    conn = ctx.conn
    agent = conn.agent.name if conn.agent is not None and conn.agent.name != "unknown" else None
    request = RouteRequest(
        category=classification.category if classification else None,
        confidence=classification.confidence if classification else 1.0,
        explicit_model=params.model,
        explicit_category=params.category,
        agent=agent,
    )
    view = router.view()
    core = to_core(messages)
    kept = originals(messages, core)
    serena = await _serena(
        router,
        ctx,
        params,
        classification,
        lambda: _plan(router, view, request, core, params.tools)[0],
        query,
    )
    session: TurnSession | None = None
    session_info: dict[str, Any] | None = None
    if params.session_id is not None:
        session, core, session_info = open_turn_session(
            ctx.app, conn, params.session_id, core, replace=params.messages is not None,
            agent=agent,
        )  # fmt: skip
    elif params.messages is None:
        state = serena.state if serena is not None else serena_state(ctx.app)
        core = [Message("system", bare_system_prompt(router.os_name, conn, state)), *core]
    if serena is not None and serena.query is not None:
        core = enrich_last_user(core, serena.query)
        if session is not None:
            session.enriched = serena.query
    plan, prompt = _plan(router, view, request, core, params.tools)
    if isinstance(plan, RouteFailure):
        raise failure_error(plan)
    turn = Turn(
        client=f"connection {conn.id}",
        core=core,
        originals=kept,
        messages=from_core(core, kept),
        chat=ChatRequest(
            messages=[],
            tools=params.tools,
            tool_choice=params.tool_choice,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=params.stop,
            seed=params.seed,
            response_format=params.response_format,
        ),
        plan=plan,
        started_at=started,
        confidence=classification.confidence if classification else None,
        serena=serena.info if serena is not None else None,
        session=session,
        session_info=session_info,
        session_id=session.id if session is not None else params.session_id,
        prompt_tokens=prompt,
    )
    return turn, view, query


def audit_event(
    ctx: RequestContext,
    query: str,
    turn: Turn | None,
    end: RouteEnd | None,
    answer: Answer | None,
    error: str | None,
) -> AuditEvent:
    """The ``query`` audit record of one routed request (the writer hashes the texts, and
    writes the query itself only when ``security.log_query_text`` says so)."""
    conn = ctx.conn
    options = options_of(ctx.app.config)
    response = None
    if options.log_responses and answer is not None and end is not None:
        response = "".join(answer.text)
    details: dict[str, Any] = {}
    if turn is not None:
        details["category"] = turn.plan.category
        if turn.serena is not None:
            details["serena"] = bool(turn.serena.get("used"))
    if end is not None:
        details["requested_model"] = end.requested_model
        details["finish_reason"] = end.finish_reason
        details["attempts"] = len(end.attempts) + 1
    return AuditEvent(
        event_type="query",
        session_id=turn.session_id if turn is not None else None,
        model=end.model if end is not None else None,
        service=end.service if end is not None else None,
        query=query,
        response=response,
        tokens_in=(end.prompt_tokens if end and end.prompt_tokens else 0)
        or (turn.prompt_tokens if turn else 0),
        tokens_out=(end.completion_tokens or 0) if end is not None else 0,
        success=error is None and end is not None and end.finish_reason != FINISH_INCOMPLETE,
        error=error if error is not None else (end.reason if end is not None else None),
        uid=conn.peer_uid,
        pid=conn.peer_pid,
        agent=conn.agent.name if conn.agent is not None else None,
        fallback_level=end.fallback_level if end is not None else None,
        details=details or None,
    )
