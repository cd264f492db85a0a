"""Journal or stderr: the decision, and the structured fields a journal record carries."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from routerd.shell.logs import event, setup_logging, use_journal


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, its handlers and level put back afterwards (setup_logging replaces
    them, pytest's own capture handler included)."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        yield root
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)


def _ident(f: Any) -> str:
    st = os.fstat(f.fileno())
    return f"{st.st_dev}:{st.st_ino}"


def test_journal_only_when_journal_stream_names_our_stderr(tmp_path):
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        assert use_journal({"JOURNAL_STREAM": _ident(a)}, a)
        assert not use_journal({"JOURNAL_STREAM": _ident(b)}, a)  # stderr went elsewhere
        assert not use_journal({}, a)
        assert not use_journal({"JOURNAL_STREAM": "garbage"}, a)
    assert not use_journal({"JOURNAL_STREAM": "1:2"}, io.StringIO())  # no descriptor


def test_journal_records_carry_structured_fields(tmp_path, root_logger):
    sent: list[tuple[str, dict[str, Any]]] = []

    def send(message: str, /, **fields: Any) -> None:  # as journal.send(MESSAGE, ...)
        sent.append((message, fields))

    with open(tmp_path / "stderr", "w") as stderr:
        chosen = setup_logging(
            "info", env={"JOURNAL_STREAM": _ident(stderr)}, stream=stderr, journal_send=send
        )
        assert chosen == "journal"
        logging.getLogger("routerd.shell.app").warning(
            "configuration reload (%s) failed", "SIGHUP",
            extra=event("reload_failed", generation=3),
        )
        logging.getLogger("routerd.shell.serena").debug("not at info level")
        logging.getLogger("routerd.shell.serena").info("warm", extra={"ROUTERD_COMPONENT": "mcp"})
    assert os.path.getsize(tmp_path / "stderr") == 0  # nothing went to stderr
    (msg, fields), (msg2, fields2) = sent
    assert msg == "configuration reload (SIGHUP) failed"
    assert fields["SYSLOG_IDENTIFIER"] == "routerd"
    assert fields["PRIORITY"] == "4"  # warning
    assert fields["ROUTERD_COMPONENT"] == "app"
    assert fields["ROUTERD_EVENT"] == "reload_failed"
    assert fields["ROUTERD_GENERATION"] == 3
    assert msg2 == "warm" and fields2["ROUTERD_COMPONENT"] == "mcp"
    assert "ROUTERD_EVENT" not in fields2


def test_stderr_records_are_stamped_text(root_logger):
    out = io.StringIO()
    assert setup_logging("debug", env={}, stream=out) == "stderr"
    logging.getLogger("routerd.shell.app").info("hello", extra=event("ready"))
    line = out.getvalue().strip()
    assert line.endswith("INFO routerd.shell.app: hello")
    assert line[:4].isdigit()  # the time comes first


def test_stderr_that_is_not_the_journal_stream_is_stamped_too(tmp_path, root_logger):
    with open(tmp_path / "log", "w") as f:
        chosen = setup_logging("info", env={"JOURNAL_STREAM": "1:1"}, stream=f)
        logging.getLogger("routerd").info("hello")
    assert chosen == "stderr"
    assert (tmp_path / "log").read_text()[:4].isdigit()
