"""routerctl commands for routing: ``ask``, ``classify`` and ``resolve``.

``ask`` streams the answer to stdout as it arrives; which model answered (and any fallback
on the way) goes to stderr, so ``routerctl ask ... > answer.txt`` keeps only the answer.
``--json`` prints the final record instead (the ``end`` data, with the whole text). An
answer that broke off (finish reason ``incomplete``) exits 1. Like all of routerctl, this
module imports neither trio nor httpx.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from ._sync import typed_result
from .cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Context, command, print_json
from .cli_services import columns
from .protocol_route import (
    FINISH_INCOMPLETE,
    ClassifyResult,
    ResolveResult,
    RouteEnd,
    SelectedEvent,
)

__all__ = ["cmd_ask", "cmd_classify", "cmd_resolve", "format_resolve", "answered_by"]

_DASH = "-"


def _text(words: list[str]) -> str:
    text = " ".join(words)
    if text == "-":
        text = sys.stdin.read()
    return text


def _ask_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="+", metavar="TEXT", help="the request (- reads stdin)")
    p.add_argument("--session", metavar="ID", help="continue this session")
    p.add_argument(
        "--category",
        metavar="C",
        help="coding, reasoning, analysis or documentation (default: classified)",
    )
    p.add_argument("--model", metavar="M", help="use this model, and no other")
    p.add_argument("--max-tokens", type=int, metavar="N", help="the answer's length limit")
    p.add_argument("--file", metavar="PATH", help="the file the request is about (for Serena)")
    p.add_argument("--line", type=int, metavar="N", help="0-based line in --file")
    p.add_argument("--symbol", metavar="NAME", help="the symbol the request is about")


def answered_by(end: RouteEnd) -> str:
    """The line ``ask`` prints after the answer."""
    line = f"answered by {end.model} on {end.service} ({end.category}"
    if end.model != end.requested_model:
        line += f", asked for {end.requested_model}"
    if end.total_s is not None:
        line += f", {end.total_s:.1f} s"
    if end.attempts:
        line += f", after {len(end.attempts)} failed attempt{'s' * (len(end.attempts) > 1)}"
    return line + ")"


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"query": _text(args.text)}
    for key, value in (("session_id", args.session), ("category", args.category),
                       ("model", args.model), ("max_tokens", args.max_tokens)):  # fmt: skip
        if value is not None:
            params[key] = value
    fc = {k: v for k, v in (("file", args.file), ("line", args.line), ("symbol", args.symbol))
          if v is not None}  # fmt: skip
    if fc:
        params["file_context"] = fc
    return params


@command(
    "ask", help="route a request to a local model and stream its answer", arguments=_ask_arguments
)
def cmd_ask(ctx: Context, args: argparse.Namespace) -> int:
    params = _params(args)
    if not params["query"].strip():
        return ctx.fail("usage", "nothing to ask (see routerctl ask --help)", EXIT_USAGE)
    text: list[str] = []
    started = False
    # The daemon keeps the time limits (first token, idle, overall): wait as long as it does.
    with ctx.connect() as client, client.stream("route", params, timeout=None) as events:
        for ev in events:
            if ev.event == "chunk":
                piece = ev.data.get("text", "") if isinstance(ev.data, dict) else ""
                text.append(piece)
                started = True
                if not ctx.json:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            elif ev.event == "selected" and not ctx.json:
                sel = msgspec.convert(ev.data, SelectedEvent)
                if sel.previous_error:
                    print(f"routerctl: {sel.previous_error}; trying {sel.model} on "
                          f"{sel.service}", file=sys.stderr)  # fmt: skip
        end = typed_result(events.end_data, RouteEnd, "route")
    if ctx.json:
        print_json({**msgspec.to_builtins(end), "text": "".join(text)})
    else:
        if started:
            sys.stdout.write("\n")
            sys.stdout.flush()
        print(answered_by(end), file=sys.stderr)
    if end.finish_reason == FINISH_INCOMPLETE:
        if not ctx.json:
            print(f"routerctl: the answer is incomplete: {end.reason}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _classify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="+", metavar="TEXT", help="the request (- reads stdin)")
    p.add_argument(
        "--min-confidence",
        type=float,
        metavar="X",
        help="below this the default category is used (default: the daemon's)",
    )


@command(
    "classify",
    help="show the category routerd gives a request, and why",
    arguments=_classify_arguments,
)
def cmd_classify(ctx: Context, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"text": _text(args.text)}
    if args.min_confidence is not None:
        params["min_confidence"] = args.min_confidence
    with ctx.connect() as client:
        raw = client.call("classify", params)
    c = typed_result(raw, ClassifyResult, "classify")
    why = ", ".join(c.signals)
    line = f"{c.category} (confidence {c.confidence:.2f}; {why})"
    if c.low_confidence:
        line += "; unsure, so the default category"
    if c.requires_serena:
        line += "; wants Serena's code context"
    ctx.emit(raw, line)
    return EXIT_OK


def format_resolve(result: ResolveResult) -> str:
    """The table of ``routerctl resolve``."""
    rows = [
        (r.name, r.model_id or _DASH, str(r.context_length or _DASH), r.reason)
        for r in result.results
    ]
    return columns(("NAME", "MODEL ID", "CONTEXT", "WHY"), rows)


def _resolve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME", help="model names as servers report them")


@command(
    "resolve",
    help="show which model database entry each name means, and why",
    arguments=_resolve_arguments,
)
def cmd_resolve(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.connect() as client:
        raw = client.call("resolve", {"names": list(args.names)})
    result = typed_result(raw, ResolveResult, "resolve")
    if ctx.json:
        print_json(raw["results"] if isinstance(raw, dict) else raw)
    else:
        print(format_resolve(result))
    return EXIT_OK
