"""Session context: chat messages, their token counts, and the prompts a session sends.

A session holds its system prompt, its messages with roles and token counts, the active model
and the models it used before; the shell keeps that state, this module and
``routerd.core.compaction`` decide about it.

Invariants:

* :class:`Message` is immutable; ``Message.tokens`` is a cache of the active model's count,
  rewritten whenever a counter runs (:func:`recount`), never trusted across a model switch.
* :func:`system_prompt` is deterministic and holds no volatile value (no clock, no counter), so
  model servers can reuse their prompt cache from one turn to the next; text that comes from
  clients enters it as one short line.
* :func:`truncate_middle` keeps the head and the tail of a text and says how much is gone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal

import msgspec

from routerd.core.summary import SUMMARY_HEADER, extractive_summary
from routerd.core.tokens import Calibration, count_message

__all__ = [
    "Role",
    "MetaValue",
    "Message",
    "Counter",
    "Summariser",
    "SerenaState",
    "estimate_counter",
    "prefer_stored",
    "recount",
    "context_requirement",
    "truncate_middle",
    "summary_request",
    "system_prompt",
    "extractive_summary",
]

Role = Literal["system", "user", "assistant", "tool"]
MetaValue = str | int | float | bool | None


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    """One chat message. ``tokens`` is its cost under the active model (content plus template
    overhead) as last counted, 0 when not counted yet."""

    role: Role
    content: str
    tokens: int = 0
    name: str | None = None
    tool_call_id: str | None = None
    metadata: dict[str, MetaValue] = msgspec.field(default_factory=dict)


#: Tokens one message costs. Pure; see :func:`estimate_counter` and :func:`prefer_stored`.
Counter = Callable[[Message], int]
#: Writes the summary of older messages (a small local model, via the shell). See
#: ``routerd.core.compaction.select_for_summary`` for how an async model call fits this seam.
Summariser = Callable[[list[Message]], str]


# --- Counting ------------------------------------------------------------------------------


def estimate_counter(family: str, calib: Calibration | None = None) -> Counter:
    """A counter estimating with ``family``'s ratio and ``calib`` (ignores ``Message.tokens``)."""

    def count(msg: Message) -> int:
        return count_message(msg, family, calib)

    return count


def prefer_stored(count: Counter) -> Counter:
    """A counter that trusts ``Message.tokens`` when set (say, exact counts from a tokenize
    endpoint) and asks ``count`` otherwise. Never use it across a model switch."""

    def counted(msg: Message) -> int:
        return msg.tokens if msg.tokens > 0 else count(msg)

    return counted


def recount(messages: Iterable[Message], count: Counter) -> list[Message]:
    """``messages`` with ``tokens`` set by ``count``."""
    return [msgspec.structs.replace(m, tokens=count(m)) for m in messages]


def context_requirement(session_tokens: int, request_tokens: int, reserve_for_answer: int) -> int:
    """Context window a model needs for this session: its tokens, the new request and room for
    the answer (negative inputs count as 0). Routing compares this with each model's window."""
    return max(0, session_tokens) + max(0, request_tokens) + max(0, reserve_for_answer)


# --- Truncation ----------------------------------------------------------------------------


def _marker(omitted: int) -> str:
    return f"[... {omitted} characters truncated ...]"


def truncate_middle(text: str, keep: int) -> str:
    """``text`` cut to about ``keep`` characters: its head (60%) and tail around a marker that
    says how much is gone; cuts snap to nearby line breaks. Unchanged when ``keep >= len``."""
    if keep >= len(text):
        return text
    keep = max(0, keep)
    head_len = (keep * 3 + 4) // 5
    tail_len = keep - head_len
    head = text[:head_len]
    tail = text[len(text) - tail_len :] if tail_len else ""
    # Snap to a line break in the last fifth of the head / first fifth of the tail.
    nl = head.rfind("\n")
    if nl >= 0 and nl >= head_len - head_len // 5:
        head = head[:nl]
    nl = tail.find("\n")
    if 0 <= nl <= tail_len // 5:
        tail = tail[nl + 1 :]
    omitted = len(text) - len(head) - len(tail)
    parts = [p for p in (head, _marker(omitted), tail) if p]
    return "\n".join(parts)


# --- Prompts -------------------------------------------------------------------------------

_SUMMARY_INSTRUCTIONS: Final = (
    "Summarise the conversation below for a developer who will continue the work. "
    "Write short bullet points that keep: every decision taken and why; every file path and code "
    "symbol (function, class, method, module) mentioned, spelled exactly; the questions still "
    "open; errors seen and whether they were fixed; what the user asked for. Leave out "
    "pleasantries and code that can be read again. Do not invent anything. At most 300 words."
)


def summary_request(messages: Sequence[Message], max_chars: int = 24_000) -> list[Message]:
    """The chat a small local model answers with a summary of ``messages``: an instruction and
    a transcript of at most about ``max_chars`` characters (each message cut in the middle to
    its share)."""
    share = max(200, max_chars // max(1, len(messages)))
    parts = []
    for m in messages:
        who = f"{m.role} ({m.name})" if m.name else m.role
        parts.append(f"### {who}\n{truncate_middle(m.content, share)}")
    transcript = truncate_middle("\n\n".join(parts), max_chars)
    return [Message("system", _SUMMARY_INSTRUCTIONS), Message("user", transcript)]


SerenaState = Literal["ready", "starting", "unavailable", "disabled"]

_SERENA_LINES: Final[dict[str, str]] = {
    "ready": "available; symbol definitions, references and diagnostics from it may be "
    "included with requests",
    "starting": "starting; early requests may arrive without its symbol information",
    "unavailable": "unavailable; rely on the code shown in the conversation",
    "disabled": "not used",
}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def _one_line(value: str, limit: int = 80) -> str:
    # Values come from clients; a newline in an agent name must not add instructions.
    clean = " ".join(_UNSAFE.sub(" ", value).split())
    return (clean[: limit - 1] + "…" if len(clean) > limit else clean) or "unknown"


def system_prompt(
    os_name: str, agent_name: str, serena_state: SerenaState, extra: Sequence[str] = ()
) -> str:
    """The system prompt of a session. Deterministic and free of volatile values (no clock,
    no counters), so servers can reuse their prompt cache across turns; ``os_name`` and
    ``agent_name`` are reduced to one short line each."""
    lines = [
        "You are a coding assistant working on a local, air-gapped network.",
        "",
        "Environment:",
        f"- Operating system: {_one_line(os_name)}",
        f"- Coding agent: {_one_line(agent_name)}",
        f"- Serena (semantic code tools): {_SERENA_LINES[serena_state]}",
        "",
        "Guidelines:",
        "- There is no internet access: do not suggest downloading, fetching URLs or calling "
        "external services; work with the repository and the tools already installed, and say "
        "so when something is missing.",
        "- Give concise, correct code, and name the files and symbols you change.",
        "- Prefer symbol information from Serena, when present, to guesses about the code.",
        "- Do not invent APIs, options or file contents; state assumptions and open questions.",
        f'- A system message starting with "{SUMMARY_HEADER}" condenses turns that no longer '
        "fit; treat it as reliable context.",
    ]
    extras = [e.strip() for e in extra if e.strip()]
    if extras:
        lines += ["", "Additional instructions:", *(f"- {e}" for e in extras)]
    return "\n".join(lines)
