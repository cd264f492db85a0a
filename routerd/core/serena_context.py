"""Serena-first context for code requests: what to ask Serena, and how to put the answers into
the prompt within a token budget (the seed's ``build_enriched_query``, with Serena 2's tools).

A :class:`ContextPlanner` is a sans-IO conversation: ``next_step()`` names the next tool call,
``feed(step, outcome)`` hands back what came of it, and ``parts()`` collects the findings. The
shell runs the calls against a warm Serena, within the time budget; :func:`render_context` then
writes the findings as Markdown within the token budget, and :func:`enrich_query` appends them
to the request.

Invariants:

* The plan asks the most valuable question first: the symbol at the cursor (its signature and
  docs), then its references (refactor and rename requests), then the file's overview, then
  diagnostics (analysis requests). A step whose input is missing is skipped, never guessed.
* Every step is asked at most once; ``next_step()`` returns None when nothing is left. A failed
  step only adds a note; later steps that do not depend on it still run.
* ``render_context(...)`` never returns text whose token estimate exceeds the budget; what it
  had to leave out it counts in the text ("... and 7 more").
* Lines are 0-based in requests and in Serena's answers (LSP convention) and 1-based in the
  rendered text (as editors and people count).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

import msgspec

from routerd.core.tokens import count_text

__all__ = [
    "ContextParts",
    "ContextPlanner",
    "ContextRequest",
    "ContextResult",
    "ContextUnavailable",
    "Diagnostic",
    "Reference",
    "Step",
    "StepOutcome",
    "SymbolInfo",
    "context_request",
    "enrich_query",
    "identifier_at",
    "render_context",
]

#: Bound on one answer's size, passed to Serena as ``max_answer_chars``.
MAX_ANSWER_CHARS: Final = 20_000
#: Diagnostics of this LSP severity or worse: 1 error, 2 warning.
DIAGNOSTIC_SEVERITY: Final = 2
_SEVERITY = {"Error": 1, "Warning": 2, "Information": 3, "Hint": 4}

_REFERENCE_WORDS = re.compile(
    r"\b(refactor\w*|renam\w*|references?|usages?|callers?|call sites?|who calls|"
    r"where\b.{0,40}\bused|impact|move\b.{0,30}\bto)\b", re.I | re.S)
_DIAGNOSTIC_WORDS = re.compile(
    r"\b(errors?|warnings?|diagnostics?|lint\w*|type[- ]?check\w*|fails?|failing|broken|bugs?)\b",
    re.I)
_IDENT = re.compile(r"[^\W\d]\w*")


class ContextRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What to gather. ``file`` is relative to the workspace; ``line``/``character`` 0-based."""

    file: str | None = None
    line: int | None = None
    character: int | None = None
    symbol: str | None = None
    references: bool = False
    diagnostics: bool = False
    overview: bool = True
    #: No symbol given: take the file's first top-level symbol (the warm-up uses this).
    pick_symbol: bool = False


def context_request(
    *,
    file: str | None,
    position: tuple[int, int] | None,
    symbol: str | None,
    category: str,
    query: str = "",
) -> ContextRequest:
    """The plan for a routed request: references for refactor/rename-like requests, diagnostics
    for analysis requests (or requests about errors and failures)."""
    references = bool(_REFERENCE_WORDS.search(query))
    diagnostics = category == "analysis" or bool(_DIAGNOSTIC_WORDS.search(query))
    line, character = position if position is not None else (None, None)
    return ContextRequest(file=file, line=line, character=character, symbol=symbol or None,
                          references=references, diagnostics=diagnostics and file is not None)


def identifier_at(text: str, character: int) -> str | None:
    """The identifier in ``text`` under (or just before) column ``character``, or None."""
    for m in _IDENT.finditer(text):
        if m.start() <= character <= m.end():
            return m.group()
    return None


# --- findings -----------------------------------------------------------------------------------


class SymbolInfo(msgspec.Struct, frozen=True, kw_only=True):
    name_path: str
    kind: str = ""
    file: str = ""
    line: int | None = None  # 0-based first line of the body
    end_line: int | None = None
    info: str | None = None  # signature and docs (hover-like)


