"""``routerctl top``: a live view of the model servers, the queues, the models and the latest
requests, refreshed every ``--interval`` seconds by polling ``stats``.

On a terminal it redraws in place with plain ANSI sequences (no curses): the alternate
screen, the cursor hidden, each frame cut to the window's size; ``q`` or Ctrl-C quits and
the terminal is left as it was found, whatever ends the loop. When stdout is not a terminal
it prints each frame as plain lines (no escape sequences), a blank line between frames;
``--json`` prints one ``stats`` result per line. ``--once`` draws one frame and exits.
On Windows it always prints plain frames (:func:`redraws_in_place`), and Ctrl-C quits.
Like all of routerctl, this module imports neither trio nor httpx.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, TextIO

import msgspec

from ._sync import typed_result
from .cli import EXIT_OK, Context, _positive_float, _positive_int, command, human_duration
from .cli_services import columns
from .cli_stats import (
    DASH,
    fallback_text,
    queue_table,
    rate_text,
    recent_table,
    routes_line,
    seconds_text,
)
from .protocol_stats import MAX_RECENT, ModelStats, ServerRow, StatsResult

__all__ = ["cmd_top", "frame_lines", "Line", "redraws_in_place"]

#: (text, is a section heading).
Line = tuple[str, bool]

_ALT_ON: Final = "\x1b[?1049h"
_ALT_OFF: Final = "\x1b[?1049l"
_HIDE: Final = "\x1b[?25l"
_SHOW: Final = "\x1b[?25h"
_HOME: Final = "\x1b[H"
_EOL: Final = "\x1b[K"
_BELOW: Final = "\x1b[J"
_REVERSE: Final = "\x1b[7m"
_RESET: Final = "\x1b[0m"
_QUIT_KEYS: Final = frozenset("qQ")


# --- frames (pure) -----------------------------------------------------------------------------


def _servers_table(servers: Sequence[ServerRow]) -> str:
    rows = []
    for s in servers:
        slots = DASH if s.total_slots is None else f"{s.busy_slots or 0}/{s.total_slots}"
        latency = DASH if s.latency_ms is None else seconds_text(s.latency_ms / 1000.0)
        rows.append((s.name, s.kind or DASH, s.state, latency, str(s.models),
                     ", ".join(s.loaded_models) or DASH, slots))  # fmt: skip
    return columns(("NAME", "KIND", "STATE", "LATENCY", "MODELS", "LOADED", "SLOTS"), rows)


def _rate(m: ModelStats, prev: dict[tuple[str, str], int], elapsed: float | None) -> str:
    before = prev.get((m.service, m.model))
    if elapsed is None or elapsed <= 0:
        return DASH
    return f"{(m.requests - (before or 0)) / elapsed:.2f}"


def _models_table(st: StatsResult, prev: StatsResult | None) -> str:
    counts = {(m.service, m.model): m.requests for m in prev.models} if prev else {}
    elapsed = st.at - prev.at if prev is not None else None
    rows = [
        (
            m.service, m.model, _rate(m, counts, elapsed), str(m.requests), str(m.errors),
            fallback_text(m), str(m.in_flight), seconds_text(m.first_token.p50),
            seconds_text(m.duration.p50), seconds_text(m.duration.p95),
            rate_text(m.tokens_per_second.p50),
        )
        for m in st.models
    ]
    header = ("SERVICE", "MODEL", "REQ/S", "REQ", "ERR", "FALLBACK", "RUN", "TTFT p50",
              "LAT p50", "LAT p95", "TOK/S")  # fmt: skip
    return columns(header, rows)


def frame_lines(st: StatsResult, prev: StatsResult | None) -> list[Line]:
    """One frame: a status line, then the servers, queues, models and latest requests."""
    d = st.daemon
    clock = time.strftime("%H:%M:%S", time.localtime(st.at))
    head = (f"routerd {d.version}  pid {d.pid}  up {human_duration(d.uptime_s)}  "
            f"connections {d.connections_open}  requests in flight {d.requests_in_flight}  "
            f"{clock}")  # fmt: skip
    lines: list[Line] = [(head, False), (routes_line(st), False)]

    def section(title: str, body: str | None, empty: str) -> None:
        lines.append(("", False))
        lines.append((title, True))
        lines.extend((row, False) for row in (body.splitlines() if body else [empty]))

    section("SERVERS", _servers_table(st.servers) if st.servers else None,
            "no model servers known (is discovery running?)")  # fmt: skip
    section("QUEUES", queue_table(st.queues) if st.queues else None, "nothing queued")
    section("MODELS", _models_table(st, prev) if st.models else None, "no requests routed yet")
    section("LATEST REQUESTS", recent_table(st.recent) if st.recent else None, "none yet")
    return lines


def fit(lines: Sequence[Line], width: int, height: int) -> list[Line]:
    """``lines`` cut to ``width`` columns and ``height`` rows; when rows run short the oldest
    of the latest requests go first (they are at the end, newest last)."""
    out = [(text[:width], heading) for text, heading in lines]
    if len(out) <= height:
        return out
    try:
        start = next(i for i, (t, h) in enumerate(out) if h and t == "LATEST REQUESTS")
    except StopIteration:
        return out[:height]
    keep_head = out[: start + 2]  # the heading and the table's header row
    tail = out[start + 2:]
    room = max(0, height - len(keep_head))
    return (keep_head + tail[len(tail) - room:] if room else keep_head)[:height]


# --- the terminal -------------------------------------------------------------------------------


class _Screen:
    """Draws frames on a terminal (``tty``) or as plain lines, and waits for ``q``."""

    def __init__(self, out: TextIO, tty: bool, keys: int | None) -> None:
        self.out = out
        self.tty = tty
        self.keys = keys  # a terminal's file descriptor to read keys from, or None

    def draw(self, lines: Sequence[Line]) -> None:
        if not self.tty:
            self.out.write("\n".join(text for text, _ in lines) + "\n\n")
            self.out.flush()
            return
        size = shutil.get_terminal_size()
        footer = "q quits"
        rows = fit(lines, size.columns, max(1, size.lines - 1))
        parts = [_HOME]
        for text, heading in rows:
            parts.append((f"{_REVERSE}{text.ljust(size.columns)}{_RESET}" if heading else text)
                         + _EOL + "\r\n")  # fmt: skip
        parts.append(footer[: size.columns] + _EOL + _BELOW)
        self.out.write("".join(parts))
        self.out.flush()

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; True if ``q`` was pressed meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.keys is None:
                time.sleep(left)
                continue
            ready, _, _ = select.select([self.keys], [], [], left)
            if ready:
                data = os.read(self.keys, 64)
                if not data:  # the terminal went away
                    self.keys = None
                elif _QUIT_KEYS & set(data.decode(errors="replace")):
                    return True


def redraws_in_place(out: TextIO, json: bool, platform: str = sys.platform) -> bool:
    """Whether ``top`` redraws over itself on ``out``: a terminal, without ``--json``, and not
    on Windows, whose console reads no keys without ``termios`` and shows ANSI sequences only
    when a program turns them on: there each frame is printed below the last."""
    return platform != "win32" and not json and out.isatty()


@contextmanager
def _terminal(out: TextIO, tty: bool) -> Iterator[_Screen]:
    """Set the terminal up for ``top`` and restore it however the block ends (``tty``: see
    :func:`redraws_in_place`, so never on Windows)."""
    keys: int | None = None
    saved: Any = None
    stdin = sys.stdin
    if sys.platform != "win32" and tty and stdin is not None and stdin.isatty():
        import termios
        import tty as ttymod

        keys = stdin.fileno()
        saved = termios.tcgetattr(keys)
        ttymod.setcbreak(keys)  # keys arrive one by one, unechoed; Ctrl-C still interrupts
    if tty:
        out.write(_ALT_ON + _HIDE)
        out.flush()
    try:
        yield _Screen(out, tty, keys)
    finally:
        if tty:
            out.write(_SHOW + _ALT_OFF)
            out.flush()
        if sys.platform != "win32" and saved is not None and keys is not None:
            import termios

            termios.tcsetattr(keys, termios.TCSADRAIN, saved)


def _top_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=_positive_float, default=2.0, metavar="SECONDS",
                   help="seconds between refreshes (default 2)")
    p.add_argument("--once", action="store_true", help="draw one frame and exit")
    p.add_argument("--count", type=_positive_int, default=None, metavar="N",
                   help="exit after N frames")
    p.add_argument("--recent", type=int, default=50, metavar="N",
                   help=f"latest requests to ask for (0-{MAX_RECENT}, default 50)")


@command("top", help="live view of servers, queues, models and the latest requests (q quits)",
         arguments=_top_arguments)
def cmd_top(ctx: Context, args: argparse.Namespace) -> int:
    out = sys.stdout
    tty = redraws_in_place(out, ctx.json)
    limit = 1 if args.once else args.count
    prev: StatsResult | None = None
    frames = 0
    try:
        with ctx.connect() as client, _terminal(out, tty) as screen:
            while True:
                raw = client.call("stats", {"recent": max(0, min(args.recent, MAX_RECENT))})
                st = typed_result(raw, StatsResult, "stats")
                if ctx.json:
                    out.write(msgspec.json.encode(raw).decode() + "\n")
                    out.flush()
                else:
                    screen.draw(frame_lines(st, prev))
                prev = st
                frames += 1
                if limit is not None and frames >= limit:
                    break
                if screen.wait(args.interval):
                    break
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a live view ends: not an error
    return EXIT_OK
