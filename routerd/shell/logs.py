"""Where the daemon's log goes: the journal, with structured fields, or stderr.

Under systemd (``JOURNAL_STREAM`` names the file stderr is) records go to journald through
systemd-python's ``JournalHandler``, each with ``SYSLOG_IDENTIFIER=routerd``,
``ROUTERD_COMPONENT`` (the last part of the logger's name: ``app``, ``serena``...) and, when
the call passes ``extra=event("name", ...)``, ``ROUTERD_EVENT`` and its ``ROUTERD_*`` fields.
So ``journalctl -u routerd ROUTERD_EVENT=reload_failed`` finds every rejected reload.
Elsewhere records go to stderr as text, with timestamps unless journald adds its own.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from routerd.core.service_manager import journal_stream_matches

__all__ = ["event", "ComponentFilter", "use_journal", "setup_logging"]

_FORMAT = "%(levelname)s %(name)s: %(message)s"


def event(name: str, **fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call: ``ROUTERD_EVENT=name`` plus ``ROUTERD_<FIELD>`` per field."""
    extra: dict[str, Any] = {"ROUTERD_EVENT": name}
    for key, value in fields.items():
        extra[f"ROUTERD_{key.upper()}"] = value
    return extra


class ComponentFilter(logging.Filter):
    """Adds ``ROUTERD_COMPONENT`` (unless the call gave one): the logger name's last part."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "ROUTERD_COMPONENT"):
            record.ROUTERD_COMPONENT = record.name.rpartition(".")[2]
        return True


def use_journal(env: Mapping[str, str], stream: TextIO) -> bool:
    """True if ``stream`` (stderr) is the journal stream systemd announced in ``env``."""
    value = env.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):  # closed, or no file descriptor (a test's StringIO)
        return False
    return journal_stream_matches(value, st.st_dev, st.st_ino)


def _journal_handler(send: Callable[..., Any] | None) -> logging.Handler | None:
    try:
        import systemd.journal as journal  # optional; Linux only
    except ImportError:
        return None
    handler: logging.Handler = journal.JournalHandler(
        sender_function=send or journal.send, SYSLOG_IDENTIFIER="routerd"
    )
    return handler


def setup_logging(
    level: str,
    *,
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    journal_send: Callable[..., Any] | None = None,
) -> str:
    """Send the root logger's records to the journal or to ``stream`` (default stderr).

    ``journal_send`` replaces ``systemd.journal.send`` (``send(MESSAGE, **fields)``).
    Returns ``"journal"`` or ``"stderr"``, whichever was chosen.
    """
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    journal = use_journal(env, stream)
    handler = _journal_handler(journal_send) if journal else None
    if handler is not None:
        handler.setFormatter(logging.Formatter("%(message)s"))
        chosen = "journal"
    else:
        handler = logging.StreamHandler(stream)
        # Journald stamps what reaches it through stderr; a terminal or file needs the time.
        stamped = not journal
        handler.setFormatter(logging.Formatter(("%(asctime)s " if stamped else "") + _FORMAT))
        chosen = "stderr"
    handler.addFilter(ComponentFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    return chosen