class Reference(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    line: int | None  # 0-based
    symbol: str = ""  # the referencing symbol's name path
    text: str = ""  # the referencing line


class Diagnostic(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    line: int | None  # 0-based
    severity: str
    message: str
    symbol: str = ""


class ContextParts(msgspec.Struct, kw_only=True):
    """What the steps found (mutable while a planner runs)."""

    file: str | None = None
    symbol: SymbolInfo | None = None
    references: list[Reference] = msgspec.field(default_factory=list)
    overview: str | None = None
    diagnostics: list[Diagnostic] = msgspec.field(default_factory=list)
    notes: list[str] = msgspec.field(default_factory=list)


class ContextResult(msgspec.Struct, frozen=True, kw_only=True):
    """Serena's context for one request, rendered within the token budget in ``text``."""

    workspace: str
    parts: ContextParts
    text: str
    tokens: int
    truncated: bool
    elapsed_ms: float


class ContextUnavailable(msgspec.Struct, frozen=True):
    """No context: ``reason`` says why in one line (for the ``selected`` event)."""

    reason: str


# --- the plan -----------------------------------------------------------------------------------


class Step(msgspec.Struct, frozen=True):
    key: str  # line | symbol | symbol_anywhere | references | overview | diagnostics
    tool: str
    arguments: dict[str, Any]


class StepOutcome(msgspec.Struct, frozen=True):
    """A step's result: Serena's answer text, or ``failure`` (a timeout, Serena gone)."""

    text: str = ""
    is_error: bool = False
    failure: str | None = None


class ContextPlanner:
    """The sans-IO conversation that gathers context for one :class:`ContextRequest`."""

    def __init__(self, request: ContextRequest) -> None:
        self.request = request
        self._parts = ContextParts(file=request.file)
        self._asked: set[str] = set()
        self._symbol = request.symbol
        self._want_symbol_anywhere = False

    def next_step(self) -> Step | None:
        """The next call to make, or None when the plan is complete."""
        for step in self._candidates():
            if step.key not in self._asked:
                self._asked.add(step.key)
                return step
        return None

    def _candidates(self) -> Iterator[Step]:
        req, f = self.request, self.request.file
        if f and req.line is not None and self._symbol is None:
            yield Step("line", "read_file",
                       {"relative_path": f, "start_line": req.line, "end_line": req.line})
        if f and req.pick_symbol and self._symbol is None:
            yield self._overview_step(f)
        if self._symbol is not None:
            yield Step("symbol", "find_symbol", {
                "name_path_pattern": self._symbol, "relative_path": f or "",
                "include_info": True, "max_answer_chars": MAX_ANSWER_CHARS})
            if self._want_symbol_anywhere:
                yield Step("symbol_anywhere", "find_symbol", {
                    "name_path_pattern": self._symbol, "include_info": True,
                    "max_answer_chars": MAX_ANSWER_CHARS})
        found = self._parts.symbol
        if req.references and found is not None and found.file:
            yield Step("references", "find_referencing_symbols", {
                "name_path": found.name_path, "relative_path": found.file,
                "max_answer_chars": MAX_ANSWER_CHARS})
        if f and req.overview:
            yield self._overview_step(f)
        if f and req.diagnostics:
            yield Step("diagnostics", "get_diagnostics_for_file", {
                "relative_path": f, "min_severity": DIAGNOSTIC_SEVERITY,
                "max_answer_chars": MAX_ANSWER_CHARS})

    @staticmethod
    def _overview_step(f: str) -> Step:
        return Step("overview", "get_symbols_overview",
                    {"relative_path": f, "depth": 1, "max_answer_chars": MAX_ANSWER_CHARS})

    def feed(self, step: Step, outcome: StepOutcome) -> None:
        """Record what ``step`` gave. Never raises on a strange answer: it becomes a note."""
        if outcome.failure is not None:
            self._parts.notes.append(f"{step.key}: {outcome.failure}")
            return
        if outcome.is_error:
            self._parts.notes.append(f"{step.key}: {_first_line(outcome.text)}")
            if step.key == "symbol" and self.request.file:
                self._want_symbol_anywhere = True
            return
        data = _json(outcome.text)
        if step.key == "line":
            col = self.request.character or 0
            self._symbol = identifier_at(outcome.text.split("\n", 1)[0], col)
            if self._symbol is None:
                self._parts.notes.append("line: no identifier at the cursor")
        elif step.key in ("symbol", "symbol_anywhere"):
            found = _best_symbol(data, self.request.line, self.request.file)
            if found is None:
                self._parts.notes.append(f"{step.key}: {self._symbol!r} not found")
                self._want_symbol_anywhere = step.key == "symbol" and bool(self.request.file)
            else:
                self._parts.symbol = found
        elif step.key == "references":
            self._parts.references = _references(data)
        elif step.key == "overview":
            self._parts.overview = _overview_text(data) if data is not None else outcome.text
            if self.request.pick_symbol and self._symbol is None:
                self._symbol = _first_symbol(data)
        elif step.key == "diagnostics":
            self._parts.diagnostics = _diagnostics(data)

    def parts(self) -> ContextParts:
        return self._parts


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:200]
    return "error"


def _json(text: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _best_symbol(data: Any, line: int | None, file: str | None) -> SymbolInfo | None:
    """The match whose body contains ``line`` in ``file``; else the first in ``file``; else the
    first. Serena's ``find_symbol`` answers a list of ``{name_path, kind, relative_path,
    body_location: {start_line, end_line}, info}``."""
    if not isinstance(data, list):
        return None
    found: list[SymbolInfo] = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("name_path"), str):
            continue
        loc = item.get("body_location")
        if not isinstance(loc, dict):
            loc = {}
        info = item.get("info")
        found.append(SymbolInfo(
            name_path=item["name_path"], kind=str(item.get("kind", "")),
            file=str(item.get("relative_path", "")), line=_int(loc.get("start_line")),
            end_line=_int(loc.get("end_line")), info=info if isinstance(info, str) else None))
    if not found:
        return None
    in_file = [s for s in found if file is None or s.file == file]
    if line is not None:
        for s in in_file:
            if s.line is not None and s.end_line is not None and s.line <= line <= s.end_line:
                return s
    return (in_file or found)[0]


_MARKED = re.compile(r"^\s*>\s*(\d+):(.*)$", re.M)


def _references(data: Any) -> list[Reference]:
    """``{file: {kind: [{name_path, content_around_reference}]}}`` -> references, deduplicated
    by (file, line), in Serena's order."""
    out: list[Reference] = []
    seen: set[tuple[str, int | None]] = set()
    if not isinstance(data, dict):
        return out
    for file, kinds in data.items():
        if not isinstance(kinds, dict):
            continue
        for items in kinds.values():
            for item in items if isinstance(items, list) else ():
                if not isinstance(item, dict):
                    continue
                around = item.get("content_around_reference")
                m = _MARKED.search(around) if isinstance(around, str) else None
                line = int(m.group(1)) if m else None
                if (file, line) in seen:
                    continue
                seen.add((file, line))
                out.append(Reference(file=str(file), line=line,
                                     symbol=str(item.get("name_path", "")),
                                     text=m.group(2).strip() if m else ""))
    return out


def _overview_text(data: Any) -> str:
    """Serena's overview (``{kind: [name | {name: {kind: [names]}}]}``) as compact lines."""
    if not isinstance(data, dict):
        return str(data)
    lines = []
    for kind, items in data.items():
        names = []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, str):
                names.append(item)
            elif isinstance(item, dict):
                for name, children in item.items():
                    inner = ", ".join(
                        f"{k.lower()}s {', '.join(map(str, v))}" for k, v in children.items()
                        if isinstance(v, list)) if isinstance(children, dict) else ""
                    names.append(f"{name} ({inner})" if inner else str(name))
        lines.append(f"- {kind}: {'; '.join(names)}")
    return "\n".join(lines)


