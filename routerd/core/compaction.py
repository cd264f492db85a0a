"""Compaction of a session to a token budget, and handoff to another model.

Terms. *Pinned* messages are the system prompt(s): role ``system`` and not an earlier summary.
The *tail* is the last ``preserve_recent_messages`` messages that are neither pinned nor
earlier summaries, extended back to the latest user message and, when it would begin with tool
results, to the message that made those calls. *Older* messages are all other non-pinned messages, earlier summaries included.
``target = floor(window * compaction_target)``, ``threshold = floor(window * compaction_threshold)``.

Invariants of :func:`compact` (the property tests check each):

* At or under the threshold nothing changes: the result holds the same messages, recounted.
* Pinned messages are kept verbatim and in order; they are never truncated.
* Tail messages are kept in order, their content changed only by truncations the report lists
  (head and tail kept around a marker). Older messages are replaced by at most one summary
  message (role ``system``, ``metadata["summary"] = True``) where the first of them stood.
* Steps, each taken only while the total is over the target: (1) cut tool outputs longer than
  ``max_tool_output_tokens`` outside the last ``preserve_recent_tool_calls`` tool results, oldest
  first; (2) fold the older messages into the summary; (3) cut long tool outputs in the tail;
  (4) *edge case*, while over ``target - reserve``: cut tail messages, oldest first, never the
  latest user message, where ``reserve = min(summary size, target // 10)`` when there is a
  summary to write (so it keeps some room) and 0 otherwise; (5) only while over the window: cut
  the latest user message. The summary then takes the room left under the target (under the
  window, at most ``reserve``, when the target cannot be met); with no room it is left out and
  the older messages are reported ``dropped``.
* ``ok`` results satisfy ``tokens_after <= window``; and ``tokens_after <= target`` whenever
  ``compaction_floor(...).keep_request <= target`` (the target can be met without cutting the
  latest user message).
* Failures are values, not exceptions: ``invalid_window`` (window <= 0),
  ``system_prompt_too_large`` (the pinned messages alone exceed the window), ``does_not_fit``
  (pinned messages plus the tail cut to markers exceed the window). An error result carries the
  input messages unchanged (recounted); the shell must not send them.
* ``count`` is called with every input message and with each message compaction creates (with
  ``tokens=0``); results carry its counts in ``Message.tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal

import msgspec

from routerd.core.context import (
    Counter,
    Message,
    Summariser,
    estimate_counter,
    recount,
    truncate_middle,
)
from routerd.core.summary import (
    SUMMARY_MAX_CHARS,
    Facts,
    complete_summary,
    extract_facts,
    render_facts,
    summary_header,
)
from routerd.core.tokens import Calibration

__all__ = [
    "Action",
    "ErrorCode",
    "CompactionPolicy",
    "ReportEntry",
    "CompactionError",
    "CompactionResult",
    "CompactionFloor",
    "compaction_floor",
    "select_for_summary",
    "compact",
    "handoff",
]

Action = Literal["truncated_tool_output", "summarised", "dropped", "truncated_to_fit"]
ErrorCode = Literal["invalid_window", "system_prompt_too_large", "does_not_fit"]


class CompactionPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """When and how far to compact (field names as in the seed's ``ContextConfig``)."""

    compaction_threshold: float = 0.8
    compaction_target: float = 0.5
    preserve_recent_messages: int = 10
    preserve_recent_tool_calls: int = 5
    max_tool_output_tokens: int = 500

    def __post_init__(self) -> None:
        # Checked here, not with Meta, so direct construction is validated as well as decoding.
        if not 0 < self.compaction_target <= self.compaction_threshold <= 1:
            raise ValueError(
                "need 0 < compaction_target <= compaction_threshold <= 1, got "
                f"{self.compaction_target} and {self.compaction_threshold}"
            )
        if self.preserve_recent_messages < 1:
            raise ValueError("preserve_recent_messages must be at least 1")
        if self.preserve_recent_tool_calls < 0:
            raise ValueError("preserve_recent_tool_calls must not be negative")
        if self.max_tool_output_tokens < 16:
            raise ValueError("max_tool_output_tokens must be at least 16")


class ReportEntry(msgspec.Struct, frozen=True):
    """One thing compaction did to input message ``index``.

    ``truncated_tool_output``: a long tool output cut to the limit. ``summarised``: folded into
    the summary. ``dropped``: removed with no room left for a summary. ``truncated_to_fit``: a
    tail message cut in the edge case (see the module docstring).
    """

    index: int
    role: str
    action: Action
    tokens_before: int
    tokens_after: int


class CompactionError(msgspec.Struct, frozen=True):
    code: ErrorCode
    message: str
    needed_tokens: int
    window_tokens: int


class CompactionResult(msgspec.Struct, frozen=True):
    messages: list[Message]
    tokens_before: int
    tokens_after: int
    window_tokens: int
    target_tokens: int
    report: list[ReportEntry]
    summary_source: Literal["none", "extractive", "model"] = "none"
    error: CompactionError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def compacted(self) -> bool:
        return bool(self.report)


class CompactionFloor(msgspec.Struct, frozen=True):
    """The fewest tokens compaction can reach: ``keep_request`` without cutting the latest user
    message, ``minimal`` with it cut to a marker too (summary omitted in both)."""

    keep_request: int
    minimal: int


# --- Truncation ----------------------------------------------------------------------------


def _with_content(msg: Message, content: str, original_tokens: int) -> Message:
    meta = dict(msg.metadata)
    meta["truncated"] = True
    meta.setdefault("original_tokens", original_tokens)
    return msgspec.structs.replace(msg, content=content, tokens=0, metadata=meta)


def _counted(msg: Message, count: Counter) -> Message:
    return msgspec.structs.replace(msg, tokens=count(msg))


def _stub(msg: Message, count: Counter) -> Message:
    return _counted(_with_content(msg, truncate_middle(msg.content, 0), msg.tokens), count)


def _fit(msg: Message, budget: int, count: Counter) -> Message | None:
    """The longest head-and-tail cut of ``msg`` costing at most ``budget``, None if even the
    marker alone costs more. ``msg`` must be counted."""
    if msg.tokens <= budget:
        return msg

    def cut(keep: int) -> Message:
        content = truncate_middle(msg.content, keep)
        return _counted(_with_content(msg, content, msg.tokens), count)

    best = cut(0)
    if best.tokens > budget:
        return None
    lo, hi = 0, len(msg.content)  # invariant: cut(lo) fits; cut(hi) is msg, which does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        candidate = cut(mid)
        if candidate.tokens <= budget:
            lo, best = mid, candidate
        else:
            hi = mid
    return best


# --- Planning ------------------------------------------------------------------------------


def _is_summary(msg: Message) -> bool:
    return msg.metadata.get("summary") is True


def _is_pinned(msg: Message) -> bool:
    return msg.role == "system" and not _is_summary(msg)


class _Plan:
    """Which messages are pinned, in the tail, or older; and the latest user message."""

    def __init__(self, msgs: Sequence[Message], policy: CompactionPolicy) -> None:
        free = [i for i, m in enumerate(msgs) if not _is_pinned(m) and not _is_summary(m)]
        users = [i for i in free if msgs[i].role == "user"]
        self.latest_user = users[-1] if users else None
        tail: list[int] = []
        if free:
            pos = max(0, len(free) - policy.preserve_recent_messages)
            if self.latest_user is not None:
                pos = min(pos, free.index(self.latest_user))
            while pos > 0 and msgs[free[pos]].role == "tool":
                pos -= 1
            tail = free[pos:]
        self.tail = tail
        tail_set = set(tail)
        self.pinned = [i for i, m in enumerate(msgs) if _is_pinned(m)]
        self.older = [i for i, m in enumerate(msgs) if not _is_pinned(m) and i not in tail_set]


def compaction_floor(
    messages: Sequence[Message], policy: CompactionPolicy, count: Counter
) -> CompactionFloor:
    """The fewest tokens :func:`compact` can reach for ``messages`` (see :class:`CompactionFloor`)."""
    msgs = recount(messages, count)
    return _floor(msgs, _Plan(msgs, policy), count)


def _floor(msgs: Sequence[Message], plan: _Plan, count: Counter) -> CompactionFloor:
    base = sum(msgs[i].tokens for i in plan.pinned)
    for i in plan.tail:
        if i != plan.latest_user:
            base += min(msgs[i].tokens, _stub(msgs[i], count).tokens)
    if plan.latest_user is None:
        return CompactionFloor(base, base)
    user = msgs[plan.latest_user]
    return CompactionFloor(base + user.tokens, base + min(user.tokens, _stub(user, count).tokens))


class _Run:
    """One compaction in progress: the current version of every message and the running total."""

    def __init__(
        self, messages: Sequence[Message], window: int, policy: CompactionPolicy, count: Counter
    ) -> None:
        self.orig = recount(messages, count)
        self.cur: dict[int, Message] = dict(enumerate(self.orig))
        self.total = sum(m.tokens for m in self.orig)
        self.window = window
        self.policy = policy
        self.count = count
        self.target = math.floor(window * policy.compaction_target)
        self.threshold = math.floor(window * policy.compaction_threshold)
        self.plan = _Plan(self.orig, policy)
        self.report: dict[int, ReportEntry] = {}
        self.folded: list[int] = []

    def replace(self, i: int, new: Message, action: Action) -> None:
        old = self.cur[i]
        if new.tokens >= old.tokens:
            return
        self.total -= old.tokens - new.tokens
        self.cur[i] = new
        before = self.report[i].tokens_before if i in self.report else old.tokens
        self.report[i] = ReportEntry(i, old.role, action, before, new.tokens)

    def cut_tools(self, indices: Iterable[int]) -> None:
        limit = self.policy.max_tool_output_tokens
        for i in indices:
            if self.total <= self.target:
                return
            msg = self.orig[i]
            if msg.role == "tool" and self.cur[i].tokens > limit:
                new = _fit(msg, limit, self.count)
                if new is not None:
                    self.replace(i, new, "truncated_tool_output")

    def cut_to(self, i: int, goal: int) -> None:
        """Cut message ``i`` so the total reaches ``goal`` if it can; to a marker if not."""
        need = self.total - goal
        if need <= 0:
            return
        cur = self.cur[i]
        new = _fit(self.orig[i], cur.tokens - need, self.count) or _stub(self.orig[i], self.count)
        self.replace(i, new, "truncated_to_fit")

    def fold_older(self) -> None:
        """Steps 1 and 2: cut old tool outputs, then take the older messages out if needed."""
        tools = [i for i, m in enumerate(self.orig) if m.role == "tool"]
        keep = self.policy.preserve_recent_tool_calls
        protected = set(tools[len(tools) - keep :]) if keep else set()
        eligible = [i for i in tools if i not in protected]
        if self.total - sum(self.cur[i].tokens for i in eligible) > self.target:
            # Even without those outputs the total stays over the target, so the older ones
            # will be folded whatever happens: cutting them first would be wasted work.
            older = set(self.plan.older)
            eligible = [i for i in eligible if i not in older]
        self.cut_tools(eligible)
        if self.total > self.target and self.plan.older:
            self.folded = list(self.plan.older)
            for i in self.folded:
                self.total -= self.cur[i].tokens
                self.report.pop(i, None)


def _error(run: _Run, code: ErrorCode, message: str, needed: int) -> CompactionResult:
    return CompactionResult(
        messages=list(run.orig),
        tokens_before=run.total,
        tokens_after=run.total,
        window_tokens=run.window,
        target_tokens=max(0, run.target),
        report=[],
        error=CompactionError(code, message, needed, run.window),
    )


def _precheck(run: _Run) -> CompactionResult | None:
    """The result when compaction has nothing to do or cannot succeed; None to go on."""
    window = run.window
    if window <= 0:
        return _error(run, "invalid_window", f"window of {window} tokens", run.total)
    if run.total <= run.threshold:
        return CompactionResult(list(run.orig), run.total, run.total, window, run.target, [])
    pinned = sum(run.orig[i].tokens for i in run.plan.pinned)
    if pinned > window:
        return _error(
            run,
            "system_prompt_too_large",
            f"the system prompt needs {pinned} tokens; the window holds {window}",
            pinned,
        )
    floor = _floor(run.orig, run.plan, run.count)
    if floor.minimal > window:
        return _error(
            run,
            "does_not_fit",
            f"the system prompt and the {len(run.plan.tail)} most recent messages need at "
            f"least {floor.minimal} tokens; the window holds {window}",
            floor.minimal,
        )
    return None


def select_for_summary(
    messages: Sequence[Message], window_tokens: int, policy: CompactionPolicy, count: Counter
) -> list[Message]:
    """Exactly the messages :func:`compact` would hand to ``summarise`` (empty when it would
    not summarise). The shell awaits its small model on these, then calls :func:`compact` with
    ``summarise=lambda _: text``."""
    run = _Run(messages, window_tokens, policy, count)
    if _precheck(run) is not None:
        return []
    run.fold_older()
    return [run.orig[i] for i in run.folded]


# --- Summary -------------------------------------------------------------------------------

_RESERVE_FRACTION: Final = 10  # the summary may claim up to target/10 from tail messages


def _summary_message(text: str, folded: int) -> Message:
    return Message(
        role="system", content=text, metadata={"summary": True, "summarised_messages": folded}
    )


def _largest(lo: int, hi: int, make: Callable[[int], Message], budget: int) -> Message | None:
    """The message ``make(k)`` for the largest ``k`` in ``[lo, hi]`` costing at most ``budget``."""
    best = make(lo)
    if best.tokens > budget:
        return None
    top = make(hi)
    if top.tokens <= budget:
        return top
    while hi - lo > 1:
        mid = (lo + hi) // 2
        candidate = make(mid)
        if candidate.tokens <= budget:
            lo, best = mid, candidate
        else:
            hi = mid
    return best


def _summary_maker(
    run: _Run, summarise: Summariser | None
) -> tuple[Callable[[int], Message], int, int, Literal["extractive", "model"]]:
    older = [run.orig[i] for i in run.folded]
    later = [run.orig[i] for i in run.plan.tail]
    facts: Facts = extract_facts(older, later)

    def finish(text: str) -> Message:
        return _counted(_summary_message(text, facts.messages), run.count)

    written = summarise(older).strip() if summarise is not None else ""
    if written:
        header = summary_header(facts)
        full = f"{header}\n{complete_summary(written, facts)}"

        def model_text(k: int) -> Message:
            return finish(full if k >= len(full) else full[:k].rstrip() + " …")

        return model_text, len(header), len(full), "model"

    def extractive(k: int) -> Message:
        return finish(render_facts(facts, k))

    return extractive, len(summary_header(facts)), SUMMARY_MAX_CHARS, "extractive"


# --- Compaction ----------------------------------------------------------------------------


def compact(
    messages: Sequence[Message],
    window_tokens: int,
    policy: CompactionPolicy,
    count: Counter,
    summarise: Summariser | None = None,
) -> CompactionResult:
    """Fit ``messages`` into ``window_tokens`` as the module docstring states.

    ``summarise`` writes the summary when given (its text is completed with any file and symbol
    names it missed); when absent or when it returns only whitespace, the deterministic
    ``routerd.core.summary.extractive_summary`` is used. Exceptions from ``summarise``
    propagate (the shell's own summariser should not raise; see :func:`select_for_summary`).
    """
    run = _Run(messages, window_tokens, policy, count)
    early = _precheck(run)
    if early is not None:
        return early
    before, plan = run.total, run.plan
    run.fold_older()
    run.cut_tools(plan.tail)
    make: Callable[[int], Message] | None = None
    lo = hi = reserve = 0
    source: Literal["none", "extractive", "model"] = "none"
    if run.folded:
        make, lo, hi, source = _summary_maker(run, summarise)
        reserve = min(make(hi).tokens, run.target // _RESERVE_FRACTION)
    for i in plan.tail:  # step 4, the edge case
        if i != plan.latest_user:
            run.cut_to(i, run.target - reserve)
    if plan.latest_user is not None:  # step 5: only when over the window
        run.cut_to(plan.latest_user, window_tokens)

    summary: Message | None = None
    if make is not None:
        room = (run.target if run.total <= run.target else window_tokens) - run.total
        if run.total > run.target:
            room = min(room, reserve)
        summary = _largest(lo, hi, make, room)
        if summary is None:
            source = "none"
        action: Literal["summarised", "dropped"] = "summarised" if summary else "dropped"
        for i in run.folded:
            run.report[i] = ReportEntry(i, run.orig[i].role, action, run.orig[i].tokens, 0)

    out: list[Message] = []
    folded = set(run.folded)
    first = run.folded[0] if run.folded else -1
    for i in range(len(run.orig)):
        if i == first and summary is not None:
            out.append(summary)
        if i not in folded:
            out.append(run.cur[i])
    after = sum(m.tokens for m in out)
    report = [run.report[i] for i in sorted(run.report)]
    return CompactionResult(out, before, after, window_tokens, run.target, report, source)


def handoff(
    messages: Sequence[Message],
    to_family: str,
    to_window: int,
    policy: CompactionPolicy,
    *,
    to_calib: Calibration | None = None,
    summarise: Summariser | None = None,
) -> CompactionResult:
    """Prepare ``messages`` for another model: recount every message with the new model's
    estimator (stored counts belong to the old model and are ignored), then :func:`compact`
    for its window. The old model's family does not enter into it."""
    return compact(messages, to_window, policy, estimate_counter(to_family, to_calib), summarise)
