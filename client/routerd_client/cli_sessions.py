"""routerctl commands for stored conversations: ``sessions`` and ``session show|reset|export``.

``sessions`` lists your sessions (``--all``: everyone's, for root and routerd's own user);
``session show ID`` prints one with its last messages; ``session reset ID`` deletes it and its
text; ``session export ID`` prints everything routerd holds about it as JSON (``-o FILE``
writes a 0600 file instead; on Windows mode bits do not apply: the file inherits its folder's
ACL). ``--json`` prints the daemon's result as it came. Like all of
routerctl, this module imports neither trio nor httpx.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import msgspec

from ._sync import typed_result
from .cli import (
    EXIT_OK,
    EXIT_USAGE,
    GROUPS,
    Context,
    command,
    human_duration,
    local_time,
    print_json,
    table,
)
from .cli_services import columns
from .protocol_sessions import (
    SessionDetail,
    SessionExport,
    SessionInfo,
    SessionMessage,
    SessionResetResult,
    SessionsListResult,
)

__all__ = [
    "cmd_session_export",
    "cmd_session_reset",
    "cmd_session_show",
    "cmd_sessions",
    "format_session",
    "format_sessions",
]

GROUPS["session"] = "show, reset or export one stored conversation"

_DASH = "-"

# A new file for ``session export -o``: never an existing one, never inherited by children
# (on Windows ``os.open`` makes descriptors non-inheritable anyway, PEP 446), and there in
# binary mode, or ``\n`` would be written as ``\r\n``.
if sys.platform == "win32":
    _CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_BINARY
else:
    _CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
#: Characters of a message ``session show`` prints without ``--full``.
SHOWN_CHARS = 400


def _ago(ts: float, now: float) -> str:
    return human_duration(now - ts) + " ago"


def format_sessions(sessions: Sequence[SessionInfo], *, owners: bool, now: float) -> str:
    """The table of ``routerctl sessions``."""
    if not sessions:
        return "no sessions"
    header = ["ID", "USED", "TURNS", "MESSAGES", "TOKENS", "MODEL", "AGENT"]
    if owners:
        header.append("OWNER")
    rows = []
    for s in sessions:
        turns = str(s.turns) + (f" ({s.partial_turns} partial)" if s.partial_turns else "")
        row = [s.id, _ago(s.updated_at, now), turns, str(s.messages), str(s.tokens),
               s.active_model or _DASH, s.agent or _DASH]  # fmt: skip
        if owners:
            row.append(str(s.owner_uid))
        rows.append(row)
    return columns(header, rows)


def _message_text(m: SessionMessage, full: bool) -> str:
    flags = [k for k in ("partial", "summary", "truncated") if m.metadata.get(k) is True]
    head = f"[{m.role}" + (f" {m.name}" if m.name else "") + f"] {m.tokens} tokens"
    if flags:
        head += " (" + ", ".join(flags) + ")"
    body = m.content
    if not full and len(body) > SHOWN_CHARS:
        body = body[:SHOWN_CHARS] + f"… ({len(m.content) - SHOWN_CHARS} more characters)"
    return head + "\n" + "\n".join("  " + line for line in body.splitlines())


def format_session(d: SessionDetail, *, now: float, full: bool = False) -> str:
    """The text of ``routerctl session show``."""
    s = d.info
    rows = [
        ("id", s.id),
        ("owner uid", str(s.owner_uid)),
        ("agent", s.agent or _DASH),
        ("created", local_time(s.created_at)),
        ("last used", f"{local_time(s.updated_at)} ({_ago(s.updated_at, now)})"),
        ("expires", local_time(s.expires_at) if s.expires_at is not None else "never"),
        ("model", s.active_model or _DASH),
        ("models before", ", ".join(s.models_used) or _DASH),
        ("turns", f"{s.turns}, {s.partial_turns} partial"),
        ("messages", f"{s.messages}, {s.tokens} tokens"),
        ("compactions", str(s.compactions)),
    ]
    out = [table(rows)]
    if d.compactions:
        c = d.compactions[-1]
        out.append(
            f"last compaction (turn {c.turn}, {c.model or 'model unknown'}): {c.tokens_before} -> "
            f"{c.tokens_after} tokens of {c.window_tokens}; {c.summarised} summarised "
            f"({c.summary_source}), {c.dropped} dropped, {c.truncated} truncated"
        )
    if d.messages_omitted:
        out.append(f"... {d.messages_omitted} earlier messages (see --messages, or export)")
    out.extend(_message_text(m, full) for m in d.messages)
    return "\n\n".join(out)


# --- commands -----------------------------------------------------------------------------------


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true",
                   help="every user's sessions (root and routerd's own user only)")


@command("sessions", help="list your stored conversations, most recently used first",
         arguments=_list_arguments)
def cmd_sessions(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.connect() as client:
        raw = client.call("sessions.list", {"all": True} if args.all else {})
    res = typed_result(raw, SessionsListResult, "sessions.list")
    ctx.emit(raw, format_sessions(res.sessions, owners=args.all, now=time.time()))
    return EXIT_OK


def _id_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="the session id (32 hex digits; see routerctl sessions)")


def _show_arguments(p: argparse.ArgumentParser) -> None:
    _id_argument(p)
    p.add_argument("-n", "--messages", type=int, default=10, metavar="N",
                   help="show the last N messages (default 10; -1: all)")
    p.add_argument("--full", action="store_true", help="print messages whole, not cut short")


@command("session show", help="show one session: its models, turns and last messages",
         arguments=_show_arguments)
def cmd_session_show(ctx: Context, args: argparse.Namespace) -> int:
    if args.messages < -1:
        return ctx.fail("usage", "--messages must be -1 (all), 0 or more", EXIT_USAGE)
    with ctx.connect() as client:
        raw = client.call("sessions.show", {"id": args.id, "messages": args.messages})
    detail = typed_result(raw, SessionDetail, "sessions.show")
    ctx.emit(raw, format_session(detail, now=time.time(), full=args.full))
    return EXIT_OK


@command("session reset", help="delete one session and its text", arguments=_id_argument)
def cmd_session_reset(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.connect() as client:
        raw = client.call("sessions.reset", {"id": args.id})
    res = typed_result(raw, SessionResetResult, "sessions.reset")
    ctx.emit(raw, f"session {res.id} reset: {res.removed_messages} messages removed")
    return EXIT_OK


def _export_arguments(p: argparse.ArgumentParser) -> None:
    _id_argument(p)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the JSON to FILE (created 0600; must not exist)")


@command("session export", help="print one session as JSON (everything routerd holds)",
         arguments=_export_arguments)
def cmd_session_export(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.connect() as client:
        raw = client.call("sessions.export", {"id": args.id})
    typed_result(raw, SessionExport, "sessions.export")
    if args.output is None:
        print_json(raw)
        return EXIT_OK
    data = msgspec.json.format(msgspec.json.encode(raw), indent=2) + b"\n"
    try:
        fd = os.open(args.output, _CREATE_FLAGS, 0o600)
    except OSError as exc:
        return ctx.fail("usage", f"cannot create {args.output}: {exc.strerror or exc}",
                        EXIT_USAGE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    ctx.emit({"id": args.id, "output": args.output, "bytes": len(data)},
             f"wrote session {args.id} to {args.output}")
    return EXIT_OK
