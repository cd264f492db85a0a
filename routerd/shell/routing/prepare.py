"""A ``route`` request's messages: checked, counted, enriched and compacted.

The client speaks OpenAI chat messages (maps); counting and compaction work on
``routerd.core.context.Message``. This module converts between the two and calls the core
for every decision (``tokens``, ``context``, ``compaction``, ``serena_context``).

Invariants:

* A message that compaction left unchanged goes to the model server exactly as the client
  sent it (content parts, tool calls, names and all); a cut one goes as plain text with its
  name and tool call id (an assistant message cut to fit loses its tool calls' structure).
* Counting covers what is sent: every message's text, its tool calls' names and arguments,
  and the tool definitions.
* Nothing here waits or does I/O; compaction is CPU work the caller may run in a thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from routerd.core.compaction import CompactionPolicy, CompactionResult, compact, compaction_floor
from routerd.core.context import Counter, Message, Role, estimate_counter
from routerd.core.errors import BadRequest
from routerd.core.tokens import Calibration, count_messages, count_text
from routerd_client.protocol_route import RouteParams

__all__ = [
    "PLAN_FAMILY",
    "wire_messages",
    "last_user_text",
    "enrich_last_user",
    "to_core",
    "originals",
    "from_core",
    "tools_tokens",
    "count_prompt",
    "prompt_counter",
    "min_prompt_tokens",
    "fit_messages",
]

#: The family prompts are counted as before a model is chosen: the table's fewest characters
#: per token, so a plan never underestimates; each attempt recounts for its own model.
PLAN_FAMILY: Final = "qwen"

_ROLES: Final[dict[str, Role]] = {
    "system": "system",
    "developer": "system",  # OpenAI's newer name for system instructions
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
_encoder: Final = msgspec.json.Encoder()


def wire_messages(params: RouteParams) -> list[dict[str, Any]]:
    """The conversation to send: ``query`` as one user message, or ``messages`` checked.

    Raises BadRequest for neither or both, an empty list, or a message without a known role.
    """
    if params.messages is not None and params.query is not None:
        raise BadRequest("give either query or messages, not both")
    if params.messages is None:
        if params.query is None or not params.query.strip():
            raise BadRequest("nothing to route: give a query or messages")
        return [{"role": "user", "content": params.query}]
    if not params.messages:
        raise BadRequest("messages is empty")
    for i, m in enumerate(params.messages):
        role = m.get("role")
        if role not in _ROLES:
            raise BadRequest(
                f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))}, not {role!r}"
            )
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            raise BadRequest(f"messages[{i}].content must be a string or a list of parts")
    if not any(m.get("role") == "user" for m in params.messages):
        raise BadRequest("messages has no user message")
    return list(params.messages)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def last_user_text(messages: Sequence[dict[str, Any]]) -> str:
    """The text of the last user message (what is classified, audited, given to Serena)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return _text(m.get("content"))
    return ""


def enrich_last_user(core: list[Message], text: str) -> list[Message]:
    """``core`` with the last user message's text replaced by ``text`` (Serena's
    ``enrich_query``)."""
    out = list(core)
    for i in range(len(out) - 1, -1, -1):
        if out[i].role == "user":
            out[i] = msgspec.structs.replace(out[i], content=text, tokens=0)
            break
    return out


def _calls_text(calls: Any) -> str:
    if not isinstance(calls, list) or not calls:
        return ""
    return _encoder.encode(calls).decode("utf-8", "replace")


def to_core(messages: Sequence[dict[str, Any]]) -> list[Message]:
    """Core messages for counting and compaction (a tool call counts as its JSON text)."""
    out: list[Message] = []
    for m in messages:
        text = _text(m.get("content"))
        calls = _calls_text(m.get("tool_calls"))
        if calls:
            text = f"{text}\n{calls}" if text else calls
        name = m.get("name")
        call_id = m.get("tool_call_id")
        out.append(
            Message(
                role=_ROLES.get(str(m.get("role")), "user"),
                content=text,
                name=name if isinstance(name, str) else None,
                tool_call_id=call_id if isinstance(call_id, str) else None,
            )
        )
    return out


Key = tuple[str, str, str | None, str | None]


def _key(m: Message) -> Key:
    return (m.role, m.content, m.name, m.tool_call_id)


def originals(
    messages: Sequence[dict[str, Any]], core: Sequence[Message]
) -> dict[Key, dict[str, Any]]:
    """The client's own messages by what they became in ``core`` (``to_core(messages)``)."""
    return {_key(c): m for c, m in zip(core, messages, strict=True)}


def from_core(core: Sequence[Message], kept: dict[Key, dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages to send: the client's own where ``core`` kept one unchanged (content
    parts, tool calls and all), else the core message as a plain chat message (a summary, a
    cut message, a session's stored history)."""
    out: list[dict[str, Any]] = []
    for m in core:
        original = kept.get(_key(m))
        if original is not None:
            out.append(original)
            continue
        plain: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.name:
            plain["name"] = m.name
        if m.tool_call_id:
            plain["tool_call_id"] = m.tool_call_id
        out.append(plain)
    return out


def tools_tokens(tools: list[dict[str, Any]] | None, family: str) -> int:
    """Tokens the tool definitions add to a prompt."""
    if not tools:
        return 0
    return count_text(_encoder.encode(tools).decode("utf-8", "replace"), family)


def count_prompt(
    core: Sequence[Message],
    family: str,
    calib: Calibration | None,
    tools: int = 0,
    correction: float = 1.0,
) -> int:
    """Tokens of the whole prompt for a model of ``family``; ``correction``: the ratio of an
    exact count of this prompt to its estimate (see :func:`prompt_counter`)."""
    counted = count_messages(core, family, calib)
    if correction != 1.0:
        counted = math.ceil(counted * correction)
    return counted + tools


def prompt_counter(family: str, calib: Calibration | None, correction: float = 1.0) -> Counter:
    """Tokens of one message for a model of ``family``, times ``correction`` when a server's
    exact count of the whole prompt showed the estimate off by that much."""
    count = estimate_counter(family, calib)
    if correction == 1.0:
        return count

    def corrected(msg: Message) -> int:
        return math.ceil(count(msg) * correction)

    return corrected


def min_prompt_tokens(core: Sequence[Message], policy: CompactionPolicy, tools: int) -> int | None:
    """The fewest tokens compaction can bring the prompt to without cutting the request, or
    None when there is nothing to compact (a system prompt and one request)."""
    if sum(1 for m in core if m.role != "system") <= 1:
        return None
    floor = compaction_floor(core, policy, estimate_counter(PLAN_FAMILY))
    return floor.keep_request + tools


def fit_messages(
    core: Sequence[Message],
    budget: int,
    policy: CompactionPolicy,
    family: str,
    calib: Calibration | None,
    tools: int,
    correction: float = 1.0,
    summary: str | None = None,
) -> CompactionResult:
    """``core`` compacted so that the prompt (tools included) fits ``budget`` tokens, counted
    as :func:`prompt_counter` does. ``summary``: a model's summary of the messages
    ``select_for_summary`` picks for the same arguments (None: the extractive summary)."""
    count = prompt_counter(family, calib, correction)
    summarise = None if summary is None else (lambda _older: summary)
    return compact(core, max(1, budget - tools), policy, count, summarise)