def _first_symbol(data: Any) -> str | None:
    """The first class or function in an overview (a warm-up target)."""
    if not isinstance(data, dict):
        return None
    for kind in ("Class", "Function", "Method", "Struct", "Interface"):
        items = data.get(kind)
        for item in items if isinstance(items, list) else ():
            name: Any = item
            if isinstance(item, dict):
                name = next(iter(item), None)
            if isinstance(name, str) and name:
                return name
    return None


def _diagnostics(data: Any) -> list[Diagnostic]:
    """``{file: {severity: {name_path: [{message, range}]}}}`` -> diagnostics, worst first."""
    out: list[Diagnostic] = []
    if not isinstance(data, dict):
        return out
    for file, severities in data.items():
        if not isinstance(severities, dict):
            continue
        for severity, symbols in severities.items():
            for symbol, items in symbols.items() if isinstance(symbols, dict) else ():
                for item in items if isinstance(items, list) else ():
                    if not isinstance(item, dict):
                        continue
                    rng = item.get("range")
                    start = rng.get("start") if isinstance(rng, dict) else None
                    line = _int(start.get("line")) if isinstance(start, dict) else None
                    out.append(Diagnostic(
                        file=str(file), line=line, severity=str(severity),
                        message=_first_line(str(item.get("message", ""))),
                        symbol="" if symbol == "<file>" else str(symbol)))
    out.sort(key=lambda d: _SEVERITY.get(d.severity, 9))
    return out


