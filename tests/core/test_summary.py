"""The deterministic extractive summary."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core.context import Message
from routerd.core.summary import (
    SUMMARY_HEADER,
    complete_summary,
    extract_facts,
    extractive_summary,
    render_facts,
)

CHAT = [
    Message(
        "user",
        "Please refactor routerd/core/tokens.py so it calibrates. "
        "Should we persist the `Calibration` table across restarts?",
    ),
    Message(
        "assistant",
        "We'll use msgspec for the Calibration struct. The estimator lives in "
        "routerd.core.tokens and count_text(text, family) stays public; the old TokenCounter "
        "class goes away.\n```python\nif x == 1:\n    raise ValueError('decided? no')\n```",
    ),
    Message(
        "tool",
        'Traceback (most recent call last):\n  File "/srv/app/shell/server.py", line 3\n'
        "TypeError: unsupported operand\n"
        "tests/core/test_tokens.py::test_x FAILED",
    ),
    Message(
        "user",
        "Let's go with trio for the shell, see docs/operations.md. Is the TypeError fixed yet?",
    ),
    Message("assistant", "Yes: the TypeError is fixed in shell/server.py by casting first."),
]


def test_keeps_decisions_files_symbols_and_errors() -> None:
    text = extractive_summary(CHAT)
    assert text.startswith(f"{SUMMARY_HEADER}: 5 messages (2 assistant, 1 tool, 2 user)]")
    for needle in (
        "We'll use msgspec for the Calibration struct.",
        "Let's go with trio for the shell, see docs/operations.md.",
        "routerd/core/tokens.py",
        "docs/operations.md",
        "/srv/app/shell/server.py",
        "routerd.core.tokens",
        "count_text()",
        "TokenCounter",
        "Calibration",
        "TypeError: unsupported operand",
        "tests/core/test_tokens.py::test_x FAILED",
        "Please refactor routerd/core/tokens.py so it calibrates.",
    ):
        assert needle in text, needle


def test_open_questions_are_those_not_answered_later() -> None:
    facts = extract_facts(CHAT)
    assert facts.questions == ["Should we persist the `Calibration` table across restarts?"]
    # An answer among the turns kept after the summarised ones closes it too.
    answer = Message("assistant", "We persist the Calibration table across restarts on disk.")
    assert extract_facts(CHAT, later=[answer]).questions == []


def test_code_blocks_and_prose_mentions_are_not_errors_or_decisions() -> None:
    facts = extract_facts(CHAT)
    assert not any("decided? no" in d for d in facts.decisions)
    assert facts.errors == [
        "tests/core/test_tokens.py::test_x FAILED",
        "TypeError: unsupported operand",
    ]


def test_names_that_are_not_files_or_symbols() -> None:
    facts = extract_facts(
        [Message("user", "Use and/or e.g. i.e. 3.11 at https://example.org/x/y.py or URLs.")]
    )
    assert facts.files == []
    assert facts.symbols == []


def test_bounded_and_every_section_gets_a_share() -> None:
    text = extractive_summary(CHAT, max_chars=300)
    assert len(text) <= 300
    assert "Decisions:" in text and "Files:" in text and "Symbols:" in text
    assert extractive_summary(CHAT, max_chars=10) == SUMMARY_HEADER[:10]


def test_summary_of_a_summary_keeps_what_the_first_kept() -> None:
    first = extractive_summary(CHAT)
    again = extractive_summary([Message("system", first), Message("user", "Continue.")])
    assert again.startswith(f"{SUMMARY_HEADER}: 6 messages (2 assistant, 1 tool, 3 user)]")
    again_lines = again.splitlines()
    for line in first.splitlines()[1:]:
        if line.startswith(("Files: ", "Symbols: ")):
            title, items = line.split(": ", 1)
            kept = next(x for x in again_lines if x.startswith(title + ": "))
            assert set(kept.split(": ", 1)[1].split(", ")) == set(items.split(", "))
        else:
            assert line in again_lines
    assert "- Continue." in again_lines


def test_complete_summary_appends_what_a_model_left_out() -> None:
    facts = extract_facts(CHAT)
    text = complete_summary("The user wants calibration in routerd/core/tokens.py.", facts)
    assert "docs/operations.md" in text and "TokenCounter" in text
    assert text.count("routerd/core/tokens.py") == 1


@given(st.lists(st.text(st.characters(codec=None, exclude_categories=())), max_size=6))
@settings(max_examples=150)
def test_never_raises_and_is_deterministic(contents: list[str]) -> None:
    roles = ["user", "assistant", "tool", "system"]
    msgs = [Message(roles[i % 4], c) for i, c in enumerate(contents)]  # type: ignore[arg-type]
    text = extractive_summary(msgs, max_chars=500)
    assert len(text) <= 500
    assert text == extractive_summary(msgs, max_chars=500)
    assert render_facts(extract_facts(msgs), 500) == text


def test_linear_on_huge_tool_output() -> None:
    blob = "a" * 200_000 + " " + "x/" * 50_000 + "\n" + "Error: " * 10_000
    facts = extract_facts([Message("tool", blob)])
    assert facts.errors  # found, and quickly: a backtracking scan would not finish
