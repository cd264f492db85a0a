"""Deterministic extractive summaries of conversation turns, for compaction.

A summary keeps what a developer needs to carry on: the decisions taken, the files and symbols
discussed, the questions still open, the errors seen and what the user asked for.

Invariants:

* Pure and deterministic: the same messages give the same text, byte for byte.
* Linear in the input: text is split on whitespace and lines, never scanned by a backtracking
  pattern over unbounded spans; over-long tokens and lines are skipped or cut first.
* :func:`render_facts` never returns more than ``max_chars`` characters. When it must leave items
  out, it takes them round-robin across sections in priority order (decisions, files, symbols,
  open questions, errors, requests), so a small budget still names a bit of everything.
* Never raises on any ``str`` content.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from routerd.core.tokens import MessageLike

__all__ = [
    "SUMMARY_HEADER",
    "SUMMARY_MAX_CHARS",
    "Facts",
    "extract_facts",
    "summary_header",
    "render_facts",
    "extractive_summary",
    "complete_summary",
]

SUMMARY_MAX_CHARS: Final[int] = 4000
SUMMARY_HEADER: Final[str] = "[Summary of earlier conversation"

_MAX_DECISIONS: Final = 12
_MAX_NAMES: Final = 40
_MAX_QUESTIONS: Final = 8
_MAX_ERRORS: Final = 8
_MAX_REQUESTS: Final = 8
_SENTENCE_CHARS: Final = 240
_LINE_SCAN_CHARS: Final = 500
_TOKEN_CHARS: Final = 200
#: Of a tool output only the head and the tail are read: the command's subject is at the top,
#: tracebacks and test results at the bottom, and a long middle only costs time.
_TOOL_SCAN_CHARS: Final = 4_000

_DECISION = re.compile(
    r"\b(?:we(?:'|\u2019)ll use|we will use|we(?:'|\u2019)ll go with|let(?:'|\u2019)?s go with|"
    r"going with|"
    r"decided|decision|chosen|we chose|settled on|agreed)\b",
    re.IGNORECASE,
)
# An exception line (also pytest's "E   ValueError: ..."), a compiler/CLI "error:" line,
# a test runner's FAILED/ERROR, npm's "ERR!".
_ERROR = re.compile(
    r"^[ \t]*(?:E\s+)?(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception)\b"
    r"|\b(?:[Ee]rror|ERROR|fatal|panic)(?:\[\w+\])?:|\bFAILED\b|\bERROR\b|\bERR!",
    re.MULTILINE,
)
_HEADER_COUNTS = re.compile(re.escape(SUMMARY_HEADER) + r": (\d{1,9}) messages \(([^)\n]*)\)\]")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_FENCED = re.compile(r"^[ \t]*(?:```|~~~).*?(?:^[ \t]*(?:```|~~~)[^\n]*$|\Z)", re.M | re.S)
_BACKTICKED = re.compile(r"`([^`\n]{1,80})`")
_IDENT_LIKE = re.compile(r"[A-Za-z_][\w.:]*(?:\([^()]{0,40}\))?")
_FILE_EXT = (
    "py|pyi|pyx|toml|md|rst|txt|json|jsonl|yaml|yml|ini|cfg|conf|lock|sh|bash|zsh|ps1|c|h|cc|"
    "cpp|hpp|rs|go|java|kt|kts|swift|rb|php|js|mjs|cjs|ts|tsx|jsx|vue|svelte|css|scss|html|sql|"
    "proto|graphql|gradle|xml|csv|ipynb|lua|zig|nix|tf|service|socket|env"
)
_BARE_FILE = re.compile(rf"[\w-]+(?:\.[\w-]+)*\.(?:{_FILE_EXT})")
_SPECIAL_FILES: Final = frozenset(
    {"Makefile", "Dockerfile", "Justfile", "Containerfile", "Vagrantfile", "Gemfile", "Rakefile"}
)
_PATH_CHARS = re.compile(r"[\w./~+@-]+")
_LINE_SUFFIX = re.compile(r":\d+(?::\d+)?$")
_MODULE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_CALL = re.compile(r"([A-Za-z_][\w.]*)\((\)?)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_BULLET = re.compile(r"^(?:[-*•]\s+)+")
_NAME_HINT = re.compile(r"[/._(]|\w[A-Z]")
_LEADING: Final = "([{<'\"`*"
_TRAILING: Final = ")]}>,;:'\"`.!?*"
# Words that say nothing about what a question is about.
_STOP_WORDS: Final = (
    "the and for with that this what which should would could does have will from into about "
    "there their then than when where while also just like make need want your you are was "
    "were been being can any all our how why who not use using"
)
_STOP: Final = frozenset(_STOP_WORDS.split())


# (title, inline?) in render order; the index is also the round-robin priority.
_SECTIONS: Final = (
    ("Decisions", False),
    ("Files", True),
    ("Symbols", True),
    ("Open questions", False),
    ("Errors seen", False),
    ("User requests", False),
)


class Facts(msgspec.Struct, frozen=True):
    """What :func:`extract_facts` found, each list in the order it will be kept.

    ``decisions``, ``questions``, ``errors`` and ``requests`` are newest first (newer ones
    supersede); ``files`` and ``symbols`` are most mentioned first, then first mentioned.
    """

    messages: int
    roles: dict[str, int]
    decisions: list[str]
    files: list[str]
    symbols: list[str]
    questions: list[str]
    errors: list[str]
    requests: list[str]


def _without_code(text: str) -> str:
    return _FENCED.sub(" ", text) if "```" in text or "~~~" in text else text


def _sentences(text: str) -> Iterable[str]:
    for raw in _SENTENCE_SPLIT.split(_without_code(text)):
        s = _BULLET.sub("", " ".join(raw.split()))
        if s:
            yield s if len(s) <= _SENTENCE_CHARS else s[: _SENTENCE_CHARS - 1] + "…"


def _is_camel(word: str) -> bool:
    if len(word) < 4 or not word[0].isupper() or not any(c.islower() for c in word):
        return False
    if word[:-1].isupper():  # "URLs", "APIs": an acronym with a plural s
        return False
    humps = 0
    for i, c in enumerate(word):
        if not c.isupper():
            continue
        prev_lower = i > 0 and word[i - 1].islower()
        starts_word = (
            i + 1 < len(word) and word[i + 1].islower() and (i == 0 or word[i - 1].isupper())
        )
        if i == 0 or prev_lower or starts_word:
            humps += 1
    return humps >= 2


def _as_file(core: str) -> str | None:
    core = _LINE_SUFFIX.sub("", core)
    if not _PATH_CHARS.fullmatch(core) or not any(c.isalnum() for c in core):
        return None
    if "/" in core:
        if "//" in core:
            return None
        last = core.rstrip("/").rsplit("/", 1)[-1]
        rooted = core.startswith(("/", "./", "../", "~/"))
        has_ext = "." in last.strip(".") and last.rsplit(".", 1)[1].isalnum()
        if rooted or has_ext or core.endswith("/"):
            return core
        return None
    if core in _SPECIAL_FILES or _BARE_FILE.fullmatch(core):
        return core
    return None


def _symbols_in_token(core: str) -> Iterable[str]:
    call = _CALL.match(core)
    if call:
        name, empty = call.group(1), call.group(2)
        if "_" in name or "." in name or empty:
            yield name + "()"
        return
    if _MODULE.fullmatch(core):
        if any(len(part) >= 2 for part in core.split(".")):
            yield core
    elif _is_camel(core):
        yield core


class _Tally:
    """Counts names, remembering first mention, for a stable most-mentioned-first order."""

    def __init__(self) -> None:
        self._count: dict[str, int] = {}
        self._first: dict[str, int] = {}

    def add(self, name: str) -> None:
        if name not in self._count:
            self._first[name] = len(self._first)
            self._count[name] = 0
        self._count[name] += 1

    def ranked(self, limit: int) -> list[str]:
        return sorted(self._count, key=lambda n: (-self._count[n], self._first[n]))[:limit]


def _scan_names(text: str, files: _Tally, symbols: _Tally) -> None:
    for m in _BACKTICKED.finditer(text):
        inner = m.group(1).strip()
        found = _as_file(inner)
        if found:
            files.add(found)
        elif len(inner) >= 2 and _IDENT_LIKE.fullmatch(inner):
            symbols.add(inner)
    for token in text.split():
        # Most tokens are plain words; one C-level search rules them out ("…file": Makefile).
        if len(token) > _TOKEN_CHARS or not (_NAME_HINT.search(token) or "file" in token):
            continue
        core = token.lstrip(_LEADING)
        found = _as_file(core.rstrip(_TRAILING))
        if found:
            files.add(found)
            continue
        call = _CALL.match(core)
        for sym in _symbols_in_token(core if call else core.rstrip(_TRAILING)):
            symbols.add(sym)


def _keywords(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP}


def _error_lines(text: str) -> Iterable[str]:
    if not _ERROR.search(text):
        return
    for line in text.splitlines():
        line = " ".join(line[:_LINE_SCAN_CHARS].split())
        if line and _ERROR.search(line):
            yield line if len(line) <= _SENTENCE_CHARS else line[: _SENTENCE_CHARS - 1] + "…"


def _split_summary(text: str) -> tuple[dict[str, list[str]], str]:
    """The bullet items of an earlier summary's sections, and the rest of its text (a model's
    prose, the inline sections), so that a summary of a summary keeps what the first kept."""
    sections: dict[str, list[str]] = {title: [] for title, inline in _SECTIONS if not inline}
    rest: list[str] = []
    current: str | None = None
    for line in text.splitlines()[1:]:
        if current is not None and line.startswith("- "):
            sections[current].append(line[2:])
            continue
        title = line[:-1] if line.endswith(":") else ""
        current = title if title in sections else None
        if current is None:
            rest.append(line)
    return sections, "\n".join(rest)


def _newest_unique(items: list[str], limit: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for item in reversed(items):
        if item not in seen:
            seen.add(item)
            out.append(item)
            if len(out) == limit:
                break
    return out


def extract_facts(messages: Sequence[MessageLike], later: Sequence[MessageLike] = ()) -> Facts:
    """Collect the facts of ``messages``; ``later`` (the turns kept after them) is read only to
    decide which questions were answered.

    A question (a sentence ending in ``?`` from a user, assistant or system turn) counts as
    answered when a later turn by another role mentions at least half of its keywords.
    Names from conversation turns rank before names only seen in tool output.
    """
    roles: dict[str, int] = {}
    decisions: list[str] = []
    errors: list[str] = []
    requests: list[str] = []
    questions: list[tuple[int, str, set[str]]] = []
    files, symbols = _Tally(), _Tally()
    tool_files, tool_symbols = _Tally(), _Tally()
    total = 0
    for i, msg in enumerate(messages):
        text = msg.content
        earlier = _HEADER_COUNTS.match(text)
        if earlier:  # an earlier summary stands for the messages it counted
            for part in earlier.group(2).split(", "):
                n, _, role = part.partition(" ")
                if n.isdigit() and role:
                    roles[role] = roles.get(role, 0) + int(n)
            total += int(earlier.group(1))
        else:
            roles[msg.role] = roles.get(msg.role, 0) + 1
            total += 1
        if msg.role == "tool":
            if len(text) > 2 * _TOOL_SCAN_CHARS:
                text = text[:_TOOL_SCAN_CHARS] + "\n" + text[-_TOOL_SCAN_CHARS:]
            _scan_names(text, tool_files, tool_symbols)
            errors.extend(_error_lines(text))
            continue
        _scan_names(text, files, symbols)
        if text.startswith(SUMMARY_HEADER):
            sections, text = _split_summary(text)
            decisions += sections["Decisions"]
            errors += sections["Errors seen"]
            requests += sections["User requests"]
            for q in sections["Open questions"]:
                keys = _keywords(q)
                if keys:
                    questions.append((i, q, keys))
        first = True
        for s in _sentences(text):
            if msg.role == "user" and first:
                requests.append(s)
            first = False
            if _DECISION.search(s):
                decisions.append(s)
            keys = _keywords(s)
            if s.endswith("?") and len(s) >= 12 and keys:
                questions.append((i, s, keys))
        errors.extend(_error_lines(text))

    turns = [*messages, *later]
    words = [_keywords(m.content) if m.role != "tool" else set() for m in turns]
    open_questions: list[str] = []
    for i, q, keys in questions:
        asker = turns[i].role
        need = max(1, (len(keys) + 1) // 2)
        answered = any(
            turns[j].role != asker and len(keys & words[j]) >= need
            for j in range(i + 1, len(turns))
        )
        if not answered:
            open_questions.append(q)

    file_list = files.ranked(_MAX_NAMES)
    file_list += [f for f in tool_files.ranked(_MAX_NAMES) if f not in file_list]
    sym_list = symbols.ranked(_MAX_NAMES)
    sym_list += [s for s in tool_symbols.ranked(_MAX_NAMES) if s not in sym_list]
    return Facts(
        messages=total,
        roles=roles,
        decisions=_newest_unique(decisions, _MAX_DECISIONS),
        files=file_list[:_MAX_NAMES],
        symbols=[s for s in sym_list if s not in file_list][:_MAX_NAMES],
        questions=_newest_unique(open_questions, _MAX_QUESTIONS),
        errors=_newest_unique(errors, _MAX_ERRORS),
        requests=_newest_unique(requests, _MAX_REQUESTS),
    )


def summary_header(facts: Facts) -> str:
    """The first line of every summary: how many messages of which roles it stands for."""
    roles = ", ".join(f"{n} {role}" for role, n in sorted(facts.roles.items()))
    return f"{SUMMARY_HEADER}: {facts.messages} messages ({roles or 'none'})]"


def render_facts(facts: Facts, max_chars: int = SUMMARY_MAX_CHARS) -> str:
    """The summary text of ``facts``, at most ``max_chars`` characters long.

    Bullet sections list their items oldest first; when not everything fits, items are taken
    round-robin across sections in priority order, each section's own order deciding.
    """
    header = summary_header(facts)
    if max_chars <= len(header):
        return header[: max(0, max_chars)]
    pools = [
        facts.decisions,
        facts.files,
        facts.symbols,
        facts.questions,
        facts.errors,
        facts.requests,
    ]
    chosen: list[list[str]] = [[] for _ in pools]
    used = len(header)
    # Exact cost of each item in the rendered text, as laid out below.
    for rank in range(max(map(len, pools), default=0)):
        for k, pool in enumerate(pools):
            if rank >= len(pool):
                continue
            title, inline = _SECTIONS[k]
            item = pool[rank]
            if inline:
                cost = len(item) + (len(title) + 3 if not chosen[k] else 2)
            else:
                cost = len(item) + 3 + (len(title) + 2 if not chosen[k] else 0)
            if used + cost <= max_chars:
                chosen[k].append(item)
                used += cost
    lines = [header]
    for k, items in enumerate(chosen):
        if not items:
            continue
        title, inline = _SECTIONS[k]
        if inline:
            lines.append(f"{title}: " + ", ".join(items))
        else:
            lines.append(f"{title}:")
            # Newest-first pools render oldest first, to read as a story.
            lines.extend(f"- {item}" for item in reversed(items))
    return "\n".join(lines)


def extractive_summary(
    messages: Sequence[MessageLike],
    *,
    later: Sequence[MessageLike] = (),
    max_chars: int = SUMMARY_MAX_CHARS,
) -> str:
    """Summary of ``messages`` without a model: :func:`render_facts` of :func:`extract_facts`."""
    return render_facts(extract_facts(messages, later), max_chars)


def complete_summary(text: str, facts: Facts) -> str:
    """``text`` (a model-written summary) with the files and symbols of ``facts`` it does not
    mention appended, so a weak summariser cannot lose the names a developer needs."""
    missing_files = [f for f in facts.files if f not in text]
    missing_symbols = [s for s in facts.symbols if s not in text]
    out = text.rstrip()
    if missing_files:
        out += "\nFiles also referenced: " + ", ".join(missing_files)
    if missing_symbols:
        out += "\nSymbols also referenced: " + ", ".join(missing_symbols)
    return out
