"""Fitting a prompt to one attempt's budget: an exact count where the server can tokenize and
the estimate is near the edge, and compaction with a small local model's summary.

The executor calls in here only when it must: :func:`exact_prompt` for an estimate within
``routerd.core.sessions.EXACT_MARGIN`` of the budget on a server that tokenizes, with
``sessions.exact_tokenize`` on; :func:`compact_prompt` for a prompt over the budget.

Contract:

* :func:`exact_prompt` asks llama-server (``/tokenize``) or llama-cpp-python
  (``/extras/tokenize/count``) for the count of the prompt's text, within ``EXACT_TIMEOUT``
  seconds, through the egress-checked client and with the service's credentials. The count
  calibrates that model's estimates (``Router.observe_tokenized``); the template overhead and
  the tool definitions stay estimates. None when the server cannot say: the estimate stands.
* :func:`compact_prompt` compacts in a worker thread (``prepare.fit_messages``). With
  ``sessions.summary_model`` set and that model on offer now (a candidate the plan could use),
  the messages compaction folds are first summarised by it: the core's ``summary_request``,
  through the fair queue and ``ChatBackend.run_chat``, within ``SUMMARY_TIMEOUT`` seconds and
  half the time left before the attempt's deadline. A failure, a timeout or an empty answer
  falls back to the extractive summary; the result's ``summary_source`` says which was used.
  A summary written for one attempt is reused by the next when it folds the same messages.
* Nothing here raises for a server's sake; cancellation propagates.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import trio

from routerd.core.candidates import Candidate, hard_rejection
from routerd.core.chat import ChatRequest, ChatTarget, flavor_for
from routerd.core.compaction import CompactionResult, select_for_summary
from routerd.core.context import Message, summary_request
from routerd.core.fallback import TryAttempt
from routerd.core.routing_policy import model_ref, ref_match
from routerd.core.select import window_for
from routerd.core.sessions import token_family
from routerd.core.streams import Chunk, Done, StreamError
from routerd.core.tokens import (
    CODE_DENSITY,
    REPLY_PRIMING,
    Calibration,
    TokenizeDialect,
    chars_per_token,
    count_messages,
    message_overhead,
)
from routerd.shell.discovery import Backend
from routerd.shell.tokenize import exact_count

from .prepare import fit_messages, prompt_counter
from .router import Router, View

if TYPE_CHECKING:
    from .executor import Turn

__all__ = [
    "TOKENIZERS",
    "EXACT_TIMEOUT",
    "SUMMARY_TIMEOUT",
    "SUMMARY_MAX_TOKENS",
    "Exact",
    "exact_prompt",
    "compact_prompt",
]

log = logging.getLogger("routerd.routing")

#: Service kinds whose servers count tokens exactly, and how to ask them.
TOKENIZERS: Final[Mapping[str, TokenizeDialect]] = MappingProxyType(
    {"llamacpp": "llama.cpp", "llama_cpp_python": "llama-cpp-python"}
)
#: Seconds an exact count may take before the estimate stands (tokenizing is milliseconds).
EXACT_TIMEOUT: Final = 2.0
#: Seconds a summary by ``sessions.summary_model`` may take, at most (and at most half the
#: time left before the attempt's deadline).
SUMMARY_TIMEOUT: Final = 20.0
#: The longest summary asked for (the core's instructions ask for at most 300 words).
SUMMARY_MAX_TOKENS: Final = 600
_TRANSCRIPT_MAX_CHARS: Final = 24_000
#: A summary model whose window holds less of the transcript than this is not asked.
_TRANSCRIPT_MIN_CHARS: Final = 2_000
_TEMPLATE_ROOM: Final = 64  # tokens of the summary request's own framing and instructions


@dataclass(frozen=True)
class Exact:
    """A server's count of a prompt: ``tokens`` in all (tools included), ``calib`` the model's
    calibration after learning from it, ``correction`` the count's ratio to the estimate of the
    messages under ``calib`` (what compaction's counter is scaled by)."""

    tokens: int
    calib: Calibration | None
    correction: float


async def exact_prompt(
    router: Router,
    backend: Backend,
    model: str,
    core: Sequence[Message],
    family: str,
    tools: int,
) -> Exact | None:
    """The exact size of the prompt ``core`` (plus ``tools`` estimated tokens) for ``model`` on
    ``backend``, or None (module docstring)."""
    dialect = TOKENIZERS.get(backend.kind or "")
    client = router.http
    if dialect is None or client is None or not core:
        return None
    text = "\n".join(m.content for m in core)
    counted = await exact_count(
        client,
        backend.base_url,
        text,
        dialect,
        timeout=EXACT_TIMEOUT,
        headers=backend.credentials.headers(),
    )
    if counted is None:
        return None
    router.observe_tokenized(model, text, counted)
    calib = router.calibration(model)
    framing = REPLY_PRIMING + sum(message_overhead(m.role, m.name, m.tool_call_id) for m in core)
    exact = counted + framing
    estimate = count_messages(core, family, calib)
    return Exact(exact + tools, calib, exact / max(1, estimate))


async def compact_prompt(
    router: Router,
    view: View,
    turn: Turn,
    step: TryAttempt,
    core: Sequence[Message],
    family: str,
    calib: Calibration | None,
    tools: int,
    correction: float = 1.0,
) -> tuple[CompactionResult, str | None]:
    """``core`` compacted to the attempt's budget, and the model that wrote its summary (None:
    extractive, or no summary). See the module docstring."""
    budget = step.attempt.context_budget_tokens
    summary: str | None = None
    writer: str | None = None
    name = router.config.sessions.summary_model
    if name:
        found = _summary_model(router, view, name)
        if found is None:
            log.info("summary model %r is not available now: extractive summary", name)
        else:
            summary = await _model_summary(
                router, view, turn, step, found, core, family, calib, tools, correction
            )
            writer = found.model if summary is not None else None
    fit = await trio.to_thread.run_sync(
        fit_messages, core, budget, router.compaction, family, calib, tools, correction, summary
    )
    return fit, (writer if fit.summary_source == "model" else None)


def _summary_model(router: Router, view: View, name: str) -> Candidate | None:
    """The best candidate ``name`` names that could take a request now: the closest match,
    loaded first, then by service priority and how busy it is."""
    ref = model_ref(name, router.catalog)
    best: tuple[tuple[int, bool, int, float], Candidate] | None = None
    for c in view.candidates:
        strength = ref_match(ref, c)
        if strength is None or c.service not in view.backends:
            continue
        if hard_rejection(c, None) is not None:
            continue
        key = (strength, c.loaded is not True, c.service_priority, c.pressure)
        if best is None or key < best[0]:
            best = (key, c)
    return best[1] if best is not None else None


async def _model_summary(
    router: Router,
    view: View,
    turn: Turn,
    step: TryAttempt,
    c: Candidate,
    core: Sequence[Message],
    family: str,
    calib: Calibration | None,
    tools: int,
    correction: float,
) -> str | None:
    """The summary model's text for what compaction will fold, or None to fall back."""
    budget = max(1, step.attempt.context_budget_tokens - tools)
    count = prompt_counter(family, calib, correction)
    older = await trio.to_thread.run_sync(
        select_for_summary, core, budget, router.compaction, count
    )
    if not older:
        return None
    key = tuple((m.role, m.content) for m in older)
    if turn.summary is not None and turn.summary[0] == key:
        return turn.summary[1]
    now = trio.current_time()
    deadline = now + min(SUMMARY_TIMEOUT, max(0.0, step.deadline - now) / 2)
    text = await _ask(router, view, c, older, turn.client, deadline)
    waited = trio.current_time() - now
    if text is None:
        log.warning("summary by %s failed after %.1f s: extractive summary", c.label, waited)
        return None
    log.info("summary of %d messages by %s in %.1f s", len(older), c.label, waited)
    turn.summary = (key, text)
    return text


async def _ask(
    router: Router,
    view: View,
    c: Candidate,
    older: Sequence[Message],
    client: str,
    deadline: float,
) -> str | None:
    """Run the summary request on ``c`` (in its turn in the fair queue) by ``deadline``."""
    backend = view.backends[c.service]
    chat_backend = router.chat
    if chat_backend is None:
        return None
    family = token_family(c.model)
    room = c.context_length - SUMMARY_MAX_TOKENS - _TEMPLATE_ROOM
    # Code is the densest text: sized for it, the transcript fits whatever it holds.
    max_chars = min(_TRANSCRIPT_MAX_CHARS, int(room * chars_per_token(family) * CODE_DENSITY))
    if max_chars < _TRANSCRIPT_MIN_CHARS:
        return None
    chat = summary_request(older, max_chars)
    needed = count_messages(chat, family, router.calibration(c.model)) + SUMMARY_MAX_TOKENS
    ollama = backend.chat_flavor == "ollama"
    target = ChatTarget(
        base_url=backend.base_url,
        flavor=flavor_for(backend.kind or "custom", backend.chat_flavor),
        model=c.model,
        headers=backend.credentials.headers(),
        num_ctx=window_for(c, needed) if ollama else None,
        keep_alive=router.config.routing.keep_alive if ollama else None,
    )
    request = ChatRequest(
        messages=[{"role": m.role, "content": m.content} for m in chat],
        max_tokens=SUMMARY_MAX_TOKENS,
        temperature=0.2,
    )
    group = view.groups.get(c.service, c.service)
    pieces: list[str] = []
    with trio.move_on_at(deadline):
        async with router.queue.slot(group, c.model, client=client, deadline=deadline) as grant:
            if grant is None:
                return None
            events = chat_backend.run_chat(
                target, request, router.timeouts, first_token_deadline=deadline
            )
            async with aclosing(events):
                async for ev in events:
                    if isinstance(ev, Chunk):
                        pieces.append(ev.text)
                    elif isinstance(ev, Done):
                        return "".join(pieces).strip() or None
                    elif isinstance(ev, StreamError):
                        log.info("summary request to %s: %s", c.label, ev.message)
                        return None
    return None