# --- the prompt ---------------------------------------------------------------------------------


def _where(file: str, line: int | None) -> str:
    return f"{file}:{line + 1}" if line is not None else file


def render_context(parts: ContextParts, budget: int, family: str = "default") -> tuple[
        str, int, bool]:
    """Markdown for ``parts`` within ``budget`` tokens: ``(text, tokens, truncated)``.

    Sections in priority order; a list keeps as many items as fit and counts the rest.
    """
    out: list[str] = []
    truncated = False

    def cost(lines: list[str]) -> int:
        return count_text("\n".join([*out, *lines]), family)

    def add(lines: list[str]) -> bool:
        nonlocal truncated
        if cost(lines) <= budget:
            out.extend(lines)
            return True
        truncated = True
        return False

    def add_list(head: str, items: list[str]) -> None:
        nonlocal truncated
        if not items or not add(["", head]):
            return
        for i, item in enumerate(items):
            rest = len(items) - i - 1
            more = [f"- ... and {rest} more"] if rest else []
            if cost([item, *more]) <= budget:
                out.append(item)
                continue
            truncated = True
            tail = f"- ... and {len(items) - i} more"
            if cost([tail]) <= budget:
                out.append(tail)
            return

    sym = parts.symbol
    if sym is not None:
        where = _where(sym.file, sym.line) if sym.file else "unknown file"
        lines = ["", "## Type Information", f"`{sym.name_path}` ({sym.kind or 'symbol'}) at {where}"]
        if sym.info:
            lines += ["```", sym.info.strip(), "```"]
        if not add(lines) and sym.info:
            add(lines[:3])
    refs = parts.references
    add_list(f"## References ({len(refs)} found)", [
        f"- {_where(r.file, r.line)}" + (f" in `{r.symbol}`" if r.symbol else "")
        + (f": `{r.text}`" if r.text else "") for r in refs])
    if parts.overview:
        add_list(f"## File Overview ({parts.file})", parts.overview.splitlines())
    diags = parts.diagnostics
    add_list(f"## Current Issues ({len(diags)})", [
        f"- Line {d.line + 1 if d.line is not None else '?'} ({d.severity}): {d.message}"
        for d in diags])
    text = "\n".join(out).strip("\n")
    return text, count_text(text, family), truncated


def enrich_query(query: str, context: ContextResult | ContextUnavailable | None) -> str:
    """``query`` followed by Serena's context, if there is any."""
    if not isinstance(context, ContextResult) or not context.text:
        return query
    return f"{query}\n\n{context.text}"
