"""Serena-first context: the plan, reading Serena's answers, the prompt within a budget.

The answers below are verbatim from serena-agent 2.1.0 with jedi-language-server on
tests/data/serena_project.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.serena_context import (
    ContextParts,
    ContextPlanner,
    ContextRequest,
    ContextResult,
    ContextUnavailable,
    Diagnostic,
    Reference,
    StepOutcome,
    SymbolInfo,
    context_request,
    enrich_query,
    identifier_at,
    render_context,
)
from routerd.core.tokens import count_text

FIND_CIRCLE_IN_REPORT = (
    '[{"name_path": "Circle", "kind": "Class", "relative_path": "geometry/report.py", '
    '"body_location": {"start_line": 2, "end_line": 2}, "info": "class Circle(radius: float)'
    '\\n---\\nA circle of a given radius.\\nFull name: geometry.shapes.Circle"}]')
REFS_TOTAL_AREA = (
    '{"geometry/__init__.py": {"File": [{"name_path": "__init__", "body_location": '
    '{"start_line": 0, "end_line": 6}, "content_around_reference": "...   1:\\n  >   2:from '
    'geometry.shapes import Circle, Square, total_area\\n...   3:"}]}, "geometry/report.py": '
    '{"File": [{"name_path": "report", "body_location": {"start_line": 0, "end_line": 13}, '
    '"content_around_reference": "...   1:\\n  >   2:from geometry.shapes import Circle, '
    'Square, total_area\\n...   3:"}], "Function": [{"name_path": "report", "body_location": '
    '{"start_line": 5, "end_line": 7}, "content_around_reference": "...   6:    shapes = '
    '[Circle(1.0), Square(2.0), Circle(0.5)]\\n  >   7:    return f\\"{len(shapes)} shapes, '
    'total area {total_area(shapes):.2f}\\"\\n...   8:"}]}}')
OVERVIEW_DEPTH_1 = (
    '{"Module": ["math"], "Class": [{"Circle": {"Method": ["__init__", "area"]}}, {"Square": '
    '{"Method": ["__init__", "area"]}}], "Function": ["total_area"]}')
DIAGNOSTICS_BAD = (
    '{"geometry/bad.py": {"Error": {"<file>": [{"message": "SyntaxError: invalid syntax '
    '(bad.py, line 1)", "range": {"start": {"line": 0, "character": 6}, "end": {"line": 0, '
    '"character": 7}}, "source": "compile"}]}}}')


def drive(req: ContextRequest, answers: dict[str, StepOutcome]) -> tuple[list[str], ContextParts]:
    """Run a planner against canned answers (by step key); return the tools asked, in order."""
    planner = ContextPlanner(req)
    asked = []
    while (step := planner.next_step()) is not None:
        asked.append(step.key)
        planner.feed(step, answers.get(step.key, StepOutcome(text="[]")))
    return asked, planner.parts()


def test_position_to_symbol_to_references_to_overview() -> None:
    req = context_request(file="geometry/report.py", position=(6, 16), symbol=None,
                          category="coding", query="rename Circle to Disc everywhere")
    assert req.references and not req.diagnostics
    asked, parts = drive(req, {
        "line": StepOutcome(text="    shapes = [Circle(1.0), Square(2.0), Circle(0.5)]"),
        "symbol": StepOutcome(text=FIND_CIRCLE_IN_REPORT),
        "references": StepOutcome(text=REFS_TOTAL_AREA),
        "overview": StepOutcome(text=OVERVIEW_DEPTH_1),
    })
    assert asked == ["line", "symbol", "references", "overview"]
    assert parts.symbol == SymbolInfo(
        name_path="Circle", kind="Class", file="geometry/report.py", line=2, end_line=2,
        info="class Circle(radius: float)\n---\nA circle of a given radius.\n"
             "Full name: geometry.shapes.Circle")
    assert [(r.file, r.line, r.symbol) for r in parts.references] == [
        ("geometry/__init__.py", 2, "__init__"), ("geometry/report.py", 2, "report"),
        ("geometry/report.py", 7, "report")]
    assert parts.references[2].text.startswith('return f"{len(shapes)}')
    assert parts.overview == ("- Module: math\n- Class: Circle (methods __init__, area); "
                              "Square (methods __init__, area)\n- Function: total_area")


def test_the_steps_ask_serena_the_right_questions() -> None:
    planner = ContextPlanner(ContextRequest(file="a.py", line=3, character=4, references=True,
                                            diagnostics=True))
    step = planner.next_step()
    assert step is not None and (step.tool, step.arguments) == (
        "read_file", {"relative_path": "a.py", "start_line": 3, "end_line": 3})
    planner.feed(step, StepOutcome(text="x = foo.bar(1)"))
    step = planner.next_step()
    assert step is not None and step.tool == "find_symbol"
    assert step.arguments["name_path_pattern"] == "foo" and step.arguments["include_info"]
    planner.feed(step, StepOutcome(text='[{"name_path": "foo", "relative_path": "a.py"}]'))
    step = planner.next_step()
    assert step is not None and (step.tool, step.arguments["name_path"]) == (
        "find_referencing_symbols", "foo")
    planner.feed(step, StepOutcome(failure="out of time"))
    tools = []
    while (step := planner.next_step()) is not None:
        tools.append(step.tool)
        planner.feed(step, StepOutcome(text="{}"))
    assert tools == ["get_symbols_overview", "get_diagnostics_for_file"]
    assert planner.parts().notes == ["references: out of time"]


def test_a_symbol_not_in_the_file_is_looked_up_everywhere() -> None:
    req = ContextRequest(file="geometry/report.py", symbol="math")
    asked, parts = drive(req, {"symbol": StepOutcome(text="[]"),
                               "symbol_anywhere": StepOutcome(text=FIND_CIRCLE_IN_REPORT)})
    assert asked == ["symbol", "symbol_anywhere", "overview"]
    assert parts.symbol is not None and parts.notes == ["symbol: 'math' not found"]


def test_errors_become_notes_and_the_plan_goes_on() -> None:
    req = ContextRequest(file="gone.py", symbol="X", diagnostics=True)
    err = StepOutcome(text="Error executing tool find_symbol: FileNotFoundError: gone.py",
                      is_error=True)
    asked, parts = drive(req, {"symbol": err, "symbol_anywhere": err,
                               "overview": StepOutcome(text="not json at all"),
                               "diagnostics": StepOutcome(text=DIAGNOSTICS_BAD)})
    assert asked == ["symbol", "symbol_anywhere", "overview", "diagnostics"]
    assert parts.symbol is None and len(parts.notes) == 2
    assert parts.overview == "not json at all"
    assert parts.diagnostics == [Diagnostic(file="geometry/bad.py", line=0, severity="Error",
                                            message="SyntaxError: invalid syntax (bad.py, line 1)")]


def test_warm_up_picks_the_first_symbol_from_the_overview() -> None:
    req = ContextRequest(file="geometry/shapes.py", pick_symbol=True, references=True,
                         diagnostics=True)
    planner = ContextPlanner(req)
    steps = []
    while (step := planner.next_step()) is not None:
        steps.append((step.key, step.arguments.get("name_path_pattern",
                                                   step.arguments.get("name_path"))))
        text = {"overview": OVERVIEW_DEPTH_1,
                "symbol": '[{"name_path": "Circle", "relative_path": "geometry/shapes.py"}]'
                }.get(step.key, "{}")
        planner.feed(step, StepOutcome(text=text))
    assert steps == [("overview", None), ("symbol", "Circle"), ("references", "Circle"),
                     ("diagnostics", None)]


def test_nothing_to_ask_without_file_or_symbol() -> None:
    assert ContextPlanner(ContextRequest()).next_step() is None


@pytest.mark.parametrize(("query", "category", "refs", "diags"), [
    ("rename get_user to fetch_user", "coding", True, False),
    ("refactor this class into two", "coding", True, False),
    ("where is parse_config used?", "analysis", True, True),
    ("why does this fail with a KeyError", "coding", False, True),
    ("add a docstring", "documentation", False, False),
])
def test_what_a_request_asks_for(query: str, category: str, refs: bool, diags: bool) -> None:
    req = context_request(file="a.py", position=None, symbol=None, category=category,
                          query=query)
    assert (req.references, req.diagnostics) == (refs, diags)


@pytest.mark.parametrize(("text", "col", "want"), [
    ("    shapes = [Circle(1.0)]", 14, "Circle"),
    ("    shapes = [Circle(1.0)]", 20, "Circle"),  # just after it
    ("    shapes = [Circle(1.0)]", 0, None),
    ("x = größe + 1", 6, "größe"),
    ("value2 = 3", 3, "value2"),
    ("123 + abc", 1, None),
])
def test_identifier_at(text: str, col: int, want: str | None) -> None:
    assert identifier_at(text, col) == want


def test_best_symbol_prefers_the_one_around_the_cursor() -> None:
    two = msgspec.json.encode([
        {"name_path": "f", "relative_path": "a.py", "body_location": {"start_line": 1,
                                                                      "end_line": 3}},
        {"name_path": "C/f", "relative_path": "a.py", "body_location": {"start_line": 10,
                                                                        "end_line": 12}},
    ]).decode()
    _, parts = drive(ContextRequest(file="a.py", line=11, symbol="f"),
                     {"symbol": StepOutcome(text=two)})
    assert parts.symbol is not None and parts.symbol.name_path == "C/f"


# --- the prompt ---------------------------------------------------------------------------------

FULL = ContextParts(
    file="geometry/report.py",
    symbol=SymbolInfo(name_path="Circle", kind="Class", file="geometry/shapes.py", line=5,
                      end_line=12, info="class Circle(radius: float)"),
    references=[Reference(file="geometry/report.py", line=i, symbol="report", text=f"use {i}")
                for i in range(30)],
    overview="- Class: Circle; Square",
    diagnostics=[Diagnostic(file="geometry/report.py", line=0, severity="Error",
                            message="SyntaxError")],
)


def test_render_follows_the_seed_layout() -> None:
    text, tokens, truncated = render_context(FULL, 10_000)
    assert not truncated and tokens == count_text(text, "default")
    assert text.startswith("## Type Information\n`Circle` (Class) at geometry/shapes.py:6\n"
                           "```\nclass Circle(radius: float)\n```")
    assert "## References (30 found)\n- geometry/report.py:1 in `report`: `use 0`" in text
    assert "## File Overview (geometry/report.py)\n- Class: Circle; Square" in text
    assert text.endswith("## Current Issues (1)\n- Line 1 (Error): SyntaxError")


def test_a_small_budget_keeps_the_first_sections_and_counts_the_rest() -> None:
    text, tokens, truncated = render_context(FULL, 120)
    assert truncated and tokens <= 120
    assert "## Type Information" in text and "more" in text


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=600))
def test_render_never_exceeds_the_budget(budget: int) -> None:
    text, tokens, _ = render_context(FULL, budget)
    assert tokens <= budget and count_text(text, "default") == tokens


def test_enrich_query() -> None:
    text, tokens, trunc = render_context(FULL, 500)
    ctx = ContextResult(workspace="/w", parts=FULL, text=text, tokens=tokens, truncated=trunc,
                        elapsed_ms=1.0)
    assert enrich_query("Rename Circle", ctx) == f"Rename Circle\n\n{text}"
    assert enrich_query("q", ContextUnavailable("Serena is down")) == "q"
    assert enrich_query("q", None) == "q"


def _parse(data: Any) -> str:
    return msgspec.json.encode(data).decode()


def test_strange_answers_do_not_break_the_plan() -> None:
    weird = [_parse(x) for x in ([1, None, {"name_path": 3}], {"a": [1]}, {"f": {"k": "x"}},
                                 "text", {"Class": [{"X": 1}]})]
    for text in weird:
        _, parts = drive(ContextRequest(file="a.py", symbol="X", references=True,
                                        diagnostics=True),
                         {k: StepOutcome(text=text) for k in
                          ("symbol", "symbol_anywhere", "references", "overview",
                           "diagnostics")})
        render_context(parts, 200)
